"""Adafactor's factored second-moment scaling (Shazeer & Stern, 2018).

For a matrix-like leaf the running mean of g^2 is kept as a row vector and a column vector (their
outer product, normalised, estimates the full matrix), so memory grows with rows + columns instead of
rows * columns. Leaves too small to factor keep a full per-element average, as RMSprop does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from gradxform import _base
from gradxform import _errors
from gradxform import _numerics
from gradxform import _tree

__all__ = ["FactoredState", "scale_by_factored_rms"]


class FactoredState(NamedTuple):
  """State of `scale_by_factored_rms`.

  `v_row` and `v_col` hold the factored averages of factored leaves, `v` the full average of the
  others; every slot a leaf does not use holds a placeholder of shape (1,) in the param's dtype.
  """
  count: jax.typing.ArrayLike
  v_row: _base.ArrayTree
  v_col: _base.ArrayTree
  v: _base.ArrayTree


def _decay_rate_pow(i: jax.typing.ArrayLike, exponent: jax.typing.ArrayLike = 0.8) -> jax.Array:
  """Adafactor's second-moment decay at step i: 1 - (i + 1) ** -exponent (it tends to 1)."""
  t = jnp.array(i + 1, jnp.float32)
  return 1.0 - t ** (-exponent)


def _factor_axes(shape: tuple, factored: bool, min_dim_size_to_factor: int) -> Optional[tuple[int, int]]:
  """(second largest axis, largest axis) of a leaf to factor over, or None to keep a full average.

  A leaf is factored only if it has two or more axes and the second largest is at least
  `min_dim_size_to_factor` long. Ties are ordered as numpy's argsort orders them.
  """
  if not factored or len(shape) < 2:
    return None
  order = np.argsort(shape)
  if shape[order[-2]] < min_dim_size_to_factor:
    return None
  return int(order[-2]), int(order[-1])


def _placeholder(dtype) -> jax.Array:
  return jnp.zeros((1,), dtype)


def _without_axis(shape: tuple, axis: int) -> tuple:
  return shape[:axis] + shape[axis + 1:]


def _init_leaf(p, factored, min_dim_size_to_factor):
  """(v_row, v_col, v) zeros for one param leaf."""
  shape, dtype = tuple(np.shape(p)), _numerics.dtype_of(p)
  axes = _factor_axes(shape, factored, min_dim_size_to_factor)
  if axes is None:
    return _placeholder(dtype), _placeholder(dtype), _tree.zeros_like(p)
  small, large = axes
  # The row statistic averages over the largest axis, the column statistic over the other one. Sums of
  # param-tied zeros (not fresh jnp.zeros): they keep the sharding of the param's remaining axes, also under jit.
  zeros = _tree.zeros_like(p, dtype)
  return zeros.sum(axis=large), zeros.sum(axis=small), _placeholder(dtype)


def _state_shapes(shape: tuple, axes: Optional[tuple[int, int]]) -> tuple[tuple, tuple, tuple]:
  """The shapes `_init_leaf` gives (v_row, v_col, v) for a param of `shape`."""
  if axes is None:
    return (1,), (1,), shape
  small, large = axes
  return _without_axis(shape, large), _without_axis(shape, small), (1,)


def _check_state_shapes(updates, state, params, factored, min_dim_size_to_factor):
  """Names the leaf where the state was not made for these params (trace time; the per-leaf math would
  otherwise fail deep inside jax with a broadcasting error, or not at all)."""
  g_leaves, treedef = _tree.flatten(updates)
  names = ("params", "state.v_row", "state.v_col", "state.v")
  columns = [_tree.leaves_matching(treedef, tree, "updates", updates, name)
             for tree, name in zip((params, state.v_row, state.v_col, state.v), names)]
  for i, (g, p, *slots) in enumerate(zip(g_leaves, *columns)):
    if g is None or p is None:
      continue
    shape = tuple(np.shape(p))
    if tuple(np.shape(g)) != shape:
      _errors.raise_shape_mismatch("updates", "params", _tree.leaf_paths(updates)[i], np.shape(g), shape)
    wanted = _state_shapes(shape, _factor_axes(shape, factored, min_dim_size_to_factor))
    for name, slot, want in zip(names[1:], slots, wanted):
      if tuple(np.shape(slot)) != want:
        raise _errors.TreeMismatchError(
            f"params and {name} differ at {_tree.leaf_paths(updates)[i]}: params of shape {shape} need {name} "
            f"of shape {want}, got {tuple(np.shape(slot))} (was the state made by init for other params?)")


def _factored_init(params, *, factored, min_dim_size_to_factor, **_):
  p_leaves, treedef = _tree.flatten(params)
  rows, cols, fulls = [], [], []
  for p in p_leaves:
    row, col, full = (None, None, None) if p is None else _init_leaf(p, factored, min_dim_size_to_factor)
    rows.append(row)
    cols.append(col)
    fulls.append(full)
  return FactoredState(count=jnp.zeros([], jnp.int32), v_row=treedef.unflatten(rows),
                       v_col=treedef.unflatten(cols), v=treedef.unflatten(fulls))


