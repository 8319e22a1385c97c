"""The transformation contract: GradientTransformation, its state types, and the trivial transformations.

A transformation is a NamedTuple `(init, update)`. In gradxform both functions are `Bound` objects: a
module-level function plus its hyperparameters, compared and hashed by value. That makes every
transformation hashable, and two constructions with equal arguments equal, so a transformation can be a
static argument of `jax.jit` without retracing when it is built again.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, Iterable, Mapping, NamedTuple, Optional, Protocol, Union

import jax
import jax.numpy as jnp
import numpy as np

from gradxform import _errors

PyTree = Any
ArrayTree = Union[jax.typing.ArrayLike, Iterable["ArrayTree"], Mapping[Any, "ArrayTree"]]
OptState = ArrayTree
Params = ArrayTree
Updates = Params
Schedule = Callable[[jax.typing.ArrayLike], jax.typing.ArrayLike]
ScalarOrSchedule = Union[float, jax.Array, Schedule]


class TransformInitFn(Protocol):
  """`init(params) -> state`."""

  def __call__(self, params: Params) -> OptState:
    ...


class TransformUpdateFn(Protocol):
  """`update(updates, state, params=None) -> (updates, state)`."""

  def __call__(self, updates: Updates, state: OptState, params: Optional[Params] = None
               ) -> tuple[Updates, OptState]:
    ...


class TransformUpdateExtraArgsFn(Protocol):
  """`update(updates, state, params=None, **extra_args) -> (updates, state)`."""

  def __call__(self, updates: Updates, state: OptState, params: Optional[Params] = None,
               **extra_args: Any) -> tuple[Updates, OptState]:
    ...


class GradientTransformation(NamedTuple):
  """A pure pair of functions: `init(params) -> state` and `update(updates, state, params) -> (updates, state)`."""

  init: TransformInitFn
  update: TransformUpdateFn


class GradientTransformationExtraArgs(GradientTransformation):
  """A GradientTransformation whose `update` also takes (and may ignore) keyword arguments."""

  update: TransformUpdateExtraArgsFn


class EmptyState(NamedTuple):
  """The state of a stateless transformation."""


# ----------------------------------------------------------------------------------------------
# Bound functions: hashable, comparable partial application.


class _ByIdentity:
  """Wraps an unhashable hyperparameter (an array, a list…) so it compares by object identity."""

  __slots__ = ("value",)

  def __init__(self, value):
    self.value = value

  def __eq__(self, other):
    return isinstance(other, _ByIdentity) and other.value is self.value

  def __hash__(self):
    return id(self.value)


def _value_key(value: Any) -> Any:
  """A hashable key that is equal for equal hyperparameters (arrays compare by identity)."""
  if isinstance(value, (jax.Array, np.ndarray, jax.core.Tracer)):
    return _ByIdentity(value)
  if isinstance(value, (bool, int, float, complex, np.generic)):
    return (type(value), value)  # 1, 1.0 and True are equal in Python but give different dtypes
  if isinstance(value, (list, tuple)):
    return (type(value), tuple(_value_key(v) for v in value))
  if isinstance(value, dict):
    try:
      items = sorted(value.items())
    except TypeError:
      items = list(value.items())
    return (dict, tuple((k, _value_key(v)) for k, v in items))
  try:
    hash(value)
  except TypeError:
    return _ByIdentity(value)
  return value


class Bound:
  """`func` with keyword arguments fixed; equal (and equally hashed) when func and arguments are equal.

  Calling it runs `func(*args, **kwargs, **keywords)`. When `label` is set, gradxform errors raised
  inside are annotated with it, so messages say which transformation failed.
  """

  __slots__ = ("func", "keywords", "label", "_key", "__weakref__")  # jax.jit keeps weak references

  def __init__(self, func: Callable, label: str | None = None, /, **keywords):
    self.func = func
    self.keywords = keywords
    self.label = label
    self._key = (func, label, tuple(sorted((k, _value_key(v)) for k, v in keywords.items())))

  def __call__(self, *args, **kwargs):
    if self.label is None:
      return self.func(*args, **kwargs, **self.keywords)
    try:
      return self.func(*args, **kwargs, **self.keywords)
    except _errors.GradxformError as err:
      err.enter(self.label)
      raise

  def __eq__(self, other):
    return isinstance(other, Bound) and self._key == other._key

  def __hash__(self):
    return hash(self._key)

  def __repr__(self):
    args = ", ".join(f"{k}={v!r}" for k, v in self.keywords.items())
    return f"{self.label or self.func.__name__}({args})"

  @property
  def __signature__(self):  # what tools see: the function's parameters minus the fixed ones
    sig = inspect.signature(self.func)
    return sig.replace(parameters=[p for p in sig.parameters.values() if p.name not in self.keywords])


def transformation(label: str, init: Callable, update: Callable, **hyperparams
                   ) -> GradientTransformationExtraArgs:
  """Builds a named, hashable transformation from module-level `init` and `update` functions.

  Args:
    label: the public name, used in error messages.
    init: `init(params, **hyperparams) -> state`.
    update: `update(updates, state, params=None, **hyperparams, **extra_args) -> (updates, state)`;
      it must accept and ignore unknown keyword arguments.
    **hyperparams: passed to both functions as keywords.
  """
  init_hyperparams = {} if init is init_empty_state else hyperparams  # a stateless init takes none
  return GradientTransformationExtraArgs(Bound(init, label, **init_hyperparams),
                                         Bound(update, label, **hyperparams))


def rename(tx: GradientTransformation, label: str) -> GradientTransformationExtraArgs:
  """The same transformation under a public name (an optimizer alias built as a chain)."""
  init, update = tx
  if isinstance(init, Bound) and isinstance(update, Bound):
    return GradientTransformationExtraArgs(Bound(init.func, label, **init.keywords),
                                           Bound(update.func, label, **update.keywords))
  return with_extra_args_support(tx)


# ----------------------------------------------------------------------------------------------
# The trivial transformations.


def init_empty_state(params: Params) -> EmptyState:
  """Returns an EmptyState whatever the params (the init of a stateless transformation)."""
  del params
  return EmptyState()


def _identity_update(updates, state, params=None, **extra_args):
  del params, extra_args
  return updates, state


def identity() -> GradientTransformationExtraArgs:
  """Returns updates and state unchanged."""
  return transformation("identity", init_empty_state, _identity_update)


def _zeros_or_none(x):
  return None if x is None else jnp.zeros_like(x)


def _set_to_zero_update(updates, state, params=None, **extra_args):
  del params, extra_args
  return jax.tree.map(_zeros_or_none, updates, is_leaf=lambda x: x is None), state


def set_to_zero() -> GradientTransformationExtraArgs:
  """Replaces every update with zeros (of the same shape and dtype): freezes the parameters."""
  return transformation("set_to_zero", init_empty_state, _set_to_zero_update)


def _stateless_update(updates, state, params=None, *, f, **extra_args):
  del state, extra_args
  return f(updates, params), EmptyState()


def stateless(f: Callable[[Updates, Optional[Params]], Updates]) -> GradientTransformationExtraArgs:
  """Wraps `f(updates, params) -> updates` as a transformation with an EmptyState."""
  return transformation("stateless", init_empty_state, _stateless_update, f=f)


def _stateless_tree_map_update(updates, state, params=None, *, f, **extra_args):
  del state, extra_args
  if params is None:
    return jax.tree.map(lambda u: f(u, None), updates), EmptyState()
  return jax.tree.map(f, updates, params), EmptyState()


def stateless_with_tree_map(
    f: Callable[[jax.typing.ArrayLike, Optional[jax.typing.ArrayLike]], jax.typing.ArrayLike]
) -> GradientTransformationExtraArgs:
  """Wraps a per-leaf `f(update, param) -> update` (param is None without params) as a transformation."""
  return transformation("stateless_with_tree_map", init_empty_state, _stateless_tree_map_update, f=f)


def _drop_extra_args_update(updates, state, params=None, *, inner_update, **extra_args):
  del extra_args
  return inner_update(updates, state, params)


def _accepts_extra_args(tx: Any) -> bool:
  # Optax's own ExtraArgs class counts too, so optax transformations get the keywords they expect.
  return isinstance(tx, GradientTransformationExtraArgs) or any(
      cls.__name__ == "GradientTransformationExtraArgs" for cls in type(tx).__mro__)


def with_extra_args_support(tx: GradientTransformation) -> GradientTransformationExtraArgs:
  """Returns `tx` as a GradientTransformationExtraArgs; extra keyword arguments are dropped if it takes none."""
  if isinstance(tx, GradientTransformationExtraArgs):
    return tx
  init, update = tx
  if _accepts_extra_args(tx):
    return GradientTransformationExtraArgs(init, update)
  return GradientTransformationExtraArgs(init, Bound(_drop_extra_args_update, None, inner_update=update))
