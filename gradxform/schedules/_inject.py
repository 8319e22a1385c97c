"""Hyperparameters kept in the optimizer state, so schedules and manual changes reach them under jit.

`inject_hyperparams(factory)(**kwargs)` builds `factory` anew at every step from the numbers stored in
its state. Numeric arguments are stored as arrays in `state.hyperparams` (a plain dict, so they can be
read and overwritten by name between steps without recompiling); schedules are evaluated at each step
and their values stored there too. The state layout, storage dtypes and evaluation order are optax's.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import warnings
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple, Optional, Protocol, Union, runtime_checkable

import jax
import jax.numpy as jnp
import numpy as np

from gradxform import _base
from gradxform import _errors
from gradxform import _numerics

__all__ = ["InjectHyperparamsState", "InjectStatefulHyperparamsState", "StatefulSchedule", "WrappedSchedule",
           "inject_hyperparams", "inject_stateful_hyperparams"]

ScheduleState = Any


@runtime_checkable
class StatefulSchedule(Protocol):
  """A schedule with its own state: `init() -> state`, `update(state, **extra_args) -> state`, and
  `__call__(state, **extra_args) -> value`. Any object with these three methods qualifies."""

  def init(self) -> ScheduleState:
    """The initial schedule state."""

  def update(self, state: ScheduleState, **extra_args) -> ScheduleState:
    """The schedule state for the next step."""

  def __call__(self, state: ScheduleState, **extra_args) -> jax.typing.ArrayLike:
    """The value at the step `state` stands for."""


class WrappedScheduleState(NamedTuple):
  """State of a `WrappedSchedule`: the step count fed to the schedule."""
  count: jax.typing.ArrayLike


class WrappedSchedule:
  """A plain schedule `f(count)` seen as a StatefulSchedule whose state is the int32 step count."""

  def __init__(self, schedule_fn: _base.Schedule):
    self.schedule_fn = schedule_fn

  def init(self) -> WrappedScheduleState:
    return WrappedScheduleState(count=jnp.zeros([], jnp.int32))

  def update(self, state: WrappedScheduleState, **extra_args) -> WrappedScheduleState:
    del extra_args
    return WrappedScheduleState(count=_numerics.safe_increment(state.count))

  def __call__(self, state: WrappedScheduleState, **extra_args) -> jax.typing.ArrayLike:
    del extra_args
    return self.schedule_fn(state.count)

  # Equal schedules wrap equally, so the transformations holding them compare and hash by value.
  def __eq__(self, other):
    return type(other) is type(self) and other.schedule_fn == self.schedule_fn

  def __hash__(self):
    try:
      return hash((WrappedSchedule, self.schedule_fn))
    except TypeError:
      return hash((WrappedSchedule, id(self.schedule_fn)))

  def __repr__(self):
    return f"WrappedSchedule({self.schedule_fn!r})"


class InjectHyperparamsState(NamedTuple):
  """The older state layout (no schedule states); kept for compatibility, `inject_hyperparams` makes
  an InjectStatefulHyperparamsState."""
  count: jax.typing.ArrayLike
  hyperparams: dict[str, jax.typing.ArrayLike]
  inner_state: _base.OptState


class InjectStatefulHyperparamsState(NamedTuple):
  """State of `inject_hyperparams`: step count, current hyperparameter values (by name), the states of
  the scheduled ones, and the inner transformation's state."""
  count: jax.typing.ArrayLike
  hyperparams: dict[str, jax.typing.ArrayLike]
  hyperparams_states: dict[str, ScheduleState]
  inner_state: _base.OptState


# ----------------------------------------------------------------------------------------------
# Storage dtype.


def _as_storage_dtype(value: Any, dtype: Any) -> Any:
  """Floating values in `dtype`, except arrays whose dtype was chosen explicitly (not weakly typed)."""
  if isinstance(value, jax.Array) and not getattr(value, "weak_type", False):
    return value
  current = value.dtype if hasattr(value, "dtype") else type(value)
  if jax.dtypes.issubdtype(current, jnp.floating):
    return jnp.asarray(value, dtype=dtype)
  return value


def _leaf_dtype(x: Any) -> Any:
  return x.dtype if hasattr(x, "dtype") else jnp.asarray(x).dtype


def _higher_dtype(a: Any, b: Any) -> Any:
  """The one of `a`, `b` the other promotes to; an error when neither does (bfloat16 vs float16)."""
  with jax.numpy_dtype_promotion("standard"):
    joined = jnp.promote_types(a, b)
  if joined == a:
    return a
  if joined == b:
    return b
  raise _errors.HyperparameterTypeError(
      f"inject_hyperparams: the params mix dtypes {a} and {b}, neither of which promotes to the other, "
      "so the hyperparameters' dtype is ambiguous; pass `hyperparam_dtype`")


