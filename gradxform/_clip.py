"""Clipping: elementwise, by global norm, by block RMS, unit-wise relative to the parameters (AGC), and
per-example clipping of gradients that carry a leading batch axis (the DP-SGD building blocks)."""

from __future__ import annotations

import math
from typing import Any, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np

from gradxform import _base
from gradxform import _errors
from gradxform import _numerics
from gradxform import _tree

# `unitwise_norm` and `unitwise_clip` are public in optax only as `optax.transforms.*` (not at the top
# level), so they stay out of `__all__`, which the package re-exports at its top level.
__all__ = ["AdaptiveGradClipState", "ClipByGlobalNormState", "ClipState", "adaptive_grad_clip", "clip",
           "clip_by_block_rms", "clip_by_global_norm", "per_example_global_norm_clip",
           "per_example_layer_norm_clip"]

# The clipping transformations are stateless; optax names their (empty) states for readability.
AdaptiveGradClipState = _base.EmptyState
ClipByGlobalNormState = _base.EmptyState
ClipState = _base.EmptyState


def _clip_update(updates, state, params=None, *, max_delta, **extra_args):
  del params, extra_args
  _errors.reject_complex(updates, "clip bounds each element to [-max_delta, max_delta] and complex numbers "
                         "have no order; clip the real and imaginary parts separately, or use clip_by_global_norm")
  return _tree.map_updates(lambda g: jnp.clip(g, -max_delta, max_delta), updates), state


def clip(max_delta: jax.typing.ArrayLike) -> _base.GradientTransformationExtraArgs:
  """Clips every update element to [-max_delta, max_delta].

  Args:
    max_delta: the bound, >= 0.
  """
  _errors.check_nonnegative("clip", "max_delta", max_delta)
  return _base.transformation("clip", _base.init_empty_state, _clip_update, max_delta=max_delta)


def _clip_by_global_norm_update(updates, state, params=None, *, max_norm, **extra_args):
  del params, extra_args
  norm = _tree.global_norm(updates)
  keep = norm < max_norm
  return _tree.map_updates(lambda g: clip_by_global_norm_leaf(g, norm, keep, max_norm), updates), state


def clip_by_global_norm_leaf(g, norm, keep, max_norm):
  """One leaf of `clip_by_global_norm`: g where `keep`, else g / norm * max_norm."""
  # select (not a multiplication by min(1, max_norm / norm)) keeps unclipped updates bit-identical.
  clipped = _numerics.mul(g / norm.astype(g.dtype), max_norm)
  return jax.lax.select(keep, g, clipped)


def clip_by_global_norm(max_norm: jax.typing.ArrayLike) -> _base.GradientTransformationExtraArgs:
  """Rescales all updates together so their global L2 norm is at most `max_norm` (Pascanu et al., 2013).

  g <- g * max_norm / ||g||  where ||g|| >= max_norm, unchanged otherwise; ||g|| is over all leaves.

  Args:
    max_norm: the largest allowed global norm, > 0.
  """
  _errors.check_number("clip_by_global_norm", "max_norm", max_norm, low=0.0, low_open=True)
  return _base.transformation("clip_by_global_norm", _base.init_empty_state, _clip_by_global_norm_update,
                              max_norm=max_norm)


# ----------------------------------------------------------------------------------------------
# Per-leaf (block) RMS clipping.


def _block_rms_leaf(g, threshold):
  rms = jnp.sqrt(jnp.mean(_numerics.abs_sq(g)))
  return _numerics.div(g, _numerics.maximum(1.0, _numerics.div(rms, threshold)))


def _clip_by_block_rms_update(updates, state, params=None, *, threshold, **extra_args):
  del params, extra_args
  return _tree.map_updates(lambda g: _block_rms_leaf(g, threshold), updates), state


def clip_by_block_rms(threshold: jax.typing.ArrayLike) -> _base.GradientTransformationExtraArgs:
  """Scales each update leaf (a weight vector or matrix: a block) down so its RMS is at most `threshold`.

  g <- g / max(1, rms(g) / threshold), rms taken over the elements of one leaf.

  Args:
    threshold: the largest allowed RMS of a leaf, >= 0.

  Returns:
    A stateless transformation.
  """
  _errors.check_nonnegative("clip_by_block_rms", "threshold", threshold)
  return _base.transformation("clip_by_block_rms", _base.init_empty_state, _clip_by_block_rms_update,
                              threshold=threshold)


# ----------------------------------------------------------------------------------------------
# Unit-wise norms and adaptive gradient clipping (Brock et al., 2021).


def _check_axis(fn: str, axis: Any) -> None:
  ok = axis is None or isinstance(axis, (int, np.integer)) and not isinstance(axis, bool) or (
      isinstance(axis, tuple) and all(isinstance(a, (int, np.integer)) and not isinstance(a, bool) for a in axis))
  if not ok:
    raise _errors.HyperparameterTypeError(
        f"{fn}: argument `axis` must be None, an int or a tuple of ints, got {type(axis).__name__} {axis!r}")


