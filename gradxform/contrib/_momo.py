"""MoMo: SGD-momentum and Adam with a Polyak-type adaptive step size (Schaipp et al., 2023).

Both optimizers need the latest loss through `update(..., value=loss)`. They keep a momentum model of
the loss (`barf`, `gamma`) and cap the user's learning rate by the step that would reach a known (or
estimated) lower bound of the loss. The update they return is the whole parameter change, learning
rate and weight decay included.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from gradxform import _base
from gradxform import _errors
from gradxform import _numerics
from gradxform import _tree
from gradxform.tree_utils import tree_dtype, tree_norm, tree_vdot

__all__ = ["MomoAdamState", "MomoState", "momo", "momo_adam"]

# The tiny-norm cut-off: machine epsilon of Python floats (float64), whatever the params' dtype.
_NORM_FLOOR = float(jnp.finfo(float).eps)


class MomoState(NamedTuple):
  """State of `momo`: momentum, the loss and <g, x> models, the lower bound and the step count."""
  exp_avg: _base.Updates
  barf: jax.typing.ArrayLike
  gamma: jax.typing.ArrayLike
  lb: jax.typing.ArrayLike
  count: jax.typing.ArrayLike


class MomoAdamState(NamedTuple):
  """State of `momo_adam`: as `MomoState` plus Adam's second moment."""
  exp_avg: _base.Updates
  exp_avg_sq: _base.Updates
  barf: jax.typing.ArrayLike
  gamma: jax.typing.ArrayLike
  lb: jax.typing.ArrayLike
  count: jax.typing.ArrayLike


def _scalars_init(params, lower_bound):
  """barf, gamma and lb in the params' lowest dtype."""
  dtype = tree_dtype(params, "lowest")
  return jnp.zeros([], dtype), jnp.zeros([], dtype), jnp.array(lower_bound, dtype=dtype)


def _ema(decay, old, new):
  """decay * old + (1 - decay) * new, in the promoted dtype."""
  return _numerics.add(_numerics.mul(decay, old), _numerics.mul(_numerics.sub(1, decay), new))


def _current_lr(learning_rate, count):
  return learning_rate(count) if callable(learning_rate) else learning_rate


def _minimum(a, b):
  a, b = _numerics.promote(a, b)
  return jnp.minimum(a, b)


def _less(a, b):
  a, b = _numerics.promote(a, b)
  return a < b


def _check_call(fn, params, value):
  _errors.require_params(params, fn)
  _errors.require_extra_args(fn, {"value": value}, ("value",))


def _check_momo_args(fn, learning_rate, lower_bound, weight_decay):
  _errors.check_learning_rate(fn, learning_rate)
  _errors.check_number(fn, "lower_bound", lower_bound)
  _errors.check_nonnegative(fn, "weight_decay", weight_decay)


# ----------------------------------------------------------------------------------------------
# momo


def _momo_init(params, *, lower_bound, **_):
  barf, gamma, lb = _scalars_init(params, lower_bound)
  return MomoState(exp_avg=_tree.zeros_like(params), barf=barf, gamma=gamma, lb=lb,
                   count=jnp.zeros([], jnp.int32))


def _momo_update(updates, state, params=None, *, learning_rate, beta, lower_bound, weight_decay,
                 adapt_lower_bound, value=None, **extra_args):
  del extra_args
  _errors.expect_state(state, (MomoState,), "momo")
  _check_call("momo", params, value)
  count = state.count
  # The first step takes the loss and gradient as they are (no averaging with the zero init).
  bt = jnp.where(count == 0, 0.0, beta)
  barf = _ema(bt, state.barf, jnp.asarray(value, dtype=state.barf.dtype))
  exp_avg, _ = _tree.leafwise(lambda g, ea: (_ema(bt, ea, g),), updates, (), (state.exp_avg,),
                              extra_names=("state.exp_avg",))
  gamma = _ema(bt, state.gamma, tree_vdot(updates, params))
  sq_norm = tree_norm(exp_avg, squared=True)
  iprod = tree_vdot(exp_avg, params)
  alpha = _current_lr(learning_rate, count)
  decay_factor = _numerics.add(1, _numerics.mul(alpha, weight_decay))
  if adapt_lower_bound:
    cap = _numerics.add(_numerics.mul(decay_factor, _numerics.sub(barf, gamma)), iprod)
    lowered = _numerics.maximum(_numerics.div(cap, _numerics.mul(2, decay_factor)), lower_bound)
    lb = jax.lax.cond(_less(cap, _numerics.mul(decay_factor, state.lb)), lambda: lowered, lambda: state.lb)
  else:
    lb = state.lb
  polyak = _numerics.add(_numerics.mul(decay_factor, _numerics.sub(_numerics.sub(barf, lb), gamma)), iprod)
  t1 = _numerics.div(jnp.maximum(polyak, 0.0), sq_norm)
  t1 = jnp.where(sq_norm <= _NORM_FLOOR, 0.0, t1)
  tau = _minimum(alpha, t1)
  shrink = _numerics.div(_numerics.mul(alpha, weight_decay), decay_factor)

  def leaf(ea, p):
    return (_numerics.sub(_numerics.mul(-shrink, p), _numerics.mul(tau, ea)),)

  new_updates, _ = _tree.leafwise(leaf, exp_avg, (), (params,), extra_names=("params",))
  if adapt_lower_bound:
    new_lb = _numerics.maximum(
        _numerics.sub(_numerics.sub(_numerics.add(barf, iprod), gamma), _numerics.mul(0.5 * tau, sq_norm)),
        lower_bound)
  else:
    new_lb = state.lb
  return new_updates, MomoState(exp_avg=exp_avg, barf=barf, gamma=gamma, lb=new_lb,
                                count=_numerics.safe_increment(count))


