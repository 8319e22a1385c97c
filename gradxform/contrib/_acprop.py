"""ACProp: AdaBelief's centred second moment, applied asynchronously (Zhuang et al., 2021).

The step at time t divides the current gradient by the root of the centred second moment gathered up
to t - 1, so numerator and denominator are independent (https://arxiv.org/abs/2110.05454).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Optional, Union

import jax
import jax.numpy as jnp

from gradxform import _base
from gradxform import _errors
from gradxform import _numerics
from gradxform import _tree
from gradxform._adaptive import ScaleByBeliefState, _elem_norm_moment
from gradxform._alias import _optimizer
from gradxform._decay import add_decayed_weights
from gradxform._moments import _debias, _moving_average, _zero_count
from gradxform._scale import scale_by_learning_rate

__all__ = ["acprop", "scale_by_acprop"]


def _acprop_init(params, **_):
  return ScaleByBeliefState(count=_zero_count(), mu=_tree.zeros_like(params), nu=_tree.zeros_like(params))


def _acprop_update(updates, state, params=None, *, b1, b2, eps, eps_root, **extra_args):
  del params, extra_args
  _errors.expect_state(state, (ScaleByBeliefState,), "scale_by_acprop")
  first = state.count == 0
  count = _numerics.safe_increment(state.count)
  # The denominator is the previous step's moment; at the first step there is none, so it is 1.
  correction = _numerics.bias_correction_factor(b2, jnp.where(first, count, state.count))

  def leaf(g, mu, nu):
    new_mu = _moving_average(g, mu, b1)
    new_nu = _numerics.add(_elem_norm_moment(_numerics.sub(g, mu), nu, b2, 2), eps_root)
    nu_hat = jnp.where(first, 1, _debias(nu, correction))
    return _numerics.div(g, jnp.sqrt(nu_hat) + eps), new_mu, new_nu

  updates, (mu, nu) = _tree.leafwise(leaf, updates, (state.mu, state.nu), state_names=("state.mu", "state.nu"))
  return updates, ScaleByBeliefState(count=count, mu=mu, nu=nu)


def _check(fn, b1, b2, eps, eps_root):
  _errors.check_decay(fn, "b1", b1)
  _errors.check_decay(fn, "b2", b2)
  _errors.check_nonnegative(fn, "eps", eps)
  _errors.check_nonnegative(fn, "eps_root", eps_root)


def scale_by_acprop(b1: jax.typing.ArrayLike = 0.9, b2: jax.typing.ArrayLike = 0.999,
                    eps: jax.typing.ArrayLike = 1e-16,
                    eps_root: jax.typing.ArrayLike = 1e-16) -> _base.GradientTransformationExtraArgs:
  """ACProp's scaling: g_t / (sqrt(s_hat_{t-1}) + eps), the denominator lagging one step.

  m <- b1 m + (1 - b1) g;  s <- b2 s + (1 - b2) (g - m_prev)^2 + eps_root;  s_hat = s / (1 - b2^t).
  At the first step the denominator is 1 + eps.

  Args:
    b1: decay of the gradient average, in [0, 1).
    b2: decay of the squared prediction error, in [0, 1).
    eps: added to the denominator outside the square root.
    eps_root: added to s at every step (keeps meta-gradients finite).

  Returns:
    The transformation; its state is a ScaleByBeliefState.
  """
  _check("scale_by_acprop", b1, b2, eps, eps_root)
  return _base.transformation("scale_by_acprop", _acprop_init, _acprop_update, b1=b1, b2=b2, eps=eps,
                              eps_root=eps_root)


def acprop(learning_rate: _base.ScalarOrSchedule, b1: jax.typing.ArrayLike = 0.9,
           b2: jax.typing.ArrayLike = 0.999, eps: jax.typing.ArrayLike = 1e-16,
           eps_root: jax.typing.ArrayLike = 1e-16, weight_decay: jax.typing.ArrayLike = 0.0,
           mask: Optional[Union[Any, Callable[[_base.Params], Any]]] = None
           ) -> _base.GradientTransformationExtraArgs:
  """The ACProp optimizer: `scale_by_acprop`, decoupled weight decay, then the learning rate.

  Zhuang et al., "Momentum Centering and Asynchronous Update for Adaptive Gradient Methods", 2021.

  Args:
    learning_rate: step size, a number or a schedule.
    b1, b2, eps, eps_root: as in `scale_by_acprop`.
    weight_decay: decay rate, multiplied by the learning rate (as PyTorch does).
    mask: where to apply the decay (a tree of booleans or a function of the params).

  Returns:
    The optimizer.
  """
  _errors.check_learning_rate("acprop", learning_rate)
  _check("acprop", b1, b2, eps, eps_root)
  _errors.check_number("acprop", "weight_decay", weight_decay, low=0.0, allow_schedule=True)
  return _optimizer("acprop", scale_by_acprop(b1=b1, b2=b2, eps=eps, eps_root=eps_root),
                    add_decayed_weights(weight_decay, mask), scale_by_learning_rate(learning_rate))
