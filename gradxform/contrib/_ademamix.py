"""AdEMAMix and its simplified form: Adam with a mixture of a fast and a slow gradient average.

Pagliardini et al., "The AdEMAMix Optimizer: Better, Faster, Older", 2024
(https://arxiv.org/abs/2409.03137); Morwani et al., "Connections between Schedule-Free Optimizers,
AdEMAMix, and Accelerated SGD Variants", 2025 (https://arxiv.org/abs/2502.02431).
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
from gradxform._adaptive import _elem_norm_moment
from gradxform._alias import _optimizer
from gradxform._decay import add_decayed_weights
from gradxform._moments import _debias, _keep_dtype, _moving_average, _nu_dtype_arg, _widened, _zero_count
from gradxform._scale import scale_by_learning_rate

__all__ = [
    "ScaleByAdemamixState", "ScaleBySimplifiedAdEMAMixState", "ademamix", "scale_by_ademamix",
    "scale_by_simplified_ademamix", "simplified_ademamix",
]

Mask = Optional[Union[Any, Callable[[_base.Params], Any]]]


class ScaleByAdemamixState(NamedTuple):
  """State of `scale_by_ademamix`: two step counts, the fast and slow averages and the second moment."""
  count: jax.typing.ArrayLike
  count_m2: jax.typing.ArrayLike
  m1: _base.Updates
  m2: _base.Updates
  nu: _base.Updates


class ScaleBySimplifiedAdEMAMixState(NamedTuple):
  """State of `scale_by_simplified_ademamix`: step count, the accumulated momentum and the second moment."""
  t: jax.typing.ArrayLike
  m: _base.Updates
  n: _base.Updates


def _value(hyperparam, count):
  """A hyperparameter that may be a schedule, read at `count`."""
  return hyperparam(count) if callable(hyperparam) else hyperparam


# ----------------------------------------------------------------------------------------------
# AdEMAMix.


def _ademamix_init(params, *, mu_dtype, nu_dtype=None, **_):
  # All three buffers take mu_dtype, the second moment included (as optax does), unless nu_dtype is given.
  return ScaleByAdemamixState(count=_zero_count(), count_m2=_zero_count(),
                              m1=_tree.zeros_like(params, dtype=mu_dtype),
                              m2=_tree.zeros_like(params, dtype=mu_dtype),
                              nu=_tree.zeros_like(params, dtype=mu_dtype if nu_dtype is None else nu_dtype))


def _ademamix_update(updates, state, params=None, *, b1, b2, b3, alpha, eps, eps_root, mu_dtype, nu_dtype=None,
                     **extra_args):
  del params, extra_args, mu_dtype
  _errors.expect_state(state, (ScaleByAdemamixState,), "scale_by_ademamix")
  b3_now, alpha_now = _value(b3, state.count_m2), _value(alpha, state.count_m2)
  count = _numerics.safe_increment(state.count)
  count_m2 = _numerics.safe_increment(state.count_m2)
  bc1 = _numerics.bias_correction_factor(b1, count)
  bc2 = _numerics.bias_correction_factor(b2, count)

  widen = nu_dtype is not None

  def leaf(g, m1, m2, nu):
    new_m1 = _moving_average(g, m1, b1)
    new_m2 = _moving_average(g, m2, b3_now)  # the slow average is never debiased: it fills up slowly
    new_nu = _elem_norm_moment(*_widened(g, nu), b2, 2) if widen else _elem_norm_moment(g, nu, b2, 2)
    numerator = _numerics.add(_debias(new_m1, bc1), _numerics.mul(alpha_now, new_m2))
    step = _numerics.div(numerator, jnp.sqrt(_debias(new_nu, bc2) + eps_root) + eps)
    if widen:  # an explicit nu_dtype: kept across steps; the update keeps the dtype of the averages
      return _keep_dtype(step, numerator), new_m1, new_m2, _keep_dtype(new_nu, nu)
    return step, new_m1, new_m2, new_nu

  updates, (m1, m2, nu) = _tree.leafwise(leaf, updates, (state.m1, state.m2, state.nu),
                                         state_names=("state.m1", "state.m2", "state.nu"))
  return updates, ScaleByAdemamixState(count=count, count_m2=count_m2, m1=m1, m2=m2, nu=nu)


def _check_ademamix(fn, b1, b2, b3, alpha, eps, eps_root):
  _errors.check_decay(fn, "b1", b1)
  _errors.check_decay(fn, "b2", b2)
  _errors.check_decay(fn, "b3", b3, allow_schedule=True)
  _errors.check_number(fn, "alpha", alpha, low=0.0, allow_schedule=True)
  _errors.check_nonnegative(fn, "eps", eps)
  _errors.check_nonnegative(fn, "eps_root", eps_root)


def scale_by_ademamix(b1: jax.typing.ArrayLike = 0.9, b2: jax.typing.ArrayLike = 0.999,
                      b3: _base.ScalarOrSchedule = 0.9999, alpha: _base.ScalarOrSchedule = 6.0,
                      eps: jax.typing.ArrayLike = 1e-8, eps_root: jax.typing.ArrayLike = 0.0,
                      mu_dtype: Optional[jax.typing.DTypeLike] = None, *,
                      nu_dtype: jax.typing.DTypeLike | None = None
                      ) -> _base.GradientTransformationExtraArgs:
  """AdEMAMix's scaling: (m1_hat + alpha m2) / (sqrt(nu_hat + eps_root) + eps).

  m1 <- b1 m1 + (1 - b1) g (fast, debiased);  m2 <- b3 m2 + (1 - b3) g (slow, not debiased);
  nu <- b2 nu + (1 - b2) g^2 (debiased). b3 and alpha may be schedules of the step count.

  Args:
    b1: decay of the fast average, in [0, 1).
    b2: decay of the second moment, in [0, 1).
    b3: decay of the slow average, a number or a schedule.
    alpha: weight of the slow average, a number or a schedule.
    eps: added to the denominator outside the square root.
    eps_root: added inside the square root.
    mu_dtype: dtype of the three buffers at initialisation; None keeps the params' dtype.
    nu_dtype: gradxform addition: dtype the second moment is stored in, kept across steps; None gives it
      mu_dtype (as optax does). When given, g^2 and the division are computed at the wider of nu's and the
      gradient's precision, and the update keeps the dtype of the averages.

  Returns:
    The transformation; its state is a ScaleByAdemamixState.
  """
  _check_ademamix("scale_by_ademamix", b1, b2, b3, alpha, eps, eps_root)
  return _base.transformation("scale_by_ademamix", _ademamix_init, _ademamix_update, b1=b1, b2=b2, b3=b3,
                              alpha=alpha, eps=eps, eps_root=eps_root, mu_dtype=_tree.canonical_dtype(mu_dtype),
                              nu_dtype=_nu_dtype_arg("scale_by_ademamix", nu_dtype))


def ademamix(learning_rate: _base.ScalarOrSchedule, b1: jax.typing.ArrayLike = 0.9,
             b2: jax.typing.ArrayLike = 0.999, b3: _base.ScalarOrSchedule = 0.9999,
             alpha: _base.ScalarOrSchedule = 5.0, eps: jax.typing.ArrayLike = 1e-8,
             eps_root: jax.typing.ArrayLike = 0.0, mu_dtype: Optional[Any] = None,
             weight_decay: jax.typing.ArrayLike = 0.0, mask: Mask = None, *,
             nu_dtype: Any | None = None) -> _base.GradientTransformationExtraArgs:
  """AdEMAMix: `scale_by_ademamix`, decoupled weight decay, then the learning rate.

  Note the default alpha is 5 here but 6 in `scale_by_ademamix` (as in optax).

  Args:
    learning_rate: step size, a number or a schedule.
    b1, b2, b3, alpha, eps, eps_root, mu_dtype: as in `scale_by_ademamix`.
    weight_decay: decay rate, multiplied by the learning rate.
    mask: where to apply the decay (a tree of booleans or a function of the params).
    nu_dtype: gradxform addition, as in `scale_by_ademamix` (None: optax's behaviour).

  Returns:
    The optimizer.
  """
  _errors.check_learning_rate("ademamix", learning_rate)
  _check_ademamix("ademamix", b1, b2, b3, alpha, eps, eps_root)
  _errors.check_number("ademamix", "weight_decay", weight_decay, low=0.0, allow_schedule=True)
  _nu_dtype_arg("ademamix", nu_dtype)
  return _optimizer(
      "ademamix",
      scale_by_ademamix(b1=b1, b2=b2, b3=b3, alpha=alpha, eps=eps, eps_root=eps_root, mu_dtype=mu_dtype,
                        nu_dtype=nu_dtype),
      add_decayed_weights(weight_decay, mask), scale_by_learning_rate(learning_rate))


# ----------------------------------------------------------------------------------------------
# Simplified AdEMAMix.


def _simplified_init(params, **_):
  return ScaleBySimplifiedAdEMAMixState(t=_zero_count(), m=_tree.zeros_like(params), n=_tree.zeros_like(params))


def _simplified_update(updates, state, params=None, *, b1, b2, alpha, eps, eps_root, **extra_args):
  del params, extra_args
  _errors.expect_state(state, (ScaleBySimplifiedAdEMAMixState,), "scale_by_simplified_ademamix")
  alpha_now = jnp.asarray(_value(alpha, state.t))
  b1_, b2_ = jnp.asarray(b1), jnp.asarray(b2)
  t = _numerics.safe_increment(state.t)
  correction = _numerics.bias_correction_factor(b2, t)

  def leaf(g, m, n):
    new_m = _numerics.add(g, _numerics.mul(b1_, m))  # an accumulated (not averaged) momentum
    g2 = g * g
    # n <- lerp(g^2, n, b2) = g^2 + b2 (n - g^2), written in this order to round as optax does.
    new_n = _numerics.add(g2, _numerics.mul(b2_, _numerics.sub(n, g2)))
    numerator = _numerics.add(new_m, _numerics.mul(alpha_now, g))
    return _numerics.div(numerator, jnp.sqrt(_debias(new_n, correction) + eps_root) + eps), new_m, new_n

  updates, (m, n) = _tree.leafwise(leaf, updates, (state.m, state.n), state_names=("state.m", "state.n"))
  return updates, ScaleBySimplifiedAdEMAMixState(t=t, m=m, n=n)


def _check_simplified(fn, b1, b2, alpha, eps, eps_root):
  _errors.check_decay(fn, "b1", b1)
  _errors.check_decay(fn, "b2", b2)
  _errors.check_number(fn, "alpha", alpha, low=0.0, allow_schedule=True)
  _errors.check_nonnegative(fn, "eps", eps)
  _errors.check_nonnegative(fn, "eps_root", eps_root)


def scale_by_simplified_ademamix(b1: jax.typing.ArrayLike = 0.99, b2: jax.typing.ArrayLike = 0.95,
                                 alpha: _base.ScalarOrSchedule = 0.0, eps: jax.typing.ArrayLike = 1e-8,
                                 eps_root: jax.typing.ArrayLike = 0.0) -> _base.GradientTransformationExtraArgs:
  """Simplified AdEMAMix's scaling: (m + alpha g) / (sqrt(n_hat + eps_root) + eps).

  m <- b1 m + g (no (1 - b1) factor, no debiasing);  n <- b2 n + (1 - b2) g^2, debiased.
  With alpha = 0 this is Adam with a rescaled learning rate and b1.

  Args:
    b1: decay of the accumulated momentum, in [0, 1).
    b2: decay of the second moment, in [0, 1).
    alpha: weight of the current gradient, a number or a schedule.
    eps: added to the denominator outside the square root.
    eps_root: added inside the square root.

  Returns:
    The transformation; its state is a ScaleBySimplifiedAdEMAMixState.
  """
  _check_simplified("scale_by_simplified_ademamix", b1, b2, alpha, eps, eps_root)
  return _base.transformation("scale_by_simplified_ademamix", _simplified_init, _simplified_update, b1=b1,
                              b2=b2, alpha=alpha, eps=eps, eps_root=eps_root)


def simplified_ademamix(learning_rate: _base.ScalarOrSchedule, b1: jax.typing.ArrayLike = 0.99,
                        b2: jax.typing.ArrayLike = 0.95, alpha: _base.ScalarOrSchedule = 0.0,
                        eps: jax.typing.ArrayLike = 1e-8, eps_root: jax.typing.ArrayLike = 0.0,
                        weight_decay: jax.typing.ArrayLike = 0.0, mask: Mask = None
                        ) -> _base.GradientTransformationExtraArgs:
  """Simplified AdEMAMix: `scale_by_simplified_ademamix`, decoupled weight decay, then the learning rate.

  Args:
    learning_rate: step size, a number or a schedule.
    b1, b2, alpha, eps, eps_root: as in `scale_by_simplified_ademamix`.
    weight_decay: decay rate, multiplied by the learning rate.
    mask: where to apply the decay (a tree of booleans or a function of the params).

  Returns:
    The optimizer.
  """
  _errors.check_learning_rate("simplified_ademamix", learning_rate)
  _check_simplified("simplified_ademamix", b1, b2, alpha, eps, eps_root)
  _errors.check_number("simplified_ademamix", "weight_decay", weight_decay, low=0.0, allow_schedule=True)
  return _optimizer(
      "simplified_ademamix",
      scale_by_simplified_ademamix(b1=b1, b2=b2, alpha=alpha, eps=eps, eps_root=eps_root),
      add_decayed_weights(weight_decay, mask), scale_by_learning_rate(learning_rate))