def _params_dtype(params: Any) -> Any:
  """The highest dtype among the params' leaves (float32 when there are none, or no params)."""
  dtypes = [_leaf_dtype(x) for x in jax.tree.leaves(params)]
  if not dtypes:
    return jnp.asarray([]).dtype
  return functools.reduce(_higher_dtype, dtypes)


def _storage_dtype(hyperparam_dtype: Any, params: Any) -> Any:
  return _params_dtype(params) if hyperparam_dtype is None else hyperparam_dtype


# ----------------------------------------------------------------------------------------------
# The transformation.


def _inject_init(params, *, inner_factory, fixed_args, numeric_args, scheduled_args, hyperparam_dtype, **_):
  dtype = _storage_dtype(hyperparam_dtype, params)
  hyperparams = {k: jnp.asarray(_as_storage_dtype(v, dtype)) for k, v in numeric_args.items()}
  schedule_states = {k: f.init() for k, f in scheduled_args.items()}
  hyperparams.update({k: _as_storage_dtype(f(schedule_states[k]), dtype) for k, f in scheduled_args.items()})
  inner = inner_factory(**fixed_args, **hyperparams)
  return InjectStatefulHyperparamsState(count=jnp.zeros([], jnp.int32), hyperparams=hyperparams,
                                        hyperparams_states=schedule_states, inner_state=inner.init(params))


def prepare_inner(state, params=None, *, inner_factory, fixed_args, numeric_args, scheduled_args, hyperparam_dtype,
                  **extra_args):
  """This step's transformation, built from the stored and scheduled hyperparameters, and the new state
  with the old inner state (the caller runs the inner transformation and puts its state in)."""
  del numeric_args  # their current values are the ones in the state (possibly changed by the user)
  _errors.expect_state(state, (InjectStatefulHyperparamsState,), "inject_hyperparams")
  dtype = _storage_dtype(hyperparam_dtype, params)
  hyperparams = {k: _as_storage_dtype(v, dtype) for k, v in state.hyperparams.items()}
  # A schedule gives this step's value from the state it had before the step, then advances.
  hyperparams.update({k: _as_storage_dtype(f(state.hyperparams_states[k], **extra_args), dtype)
                      for k, f in scheduled_args.items()})
  schedule_states = {k: f.update(state.hyperparams_states[k], **extra_args) for k, f in scheduled_args.items()}
  inner = _base.with_extra_args_support(inner_factory(**fixed_args, **hyperparams))
  return inner, InjectStatefulHyperparamsState(count=_numerics.safe_increment(state.count), hyperparams=hyperparams,
                                               hyperparams_states=schedule_states, inner_state=state.inner_state)


def _inject_update(updates, state, params=None, **keywords_and_extra_args):
  inner, new_state = prepare_inner(state, params, **keywords_and_extra_args)
  extra_args = {k: v for k, v in keywords_and_extra_args.items() if k not in _INJECT_KEYWORDS}
  updates, inner_state = inner.update(updates, state.inner_state, params, **extra_args)
  return updates, new_state._replace(inner_state=inner_state)


_INJECT_KEYWORDS = frozenset({"inner_factory", "fixed_args", "numeric_args", "scheduled_args", "hyperparam_dtype"})


def _split_arguments(arguments: dict, static_args: frozenset) -> tuple[dict, dict, dict]:
  """Sorts bound arguments into fixed ones, numbers to store, and schedules to evaluate each step."""
  fixed, numeric, scheduled = {}, {}, {}
  for name, value in arguments.items():
    if name in static_args or isinstance(value, bool):  # flags are never scheduled
      fixed[name] = value
    elif isinstance(value, StatefulSchedule):
      scheduled[name] = value
    elif callable(value):
      scheduled[name] = WrappedSchedule(value)
    elif isinstance(value, (int, float, jax.Array, np.ndarray)):
      numeric[name] = value
    else:
      fixed[name] = value
  return fixed, numeric, scheduled


