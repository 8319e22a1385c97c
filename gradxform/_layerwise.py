"""Per-block scalings: trust ratios, parameter-norm and RMS scalings, normalisation, centralisation,
distance-over-gradients and Polyak step sizes.

A "block" is one leaf of the tree (a weight matrix, a bias vector): each of these transformations
computes one scalar per leaf (or one for the whole tree) and multiplies the leaf's update by it.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradxform import _base
from gradxform import _errors
from gradxform import _numerics
from gradxform import _tree

__all__ = [
    "ScaleByDistanceOverGradientsState", "centralize", "normalize_by_update_norm", "scale_by_distance_over_gradients",
    "scale_by_param_block_norm", "scale_by_param_block_rms", "scale_by_polyak", "scale_by_trust_ratio",
]


# ----------------------------------------------------------------------------------------------
# Trust ratio (LARS / LAMB / Fromage).


def _trust_ratio_leaf(u, p, *, min_norm, trust_coefficient, eps):
  p_norm = _numerics.safe_norm(p, min_norm)
  u_norm = _numerics.safe_norm(u, min_norm)
  ratio = _numerics.div(_numerics.mul(trust_coefficient, p_norm), _numerics.add(u_norm, eps))
  # A zero param or zero update (without a min_norm) would freeze the leaf or divide by zero: step as is.
  zero = jnp.logical_or(p_norm == 0.0, u_norm == 0.0)
  one, ratio = _numerics.promote(jnp.array(1.0, _numerics.dtype_of(p)), ratio)
  return (_numerics.mul(u, jnp.where(zero, one, ratio)),)


def _trust_ratio_update(updates, state, params=None, *, min_norm, trust_coefficient, eps, **extra_args):
  del extra_args
  _errors.require_params(params, "scale_by_trust_ratio")
  leaf = lambda u, p: _trust_ratio_leaf(u, p, min_norm=min_norm, trust_coefficient=trust_coefficient, eps=eps)
  updates, _ = _tree.leafwise(leaf, updates, (), (params,), extra_names=("params",))
  return updates, state


def scale_by_trust_ratio(min_norm: jax.typing.ArrayLike = 0.0, trust_coefficient: jax.typing.ArrayLike = 1.0,
                         eps: jax.typing.ArrayLike = 0.0) -> _base.GradientTransformationExtraArgs:
  """Scales each leaf's update by its trust ratio, coef * ||p|| / (||u|| + eps) (You et al., 2017; 2020).

  Norms below `min_norm` count as `min_norm`; where either norm is zero the ratio is 1.

  Args:
    min_norm: floor for both norms (0: no floor).
    trust_coefficient: multiplies the ratio.
    eps: added to the update norm in the denominator.

  Returns:
    A stateless transformation (EmptyState) whose `update` needs `params`.
  """
  fn = "scale_by_trust_ratio"
  _errors.check_nonnegative(fn, "min_norm", min_norm)
  _errors.check_number(fn, "trust_coefficient", trust_coefficient)
  _errors.check_nonnegative(fn, "eps", eps)
  return _base.transformation(fn, _base.init_empty_state, _trust_ratio_update, min_norm=min_norm,
                              trust_coefficient=trust_coefficient, eps=eps)


# ----------------------------------------------------------------------------------------------
# Scaling by the size of the parameter block.


def _param_block_update(updates, state, params=None, *, min_scale, measure, public_name, **extra_args):
  del extra_args
  _errors.require_params(params, public_name)
  updates, _ = _tree.leafwise(lambda u, p: (_numerics.mul(u, measure(p, min_scale)),), updates, (), (params,),
                              extra_names=("params",))
  return updates, state


def scale_by_param_block_norm(min_scale: jax.typing.ArrayLike = 1e-3) -> _base.GradientTransformationExtraArgs:
  """Multiplies each leaf's update by max(||p||, min_scale), the L2 norm of that leaf's parameters.

  Args:
    min_scale: the smallest factor used (keeps zero-initialised blocks moving).

  Returns:
    A stateless transformation whose `update` needs `params`.
  """
  fn = "scale_by_param_block_norm"
  _errors.check_nonnegative(fn, "min_scale", min_scale)
  return _base.transformation(fn, _base.init_empty_state, _param_block_update, min_scale=min_scale,
                              measure=_numerics.safe_norm, public_name=fn)


def scale_by_param_block_rms(min_scale: jax.typing.ArrayLike = 1e-3) -> _base.GradientTransformationExtraArgs:
  """Multiplies each leaf's update by max(rms(p), min_scale), the RMS of that leaf's parameters (as Adafactor does).

  Args:
    min_scale: the smallest factor used (keeps zero-initialised blocks moving).

  Returns:
    A stateless transformation whose `update` needs `params`.
  """
  fn = "scale_by_param_block_rms"
  _errors.check_nonnegative(fn, "min_scale", min_scale)
  return _base.transformation(fn, _base.init_empty_state, _param_block_update, min_scale=min_scale,
                              measure=_numerics.safe_root_mean_squares, public_name=fn)


# ----------------------------------------------------------------------------------------------
# Normalisation and centralisation.


def _normalize_update(updates, state, params=None, *, scale_factor, eps, **extra_args):
  del params, extra_args
  divisor = _numerics.div(_numerics.add(_tree.global_norm(updates), eps), scale_factor)
  return _tree.map_updates(lambda g: _numerics.div(g, divisor), updates), state


def normalize_by_update_norm(scale_factor: jax.typing.ArrayLike = 1.0,
                             eps: jax.typing.ArrayLike = 1e-6) -> _base.GradientTransformationExtraArgs:
  """Divides all updates by their global norm: g * scale_factor / (||g|| + eps).

  Args:
    scale_factor: the norm of the result (up to eps); -1 turns a gradient into a descent direction.
    eps: added to the norm so a zero update stays zero.

  Returns:
    A stateless transformation.
  """
  fn = "normalize_by_update_norm"
  _errors.check_number(fn, "scale_factor", scale_factor)
  _errors.check_nonnegative(fn, "eps", eps)
  return _base.transformation(fn, _base.init_empty_state, _normalize_update, scale_factor=scale_factor, eps=eps)


def _centralize_leaf(g):
  if g.ndim < 2:
    return g
  return g - g.mean(axis=tuple(range(1, g.ndim)), keepdims=True)


def _centralize_update(updates, state, params=None, **extra_args):
  del params, extra_args
  return _tree.map_updates(_centralize_leaf, updates), state


def centralize() -> _base.GradientTransformationExtraArgs:
  """Gradient centralisation (Yong et al., 2020): subtracts from each leaf of rank >= 2 its mean over all
  axes but the first; vectors and scalars pass unchanged.

  Returns:
    A stateless transformation.
  """
  return _base.transformation("centralize", _base.init_empty_state, _centralize_update)


# ----------------------------------------------------------------------------------------------
# Distance over gradients (layer-wise DoG).


class ScaleByDistanceOverGradientsState(NamedTuple):
  """State of `scale_by_distance_over_gradients`: per leaf, the largest distance travelled from the initial
  params, the running sum of squared gradients (shape (1,)), and the initial params."""
  max_dist: _base.OptState
  grad_sum_of_squares: _base.OptState
  init_params: _base.OptState


def _l2_distance(x, y=None):
  diff = x if y is None else _numerics.sub(x, y)
  return jnp.sqrt(jnp.square(diff).sum())


def _dog_init(params, *, reps_rel, param_dtype, **_):
  max_dist = _tree.map_updates(lambda p: _numerics.mul(reps_rel, 1 + _l2_distance(p)), params)
  # One float32 accumulator of shape (1,) per leaf, whatever the leaf's dtype and shape.
  g_sos = _tree.map_updates(lambda p: jnp.zeros(1), params)
  return ScaleByDistanceOverGradientsState(max_dist=max_dist, grad_sum_of_squares=g_sos,
                                           init_params=_tree.cast(params, param_dtype))


def _dog_leaf(g, d, g_sos, p, p0, *, eps, global_scale):
  new_d = _numerics.maximum(d, _l2_distance(p, p0))
  new_g_sos = _numerics.add(g_sos, jnp.square(g).sum())
  eta = _numerics.mul(global_scale, _numerics.div(new_d, jnp.sqrt(_numerics.add(new_g_sos, eps))))
  # eta has shape (1,) (from the accumulator), so a scalar leaf's update has shape (1,), as in optax.
  return _numerics.mul(eta, g), new_d, new_g_sos


def _dog_update(updates, state, params=None, *, reps_rel, eps, param_dtype, global_scale, **extra_args):
  del reps_rel, param_dtype, extra_args
  _errors.expect_state(state, (ScaleByDistanceOverGradientsState,), "scale_by_distance_over_gradients")
  _errors.require_params(params, "scale_by_distance_over_gradients")
  leaf = lambda g, d, s, p, p0: _dog_leaf(g, d, s, p, p0, eps=eps, global_scale=global_scale)
  # No shape checks: the accumulators are (1,) by design, and params broadcast against init_params.
  updates, (max_dist, g_sos) = _tree.leafwise(
      leaf, updates, (state.max_dist, state.grad_sum_of_squares), (params, state.init_params),
      state_names=("state.max_dist", "state.grad_sum_of_squares"), extra_names=("params", "state.init_params"),
      check_shapes=False)
  return updates, ScaleByDistanceOverGradientsState(max_dist=max_dist, grad_sum_of_squares=g_sos,
                                                    init_params=state.init_params)


def scale_by_distance_over_gradients(reps_rel=1e-6, eps=1e-8, param_dtype=jnp.float32,
                                     global_scale=1.0) -> _base.GradientTransformationExtraArgs:
  """Layer-wise DoG, a learning-rate-free step size (Ivgi et al., 2023).

  Per leaf: eta = global_scale * r / sqrt(sum of ||g_s||^2 + eps), where r is the largest distance
  the leaf has moved from its initial value, at least reps_rel * (1 + ||p_0||). Stores one copy of the
  initial params and two scalars per leaf.

  Args:
    reps_rel: sets the first step's distance relative to the initial param norm (1e-6; 1e-4 with batch norm).
    eps: added under the square root.
    param_dtype: dtype of the stored initial params.
    global_scale: multiplies every step (1.0, or -1.0 to descend directly).

  Returns:
    The transformation; its `update` needs `params`.
  """
  fn = "scale_by_distance_over_gradients"
  _errors.check_nonnegative(fn, "reps_rel", reps_rel)
  _errors.check_nonnegative(fn, "eps", eps)
  _errors.check_number(fn, "global_scale", global_scale)
  return _base.transformation(fn, _dog_init, _dog_update, reps_rel=reps_rel, eps=eps,
                              param_dtype=_tree.canonical_dtype(param_dtype), global_scale=global_scale)


# ----------------------------------------------------------------------------------------------
# Polyak step size.

_POLYAK_VARIANTS = ("sps", "sps+")


def _polyak_update(updates, state, params=None, *, f_min, max_learning_rate, eps, variant, value=None,
                   **extra_args):
  del params, extra_args
  _errors.require_extra_args("scale_by_polyak", {"value": value}, ("value",))
  sq_norm = _tree.squared_norm(updates)
  gap = jnp.array(_numerics.sub(value, f_min)).astype(sq_norm.dtype)
  if variant == "sps+":
    gap = jax.nn.relu(gap)
  denominator = _numerics.add(sq_norm, eps)
  step = jnp.minimum(*_numerics.promote(gap / denominator, max_learning_rate))
  # Below double-precision epsilon the gradient is treated as zero: no step rather than a huge one.
  zero, step = _numerics.promote(jnp.array(0.0), step)
  step = jnp.where(denominator <= float(np.finfo(float).eps), zero, step)
  return _tree.map_updates(lambda g: _numerics.mul(step, g), updates), state


def scale_by_polyak(f_min: jax.typing.ArrayLike = 0.0, max_learning_rate: jax.typing.ArrayLike = 1.0,
                    eps: jax.typing.ArrayLike = 0.0, variant: str = "sps") -> _base.GradientTransformationExtraArgs:
  """Scales updates by Polyak's step size, min((f(x) - f_min) / (||g||^2 + eps), max_learning_rate)
  (Loizou et al., 2021).

  Args:
    f_min: a lower bound on the objective (f* in the formula).
    max_learning_rate: the largest step size.
    eps: added to ||g||^2.
    variant: "sps" as above, or "sps+" which clips a negative gap f(x) - f_min to zero
      (Garrigos et al., 2023).

  Returns:
    A transformation whose `update` takes the keyword argument `value`, the objective at the params.
  """
  fn = "scale_by_polyak"
  _errors.check_number(fn, "f_min", f_min)
  _errors.check_nonnegative(fn, "max_learning_rate", max_learning_rate)
  _errors.check_nonnegative(fn, "eps", eps)
  if variant not in _POLYAK_VARIANTS:
    raise _errors.HyperparameterError(f"{fn}: argument `variant` must be one of {_POLYAK_VARIANTS}, got {variant!r}")
  return _base.transformation(fn, _base.init_empty_state, _polyak_update, f_min=f_min,
                              max_learning_rate=max_learning_rate, eps=eps, variant=variant)
