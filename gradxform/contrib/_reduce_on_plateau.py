"""reduce_on_plateau: scale the updates down when the (averaged) loss stops improving."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from gradxform import _base
from gradxform import _errors
from gradxform import _numerics
from gradxform import _tree
from gradxform.tree_utils import tree_dtype

__all__ = ["ReduceLROnPlateauState", "reduce_on_plateau"]


class ReduceLROnPlateauState(NamedTuple):
  """State of `reduce_on_plateau`: the current scale, the best and running-average loss, and counters."""
  scale: jax.typing.ArrayLike
  best_value: jax.typing.ArrayLike
  plateau_count: jax.typing.ArrayLike
  cooldown_count: jax.typing.ArrayLike
  count: jax.typing.ArrayLike
  avg_value: jax.typing.ArrayLike


def _plateau_init(params, **_):
  lowest, highest = tree_dtype(params, "lowest"), tree_dtype(params, "highest")
  return ReduceLROnPlateauState(
      scale=jnp.asarray(1.0, dtype=lowest), best_value=jnp.asarray(float("inf"), dtype=highest),
      plateau_count=jnp.asarray(0, jnp.int32), cooldown_count=jnp.asarray(0, jnp.int32),
      count=jnp.asarray(0, jnp.int32), avg_value=jnp.asarray(0.0, highest))


def _judge(state, *, factor, patience, rtol, atol, cooldown, min_scale):
  """Compares the accumulated average with the best so far and updates scale and counters."""
  avg = state.avg_value
  threshold = _numerics.sub(_numerics.mul(1 - rtol, state.best_value), atol)
  avg_c, threshold = _numerics.promote(avg, threshold)
  improved = avg_c < threshold
  best = jnp.where(improved, avg.astype(state.best_value.dtype), state.best_value)
  plateau = jnp.where(improved, 0, _numerics.safe_increment(state.plateau_count))

  def cooling():
    return jnp.asarray(0, jnp.int32), state.scale, state.cooldown_count - 1

  def watching():
    hit = plateau == patience
    new_plateau = jnp.where(hit, 0, plateau)
    scale = _numerics.maximum(jnp.where(hit, state.scale * factor, state.scale), min_scale)
    return new_plateau, scale, jnp.where(hit, cooldown, 0).astype(jnp.int32)

  plateau, scale, cooldown_count = jax.lax.cond(state.cooldown_count > 0, cooling, watching)
  return ReduceLROnPlateauState(scale=scale, best_value=best.astype(state.best_value.dtype),
                                plateau_count=plateau, cooldown_count=cooldown_count,
                                count=jnp.asarray(0, jnp.int32), avg_value=jnp.asarray(0.0, avg.dtype))


def _plateau_update(updates, state, params=None, *, factor, patience, rtol, atol, cooldown, accumulation_size,
                    min_scale, value=None, **extra_args):
  del params, extra_args
  _errors.expect_state(state, (ReduceLROnPlateauState,), "reduce_on_plateau")
  _errors.require_extra_args("reduce_on_plateau", {"value": value}, ("value",))
  avg_dtype = state.avg_value.dtype
  new_count = _numerics.safe_increment(state.count)
  total = _numerics.add(_numerics.mul(state.count, state.avg_value), jnp.asarray(value).astype(avg_dtype))
  avg = _numerics.div(total, new_count).astype(avg_dtype)
  state = state._replace(avg_value=avg, count=new_count)
  judge = lambda s: _judge(s, factor=factor, patience=patience, rtol=rtol, atol=atol,  # noqa: E731
                           cooldown=cooldown, min_scale=min_scale)
  state = jax.lax.cond(new_count == accumulation_size, judge, lambda s: s, state)
  return _tree.map_updates(lambda g: _numerics.mul(state.scale, g), updates), state


def reduce_on_plateau(factor: float = 0.1, patience: jax.typing.ArrayLike = 10, rtol: float = 1e-4,
                      atol: float = 0.0, cooldown: jax.typing.ArrayLike = 0,
                      accumulation_size: jax.typing.ArrayLike = 1,
                      min_scale: jax.typing.ArrayLike = 0.0) -> _base.GradientTransformationExtraArgs:
  """Multiplies the updates by a scale that drops by `factor` whenever the loss plateaus.

  The loss passed as `update(..., value=loss)` is averaged over `accumulation_size` calls; the average
  improves when it is below (1 - rtol) * best - atol. After `patience` averages without improvement the
  scale is multiplied by `factor` (never below `min_scale`), then `cooldown` averages are ignored.

  Args:
    factor: the scale's multiplier on a plateau, in (0, 1).
    patience: number of averages without improvement that make a plateau.
    rtol: relative improvement needed, in [0, 1].
    atol: absolute improvement needed, >= 0 (rtol and atol cannot both be 0).
    cooldown: number of averages to wait after a reduction before counting again.
    accumulation_size: number of loss values averaged before each comparison.
    min_scale: the smallest scale.

  Returns:
    A GradientTransformationExtraArgs whose update needs `value=`.
  """
  fn = "reduce_on_plateau"
  _errors.check_number(fn, "factor", factor, low=0.0, high=1.0, low_open=True, high_open=True)
  _errors.check_number(fn, "rtol", rtol, low=0.0, high=1.0)
  _errors.check_nonnegative(fn, "atol", atol)
  if _errors.concrete_number(rtol) == 0.0 and _errors.concrete_number(atol) == 0.0:
    raise _errors.HyperparameterError(f"{fn}: arguments `rtol` and `atol` cannot both be 0")
  _errors.check_nonnegative(fn, "patience", patience)
  _errors.check_nonnegative(fn, "cooldown", cooldown)
  _errors.check_positive_int(fn, "accumulation_size", accumulation_size)
  _errors.check_nonnegative(fn, "min_scale", min_scale)
  return _base.transformation(fn, _plateau_init, _plateau_update, factor=factor, patience=patience, rtol=rtol,
                              atol=atol, cooldown=cooldown, accumulation_size=accumulation_size,
                              min_scale=min_scale)
