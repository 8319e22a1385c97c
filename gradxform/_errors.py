"""Exception types and the checks that name the argument, leaf path or chain position at fault.

Every check here runs in Python at trace time (on shapes, dtypes and tree structures, which are static),
so it costs nothing inside a compiled step and never changes numerics.
"""

from __future__ import annotations

import inspect
import math
from typing import Any

import jax
import numpy as np


class GradxformError(Exception):
  """Base of gradxform's errors: a problem plus where it happened (transformation, chain step).

  `frames` lists the transformations the error passed through, outermost first; each frame is
  `[label, position]` where position is e.g. "chain step 2 of 3" or None.
  """

  def __init__(self, problem: str):
    super().__init__(problem)
    self.problem = problem
    self.frames: list[list[Any]] = []

  def enter(self, label: str) -> None:
    """Records that the error passed through the transformation named `label`."""
    self.frames.insert(0, [label, None])

  def at_position(self, position: str) -> None:
    """Records the position (in a chain) of the outermost transformation recorded so far."""
    if self.frames and self.frames[0][1] is None:
      self.frames[0][1] = position
    else:
      self.frames.insert(0, ["transformation", position])

  def __str__(self) -> str:
    where = []
    for label, position in self.frames:
      if label == "chain" and position is None:
        continue  # an anonymous top-level chain adds nothing a reader needs
      where.append(f"{label} ({position})" if position else label)
    return f"{' > '.join(where)}: {self.problem}" if where else self.problem


class TreeMismatchError(GradxformError, ValueError):
  """Two trees that must match (updates, params, state) differ in structure or leaf shape."""


class HyperparameterError(GradxformError, ValueError):
  """A hyperparameter given at construction is out of its valid range."""


class HyperparameterTypeError(GradxformError, TypeError):
  """A hyperparameter given at construction has a type that cannot work (a string learning rate)."""


class LeafTypeError(GradxformError, TypeError):
  """An update leaf has a dtype a gradient transformation cannot work with (integer, bool)."""


class ComplexLeafError(LeafTypeError, ValueError):
  """A complex update leaf reached a transformation that orders or clips values, which complex numbers
  cannot be (a ValueError too, as jnp.clip raises there)."""


class MissingParamsError(GradxformError, ValueError):
  """A transformation that needs `params` was called with `params=None`."""


class MissingArgumentError(GradxformError, TypeError):
  """A transformation that needs an extra keyword argument of `update` (`value=`, `sample_size=`…) lacks it."""


class StateMismatchError(GradxformError, ValueError):
  """The state passed to `update` does not belong to this transformation."""


class StateDictKeyError(GradxformError, ValueError):
  """Two leaves of a state get the same `state_dict` key (dict key "a/b" and key "b" under "a")."""


# ----------------------------------------------------------------------------------------------
# Hyperparameter checks (construction time; traced values are accepted as they are).


def concrete_number(value: Any) -> float | None:
  """`value` as a Python float when it is a concrete real scalar; None when traced, an array or not a number."""
  if isinstance(value, (jax.core.Tracer, str, bytes)):
    return None
  if isinstance(value, (bool, int, float, np.integer, np.floating, np.bool_)):
    return float(value)
  if isinstance(value, (np.ndarray, jax.Array)) and np.ndim(value) == 0:
    try:
      return float(value)
    except (TypeError, jax.errors.ConcretizationTypeError):
      return None
  return None


