"""Scaling by a constant, a schedule, or a learning rate; and scaling of gradients in the backward pass."""

from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from gradxform import _base
from gradxform import _errors
from gradxform import _numerics
from gradxform import _tree

__all__ = ["ScaleByScheduleState", "scale", "scale_by_learning_rate", "scale_by_schedule", "scale_gradient"]


class ScaleByScheduleState(NamedTuple):
  """State of `scale_by_schedule`: the step count fed to the schedule."""
  count: jax.typing.ArrayLike


def _scale_update(updates, state, params=None, *, step_size, **extra_args):
  del params, extra_args
  return _tree.map_updates(lambda g: scaled_leaf(g, step_size), updates), state


def scale(step_size: jax.typing.ArrayLike) -> _base.GradientTransformationExtraArgs:
  """Multiplies every update by `step_size`.

  Args:
    step_size: the factor (any sign; scale(-lr) is gradient descent).
  """
  _errors.check_number("scale", "step_size", step_size)
  return _base.transformation("scale", _base.init_empty_state, _scale_update, step_size=step_size)


def _schedule_init(params, **_):
  del params
  return ScaleByScheduleState(count=jnp.zeros([], jnp.int32))


def _schedule_update(updates, state, params=None, *, step_size_fn, **extra_args):
  del params, extra_args
  _errors.expect_state(state, (ScaleByScheduleState,), "scale_by_schedule")
  step_size = step_size_fn(state.count)
  updates = _tree.map_updates(lambda g: scheduled_leaf(g, step_size), updates)
  return updates, ScaleByScheduleState(count=_numerics.safe_increment(state.count))


def scaled_leaf(g, step_size):
  """One leaf of `scale`."""
  return _numerics.mul(step_size, g)


def scheduled_leaf(g, step_size):
  """One leaf of `scale_by_schedule`: the schedule's value is cast to the leaf's dtype first."""
  return jnp.array(step_size, dtype=g.dtype) * g


def scale_by_schedule(step_size_fn: _base.Schedule) -> _base.GradientTransformationExtraArgs:
  """Multiplies every update by `step_size_fn(count)`, count being the number of updates so far.

  Args:
    step_size_fn: a schedule, step count -> factor.
  """
  if not callable(step_size_fn):
    raise _errors.HyperparameterTypeError(
        f"scale_by_schedule: argument `step_size_fn` must be a schedule (callable), got "
        f"{type(step_size_fn).__name__}")
  _errors.check_schedule("scale_by_schedule", "step_size_fn", step_size_fn)
  return _base.transformation("scale_by_schedule", _schedule_init, _schedule_update, step_size_fn=step_size_fn)


def _signed_schedule(count, *, schedule, sign):
  return sign * schedule(count)


def scale_by_learning_rate(learning_rate: Optional[_base.ScalarOrSchedule] = None, *,
                           flip_sign: bool = True) -> _base.GradientTransformationExtraArgs:
  """Multiplies updates by -learning_rate (a number or a schedule), so that adding them descends.

  Args:
    learning_rate: a non-negative number, a schedule, or None (then this is the identity).
    flip_sign: multiply by -learning_rate (True, for gradient descent) or +learning_rate.
  """
  _errors.check_learning_rate("scale_by_learning_rate", learning_rate, allow_none=True)
  if learning_rate is None:
    return _base.identity()
  sign = -1 if flip_sign else 1
  if callable(learning_rate):
    tx = scale_by_schedule(_base.Bound(_signed_schedule, None, schedule=learning_rate, sign=sign))
  else:
    tx = scale(sign * learning_rate)
  return _base.rename(tx, "scale_by_learning_rate")


# ----------------------------------------------------------------------------------------------
# Scaling in the backward pass only.


@jax.custom_vjp
def _scaled_backward(inputs, scale):
  del scale  # read by the backward pass only
  return inputs


def _scaled_backward_fwd(inputs, scale):
  return inputs, scale


def _scaled_backward_bwd(scale, cotangents):
  return jax.tree.map(lambda g: _numerics.mul(g, scale), cotangents), None


_scaled_backward.defvjp(_scaled_backward_fwd, _scaled_backward_bwd)


def scale_gradient(inputs: _base.ArrayTree, scale: jax.typing.ArrayLike) -> _base.ArrayTree:
  """The identity on the forward pass; multiplies the gradient flowing back through it by `scale`.

  A scale of 0 is `stop_gradient` and a scale of 1 returns `inputs` untouched. A negative scale reverses
  the gradient (a gradient reversal layer).

  Args:
    inputs: a pytree of arrays.
    scale: the factor applied to the cotangents in the backward pass (a number, or an array or tracer).

  Returns:
    `inputs`, with the backward scaling attached.
  """
  _errors.check_number("scale_gradient", "scale", scale)
  concrete = _errors.concrete_number(scale)
  if concrete == 1.0:
    return inputs
  if concrete == 0.0:
    return jax.lax.stop_gradient(inputs)
  return _scaled_backward(inputs, scale)
