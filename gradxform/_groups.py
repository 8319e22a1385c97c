"""Parameter groups: one optimizer, different hyperparameters (or none at all) for chosen leaves.

`param_groups(adamw, [group(r"(bias|scale)$", weight_decay=0.0)], learning_rate=1e-3)` sends each leaf to
the first group whose regex is found in its `/`-joined path, the others to the defaults. It is a
`partition` whose members are `inject_hyperparams(factory)` with float32 hyperparameters, so every
group's values live in the state and `set_hyperparams(state, group=0, learning_rate=…)` changes them
without recompiling. A frozen group gets zero updates and no state at all.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from gradxform import _base
from gradxform import _errors
from gradxform import _hyperparams
from gradxform import _partition
from gradxform import _tree
from gradxform.schedules import _inject

__all__ = ["Group", "ParamRow", "ParamTable", "describe", "group", "param_groups"]

DEFAULT = "default"


class Group(NamedTuple):
  """One parameter group: leaves whose path matches `pattern` get `overrides` (or no updates if frozen)."""
  pattern: str
  frozen: bool
  overrides: dict[str, Any]


def group(pattern: str, *, frozen: bool = False, **overrides: Any) -> Group:
  """A parameter group for `param_groups`.

  Args:
    pattern: a regular expression searched (`re.search`) in each leaf's `/`-joined path, e.g.
      `r"(bias|scale)$"` or `r"^encoder/"`.
    frozen: give these leaves zero updates and keep no optimizer state for them.
    **overrides: hyperparameters of the optimizer that differ from the defaults for this group.

  Returns:
    A Group.
  """
  if not isinstance(pattern, str):
    raise _errors.HyperparameterTypeError(
        f"group: argument `pattern` must be a regular expression string, got {type(pattern).__name__}")
  try:
    re.compile(pattern)
  except re.error as err:
    raise _errors.HyperparameterError(f"group: argument `pattern` {pattern!r} is not a valid regex: {err}") from None
  if frozen and overrides:
    raise _errors.HyperparameterError(
        f"group({pattern!r}): a frozen group has no optimizer, so hyperparameters {sorted(overrides)} "
        "would have no effect")
  return Group(pattern, bool(frozen), dict(overrides))


def _leaf_paths(params: Any) -> list[str]:
  """`/`-joined paths of the params' leaves (None leaves included), in leaf order."""
  with_path, _ = jax.tree_util.tree_flatten_with_path(params, is_leaf=_tree.is_none)
  return [_tree.slash_path(path) for path, _ in with_path]


def _labels(params: Any, groups: Sequence[Group]) -> tuple[Any, list[str]]:
  """The tree of partition labels for `params`, and the label of each leaf in leaf order."""
  leaves, treedef = _tree.flatten(params)
  labels = []
  for path in _leaf_paths(params):
    label = next((_hyperparams.group_label(i) for i, g in enumerate(groups) if re.search(g.pattern, path)),
                 DEFAULT)
    labels.append(label)
  del leaves
  return jax.tree_util.tree_unflatten(treedef, labels), labels


def _partition_for(params: Any, *, factory, groups, defaults, hyperparam_dtype):
  label_tree, labels = _labels(params, groups)
  unmatched = [(i, g.pattern) for i, g in enumerate(groups) if _hyperparams.group_label(i) not in labels]
  if unmatched:
    raise _errors.HyperparameterError(
        "; ".join(f"group {i} (pattern {p!r}) matches no parameter" for i, p in unmatched)
        + f"; the parameter paths are {_leaf_paths(params)}")
  injected = _inject.inject_hyperparams(factory, hyperparam_dtype=hyperparam_dtype)
  transforms = {}
  for i, g in enumerate(groups):
    transforms[_hyperparams.group_label(i)] = (_base.set_to_zero() if g.frozen
                                               else injected(**{**defaults, **g.overrides}))
  if DEFAULT in labels:
    transforms[DEFAULT] = injected(**defaults)
  return _partition.partition(transforms, label_tree)


def _groups_init(params, **config):
  return _partition_for(params, **config).init(params)


def _groups_update(updates, state, params=None, **config_and_extra_args):
  config = {k: config_and_extra_args.pop(k) for k in ("factory", "groups", "defaults", "hyperparam_dtype")}
  inner = _partition_for(updates, **config)
  return inner.update(updates, state, params, **config_and_extra_args)


def _check_names(factory: Callable, names, where: str) -> None:
  try:
    parameters = inspect.signature(factory).parameters
  except (TypeError, ValueError):
    return  # no signature to check against: the factory will say what it rejects
  takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
  unknown = sorted(set(names) - set(parameters))
  if unknown and not takes_any:
    raise _errors.HyperparameterError(
        f"param_groups: {where} names {unknown}, which are not parameters of "
        f"{getattr(factory, '__name__', 'factory')} (its parameters: {list(parameters)})")