def momo(learning_rate: _base.ScalarOrSchedule = 1.0, beta: jax.typing.ArrayLike = 0.9,
         lower_bound: jax.typing.ArrayLike = 0.0, weight_decay: jax.typing.ArrayLike = 0.0,
         adapt_lower_bound: bool = False) -> _base.GradientTransformationExtraArgs:
  """MoMo: SGD with momentum and the step size min(learning_rate, Polyak step) (Schaipp et al., 2023).

  With d_k the momentum of the gradients, f_k and gamma_k the momentum of the losses and of <g, x>,
  tau = min(lr, max((1 + lr wd)(f_k - lb - gamma_k) + <d_k, x>, 0) / ||d_k||^2) and the update is
  -lr wd / (1 + lr wd) x - tau d_k. Pass the loss as `update(..., value=loss)`.

  Args:
    learning_rate: the largest step size, a number or a schedule (large values are fine: 1.0).
    beta: momentum coefficient of the gradient, loss and <g, x> averages.
    lower_bound: a lower bound of the loss (0 for most losses).
    weight_decay: decoupled weight decay.
    adapt_lower_bound: estimate the lower bound on the fly, starting from `lower_bound`.

  Returns:
    A GradientTransformationExtraArgs whose update needs `value=`.
  """
  _check_momo_args("momo", learning_rate, lower_bound, weight_decay)
  _errors.check_decay("momo", "beta", beta)
  return _base.transformation("momo", _momo_init, _momo_update, learning_rate=learning_rate, beta=beta,
                              lower_bound=lower_bound, weight_decay=weight_decay,
                              adapt_lower_bound=adapt_lower_bound)


# ----------------------------------------------------------------------------------------------
# momo_adam


def _momo_adam_init(params, *, lower_bound, **_):
  barf, gamma, lb = _scalars_init(params, lower_bound)
  return MomoAdamState(exp_avg=_tree.zeros_like(params), exp_avg_sq=_tree.zeros_like(params), barf=barf,
                       gamma=gamma, lb=lb, count=jnp.zeros([], jnp.int32))