def _default_unit_axes(x: jax.Array):
  """The reduction axes that make one "unit" for common layer layouts (None: the whole array)."""
  if sum(d != 1 for d in x.shape) <= 1:  # scalars and vectors, whatever their unit dimensions
    return None
  if x.ndim in (2, 3):  # dense kernels (in, out) and multi-head kernels: reduce over inputs
    return 0
  if x.ndim == 4:  # conv kernels HWIO
    return (0, 1, 2)
  if x.ndim == 5:  # 3-d conv kernels DHWIO
    return (0, 1, 2, 3)
  raise _errors.HyperparameterError(
      f"unitwise_norm: no default unit for an array of shape {tuple(x.shape)} (rank {x.ndim}); defaults "
      "exist for ranks 0 to 5: pass `axis` to name the axes to reduce over")


def unitwise_norm(x: jax.typing.ArrayLike, axis: Optional[Union[int, tuple[int, ...]]] = None) -> jax.Array:
  """The L2 norm of each unit (slice) of `x`, broadcast back to the shape of `x`.

  Without `axis`, a unit is the whole array for scalars and vectors (size-1 dimensions ignored), one
  output column (reduce over axis 0) for rank 2 and 3, and one output channel for convolution kernels
  (reduce over axes (0, 1, 2) for rank 4, (0, 1, 2, 3) for rank 5).

  Args:
    x: the array.
    axis: the axis or axes to reduce over; None for the defaults above.

  Returns:
    An array shaped like `x` holding, at each element, the norm of its unit.
  """
  _check_axis("unitwise_norm", axis)
  x = jnp.asarray(x)
  axes = _default_unit_axes(x) if axis is None else axis
  squared = jnp.sum(_numerics.abs_sq(x), axis=axes, keepdims=True)
  return jnp.broadcast_to(jnp.sqrt(squared), x.shape)


def _check_same_shape(fn: str, name_a: str, a: Any, name_b: str, b: Any) -> None:
  if np.shape(a) != np.shape(b):
    raise _errors.TreeMismatchError(
        f"{fn}: `{name_a}` and `{name_b}` must have the same shape, got {np.shape(a)} and {np.shape(b)}")


def unitwise_clip(g_norm: jax.typing.ArrayLike, max_norm: jax.typing.ArrayLike, grad: jax.typing.ArrayLike,
                  div_eps: jax.typing.ArrayLike = 1e-6) -> jax.Array:
  """Rescales the units of `grad` whose norm reaches `max_norm` down to norm `max_norm`.

  grad <- grad                                    where g_norm < max_norm,
          grad * max_norm / max(g_norm, div_eps)  elsewhere.

  Args:
    g_norm: unit-wise norms of `grad` (from `unitwise_norm`), shaped like `grad`.
    max_norm: unit-wise bounds, shaped like `grad`.
    grad: the gradient.
    div_eps: floor of the divisor, so that zero units do not divide by zero.

  Returns:
    The clipped gradient.
  """
  _check_same_shape("unitwise_clip", "g_norm", g_norm, "max_norm", max_norm)
  _check_same_shape("unitwise_clip", "g_norm", g_norm, "grad", grad)
  ratio = _numerics.div(max_norm, _numerics.maximum(g_norm, div_eps))
  clipped = _numerics.mul(grad, ratio)
  below = jnp.less(*_numerics.promote(g_norm, max_norm))
  return jnp.where(below, *_numerics.promote(grad, clipped))


def _agc_leaf(g, p, *, clipping, eps, axis):
  g_norm = unitwise_norm(g, axis=axis)
  max_norm = _numerics.mul(clipping, _numerics.maximum(unitwise_norm(p, axis=axis), eps))
  return (unitwise_clip(g_norm, max_norm, g),)


def _adaptive_grad_clip_update(updates, state, params=None, *, clipping, eps, axis, **extra_args):
  del extra_args
  _errors.require_params(params, "adaptive_grad_clip")
  leaf = lambda g, p: _agc_leaf(g, p, clipping=clipping, eps=eps, axis=axis)
  updates, _ = _tree.leafwise(leaf, updates, extras=(params,), extra_names=("params",))
  return updates, state


def adaptive_grad_clip(clipping: jax.typing.ArrayLike, eps: jax.typing.ArrayLike = 1e-3,
                       axis: Optional[Union[int, tuple[int, ...]]] = None
                       ) -> _base.GradientTransformationExtraArgs:
  """Adaptive gradient clipping (AGC): clips each unit of an update to `clipping` times its parameter's norm.

  Per unit (see `unitwise_norm`): g <- g * clipping * max(||p||, eps) / ||g|| where
  ||g|| >= clipping * max(||p||, eps). From Brock et al., 2021, "High-Performance Large-Scale Image
  Recognition Without Normalization". Needs `params` at update.

  Args:
    clipping: the largest allowed ratio of a unit's update norm to its parameter norm, >= 0.
    eps: floor of the parameter norm, so that zero-initialised parameters can still move, >= 0.
    axis: the axis or axes that make a unit; None for the defaults of `unitwise_norm`.

  Returns:
    A stateless transformation.
  """
  _errors.check_nonnegative("adaptive_grad_clip", "clipping", clipping)
  _errors.check_nonnegative("adaptive_grad_clip", "eps", eps)
  _check_axis("adaptive_grad_clip", axis)
  return _base.transformation("adaptive_grad_clip", _base.init_empty_state, _adaptive_grad_clip_update,
                              clipping=clipping, eps=eps, axis=axis)