def param_groups(factory: Callable[..., _base.GradientTransformation], groups: Sequence[Group],
                 hyperparam_dtype: Optional[Any] = jnp.float32, **defaults: Any
                 ) -> _base.GradientTransformationExtraArgs:
  """One optimizer with per-group hyperparameters, groups chosen by regexes on the parameter paths.

  Each leaf goes to the first group whose pattern is found in its `/`-joined path (`encoder/w`,
  `layers/0/bias`), the others to the defaults. Every group's hyperparameters are stored in the state
  (`hyperparams(state)` lists them as `group0/learning_rate`, …, `default/learning_rate`) and can be
  changed with `set_hyperparams` without recompiling. Equivalent to `partition` over
  `inject_hyperparams(factory)` built by hand.

  Args:
    factory: an optimizer function, e.g. `gradxform.adamw`.
    groups: `group(pattern, **overrides)` or `group(pattern, frozen=True)` entries, first match wins.
    hyperparam_dtype: storage dtype of the hyperparameters (float32: not the params' dtype).
    **defaults: the factory's arguments for every group (overridden per group).

  Returns:
    A transformation whose state is a PartitionState keyed by "group0", "group1", …, "default" (the
    last only when some leaf matches no group). A group that matches no leaf is an error at init.
  """
  if not callable(factory):
    raise _errors.HyperparameterTypeError(
        f"param_groups: argument `factory` must be an optimizer function such as gradxform.adamw, "
        f"got {type(factory).__name__}")
  if isinstance(groups, Group) or not isinstance(groups, Sequence):
    raise _errors.HyperparameterTypeError(
        f"param_groups: argument `groups` must be a list of gradxform.group(...), got {type(groups).__name__}")
  for i, g in enumerate(groups):
    if not isinstance(g, Group):
      raise _errors.HyperparameterTypeError(
          f"param_groups: groups[{i}] must be made with gradxform.group(pattern, ...), got {type(g).__name__}")
    _check_names(factory, g.overrides, f"groups[{i}] ({g.pattern!r})")
  _check_names(factory, defaults, "the defaults")
  return _base.transformation("param_groups", _groups_init, _groups_update, factory=factory,
                              groups=tuple(groups), defaults=defaults, hyperparam_dtype=hyperparam_dtype)


# ----------------------------------------------------------------------------------------------
# describe


class ParamRow(NamedTuple):
  """One line of `describe`: a parameter leaf and what the optimizer keeps for it."""
  path: str
  shape: tuple
  dtype: str
  group: str
  hyperparams: dict[str, float]
  state_bytes: int


class ParamTable(list):
  """The rows of `describe`; prints as an aligned table with a total line."""

  def total_state_bytes(self) -> int:
    return sum(row.state_bytes for row in self)

  def __str__(self) -> str:
    header = ("path", "shape", "dtype", "group", "hyperparams", "state bytes")
    lines = [header] + [
        (row.path, str(row.shape), row.dtype, row.group,
         ", ".join(f"{k}={v:.4g}" for k, v in row.hyperparams.items()), f"{row.state_bytes:,}")
        for row in self]
    lines.append(("total", "", "", "", "", f"{self.total_state_bytes():,}"))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in lines)

  def _repr_pretty_(self, printer, cycle):  # IPython / notebooks show the table
    printer.text(str(self))


def _nbytes(x: Any) -> int:
  return int(np.prod(np.shape(x), dtype=np.int64)) * np.dtype(x.dtype).itemsize if hasattr(x, "dtype") else 0


def _hyperparam_values(tx: _base.GradientTransformation, params: Any) -> dict[str, Any]:
  """The stored hyperparameters by full path; {} for abstract params (their values need a real init).
  Under jit only the hyperparameters are computed: the state's zeros are dead code."""
  if not all(isinstance(x, (jax.Array, np.ndarray)) for x in jax.tree.leaves(params)):
    return {}
  return jax.jit(lambda p: _hyperparams.hyperparams_by_full_path(tx.init(p)))(params)


def describe(tx: _base.GradientTransformation, params: Any) -> ParamTable:
  """A table of the parameter leaves: path, shape, dtype, group, hyperparameters and optimizer-state bytes.

  The state is built abstractly (`jax.eval_shape`), so nothing large is allocated. A state leaf counts
  for the parameter whose path ends its own (`1/0/mu/encoder/w` counts for `encoder/w`); state shared
  by all leaves (step counts, stored hyperparameters) is the row "(shared)".

  Args:
    tx: any transformation; for `param_groups` ones each leaf's group and hyperparameters are shown.
    params: the parameters (arrays, or jax.ShapeDtypeStruct: then hyperparameter values are left out).

  Returns:
    A ParamTable (a list of ParamRow); `print(describe(tx, params))` shows it.
  """
  state = jax.eval_shape(tx.init, params)
  leaves = _tree.flatten(params)[0]
  paths = _leaf_paths(params)
  is_groups = isinstance(tx.init, _base.Bound) and tx.init.func is _groups_init
  labels = _labels(params, tx.init.keywords["groups"])[1] if is_groups else ["-"] * len(paths)
  values = {path: float(np.asarray(v)) for path, v in _hyperparam_values(tx, params).items()}
  state_bytes = dict.fromkeys(paths, 0)
  shared = 0
  param_components = sorted({tuple(p.split("/")) for p in paths if p}, key=len, reverse=True)
  for state_path, leaf in _tree.leaves_with_slash_paths(state):
    components = tuple(state_path.split("/"))
    owner = next((p for p in param_components if components[-len(p):] == p), None)
    if owner is None:
      shared += _nbytes(leaf)
    else:
      state_bytes["/".join(owner)] += _nbytes(leaf)
  table = ParamTable()
  for path, leaf, label in zip(paths, leaves, labels):
    own = {k.split("/")[-1]: v for k, v in values.items() if label == "-" or label in k.split("/")}
    table.append(ParamRow(path, tuple(np.shape(leaf)) if leaf is not None else (),
                          str(leaf.dtype) if hasattr(leaf, "dtype") else "-", label, own, state_bytes[path]))
  if shared:
    table.append(ParamRow("(shared)", (), "-", "-", {}, shared))
  return table