def _momo_adam_update(updates, state, params=None, *, learning_rate, b1, b2, eps, lower_bound, weight_decay,
                      adapt_lower_bound, value=None, **extra_args):
  del extra_args
  _errors.expect_state(state, (MomoAdamState,), "momo_adam")
  _check_call("momo_adam", params, value)
  count = state.count
  count_inc = _numerics.safe_increment(count)
  barf = _ema(b1, state.barf, jnp.asarray(value, dtype=state.barf.dtype))
  bc2 = jnp.asarray(1 - _numerics.decay_power(b2, count_inc), dtype=barf.dtype)

  def moments(g, ea, eas):
    new_ea = _ema(b1, ea, g)
    # (1 - b2) * g * g multiplies left to right: in bfloat16 that differs from (1 - b2) * g**2.
    new_eas = _numerics.add(_numerics.mul(b2, eas), _numerics.mul(_numerics.mul(1 - b2, g), g))
    precond = _numerics.add(eps, jnp.sqrt(_numerics.div(new_eas, bc2)))
    return precond, new_ea, new_eas

  # The preconditioner rides in the "updates" slot; the new moments come back as states.
  precond, (exp_avg, exp_avg_sq) = _tree.leafwise(
      moments, updates, (state.exp_avg, state.exp_avg_sq), state_names=("state.exp_avg", "state.exp_avg_sq"))
  weighted, _ = _tree.leafwise(lambda ea, pr: (_numerics.div(ea, pr),), exp_avg, (), (precond,),
                               extra_names=("precond",))
  sq_norm = tree_vdot(exp_avg, weighted)
  gamma = _ema(b1, state.gamma, tree_vdot(updates, params))
  iprod = tree_vdot(exp_avg, params)
  alpha = _current_lr(learning_rate, count)
  bc1 = jnp.asarray(1 - _numerics.decay_power(b1, count_inc), dtype=barf.dtype)
  decay_factor = _numerics.add(1, _numerics.mul(alpha, weight_decay))
  if adapt_lower_bound:
    cap = _numerics.add(_numerics.mul(decay_factor, _numerics.sub(barf, gamma)), iprod)
    lowered = _numerics.maximum(
        _numerics.div(cap, _numerics.mul(_numerics.mul(2, bc1), decay_factor)), lower_bound)
    lowered, old_lb = _numerics.promote(lowered, state.lb)
    lb = jnp.where(_less(cap, _numerics.mul(_numerics.mul(decay_factor, bc1), state.lb)), lowered, old_lb)
  else:
    lb = state.lb
  polyak = _numerics.add(
      _numerics.mul(decay_factor, _numerics.sub(_numerics.sub(barf, _numerics.mul(bc1, lb)), gamma)), iprod)
  t1 = _numerics.div(jnp.maximum(polyak, 0.0), sq_norm)
  t1 = jnp.where(sq_norm <= _NORM_FLOOR, 0.0, t1)
  tau = _minimum(_numerics.div(alpha, bc1), t1)
  shrink = _numerics.div(_numerics.mul(alpha, weight_decay), decay_factor)

  def leaf(ea, pr, p):
    return (_numerics.sub(_numerics.mul(-shrink, p), _numerics.div(_numerics.mul(tau, ea), pr)),)

  new_updates, _ = _tree.leafwise(leaf, exp_avg, (), (precond, params), extra_names=("precond", "params"))
  if adapt_lower_bound:
    new_lb = _numerics.div(
        _numerics.sub(_numerics.sub(_numerics.add(barf, iprod), gamma), _numerics.mul(0.5 * tau, sq_norm)), bc1)
    new_lb = _numerics.maximum(new_lb, lower_bound)
  else:
    new_lb = state.lb
  return new_updates, MomoAdamState(exp_avg=exp_avg, exp_avg_sq=exp_avg_sq, barf=barf, gamma=gamma, lb=new_lb,
                                    count=count_inc)


def momo_adam(learning_rate: _base.ScalarOrSchedule = 1e-2, b1: jax.typing.ArrayLike = 0.9,
              b2: jax.typing.ArrayLike = 0.999, eps: jax.typing.ArrayLike = 1e-8,
              lower_bound: jax.typing.ArrayLike = 0.0, weight_decay: jax.typing.ArrayLike = 0.0,
              adapt_lower_bound: bool = False) -> _base.GradientTransformationExtraArgs:
  """MoMo-Adam: Adam(W) with the step size min(lr / (1 - b1^t), Polyak step) (Schaipp et al., 2023).

  As `momo`, with the momentum preconditioned by D_k = eps + sqrt(v_k / (1 - b2^t)) and the lower bound
  and learning rate rescaled by Adam's first-moment bias correction. Pass the loss as
  `update(..., value=loss)`.

  Args:
    learning_rate: the largest step size, a number or a schedule.
    b1: decay of the first moment (and of the loss and <g, x> averages).
    b2: decay of the second moment.
    eps: added to the preconditioner.
    lower_bound: a lower bound of the loss (0 for most losses).
    weight_decay: decoupled weight decay, as in AdamW.
    adapt_lower_bound: estimate the lower bound on the fly, starting from `lower_bound`.

  Returns:
    A GradientTransformationExtraArgs whose update needs `value=`.
  """
  _check_momo_args("momo_adam", learning_rate, lower_bound, weight_decay)
  _errors.check_decay("momo_adam", "b1", b1)
  _errors.check_decay("momo_adam", "b2", b2)
  _errors.check_nonnegative("momo_adam", "eps", eps)
  return _base.transformation("momo_adam", _momo_adam_init, _momo_adam_update, learning_rate=learning_rate,
                              b1=b1, b2=b2, eps=eps, lower_bound=lower_bound, weight_decay=weight_decay,
                              adapt_lower_bound=adapt_lower_bound)
