"""Root-mean-square scalings: RMSprop (scale_by_rms), centred RMSprop (scale_by_stddev), AdaGrad
(scale_by_rss) and Adadelta. Per-leaf arithmetic, tree walk by `_tree.leafwise`.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from gradxform import _base
from gradxform import _errors
from gradxform import _numerics
from gradxform import _tree
from gradxform._moments import _debias, _keep_dtype, _moving_average, _square, _zero_count


class ScaleByRmsState(NamedTuple):
  """State of `scale_by_rms`: the second moment."""
  nu: _base.Updates


class ScaleByRmsWithCountState(NamedTuple):
  """State of `scale_by_rms(bias_correction=True)`: step count and second moment."""
  count: jax.typing.ArrayLike
  nu: _base.Updates


class ScaleByRStdDevState(NamedTuple):
  """State of `scale_by_stddev`: first and second moments."""
  mu: _base.Updates
  nu: _base.Updates


class ScaleByRStdDevWithCountState(NamedTuple):
  """State of `scale_by_stddev(bias_correction=True)`: step count, first and second moments."""
  count: jax.typing.ArrayLike
  mu: _base.Updates
  nu: _base.Updates


class ScaleByRssState(NamedTuple):
  """State of `scale_by_rss`: the running sum of squared gradients."""
  sum_of_squares: _base.Updates


class ScaleByAdaDeltaState(NamedTuple):
  """State of `scale_by_adadelta`: moving averages of squared gradients (e_g) and squared updates (e_x)."""
  e_g: _base.Updates
  e_x: _base.Updates


def _inverse_root(x, eps, eps_in_sqrt):
  """1 / sqrt(x + eps) if eps_in_sqrt else 1 / (sqrt(x) + eps)."""
  return jax.lax.rsqrt(x + eps) if eps_in_sqrt else 1 / (jnp.sqrt(x) + eps)


def _scale_leaf(scaling, g):
  return _numerics.mul(scaling, g)


def _step_correction(state, decay, bias_correction):
  """(new count, 1 - decay^t) when bias-correcting, else (None, None)."""
  if not bias_correction:
    return None, None
  count = _numerics.safe_increment(state.count)
  return count, _numerics.bias_correction_factor(decay, count)


def _check_rms_args(fn, decay, eps):
  _errors.check_decay(fn, "decay", decay)
  _errors.check_nonnegative(fn, "eps", eps)


# ----------------------------------------------------------------------------------------------
# RMSprop.


def _rms_init(params, *, initial_scale, bias_correction, **_):
  nu = _tree.full_like(params, initial_scale)
  return ScaleByRmsWithCountState(count=_zero_count(), nu=nu) if bias_correction else ScaleByRmsState(nu=nu)


def _rms_update(updates, state, params=None, *, decay, eps, initial_scale, eps_in_sqrt, bias_correction,
                **extra_args):
  del params, extra_args, initial_scale
  _errors.expect_state(state, (ScaleByRmsWithCountState if bias_correction else ScaleByRmsState,),
                       "scale_by_rms")
  count, correction = _step_correction(state, decay, bias_correction)

  def leaf(g, nu):
    new_nu = _moving_average(_square(g), nu, decay)
    nu_hat = _debias(new_nu, correction) if bias_correction else new_nu
    return _scale_leaf(_inverse_root(nu_hat, eps, eps_in_sqrt), g), _keep_dtype(new_nu, nu)

  updates, (nu,) = _tree.leafwise(leaf, updates, (state.nu,), state_names=("state.nu",))
  if bias_correction:
    return updates, ScaleByRmsWithCountState(count=count, nu=nu)
  return updates, ScaleByRmsState(nu=nu)


def scale_by_rms(decay: jax.typing.ArrayLike = 0.9, eps: jax.typing.ArrayLike = 1e-8,
                 initial_scale: jax.typing.ArrayLike = 0.0, eps_in_sqrt: bool = True,
                 bias_correction: bool = False) -> _base.GradientTransformationExtraArgs:
  """RMSprop's scaling: g / sqrt(nu + eps) with nu <- decay nu + (1 - decay) g^2 (Hinton, 2012).

  Args:
    decay: decay of the squared-gradient average, in [0, 1).
    eps: added to nu inside the root (or to the root itself if not `eps_in_sqrt`).
    initial_scale: initial value of nu (1.0 in TensorFlow's RMSprop, 0.0 in PyTorch's).
    eps_in_sqrt: where eps goes, see above.
    bias_correction: divide nu by 1 - decay^t (the state then carries a count).
  """
  _check_rms_args("scale_by_rms", decay, eps)
  return _base.transformation("scale_by_rms", _rms_init, _rms_update, decay=decay, eps=eps,
                              initial_scale=initial_scale, eps_in_sqrt=eps_in_sqrt,
                              bias_correction=bias_correction)


# ----------------------------------------------------------------------------------------------
# Centred RMSprop.


def _stddev_init(params, *, initial_scale, bias_correction, **_):
  mu, nu = _tree.zeros_like(params), _tree.full_like(params, initial_scale)
  if bias_correction:
    return ScaleByRStdDevWithCountState(count=_zero_count(), mu=mu, nu=nu)
  return ScaleByRStdDevState(mu=mu, nu=nu)


def _stddev_update(updates, state, params=None, *, decay, eps, initial_scale, eps_in_sqrt, bias_correction,
                   **extra_args):
  del params, extra_args, initial_scale
  _errors.expect_state(state, (ScaleByRStdDevWithCountState if bias_correction else ScaleByRStdDevState,),
                       "scale_by_stddev")
  count, correction = _step_correction(state, decay, bias_correction)

  def leaf(g, mu, nu):
    new_mu = _moving_average(g, mu, decay)
    new_nu = _moving_average(_square(g), nu, decay)
    mu_hat = _debias(new_mu, correction) if bias_correction else new_mu
    nu_hat = _debias(new_nu, correction) if bias_correction else new_nu
    variance = _numerics.sub(nu_hat, _numerics.abs_sq(mu_hat))  # complex-typed nu minus a real |mu|^2
    return (_scale_leaf(_inverse_root(variance, eps, eps_in_sqrt), g), _keep_dtype(new_mu, mu),
            _keep_dtype(new_nu, nu))

  updates, (mu, nu) = _tree.leafwise(leaf, updates, (state.mu, state.nu), state_names=("state.mu", "state.nu"))
  if bias_correction:
    return updates, ScaleByRStdDevWithCountState(count=count, mu=mu, nu=nu)
  return updates, ScaleByRStdDevState(mu=mu, nu=nu)


def scale_by_stddev(decay: jax.typing.ArrayLike = 0.9, eps: jax.typing.ArrayLike = 1e-8,
                    initial_scale: jax.typing.ArrayLike = 0.0, eps_in_sqrt: bool = True,
                    bias_correction: bool = False) -> _base.GradientTransformationExtraArgs:
  """Centred RMSprop's scaling: g / sqrt(nu - mu^2 + eps), dividing by a running standard deviation (Graves, 2013).

  Args:
    decay, eps, initial_scale, eps_in_sqrt, bias_correction: as in `scale_by_rms`; mu, the running mean
      of g, starts at zero.
  """
  _check_rms_args("scale_by_stddev", decay, eps)
  return _base.transformation("scale_by_stddev", _stddev_init, _stddev_update, decay=decay, eps=eps,
                              initial_scale=initial_scale, eps_in_sqrt=eps_in_sqrt,
                              bias_correction=bias_correction)


# ----------------------------------------------------------------------------------------------
# AdaGrad.


def _rss_init(params, *, initial_accumulator_value, **_):
  return ScaleByRssState(sum_of_squares=_tree.full_like(params, initial_accumulator_value))


def _rss_update(updates, state, params=None, *, initial_accumulator_value, eps, **extra_args):
  del params, extra_args, initial_accumulator_value
  _errors.expect_state(state, (ScaleByRssState,), "scale_by_rss")

  def leaf(g, total):
    new_total = _numerics.add(_numerics.abs_sq(g), total)
    scaling = jnp.where(new_total > 0, jax.lax.rsqrt(new_total + eps), 0.0)
    return _scale_leaf(scaling, g), _keep_dtype(new_total, total)

  updates, (total,) = _tree.leafwise(leaf, updates, (state.sum_of_squares,), state_names=("state.sum_of_squares",))
  return updates, ScaleByRssState(sum_of_squares=total)


def scale_by_rss(initial_accumulator_value: jax.typing.ArrayLike = 0.1,
                 eps: jax.typing.ArrayLike = 1e-7) -> _base.GradientTransformationExtraArgs:
  """AdaGrad's scaling: g / sqrt(sum of all past g^2 + eps) (Duchi et al., 2011).

  Args:
    initial_accumulator_value: starting value of the sum of squares (>= 0).
    eps: added inside the root.
  """
  _errors.check_nonnegative("scale_by_rss", "initial_accumulator_value", initial_accumulator_value)
  _errors.check_nonnegative("scale_by_rss", "eps", eps)
  return _base.transformation("scale_by_rss", _rss_init, _rss_update,
                              initial_accumulator_value=initial_accumulator_value, eps=eps)


# ----------------------------------------------------------------------------------------------
# Adadelta.


def _adadelta_init(params, **_):
  return ScaleByAdaDeltaState(e_g=_tree.zeros_like(params), e_x=_tree.zeros_like(params))


def _adadelta_update(updates, state, params=None, *, rho, eps, **extra_args):
  del params, extra_args
  _errors.expect_state(state, (ScaleByAdaDeltaState,), "scale_by_adadelta")

  def leaf(g, e_g, e_x):
    new_e_g = _moving_average(g ** 2, e_g, rho)
    step = jnp.sqrt(e_x + eps) / jnp.sqrt(new_e_g + eps) * g
    new_e_x = _moving_average(step ** 2, e_x, rho)
    return step, _keep_dtype(new_e_g, e_g), _keep_dtype(new_e_x, e_x)

  updates, (e_g, e_x) = _tree.leafwise(leaf, updates, (state.e_g, state.e_x), state_names=("state.e_g", "state.e_x"))
  return updates, ScaleByAdaDeltaState(e_g=e_g, e_x=e_x)


def scale_by_adadelta(rho: jax.typing.ArrayLike = 0.9,
                      eps: jax.typing.ArrayLike = 1e-6) -> _base.GradientTransformationExtraArgs:
  """Adadelta's scaling: sqrt(E[dx^2] + eps) / sqrt(E[g^2] + eps) * g, no learning rate needed (Zeiler, 2012).

  Args:
    rho: decay of both running averages, in [0, 1).
    eps: added inside both roots.
  """
  _errors.check_decay("scale_by_adadelta", "rho", rho)
  _errors.check_nonnegative("scale_by_adadelta", "eps", eps)
  return _base.transformation("scale_by_adadelta", _adadelta_init, _adadelta_update, rho=rho, eps=eps)