# ----------------------------------------------------------------------------------------------
# Per-example clipping: gradients with a leading batch axis, summed after clipping.


def _check_batch_axis(fn: str, grads: Any) -> None:
  """Every leaf must have rank >= 1 and the same leading (batch) dimension."""
  with_path, _ = jax.tree_util.tree_flatten_with_path(grads)
  if not with_path:
    raise _errors.TreeMismatchError(f"{fn}: `grads` has no array leaves")
  first = None
  for path, g in with_path:
    shape = np.shape(g)
    where = jax.tree_util.keystr(path) or "the root"
    if not shape:
      raise _errors.TreeMismatchError(
          f"{fn}: `grads` must have a leading batch axis on every leaf (per-example gradients), but the "
          f"leaf at {where} is a scalar")
    if first is None:
      first = (where, shape[0])
    elif shape[0] != first[1]:
      raise _errors.TreeMismatchError(
          f"{fn}: every leaf of `grads` must have the same leading batch dimension; the leaf at {first[0]} "
          f"has {first[1]}, the leaf at {where} has shape {shape}")


def _clip_examples(grads: Any, l2_norm_clip: Any) -> tuple[Any, jax.Array]:
  """Sum over the batch of each example's gradient scaled to global norm <= l2_norm_clip; clipped count."""
  norms = jax.vmap(_tree.global_norm)(grads)
  # 0/0 (a zero gradient with a zero bound) and inf/inf give NaN: those examples keep a factor of 1.
  factors = jnp.nan_to_num(jnp.minimum(_numerics.div(l2_norm_clip, norms), 1.0), nan=1.0)
  clipped = jnp.sum(factors < 1.0)
  summed = jax.tree.map(lambda g: jnp.tensordot(*_numerics.promote(factors, g), axes=1), grads)
  return summed, clipped


def per_example_global_norm_clip(grads: _base.ArrayTree, l2_norm_clip: jax.typing.ArrayLike
                                 ) -> tuple[_base.ArrayTree, jax.Array]:
  """Clips each example's gradient to global L2 norm `l2_norm_clip`, then sums over the examples.

  sum_i g_i * min(1, C / ||g_i||), ||g_i|| over all leaves of example i (Abadi et al., 2016, "Deep
  Learning with Differential Privacy").

  Args:
    grads: per-example gradients: every leaf has the same leading batch dimension.
    l2_norm_clip: the bound C on each example's global norm, >= 0.

  Returns:
    (the sum of the clipped gradients, without the batch axis; the number of examples clipped).
  """
  _errors.check_nonnegative("per_example_global_norm_clip", "l2_norm_clip", l2_norm_clip)
  _check_batch_axis("per_example_global_norm_clip", grads)
  return _clip_examples(grads, l2_norm_clip)


def per_example_layer_norm_clip(grads: _base.ArrayTree, global_l2_norm_clip: jax.typing.ArrayLike,
                                uniform: bool = True) -> tuple[_base.ArrayTree, _base.ArrayTree]:
  """Clips each example's gradient leaf by leaf (layer by layer), then sums over the examples.

  With K leaves and C = global_l2_norm_clip, leaf k of every example is clipped to norm C / sqrt(K)
  (`uniform`) or C * sqrt(D_k / D), D_k being the leaf's size per example and D the total (McMahan et
  al., 2017, "Learning Differentially Private Recurrent Language Models"). Either way the clipped
  example's global norm is at most C.

  Args:
    grads: per-example gradients: every leaf has the same leading batch dimension.
    global_l2_norm_clip: the overall bound C, >= 0.
    uniform: split C equally among leaves (True) or in proportion to the square root of their sizes.

  Returns:
    (a tree of per-leaf sums of the clipped gradients; a tree of per-leaf counts of clipped examples).
  """
  _errors.check_nonnegative("per_example_layer_norm_clip", "global_l2_norm_clip", global_l2_norm_clip)
  _check_batch_axis("per_example_layer_norm_clip", grads)
  leaves, treedef = jax.tree.flatten(grads)
  if uniform:
    bounds = [global_l2_norm_clip * (1.0 / len(leaves)) ** 0.5] * len(leaves)
  else:
    sizes = [math.prod(np.shape(g)[1:]) for g in leaves]
    total = sum(sizes)
    bounds = [global_l2_norm_clip * (size / total) ** 0.5 for size in sizes]
  results = [_clip_examples(g, bound) for g, bound in zip(leaves, bounds)]
  return (treedef.unflatten([summed for summed, _ in results]),
          treedef.unflatten([count for _, count in results]))
