"""GaLore: run an optimizer on low-rank projections of the matrix gradients (Zhao et al., 2024).

Every `update_proj_gap` steps each matrix gradient G (m x n) gives a projector P from its SVD: the
top-`rank` left singular vectors when m >= n, else the right ones. The base optimizer sees
P^T G (or G P), so its state is rank x n (or m x rank), and its output is mapped back with P
(arXiv:2403.03507). Leaves that are not projected go through the base optimizer unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple, Optional, Sequence, Union

import jax
import jax.numpy as jnp

from gradxform import _base
from gradxform import _errors
from gradxform import _numerics
from gradxform._alias import _optimizer
from gradxform._combine import _as_transformation
from gradxform._decay import add_decayed_weights
from gradxform._moments import scale_by_adam
from gradxform._scale import scale_by_learning_rate

__all__ = ["GaLoreDimensionNumbers", "GaLoreState", "galore", "scale_by_galore"]


class GaLoreDimensionNumbers(NamedTuple):
  """Which axes of a weight form the rows (reduction) and columns (output) of its matrix view.

  E.g. attention weights (embed, heads, head_dim) with reduction_axis=0, output_axis=(1, 2) are
  projected as an embed x (heads * head_dim) matrix. Every axis must be named.
  """
  reduction_axis: Union[Sequence[int], int] = 0
  output_axis: Union[Sequence[int], int] = 1


class GaLoreState(NamedTuple):
  """State of GaLore: step count, the base optimizer's (low-rank) state, and the projector of each leaf."""
  count: jax.typing.ArrayLike
  base_optimizer_state: _base.OptState
  projector: _base.Updates


def _is_dim_nums(x: Any) -> bool:
  return isinstance(x, GaLoreDimensionNumbers)


def _is_spec_leaf(x: Any) -> bool:
  return x is None or _is_dim_nums(x)


def _matrix_view(x, dim_nums):
  """(to_matrix, from_matrix): x <-> its (reduction, output) matrix."""
  if x.ndim < 2:
    raise _errors.HyperparameterError(f"projected leaves need rank >= 2, got shape {tuple(x.shape)}")
  def norm(axes):
    return tuple(a % x.ndim for a in ((axes,) if isinstance(axes, int) else axes))
  rows, cols = norm(dim_nums.reduction_axis), norm(dim_nums.output_axis)
  if set(rows) & set(cols):
    raise _errors.HyperparameterError(
        f"reduction axes {rows} and output axes {cols} overlap for shape {tuple(x.shape)}")
  if len(set(rows) | set(cols)) != x.ndim:
    raise _errors.HyperparameterError(
        f"dimension numbers must name every axis, got reduction {rows} and output {cols} for shape "
        f"{tuple(x.shape)}")
  order = rows + cols
  inverse = tuple(order.index(a) for a in range(x.ndim))
  moved = tuple(x.shape[a] for a in order)
  shape2d = (math.prod(x.shape[a] for a in rows), math.prod(x.shape[a] for a in cols))
  return (lambda y: y.transpose(order).reshape(shape2d)), (lambda y: y.reshape(moved).transpose(inverse))


def _dim_nums_for(tree, spec):
  if spec is None:
    return jax.tree.map(lambda p: GaLoreDimensionNumbers() if p.ndim == 2 else None, tree)
  if _is_dim_nums(spec):
    return jax.tree.map(lambda p: spec if p.ndim >= 2 else None, tree)
  if callable(spec):
    return spec(tree)
  return spec


def _low_rank_shapes(m, n, rank):
  r = min(rank, m, n)
  return ((m, r), (r, n)) if m >= n else ((n, r), (m, r))  # (projector, projected gradient)


def _split_pairs(tree, pairs):
  """A tree of (a, b) pairs at the leaves of `tree` -> (tree of a, tree of b)."""
  return jax.tree.transpose(jax.tree.structure(tree), jax.tree.structure((0, 0)), pairs)


def _galore_init(params, *, rank, update_proj_gap, scale, base_optimizer, weight_dimension_numbers, **_):
  del update_proj_gap, scale
  if not jax.tree.leaves(params):
    return GaLoreState(count=jnp.zeros([], jnp.int32), base_optimizer_state=base_optimizer.init(params),
                       projector=params)

  def shapes(p, dim_num):
    if dim_num is None:
      return jnp.zeros((0, 0), dtype=p.dtype), jnp.zeros_like(p)
    m, n = _matrix_view(p, dim_num)[0](p).shape
    projector_shape, proxy_shape = _low_rank_shapes(m, n, rank)
    return jnp.zeros(projector_shape, dtype=p.dtype), jnp.zeros(proxy_shape, dtype=p.dtype)

  pairs = jax.tree.map(shapes, params, _dim_nums_for(params, weight_dimension_numbers), is_leaf=_is_spec_leaf)
  projectors, proxies = _split_pairs(params, pairs)
  return GaLoreState(count=jnp.zeros([], jnp.int32), base_optimizer_state=base_optimizer.init(proxies),
                     projector=projectors)


