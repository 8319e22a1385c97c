"""Run an inner transformation only on the steps a condition selects; otherwise pass or zero the updates."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp
from jax import lax

from gradxform import _base
from gradxform import _combine
from gradxform import _errors
from gradxform import _numerics
from gradxform import _tree

__all__ = ["ConditionFn", "ConditionallyMaskState", "ConditionallyTransformState", "conditionally_mask",
           "conditionally_transform"]


class ConditionFn(Protocol):
  """`should_transform_fn(step, **extra_args) -> bool scalar`: whether to run the inner transformation."""

  def __call__(self, step: jax.typing.ArrayLike, **extra_args: Any) -> jax.typing.ArrayLike:
    """True to run the inner transformation at `step` (an int32 count of previous updates)."""


class ConditionallyTransformState(NamedTuple):
  """State of `conditionally_transform`: the inner state and the number of updates so far."""
  inner_state: Any
  step: jax.typing.ArrayLike


class ConditionallyMaskState(NamedTuple):
  """State of `conditionally_mask`: the number of updates so far and the inner state."""
  step: jax.typing.ArrayLike
  inner_state: _base.OptState


# ----------------------------------------------------------------------------------------------
# A lax.cond whose branches jax can cache across eager calls.


@functools.lru_cache(maxsize=256)
def _interned(branch: _base.Bound) -> _base.Bound:
  """The first-seen branch equal to `branch`: jax caches traced branches by function identity."""
  return branch


def _cond(pred: Any, true_fn: Callable, false_fn: Callable, operands: Any, **static: Any) -> Any:
  """`lax.cond(pred, true_fn, false_fn, operands)` with `static` keywords bound to both branches.

  Branches are module-level functions of the operands alone (arrays), with everything else bound
  by value, so eager calls reuse one traced and compiled conditional instead of recompiling it at
  every step. Under a trace (jit, grad…) the outer trace is cached instead, so nothing is interned.
  """
  branches = (_base.Bound(true_fn, None, **static), _base.Bound(false_fn, None, **static))
  if not isinstance(pred, jax.core.Tracer):
    branches = tuple(_interned(branch) for branch in branches)
  return lax.cond(pred, *branches, operands)


def _split_extra_args(extra_args: dict) -> tuple[dict, dict]:
  """(static, dynamic): jax arrays travel as operands of the conditional, anything else is bound to it."""
  static = {k: v for k, v in extra_args.items() if not isinstance(v, jax.Array)}
  dynamic = {k: v for k, v in extra_args.items() if isinstance(v, jax.Array)}
  return static, dynamic


def _apply_branch(operands, *, inner, static_args, **_):
  updates, inner_state, params, dynamic_args = operands
  return inner.update(updates, inner_state, params, **static_args, **dynamic_args)


def _reject_branch(operands, *, reject, **_):
  updates, inner_state, _, _ = operands
  return reject(updates), inner_state


def _run_if(pred, inner, reject, updates, inner_state, params, extra_args):
  """`inner.update(...)` where `pred`, else `(reject(updates), inner_state)`, as one lax.cond."""
  static, dynamic = _split_extra_args(extra_args)
  return _cond(pred, _apply_branch, _reject_branch, (updates, inner_state, params, dynamic), inner=inner,
               reject=reject, static_args=static)


def _identity(updates):
  return updates


def _conditional_update(updates, inner_state, step, params, inner, should_transform_fn, forward_extra_args,
                        extra_args, reject):
  condition = should_transform_fn(step, **(extra_args if forward_extra_args else {}))
  return _run_if(condition, inner, reject, updates, inner_state, params, extra_args)


def _transform_init(params, *, inner, **_):
  return ConditionallyTransformState(inner_state=inner.init(params), step=jnp.zeros([], dtype=jnp.int32))


def _transform_update(updates, state, params=None, *, inner, should_transform_fn, forward_extra_args,
                      **extra_args):
  _errors.expect_state(state, (ConditionallyTransformState,), "conditionally_transform")
  updates, inner_state = _conditional_update(updates, state.inner_state, state.step, params, inner,
                                             should_transform_fn, forward_extra_args, extra_args, _identity)
  return updates, ConditionallyTransformState(inner_state, _numerics.safe_increment(state.step))


def _mask_init(params, *, inner, **_):
  return ConditionallyMaskState(step=jnp.zeros([], jnp.int32), inner_state=inner.init(params))


def _mask_update(updates, state, params=None, *, inner, should_transform_fn, forward_extra_args, **extra_args):
  _errors.expect_state(state, (ConditionallyMaskState,), "conditionally_mask")
  updates, inner_state = _conditional_update(updates, state.inner_state, state.step, params, inner,
                                             should_transform_fn, forward_extra_args, extra_args,
                                             _tree.zeros_like)
  return updates, ConditionallyMaskState(step=_numerics.safe_increment(state.step), inner_state=inner_state)


def _check_args(fn: str, inner: Any, should_transform_fn: Any) -> _base.GradientTransformationExtraArgs:
  if not callable(should_transform_fn):
    raise _errors.HyperparameterTypeError(
        f"{fn}: argument `should_transform_fn` must be a function step -> bool, got "
        f"{type(should_transform_fn).__name__}")
  return _combine._as_transformation(inner, f"{fn}: argument `inner`")  # pylint: disable=protected-access


def conditionally_transform(inner: _base.GradientTransformation, should_transform_fn: ConditionFn,
                            forward_extra_args: bool = False) -> _base.GradientTransformationExtraArgs:
  """Applies `inner` on the steps where `should_transform_fn(step)` is True; elsewhere the updates and
  the inner state pass through unchanged.

  Args:
    inner: the transformation to apply conditionally.
    should_transform_fn: `f(step, **extra_args) -> bool scalar`, step being the int32 number of
      previous updates.
    forward_extra_args: also pass the update's extra keyword arguments to `should_transform_fn`.

  Returns:
    A GradientTransformationExtraArgs with a ConditionallyTransformState.
  """
  inner = _check_args("conditionally_transform", inner, should_transform_fn)
  return _base.transformation("conditionally_transform", _transform_init, _transform_update, inner=inner,
                              should_transform_fn=should_transform_fn, forward_extra_args=forward_extra_args)


def conditionally_mask(inner: _base.GradientTransformation, should_transform_fn: ConditionFn,
                       forward_extra_args: bool = False) -> _base.GradientTransformationExtraArgs:
  """Applies `inner` on the steps where `should_transform_fn(step)` is True; elsewhere the updates are
  zeroed and the inner state is kept.

  Args:
    inner: the transformation to apply conditionally.
    should_transform_fn: `f(step, **extra_args) -> bool scalar`, step being the int32 number of
      previous updates.
    forward_extra_args: also pass the update's extra keyword arguments to `should_transform_fn`.

  Returns:
    A GradientTransformationExtraArgs with a ConditionallyMaskState.
  """
  inner = _check_args("conditionally_mask", inner, should_transform_fn)
  return _base.transformation("conditionally_mask", _mask_init, _mask_update, inner=inner,
                              should_transform_fn=should_transform_fn, forward_extra_args=forward_extra_args)