def _blend(decay, old, new):
  """decay * old + (1 - decay) * new in the promoted dtype (the step's decay is float32)."""
  return _numerics.add(_numerics.mul(decay, old), _numerics.mul(1.0 - decay, new))


def _factored_leaf(g, v_row, v_col, v, p, *, decay, axes, epsilon):
  """One leaf: new (update, v_row, v_col, v); unused slots get fresh (1,) placeholders."""
  dtype = _numerics.dtype_of(p)
  g_sq = _numerics.add(_numerics.abs_sq(g), epsilon)
  if axes is None:
    new_v = _blend(decay, v, g_sq).astype(dtype)
    update = _numerics.mul(g, new_v ** -0.5)
    return update, _placeholder(dtype), _placeholder(dtype), new_v
  small, large = axes
  new_row = _blend(decay, v_row, jnp.mean(g_sq, axis=large)).astype(dtype)
  new_col = _blend(decay, v_col, jnp.mean(g_sq, axis=small)).astype(dtype)
  # In v_row the largest axis is gone, so the small axis shifts left if it came after it.
  small_in_row = small - 1 if small > large else small
  row_factor = (new_row / jnp.mean(new_row, axis=small_in_row, keepdims=True)) ** -0.5
  col_factor = new_col ** -0.5
  update = _numerics.mul(_numerics.mul(g, jnp.expand_dims(row_factor, axis=large)),
                         jnp.expand_dims(col_factor, axis=small))
  return update, new_row, new_col, _placeholder(dtype)


def _factored_update(updates, state, params=None, *, factored, decay_rate, step_offset, min_dim_size_to_factor,
                     epsilon, decay_rate_fn, **extra_args):
  del extra_args
  _errors.expect_state(state, (FactoredState,), "scale_by_factored_rms")
  _errors.require_params(params, "scale_by_factored_rms")
  _check_state_shapes(updates, state, params, factored, min_dim_size_to_factor)
  decay = decay_rate_fn(state.count - step_offset, decay_rate)

  def leaf(g, v_row, v_col, v, p):
    axes = _factor_axes(tuple(np.shape(p)), factored, min_dim_size_to_factor)
    return _factored_leaf(g, v_row, v_col, v, p, decay=decay, axes=axes, epsilon=epsilon)

  updates, (v_row, v_col, v) = _tree.leafwise(
      leaf, updates, (state.v_row, state.v_col, state.v), (params,),
      state_names=("state.v_row", "state.v_col", "state.v"), extra_names=("params",), check_shapes=False)
  return updates, FactoredState(count=_numerics.safe_increment(state.count), v_row=v_row, v_col=v_col, v=v)


def scale_by_factored_rms(
    factored: bool = True,
    decay_rate: jax.typing.ArrayLike = 0.8,
    step_offset: jax.typing.ArrayLike = 0,
    min_dim_size_to_factor: int = 128,
    epsilon: jax.typing.ArrayLike = 1e-30,
    decay_rate_fn: Callable[[jax.typing.ArrayLike, jax.typing.ArrayLike], jax.typing.ArrayLike] = _decay_rate_pow,
) -> _base.GradientTransformationExtraArgs:
  """Divides updates by a factored running RMS of the gradients, Adafactor's scaling (Shazeer & Stern, 2018).

  With s = g^2 + epsilon and beta_t = decay_rate_fn(t - step_offset, decay_rate), a factored leaf keeps
  R <- beta_t R + (1 - beta_t) mean(s, over the largest axis) and C likewise over the second largest;
  the update is g / sqrt(R C / mean(R)). Other leaves keep V <- beta_t V + (1 - beta_t) s and give
  g / sqrt(V). The statistics are stored in the param's dtype.

  Args:
    factored: factor the statistics of leaves with two or more axes (False: always a full average).
    decay_rate: the parameter passed to `decay_rate_fn` (the exponent of the default schedule).
    step_offset: subtracted from the step count before `decay_rate_fn` (for fine-tuning from a step).
    min_dim_size_to_factor: factor only when the second largest axis is at least this long.
    epsilon: added to g^2 before averaging.
    decay_rate_fn: (step, decay_rate) -> beta_t; by default 1 - (step + 1) ** -decay_rate. A bounded
      schedule avoids the second moment freezing as beta_t -> 1 (Zhai et al., 2021).

  Returns:
    The transformation; its `update` needs `params` (their shapes decide which leaves are factored).
  """
  fn = "scale_by_factored_rms"
  _errors.check_number(fn, "decay_rate", decay_rate)
  _errors.check_number(fn, "step_offset", step_offset)
  _errors.check_nonnegative(fn, "min_dim_size_to_factor", min_dim_size_to_factor)
  _errors.check_nonnegative(fn, "epsilon", epsilon)
  if not callable(decay_rate_fn):
    raise _errors.HyperparameterTypeError(
        f"{fn}: argument `decay_rate_fn` must be a function (step, decay_rate) -> decay, "
        f"got {type(decay_rate_fn).__name__}")
  return _base.transformation(fn, _factored_init, _factored_update, factored=factored, decay_rate=decay_rate,
                              step_offset=step_offset, min_dim_size_to_factor=min_dim_size_to_factor,
                              epsilon=epsilon, decay_rate_fn=decay_rate_fn)
