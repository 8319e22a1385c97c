"""COCOB-Backprop: learning-rate-free steps from coin betting (Orabona & Tommasi, 2017).

Each coordinate bets a fraction of its accumulated "reward" on the sign of the negative cumulative
gradient ("Training Deep Networks without Learning Rates Through Coin Betting",
https://arxiv.org/abs/1705.07795). The parameters are set, not stepped: the update is the new point
minus the current one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp

from gradxform import _base
from gradxform import _errors
from gradxform import _numerics
from gradxform import _tree
from gradxform._alias import _optimizer
from gradxform._decay import add_decayed_weights
from gradxform._scale import scale_by_learning_rate

__all__ = ["COCOBState", "cocob", "scale_by_cocob"]


class COCOBState(NamedTuple):
  """State of `scale_by_cocob`: the starting point and the per-coordinate betting statistics.

  cumulative_gradients is minus the sum of gradients, scale the largest |g| seen (started at eps),
  subgradients the sum of |g|, reward the wealth won so far.
  """
  init_particles: _base.Updates
  cumulative_gradients: _base.Updates
  scale: _base.Updates
  subgradients: _base.Updates
  reward: _base.Updates


def _cocob_init(params, *, eps, **_):
  zeros = _tree.zeros_like(params)
  scale = _tree.map_updates(lambda z: _numerics.mul(eps, jnp.ones_like(z)), zeros)
  return COCOBState(init_particles=params, cumulative_gradients=zeros, scale=scale, subgradients=zeros,
                    reward=zeros)


def _cocob_update(updates, state, params=None, *, alpha, eps, **extra_args):
  del eps, extra_args
  _errors.expect_state(state, (COCOBState,), "scale_by_cocob")
  _errors.require_params(params, "scale_by_cocob")

  def leaf(g, p0, c, lip, sub, reward, p):
    lip = _numerics.maximum(lip, jnp.abs(g))
    sub = _numerics.add(sub, jnp.abs(g))
    reward = _numerics.maximum(_numerics.sub(reward, _numerics.mul(g, _numerics.sub(p, p0))), 0)
    c = _numerics.sub(c, g)
    # The betting fraction c / (L max(G + L, alpha L)) of the wealth L + R, placed around p0.
    fraction = _numerics.div(c, _numerics.mul(lip, _numerics.maximum(_numerics.add(sub, lip),
                                                                        _numerics.mul(alpha, lip))))
    new_point = _numerics.add(p0, _numerics.mul(fraction, _numerics.add(lip, reward)))
    return _numerics.add(-p, new_point), p0, c, lip, sub, reward

  state_trees = (state.init_particles, state.cumulative_gradients, state.scale, state.subgradients, state.reward)
  updates, (p0, c, lip, sub, reward) = _tree.leafwise(
      leaf, updates, state_trees, (params,),
      state_names=tuple(f"state.{f}" for f in COCOBState._fields), extra_names=("params",))
  return updates, COCOBState(init_particles=p0, cumulative_gradients=c, scale=lip, subgradients=sub,
                             reward=reward)


def scale_by_cocob(alpha: jax.typing.ArrayLike = 100.0,
                   eps: jax.typing.ArrayLike = 1e-8) -> _base.GradientTransformationExtraArgs:
  """COCOB-Backprop: returns p0 + C / (L max(G + L, alpha L)) (L + R) - p for each coordinate.

  C = -sum g, L = max(eps, max |g|), G = sum |g|, R = max(R - g (p - p0), 0). Needs the params.

  Args:
    alpha: bounds the betting fraction early on (large alpha: small first steps).
    eps: initial value of L (keeps the first division finite).

  Returns:
    The transformation; its state is a COCOBState.
  """
  _errors.check_number("scale_by_cocob", "alpha", alpha, low=0.0, low_open=True)
  _errors.check_nonnegative("scale_by_cocob", "eps", eps)
  return _base.transformation("scale_by_cocob", _cocob_init, _cocob_update, alpha=alpha, eps=eps)


def cocob(learning_rate: _base.ScalarOrSchedule = 1.0, alpha: jax.typing.ArrayLike = 100.0,
          eps: jax.typing.ArrayLike = 1e-8, weight_decay: jax.typing.ArrayLike = 0.0,
          mask: Optional[Union[Any, Callable[[_base.Params], Any]]] = None
          ) -> _base.GradientTransformationExtraArgs:
  """COCOB-Backprop: weight decay, gradients scaled by learning_rate (no sign flip), then `scale_by_cocob`.

  Args:
    learning_rate: multiplies the gradients before betting (1 in the paper), a number or a schedule.
    alpha, eps: as in `scale_by_cocob`.
    weight_decay: L2 decay added to the gradients first.
    mask: where to apply the decay (a tree of booleans or a function of the params).

  Returns:
    The optimizer.
  """
  _errors.check_learning_rate("cocob", learning_rate)
  _errors.check_number("cocob", "alpha", alpha, low=0.0, low_open=True)
  _errors.check_nonnegative("cocob", "eps", eps)
  _errors.check_number("cocob", "weight_decay", weight_decay, low=0.0, allow_schedule=True)
  return _optimizer("cocob", add_decayed_weights(weight_decay, mask),
                    scale_by_learning_rate(learning_rate, flip_sign=False), scale_by_cocob(alpha, eps))