def check_number(fn: str, name: str, value: Any, *, low: float | None = None, high: float | None = None,
                 low_open: bool = False, high_open: bool = False, allow_none: bool = False,
                 allow_schedule: bool = False) -> None:
  """Raises a clear error if a concrete hyperparameter is not a number in the given interval.

  Args:
    fn: the public function being constructed (named in the message).
    name: the argument name.
    value: the given value; tracers and arrays (any rank) are accepted unchecked.
    low, high: bounds (None for unbounded); `low_open`/`high_open` exclude the bound itself.
    allow_none: None is a valid value.
    allow_schedule: a callable (a schedule) is a valid value.
  """
  expected = "a number" + (" or a schedule" if allow_schedule else "")
  if callable(value) and allow_schedule:
    check_schedule(fn, name, value)
    return
  if value is None and allow_none:
    return
  if isinstance(value, (jax.Array, np.ndarray, jax.core.Tracer)):
    # Traced or array-valued hyperparameters are accepted as they are: inject_hyperparams stores them as
    # arrays in the params' dtype, where b2 = 0.999 rounds to 1.0 in bfloat16 and optax carries on.
    return
  number = concrete_number(value)
  if number is None:
    raise HyperparameterTypeError(
        f"{fn}: argument `{name}` must be {expected}, got {type(value).__name__} {value!r}")
  if math.isnan(number):
    raise HyperparameterError(f"{fn}: argument `{name}` is NaN")
  interval = (f"{'(' if low_open else '['}{'-inf' if low is None else low}, "
              f"{'inf' if high is None else high}{')' if high_open else ']'}")
  too_low = low is not None and (number < low or (low_open and number == low))
  too_high = high is not None and (number > high or (high_open and number == high))
  if too_low or too_high:
    raise HyperparameterError(f"{fn}: argument `{name}` must be in {interval}, got {value!r}")


def check_schedule(fn: str, name: str, value: Any) -> None:
  """Raises if a callable given as a schedule cannot be called as `schedule(count)`: typically a schedule
  factory passed uncalled (`learning_rate=linear_schedule`), which would fail at the first step."""
  try:
    signature = inspect.signature(value)
  except (TypeError, ValueError):
    return  # no signature to read (some builtins): accepted as it is
  try:
    signature.bind(0)
  except TypeError:
    label = getattr(value, "__name__", type(value).__name__)
    raise HyperparameterTypeError(
        f"{fn}: argument `{name}` is a callable that cannot be called with one step count: "
        f"{label}{signature}; a schedule is called as schedule(count), so pass for example "
        "linear_schedule(0.1, 0.0, 1000), not linear_schedule itself") from None


def check_decay(fn: str, name: str, value: Any, **kw) -> None:
  """Checks a decay rate (b1, b2, momentum, rho…) lies in [0, 1)."""
  check_number(fn, name, value, low=0.0, high=1.0, high_open=True, **kw)


def check_nonnegative(fn: str, name: str, value: Any, **kw) -> None:
  """Checks an epsilon-like or bound-like hyperparameter is >= 0."""
  check_number(fn, name, value, low=0.0, **kw)


def check_learning_rate(fn: str, value: Any, name: str = "learning_rate", allow_none: bool = False) -> None:
  """Checks a learning rate: a non-negative number or a schedule."""
  check_number(fn, name, value, low=0.0, allow_schedule=True, allow_none=allow_none)


def check_positive_int(fn: str, name: str, value: Any) -> None:
  """Checks a step count (decay_steps, transition_steps…) is a positive number."""
  check_number(fn, name, value, low=0.0, low_open=True)


# ----------------------------------------------------------------------------------------------
# Tree checks.


def _is_none(x: Any) -> bool:
  return x is None


def _node(x: Any):
  """The children of `x` one level down with their keys, and a description of its node type."""
  kids, treedef = jax.tree_util.tree_flatten_with_path(x, is_leaf=lambda y: y is not x)
  if jax.tree_util.treedef_is_leaf(treedef):
    return None, "a leaf"
  node_type = treedef.node_data()[0] if treedef.node_data() else type(x)
  return [(path[0], kid) for path, kid in kids], node_type.__name__


def _describe(x: Any) -> str:
  if x is None:
    return "None"
  if hasattr(x, "shape") and hasattr(x, "dtype"):
    return f"an array {x.dtype}{list(x.shape)}"
  return type(x).__name__


def first_difference(a: Any, b: Any, path: tuple = ()) -> tuple[str, str] | None:
  """Finds the first place two trees differ in structure; returns (readable path, description)."""
  if a is None and b is None:
    return None
  if (a is None) != (b is None):
    return jax.tree_util.keystr(path) or "the root", f"{_describe(a)} vs {_describe(b)}"
  node_a, kind_a = _node(a)
  node_b, kind_b = _node(b)
  where = jax.tree_util.keystr(path) or "the root"
  if node_a is None and node_b is None:
    return None
  if kind_a != kind_b:
    return where, f"{kind_a} vs {kind_b}"
  keys_a = [k for k, _ in node_a]
  keys_b = [k for k, _ in node_b]
  if keys_a != keys_b:
    only_a = [jax.tree_util.keystr((k,)) for k in keys_a if k not in keys_b]
    only_b = [jax.tree_util.keystr((k,)) for k in keys_b if k not in keys_a]
    if only_a or only_b:
      return where, f"keys only in the first: {only_a or 'none'}, only in the second: {only_b or 'none'}"
    return where, f"{len(keys_a)} children vs {len(keys_b)}"
  for (key, kid_a), (_, kid_b) in zip(node_a, node_b):
    found = first_difference(kid_a, kid_b, path + (key,))
    if found:
      return found
  return None


