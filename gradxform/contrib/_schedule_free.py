"""Schedule-free optimization: iterate averaging in place of a learning-rate schedule (Defazio et al., 2024).

The wrapped optimizer moves a sequence z; the parameters the model sees are y = b1 x + (1 - b1) z,
where x is a running weighted average of z (weights lr_max^p). Evaluate the model at x, given by
`schedule_free_eval_params`.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from gradxform import _base
from gradxform import _errors
from gradxform import _numerics
from gradxform import _tree
from gradxform._alias import sgd
from gradxform._combine import chain
from gradxform._decay import add_decayed_weights
from gradxform._rms import scale_by_rms
from gradxform._scale import scale_by_learning_rate
from gradxform.schedules import warmup_constant_schedule
from gradxform.tree_utils import tree_dtype

__all__ = ["ScheduleFreeState", "schedule_free", "schedule_free_adamw", "schedule_free_eval_params",
           "schedule_free_sgd"]


class ScheduleFreeState(NamedTuple):
  """State of `schedule_free`: b1, the averaging weights, step count, largest lr, inner state and z."""
  b1: jax.typing.ArrayLike
  weight_sum: jax.typing.ArrayLike
  step_count: jax.typing.ArrayLike
  max_lr: jax.typing.ArrayLike
  base_optimizer_state: _base.OptState
  z: _base.Params


def _average_point(y, z, b1):
  """x = (y - (1 - b1) z) / b1: the averaged iterate recovered from y and z."""
  return _numerics.div(_numerics.sub(y, _numerics.mul(_numerics.sub(1.0, b1), z)), b1)


def schedule_free_eval_params(state: _base.OptState, params: _base.Params):
  """The parameters at which to evaluate a schedule-free model: x = (y - (1 - b1) z) / b1.

  Args:
    state: the `ScheduleFreeState` of `schedule_free` (or of the aliases).
    params: the current (training) parameters y.

  Returns:
    The averaged parameters x.
  """
  b1, z = getattr(state, "b1", None), getattr(state, "z", None)
  if b1 is None or z is None:
    raise _errors.StateMismatchError(
        f"schedule_free_eval_params needs a ScheduleFreeState, got {type(state).__name__}")
  return jax.tree.map(lambda y, zi: _average_point(y, zi, b1), params, z)


def _sf_init(params, *, base_optimizer, b1, state_dtype, **_):
  dtype = tree_dtype(params, "lowest")
  z = params if state_dtype is None else _tree.cast(params, state_dtype)
  return ScheduleFreeState(
      b1=jnp.asarray(b1, dtype=dtype), weight_sum=jnp.zeros([], dtype), step_count=jnp.ones([], jnp.int32),
      max_lr=jnp.zeros([], dtype), base_optimizer_state=base_optimizer.init(params),
      z=jax.tree.map(lambda t: t.copy(), z))


def _sf_update(grads, state, params=None, *, base_optimizer, learning_rate, b1, weight_lr_power, state_dtype,
               **extra_args):
  del state_dtype
  _errors.expect_state(state, (ScheduleFreeState,), "schedule_free")
  _errors.require_params(params, "schedule_free")
  lr = learning_rate
  if callable(learning_rate):
    lr = jnp.asarray(learning_rate(state.step_count), dtype=state.max_lr.dtype)
  max_lr = _numerics.maximum(state.max_lr, lr)
  weight = _numerics.decay_power(max_lr, weight_lr_power)
  total_weight = _numerics.add(state.weight_sum, weight)
  # The new point's averaging weight; NaN weights stay NaN, 0/0 (no lr yet) is 0.
  ratio = jnp.nan_to_num(_numerics.div(weight, total_weight), nan=0.0, posinf=jnp.inf)
  nan = jnp.full(jnp.shape(weight), jnp.nan)
  nan, ratio = _numerics.promote(nan, ratio)
  ck = jnp.where(jnp.logical_or(jnp.isnan(weight), jnp.isnan(total_weight)), nan, ratio)

  base_updates, base_state = base_optimizer.update(grads, state.base_optimizer_state, params, **extra_args)
  z = jax.tree.map(lambda zi, u: _numerics.add(zi, u).astype(jnp.asarray(zi).dtype), state.z, base_updates)

  def leaf(y, old_z, new_z):
    x = _numerics.add(_numerics.mul(_numerics.sub(1.0, ck), _average_point(y, old_z, b1)),
                      _numerics.mul(ck, new_z))
    new_y = _numerics.add(_numerics.mul(b1, x), _numerics.mul(_numerics.sub(1.0, b1), new_z))
    return _numerics.sub(new_y, y)

  updates = jax.tree.map(leaf, params, state.z, z)
  return updates, ScheduleFreeState(b1=state.b1, weight_sum=total_weight,
                                    step_count=_numerics.safe_increment(state.step_count), max_lr=max_lr,
                                    base_optimizer_state=base_state, z=z)


def schedule_free(base_optimizer: _base.GradientTransformation, learning_rate: _base.ScalarOrSchedule,
                  b1: jax.typing.ArrayLike = 0.9, weight_lr_power: jax.typing.ArrayLike = 2.0,
                  state_dtype: Optional[jax.typing.DTypeLike] = None) -> _base.GradientTransformationExtraArgs:
  """Makes `base_optimizer` schedule-free (Defazio et al., 2024, "The Road Less Scheduled").

  z <- z + base_update;  x <- (1 - c) x + c z with c = lr_max^p / sum of lr_max^p so far;
  y <- b1 x + (1 - b1) z. The returned update is the change of y (the params the gradients are taken at).

  Args:
    base_optimizer: the optimizer moving z; its learning rate should be `learning_rate` too.
    learning_rate: the learning rate (or schedule, typically a warmup) used for the averaging weights.
    b1: interpolation between the average x and z, in (0, 1].
    weight_lr_power: the power p of the largest learning rate so far in the averaging weights.
    state_dtype: dtype of z; None keeps the params' dtypes.

  Returns:
    A GradientTransformationExtraArgs; its update needs params.
  """
  fn = "schedule_free"
  _errors.check_learning_rate(fn, learning_rate)
  _errors.check_number(fn, "b1", b1, low=0.0, high=1.0, low_open=True)
  _errors.check_number(fn, "weight_lr_power", weight_lr_power)
  return _base.transformation(fn, _sf_init, _sf_update, base_optimizer=_base.with_extra_args_support(base_optimizer),
                              learning_rate=learning_rate, b1=b1, weight_lr_power=weight_lr_power,
                              state_dtype=_tree.canonical_dtype(state_dtype))


def _warmup(learning_rate, warmup_steps):
  if warmup_steps is None:
    return learning_rate
  return warmup_constant_schedule(init_value=0, peak_value=learning_rate, warmup_steps=warmup_steps)


def schedule_free_sgd(learning_rate: jax.typing.ArrayLike = 1.0, warmup_steps: Optional[int] = None,
                      b1: jax.typing.ArrayLike = 0.9, weight_decay: Optional[jax.typing.ArrayLike] = None,
                      weight_lr_power: jax.typing.ArrayLike = 2.0,
                      state_dtype: Optional[jax.typing.DTypeLike] = None) -> _base.GradientTransformationExtraArgs:
  """Schedule-free SGD: `schedule_free` around SGD, with an optional linear warmup and weight decay.

  Args:
    learning_rate: the peak learning rate.
    warmup_steps: length of a linear warmup from 0, or None for none.
    b1: interpolation between the average and z.
    weight_decay: weight decay added to the gradient before SGD, or None.
    weight_lr_power: the power of the learning rate in the averaging weights.
    state_dtype: dtype of z.

  Returns:
    A GradientTransformationExtraArgs; its update needs params.
  """
  fn = "schedule_free_sgd"
  _errors.check_learning_rate(fn, learning_rate)
  if warmup_steps is not None:
    _errors.check_positive_int(fn, "warmup_steps", warmup_steps)
  _errors.check_number(fn, "b1", b1, low=0.0, high=1.0, low_open=True)
  _errors.check_nonnegative(fn, "weight_decay", weight_decay, allow_none=True)
  learning_rate = _warmup(learning_rate, warmup_steps)
  optimizer = sgd(learning_rate)
  if weight_decay is not None:
    optimizer = chain(add_decayed_weights(weight_decay), optimizer)
  return _base.rename(schedule_free(optimizer, learning_rate=learning_rate, b1=b1,
                                    weight_lr_power=weight_lr_power, state_dtype=state_dtype), fn)


def schedule_free_adamw(learning_rate: jax.typing.ArrayLike = 0.0025, warmup_steps: Optional[int] = None,
                        b1: jax.typing.ArrayLike = 0.9, b2: jax.typing.ArrayLike = 0.999,
                        eps: jax.typing.ArrayLike = 1e-8, weight_decay: jax.typing.ArrayLike = 0.0,
                        weight_lr_power: jax.typing.ArrayLike = 2.0,
                        state_dtype: Optional[jax.typing.DTypeLike] = None
                        ) -> _base.GradientTransformationExtraArgs:
  """Schedule-free AdamW: `schedule_free` around RMS scaling (bias-corrected), weight decay and the lr.

  The base optimizer has no momentum: schedule-free averaging plays its part, b1 being the
  interpolation coefficient.

  Args:
    learning_rate: the peak learning rate.
    warmup_steps: length of a linear warmup from 0, or None for none.
    b1: interpolation between the average and z.
    b2: decay of the second moment.
    eps: added to the root of the second moment.
    weight_decay: decoupled weight decay.
    weight_lr_power: the power of the learning rate in the averaging weights.
    state_dtype: dtype of z.

  Returns:
    A GradientTransformationExtraArgs; its update needs params.
  """
  fn = "schedule_free_adamw"
  _errors.check_learning_rate(fn, learning_rate)
  if warmup_steps is not None:
    _errors.check_positive_int(fn, "warmup_steps", warmup_steps)
  _errors.check_number(fn, "b1", b1, low=0.0, high=1.0, low_open=True)
  _errors.check_decay(fn, "b2", b2)
  _errors.check_nonnegative(fn, "eps", eps)
  _errors.check_nonnegative(fn, "weight_decay", weight_decay)
  learning_rate = _warmup(learning_rate, warmup_steps)
  optimizer = chain(scale_by_rms(decay=b2, eps=eps, eps_in_sqrt=False, bias_correction=True),
                    add_decayed_weights(weight_decay), scale_by_learning_rate(learning_rate))
  return _base.rename(schedule_free(optimizer, learning_rate=learning_rate, b1=b1,
                                    weight_lr_power=weight_lr_power, state_dtype=state_dtype), fn)