def _galore_update(updates, state, params=None, *, rank, update_proj_gap, scale, base_optimizer,
                   weight_dimension_numbers, **extra_args):
  del params, extra_args
  _errors.expect_state(state, (GaLoreState,), "scale_by_galore")
  refresh = (state.count % update_proj_gap) == 0
  dim_nums = _dim_nums_for(updates, weight_dimension_numbers)

  def project(g, projector, dim_num):
    if dim_num is None:
      return g, projector
    g2 = _matrix_view(g, dim_num)[0](g)
    m, n = g2.shape
    r = min(rank, m, n)
    left = m >= n

    def fresh():
      # The SVD runs in float32 whatever the gradient dtype; the projector keeps the gradient's.
      u, _, vh = jnp.linalg.svd(g2.astype(jnp.float32), full_matrices=False)
      return (u[:, :r] if left else vh[:r, :].T).astype(g.dtype)

    new_projector = jax.lax.cond(refresh, fresh, lambda: projector)
    return (new_projector.T @ g2 if left else g2 @ new_projector), new_projector

  def back(low, projector, g, dim_num):
    if dim_num is None:
      return low
    to_matrix, from_matrix = _matrix_view(g, dim_num)
    m, n = to_matrix(g).shape
    full = projector @ low if m >= n else low @ projector.T
    return _numerics.mul(scale, from_matrix(full)).astype(g.dtype)

  low_grads, projectors = _split_pairs(
      updates, jax.tree.map(project, updates, state.projector, dim_nums, is_leaf=_is_spec_leaf))
  low_updates, base_state = base_optimizer.update(low_grads, state.base_optimizer_state, None)
  full = jax.tree.map(back, low_updates, projectors, updates, dim_nums, is_leaf=_is_spec_leaf)
  return full, GaLoreState(count=_numerics.safe_increment(state.count), base_optimizer_state=base_state,
                           projector=projectors)


def _check_galore_args(fn, rank, update_proj_gap, scale):
  if not isinstance(rank, int) or isinstance(rank, bool):
    raise _errors.HyperparameterTypeError(f"{fn}: argument `rank` must be an int, got {type(rank).__name__}")
  if rank <= 0:
    raise _errors.HyperparameterError(f"{fn}: argument `rank` must be positive, got {rank}")
  _errors.check_positive_int(fn, "update_proj_gap", update_proj_gap)
  _errors.check_number(fn, "scale", scale)


def scale_by_galore(
    rank: int = 128,
    update_proj_gap: int = 200,
    scale: float = 1.0,
    base_optimizer: Optional[_base.GradientTransformation] = None,
    weight_dimension_numbers: Optional[Any] = None,
) -> _base.GradientTransformationExtraArgs:
  """Runs `base_optimizer` on low-rank projections of the matrix gradients (GaLore's core).

  The base optimizer must only scale gradients (scale_by_adam, scale_by_lion, sgd with rate 1…): it
  sees low-rank shapes and no params, so AdamW, LAMB or LARS do not fit; use `galore`'s weight decay.

  Args:
    rank: target rank of the projection (capped by the matrix dimensions).
    update_proj_gap: the projectors are recomputed from an SVD every this many steps.
    scale: multiplies the projected-back updates (not the unprojected leaves).
    base_optimizer: the optimizer in the low-rank space; None: `scale_by_adam()`.
    weight_dimension_numbers: None (project the 2-D leaves), one GaLoreDimensionNumbers (for every
      leaf of rank >= 2), a tree of them with None for unprojected leaves, or a function of the
      params returning such a tree.

  Returns:
    A gradient transformation.
  """
  _check_galore_args("scale_by_galore", rank, update_proj_gap, scale)
  base = scale_by_adam() if base_optimizer is None else _as_transformation(
      base_optimizer, "scale_by_galore: base_optimizer")
  return _base.transformation("scale_by_galore", _galore_init, _galore_update, rank=rank,
                              update_proj_gap=update_proj_gap, scale=scale, base_optimizer=base,
                              weight_dimension_numbers=weight_dimension_numbers)


def galore(
    learning_rate: _base.ScalarOrSchedule,
    rank: int = 128,
    update_proj_gap: int = 200,
    scale: float = 1.0,
    base_optimizer: Optional[_base.GradientTransformation] = None,
    weight_decay: jax.typing.ArrayLike = 0.0,
    mask: Optional[Union[Any, Callable[[_base.Params], Any]]] = None,
    weight_dimension_numbers: Optional[Any] = None,
) -> _base.GradientTransformationExtraArgs:
  r"""GaLore: memory-efficient training by gradient low-rank projection (Zhao et al., 2024).

  Adam (or `base_optimizer`) runs on R = P^T G (or G P) with P from the SVD of G, refreshed every
  `update_proj_gap` steps; the update is -lr * (scale * P R_hat + weight_decay * params).

  Args:
    learning_rate: step size, a number or a schedule (1.0 if the base optimizer has its own).
    rank: target rank of the projection.
    update_proj_gap: steps between projector refreshes.
    scale: multiplies the projected-back updates.
    base_optimizer: a gradient-only transformation (None: `scale_by_adam()`).
    weight_decay: decoupled weight decay, applied in the full parameter space.
    mask: which params get weight decay (a tree of booleans or a function of the params).
    weight_dimension_numbers: how to see leaves as matrices (see `scale_by_galore`).

  Returns:
    A gradient transformation; its `update` needs `params` when weight_decay is used.
  """
  _check_galore_args("galore", rank, update_proj_gap, scale)
  _errors.check_learning_rate("galore", learning_rate)
  _errors.check_number("galore", "weight_decay", weight_decay, low=0.0, allow_schedule=True)
  return _optimizer("galore",
                    scale_by_galore(rank=rank, update_proj_gap=update_proj_gap, scale=scale,
                                    base_optimizer=base_optimizer,
                                    weight_dimension_numbers=weight_dimension_numbers),
                    add_decayed_weights(weight_decay, mask), scale_by_learning_rate(learning_rate))