def raise_tree_mismatch(name_a: str, a: Any, name_b: str, b: Any) -> None:
  """Raises TreeMismatchError naming the first path where `a` and `b` differ."""
  found = first_difference(a, b)
  if found is None:
    detail = (f"{jax.tree_util.tree_structure(a, is_leaf=_is_none)} vs "
              f"{jax.tree_util.tree_structure(b, is_leaf=_is_none)}")
    raise TreeMismatchError(f"{name_a} and {name_b} have different tree structures: {detail}")
  where, what = found
  raise TreeMismatchError(f"{name_a} and {name_b} differ at {where}: {what}")


def raise_leaf_dtype(path: str, dtype: Any) -> None:
  """Raises LeafTypeError for an update leaf that is not floating point or complex."""
  raise LeafTypeError(
      f"updates at {path} have dtype {dtype}: gradient transformations need floating-point or complex "
      "updates; pass None for that leaf (as equinox.filter does) or leave it out of the tree")


def raise_shape_mismatch(name_a: str, name_b: str, path: str, shape_a, shape_b) -> None:
  """Raises TreeMismatchError for one leaf whose shapes differ."""
  raise TreeMismatchError(
      f"{name_a} and {name_b} differ at {path}: shape {tuple(shape_a)} vs {tuple(shape_b)}")


def reject_complex(tree: Any, reason: str, name: str = "updates") -> None:
  """Raises ComplexLeafError naming the first complex leaf of `tree` (a trace-time check on dtypes)."""
  with_path, _ = jax.tree_util.tree_flatten_with_path(tree, is_leaf=_is_none)
  for path, leaf in with_path:
    if leaf is not None and jax.numpy.iscomplexobj(leaf):
      where = jax.tree_util.keystr(path) or "the root"
      raise ComplexLeafError(f"{name} at {where} are complex ({jax.numpy.result_type(leaf)}): {reason}")


def require_params(params: Any, fn: str) -> None:
  """Raises MissingParamsError when a transformation that needs params got None."""
  if params is None:
    raise MissingParamsError(
        f"{fn} needs the current parameters: call `update(updates, state, params)` with params")


def require_extra_args(fn: str, extra_args: dict, names: tuple[str, ...]) -> None:
  """Raises MissingArgumentError naming the keyword arguments of `update` that `fn` needs and did not get."""
  missing = [name for name in names if extra_args.get(name) is None]
  if missing:
    given = ", ".join(sorted(name for name, value in extra_args.items() if value is not None)) or "none"
    # optax.chain (and optax's other combinators) forward keyword arguments only to instances of optax's
    # own GradientTransformationExtraArgs class, and silently drop them for everything else.
    hint = ("; inside an optax combinator such as optax.chain, pass the transformation as "
            "optax.GradientTransformationExtraArgs(*tx) so that optax forwards them" if given == "none" else "")
    raise MissingArgumentError(
        f"{fn} needs the keyword argument(s) {', '.join(missing)} in `update(updates, state, params, ...)`; "
        f"got: {given}{hint}")


def expect_state(state: Any, classes: tuple, fn: str) -> None:
  """Raises StateMismatchError unless `state` is one of `classes` (the state this transformation's init makes).

  A NamedTuple with the same class name and fields is accepted too (a state rebuilt from a checkpoint
  or by another library with the same layout).
  """
  for cls in classes:
    if isinstance(state, cls) or (type(state).__name__ == cls.__name__
                                  and getattr(state, "_fields", None) == cls._fields):
      return
  expected = " or ".join(cls.__name__ for cls in classes)
  raise StateMismatchError(
      f"{fn} expected its own state ({expected}, as made by its init), got {type(state).__name__}; "
      "was the state made by another optimizer, or for another chain?")
