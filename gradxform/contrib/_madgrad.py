"""MADGRAD: momentumised, adaptive, dual-averaged gradient method (Defazio & Jelassi, 2021).

A dual-averaging method: the iterate is a cube-root-scaled sum of weighted gradients subtracted from
the starting point, then averaged with the current point ("Adaptivity without Compromise",
https://arxiv.org/abs/2101.11075).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from gradxform import _base
from gradxform import _errors
from gradxform import _numerics
from gradxform import _tree
from gradxform._alias import _optimizer
from gradxform._decay import add_decayed_weights
from gradxform._moments import _zero_count

__all__ = ["MadgradState", "madgrad", "scale_by_madgrad"]


class MadgradState(NamedTuple):
  """State of `scale_by_madgrad`: step count, weighted sums of g^2 and of g, and the starting point."""
  count: jax.Array
  grad_sum_sq: _base.Updates
  s: _base.Updates
  x0: _base.Params


def _madgrad_init(params, **_):
  return MadgradState(count=_zero_count(), grad_sum_sq=_tree.zeros_like(params), s=_tree.zeros_like(params),
                      x0=jax.tree.map(lambda x: x, params))


def _madgrad_update(updates, state, params=None, *, learning_rate, momentum, eps, **extra_args):
  del extra_args
  _errors.expect_state(state, (MadgradState,), "scale_by_madgrad")
  _errors.require_params(params, "scale_by_madgrad")
  lr = learning_rate(state.count) if callable(learning_rate) else learning_rate
  # lambda_k = (lr + eps) sqrt(k + 1): later gradients weigh more in the dual average.
  weight = _numerics.mul(_numerics.add(lr, eps), jnp.sqrt(state.count + 1))

  def leaf(g, sum_sq, s, x0, p):
    sum_sq = sum_sq + _numerics.mul(weight, g ** 2).astype(g.dtype)
    s = s + _numerics.mul(weight, g).astype(g.dtype)
    z = _numerics.sub(x0, _numerics.div(s, jnp.cbrt(sum_sq) + eps))
    new_point = _numerics.add(_numerics.mul(1 - momentum, z), _numerics.mul(momentum, p))
    return _numerics.sub(new_point, p), sum_sq, s

  updates, (sum_sq, s) = _tree.leafwise(leaf, updates, (state.grad_sum_sq, state.s), (state.x0, params),
                                        state_names=("state.grad_sum_sq", "state.s"),
                                        extra_names=("state.x0", "params"))
  return updates, MadgradState(count=_numerics.safe_increment(state.count), grad_sum_sq=sum_sq, s=s, x0=state.x0)


def _check(fn, learning_rate, momentum, eps):
  _errors.check_learning_rate(fn, learning_rate)
  _errors.check_number(fn, "momentum", momentum, low=0.0, high=1.0)
  _errors.check_nonnegative(fn, "eps", eps)


def scale_by_madgrad(learning_rate: _base.ScalarOrSchedule, momentum: float = 0.9,
                     eps: float = 1e-6) -> _base.GradientTransformationExtraArgs:
  """MADGRAD's step: the update that moves the params to (1 - momentum) z + momentum p.

  lambda = (lr + eps) sqrt(k + 1);  S <- S + lambda g^2;  s <- s + lambda g;
  z = x0 - s / (cbrt(S) + eps). Needs the params; the returned update already includes the learning rate.

  Args:
    learning_rate: step size, a number or a schedule of the step count.
    momentum: weight of the current point in the average, in [0, 1].
    eps: added to the learning rate and to the cube root.

  Returns:
    The transformation; its state is a MadgradState.
  """
  _check("scale_by_madgrad", learning_rate, momentum, eps)
  return _base.transformation("scale_by_madgrad", _madgrad_init, _madgrad_update, learning_rate=learning_rate,
                              momentum=momentum, eps=eps)


def madgrad(learning_rate: _base.ScalarOrSchedule, momentum: float = 0.9, weight_decay: float = 0.0,
            eps: float = 1e-6) -> _base.GradientTransformationExtraArgs:
  """The MADGRAD optimizer: L2 weight decay added to the gradients, then `scale_by_madgrad`.

  Args:
    learning_rate: step size, a number or a schedule.
    momentum: as in `scale_by_madgrad`.
    weight_decay: L2 decay added to the gradients.
    eps: as in `scale_by_madgrad`.

  Returns:
    The optimizer.
  """
  _check("madgrad", learning_rate, momentum, eps)
  _errors.check_number("madgrad", "weight_decay", weight_decay, low=0.0, allow_schedule=True)
  return _optimizer("madgrad", add_decayed_weights(weight_decay),
                    scale_by_madgrad(learning_rate=learning_rate, momentum=momentum, eps=eps))