class _InjectedFactory:
  """What `inject_hyperparams` returns: the factory's signature, building the injected transformation."""

  def __init__(self, inner_factory, static_args: frozenset, hyperparam_dtype, signature):
    functools.update_wrapper(self, inner_factory)  # name, docstring, and __wrapped__ for inspect.signature
    self._inner_factory = inner_factory  # set after: update_wrapper copies the factory's __dict__
    self._static_args = static_args
    self._hyperparam_dtype = hyperparam_dtype
    self._signature = signature

  def __call__(self, *args, **kwargs) -> _base.GradientTransformationExtraArgs:
    name = getattr(self._inner_factory, "__name__", "inner_factory")
    parameters = self._signature.parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
      # Named before bind() would report a missing argument instead (learnin_rate= hides learning_rate).
      unknown = [key for key in kwargs if key not in parameters]
      if unknown:
        hints = {key: difflib.get_close_matches(key, list(parameters), n=1) for key in unknown}
        hint = "".join(f"; did you mean `{match[0]}` for `{key}`?" for key, match in hints.items() if match)
        raise _errors.HyperparameterTypeError(
            f"inject_hyperparams({name}): unexpected keyword argument(s) {', '.join(f'`{k}`' for k in unknown)}"
            f"{hint} (the parameters of {name}: {list(parameters)})")
    try:
      bound = self._signature.bind(*args, **kwargs)
    except TypeError as err:
      raise _errors.HyperparameterTypeError(f"inject_hyperparams({name}): {err}") from None
    bound.apply_defaults()
    fixed, numeric, scheduled = _split_arguments(bound.arguments, self._static_args)
    # Validate the numbers as given, now: once stored as arrays (maybe rounded to the params' dtype) they
    # are accepted unchecked, as optax accepts them.
    try:
      required_schedules = {k: bound.arguments[k] for k in scheduled
                            if self._signature.parameters[k].default is inspect.Parameter.empty}
      self._inner_factory(**fixed, **numeric, **required_schedules)
    except _errors.GradxformError as err:
      err.enter(f"inject_hyperparams({name})")
      raise
    return _base.transformation(f"inject_hyperparams({name})", _inject_init, _inject_update,
                                inner_factory=self._inner_factory, fixed_args=fixed, numeric_args=numeric,
                                scheduled_args=scheduled, hyperparam_dtype=self._hyperparam_dtype)

  def _key(self):
    return (self._inner_factory, self._static_args, self._hyperparam_dtype)

  def __eq__(self, other):
    return isinstance(other, _InjectedFactory) and self._key() == other._key()

  def __hash__(self):
    return hash(self._key())

  def __repr__(self):
    return f"inject_hyperparams({getattr(self._inner_factory, '__name__', self._inner_factory)!r})"


def inject_hyperparams(inner_factory: Callable[..., _base.GradientTransformation],
                       static_args: Union[str, Iterable[str]] = (),
                       hyperparam_dtype: Optional[jnp.dtype] = None
                       ) -> Callable[..., _base.GradientTransformationExtraArgs]:
  """Wraps a transformation factory so its numeric arguments live in the state and may be scheduled.

  The returned callable takes the factory's arguments; any numeric one may instead be a schedule
  (`count -> value`) or a StatefulSchedule. At every step the factory is rebuilt from the values in
  `state.hyperparams`: scheduled ones are recomputed, the others can be changed there by hand between
  steps. Booleans and `static_args` are passed through unchanged and never scheduled.

  Args:
    inner_factory: a function returning a gradient transformation (e.g. `gradxform.adam`).
    static_args: name(s) of arguments to pass through as they are (callables that are not schedules).
    hyperparam_dtype: dtype in which floating hyperparameters are stored; None means the highest
      dtype among the params' leaves.

  Returns:
    A callable with `inner_factory`'s signature returning a GradientTransformationExtraArgs whose
    state is an InjectStatefulHyperparamsState.
  """
  if not callable(inner_factory):
    raise _errors.HyperparameterTypeError(
        f"inject_hyperparams: argument `inner_factory` must be a function returning a transformation, got "
        f"{type(inner_factory).__name__}")
  static = frozenset({static_args} if isinstance(static_args, str) else static_args)
  signature = inspect.signature(inner_factory)
  unknown = static - set(signature.parameters)
  if unknown:
    raise _errors.HyperparameterError(
        f"inject_hyperparams: argument `static_args` names {sorted(unknown)}, which are not parameters of "
        f"{getattr(inner_factory, '__name__', 'inner_factory')} (its parameters: {list(signature.parameters)})")
  return _InjectedFactory(inner_factory, static, hyperparam_dtype, signature)


def inject_stateful_hyperparams(inner_factory: Callable[..., _base.GradientTransformation],
                                static_args: Union[str, Iterable[str]] = (),
                                hyperparam_dtype: Optional[jnp.dtype] = None
                                ) -> Callable[..., _base.GradientTransformationExtraArgs]:
  """Deprecated name of `inject_hyperparams`, which handles stateful schedules too (warns).

  Args:
    inner_factory, static_args, hyperparam_dtype: as in `inject_hyperparams`.

  Returns:
    `inject_hyperparams(inner_factory, static_args, hyperparam_dtype)`.
  """
  warnings.warn("inject_stateful_hyperparams is deprecated: inject_hyperparams accepts stateful schedules "
                "too; use it instead", DeprecationWarning, stacklevel=2)
  return inject_hyperparams(inner_factory, static_args, hyperparam_dtype)
