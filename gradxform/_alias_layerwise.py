"""Optimizers built on factored, layer-wise, sign-based and Polyak scalings.

Adafactor, LAMB, LARS, Fromage, signSGD, Signum, Rprop and Polyak SGD, each a short chain with
optax 0.2.8's signature and defaults. Arguments are checked under the optimizer's own name.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from gradxform import _base
from gradxform import _errors
from gradxform._alias import Mask, _optimizer, sgd
from gradxform._clip import clip_by_block_rms
from gradxform._combine import masked
from gradxform._decay import add_decayed_weights
from gradxform._factored import scale_by_factored_rms
from gradxform._layerwise import (
  scale_by_param_block_rms,
  scale_by_polyak,
  scale_by_trust_ratio,
)
from gradxform._moments import ema, scale_by_adam, trace
from gradxform._scale import scale, scale_by_learning_rate
from gradxform._sign import scale_by_rprop, scale_by_sign

__all__ = ["adafactor", "fromage", "lamb", "lars", "polyak_sgd", "rprop", "sign_sgd", "signum"]

ArrayLike = jax.typing.ArrayLike


# ----------------------------------------------------------------------------------------------
# Adafactor.


def adafactor(learning_rate: _base.ScalarOrSchedule | None = None, min_dim_size_to_factor: int = 128,
              decay_rate: ArrayLike = 0.8, decay_offset: ArrayLike = 0, multiply_by_parameter_scale: bool = True,
              clipping_threshold: ArrayLike | None = 1.0, momentum: ArrayLike | None = None,
              dtype_momentum: jax.typing.DTypeLike = jnp.float32,
              weight_decay_rate: _base.ScalarOrSchedule | None = None, eps: ArrayLike = 1e-30,
              factored: bool = True, weight_decay_mask: Mask = None) -> _base.GradientTransformationExtraArgs:
  """Adafactor (Shazeer & Stern, 2018): factored second moments, update clipping and relative step sizes.

  The chain is: `scale_by_factored_rms`; clipping of each block's RMS to `clipping_threshold`;
  scaling by the learning rate; by the parameters' block RMS; momentum (an EMA, not debiased);
  decoupled weight decay; and a sign flip to descend. Each optional step is left out when disabled.

  Args:
    learning_rate: step size, a number or a schedule; None leaves the updates unscaled (the paper's
      relative steps come from multiply_by_parameter_scale).
    min_dim_size_to_factor: factor a leaf's statistics only when its second largest axis is this long.
    decay_rate: exponent of the second-moment decay schedule 1 - (t + 1) ** -decay_rate.
    decay_offset: step to start the decay schedule from (for fine-tuning).
    multiply_by_parameter_scale: scale each leaf's step by max(rms(params), 1e-3).
    clipping_threshold: largest RMS of each leaf's update (None: no clipping).
    momentum: EMA coefficient of the updates, or None for none.
    dtype_momentum: dtype of the momentum buffer.
    weight_decay_rate: decoupled weight decay (a number or a schedule), or None.
    eps: added to g^2 in the second moment.
    factored: factor the second moments at all.
    weight_decay_mask: where to apply the weight decay (a tree of booleans or a function of the params).
  """
  fn = "adafactor"
  _errors.check_learning_rate(fn, learning_rate, allow_none=True)
  _errors.check_nonnegative(fn, "min_dim_size_to_factor", min_dim_size_to_factor)
  _errors.check_number(fn, "decay_rate", decay_rate)
  _errors.check_number(fn, "decay_offset", decay_offset)
  _errors.check_number(fn, "clipping_threshold", clipping_threshold, low=0.0, low_open=True, allow_none=True)
  _errors.check_decay(fn, "momentum", momentum, allow_none=True)
  _errors.check_number(fn, "weight_decay_rate", weight_decay_rate, low=0.0, allow_none=True, allow_schedule=True)
  _errors.check_nonnegative(fn, "eps", eps)
  steps = [scale_by_factored_rms(factored, decay_rate, decay_offset, min_dim_size_to_factor, eps)]
  if clipping_threshold is not None:
    steps.append(clip_by_block_rms(clipping_threshold))
  if learning_rate is not None:
    steps.append(scale_by_learning_rate(learning_rate, flip_sign=False))
  if multiply_by_parameter_scale:
    steps.append(scale_by_param_block_rms())
  if momentum is not None:
    steps.append(ema(momentum, debias=False, accumulator_dtype=dtype_momentum))
  if weight_decay_rate is not None:
    steps.append(add_decayed_weights(weight_decay_rate, mask=weight_decay_mask))
  steps.append(scale(-1))
  return _optimizer(fn, *steps)


# ----------------------------------------------------------------------------------------------
# Trust-ratio optimizers.


def lamb(learning_rate: _base.ScalarOrSchedule, b1: ArrayLike = 0.9, b2: ArrayLike = 0.999, eps: ArrayLike = 1e-6,
         eps_root: ArrayLike = 0.0, weight_decay: _base.ScalarOrSchedule = 0.0,
         mask: Mask = None) -> _base.GradientTransformationExtraArgs:
  """LAMB (You et al., 2020): Adam plus decoupled weight decay, each leaf's step rescaled by its trust ratio
  ||p|| / ||u||.

  Args:
    learning_rate: step size, a number or a schedule.
    b1, b2: decay rates of Adam's first and second moments, in [0, 1).
    eps, eps_root: added outside / inside Adam's square root.
    weight_decay: decoupled weight decay rate (a number or a schedule).
    mask: where to apply the weight decay (a tree of booleans or a function of the params).
  """
  fn = "lamb"
  _errors.check_learning_rate(fn, learning_rate)
  _errors.check_decay(fn, "b1", b1)
  _errors.check_decay(fn, "b2", b2)
  _errors.check_nonnegative(fn, "eps", eps)
  _errors.check_nonnegative(fn, "eps_root", eps_root)
  _errors.check_number(fn, "weight_decay", weight_decay, low=0.0, allow_schedule=True)
  return _optimizer(fn, scale_by_adam(b1=b1, b2=b2, eps=eps, eps_root=eps_root),
                    add_decayed_weights(weight_decay=weight_decay, mask=mask), scale_by_trust_ratio(),
                    scale_by_learning_rate(learning_rate))


def lars(learning_rate: _base.ScalarOrSchedule, weight_decay: _base.ScalarOrSchedule = 0.0,
         weight_decay_mask: Mask = True, trust_coefficient: ArrayLike = 0.001, eps: ArrayLike = 0.0,
         trust_ratio_mask: Mask = True, momentum: ArrayLike = 0.9,
         nesterov: bool = False) -> _base.GradientTransformationExtraArgs:
  """LARS (You et al., 2017): SGD with momentum where each leaf's step is scaled by its trust ratio
  trust_coefficient * ||p|| / (||g + wd p|| + eps).

  Args:
    learning_rate: step size, a number or a schedule.
    weight_decay: weight decay added to the gradient before the trust ratio (a number or a schedule).
    weight_decay_mask: where to apply the weight decay (True: everywhere).
    trust_coefficient: multiplies the trust ratio.
    eps: added to the update norm.
    trust_ratio_mask: where to apply the trust ratio (True: everywhere; usually not biases and norms).
    momentum: momentum coefficient, in [0, 1).
    nesterov: Nesterov's form of the momentum.
  """
  fn = "lars"
  _errors.check_learning_rate(fn, learning_rate)
  _errors.check_number(fn, "weight_decay", weight_decay, low=0.0, allow_schedule=True)
  _errors.check_number(fn, "trust_coefficient", trust_coefficient)
  _errors.check_nonnegative(fn, "eps", eps)
  _errors.check_decay(fn, "momentum", momentum)
  return _optimizer(fn, add_decayed_weights(weight_decay, mask=weight_decay_mask),
                    masked(inner=scale_by_trust_ratio(trust_coefficient=trust_coefficient, eps=eps),
                           mask=trust_ratio_mask),
                    scale_by_learning_rate(learning_rate), trace(decay=momentum, nesterov=nesterov))


def _fromage_multiplier(lr):
  """1 / sqrt(1 + lr^2): Fromage's shrinkage of the params, which keeps their norm from growing."""
  return 1 / (1 + lr ** 2) ** 0.5


def _fromage_rate(count, *, learning_rate):
  lr = learning_rate(count)
  return _fromage_multiplier(lr) * lr


def _fromage_decay(count, *, learning_rate):
  return _fromage_multiplier(learning_rate(count)) - 1


def fromage(learning_rate: _base.ScalarOrSchedule,
            min_norm: ArrayLike = 1e-6) -> _base.GradientTransformationExtraArgs:
  """Fromage (Bernstein et al., 2020): steps relative to each leaf's norm, then shrinks the params.

  p <- (p - lr * ||p|| / ||g|| * g) / sqrt(1 + lr^2), written as a trust-ratio step of size
  lr / sqrt(1 + lr^2) and a weight decay of rate 1 / sqrt(1 + lr^2) - 1.

  Args:
    learning_rate: step size, a number or a schedule.
    min_norm: floor for the param and gradient norms in the trust ratio.
  """
  fn = "fromage"
  _errors.check_learning_rate(fn, learning_rate)
  _errors.check_nonnegative(fn, "min_norm", min_norm)
  if callable(learning_rate):
    rate = _base.Bound(_fromage_rate, None, learning_rate=learning_rate)
    decay = _base.Bound(_fromage_decay, None, learning_rate=learning_rate)
  else:
    multiplier = _fromage_multiplier(learning_rate)
    rate, decay = learning_rate * multiplier, multiplier - 1
  return _optimizer(fn, scale_by_trust_ratio(min_norm), scale_by_learning_rate(rate), add_decayed_weights(decay))


# ----------------------------------------------------------------------------------------------
# Sign-based optimizers.


def sign_sgd(learning_rate: _base.ScalarOrSchedule) -> _base.GradientTransformationExtraArgs:
  """signSGD (Bernstein et al., 2018): p <- p - lr * sign(g).

  Args:
    learning_rate: step size, a number or a schedule.
  """
  _errors.check_learning_rate("sign_sgd", learning_rate)
  return _optimizer("sign_sgd", scale_by_sign(), scale_by_learning_rate(learning_rate))


def signum(learning_rate: _base.ScalarOrSchedule, beta: ArrayLike = 0.9,
           accumulator_dtype: Any | None = None) -> _base.GradientTransformationExtraArgs:
  """Signum (Bernstein et al., 2018): signSGD on the momentum, p <- p - lr * sign(m), m an EMA of g.

  Args:
    learning_rate: step size, a number or a schedule.
    beta: EMA coefficient of the momentum, in [0, 1) (no debiasing: only its sign is used).
    accumulator_dtype: dtype of the momentum buffer; None keeps the params' dtype.
  """
  fn = "signum"
  _errors.check_learning_rate(fn, learning_rate)
  _errors.check_decay(fn, "beta", beta)
  return _optimizer(fn, ema(beta, debias=False, accumulator_dtype=accumulator_dtype), scale_by_sign(),
                    scale_by_learning_rate(learning_rate))


def rprop(learning_rate: ArrayLike, eta_minus: ArrayLike = 0.5, eta_plus: ArrayLike = 1.2,
          min_step_size: ArrayLike = 1e-6, max_step_size: ArrayLike = 50.0) -> _base.GradientTransformationExtraArgs:
  """Rprop (Riedmiller & Braun, 1993): per-element step sizes adapted from the gradient's sign changes.
  See `scale_by_rprop`.

  Args:
    learning_rate: the initial step size (a number: Rprop adapts its own step sizes).
    eta_minus, eta_plus: step-size factors after a sign change / while the sign holds.
    min_step_size, max_step_size: bounds on the step sizes.
  """
  fn = "rprop"
  for name, value in (("learning_rate", learning_rate), ("eta_minus", eta_minus), ("eta_plus", eta_plus),
                      ("min_step_size", min_step_size), ("max_step_size", max_step_size)):
    _errors.check_nonnegative(fn, name, value)
  return _optimizer(fn, scale_by_rprop(learning_rate=learning_rate, eta_minus=eta_minus, eta_plus=eta_plus,
                                       min_step_size=min_step_size, max_step_size=max_step_size), scale(-1.0))


# ----------------------------------------------------------------------------------------------
# Polyak step size.


def polyak_sgd(max_learning_rate: ArrayLike = 1.0, scaling: _base.ScalarOrSchedule = 1.0, f_min: ArrayLike = 0.0,
               eps: ArrayLike = 0.0, variant: str = "sps") -> _base.GradientTransformationExtraArgs:
  """SGD with Polyak's step size (Loizou et al., 2021): p <- p - scaling * gamma * g with
  gamma = min((f(p) - f_min) / (scaling^2 ||g||^2 + eps), max_learning_rate).

  Args:
    max_learning_rate: the largest step size gamma.
    scaling: multiplies the gradient before the step size is computed (a number or a schedule).
    f_min: a lower bound on the objective.
    eps: added to the squared norm.
    variant: "sps", or "sps+" which clips a negative gap f(p) - f_min to zero.

  Returns:
    An optimizer whose `update` takes the keyword argument `value`, the objective at the params.
  """
  fn = "polyak_sgd"
  _errors.check_nonnegative(fn, "max_learning_rate", max_learning_rate)
  _errors.check_learning_rate(fn, scaling, name="scaling")
  _errors.check_number(fn, "f_min", f_min)
  _errors.check_nonnegative(fn, "eps", eps)
  if variant not in ("sps", "sps+"):
    raise _errors.HyperparameterError(f"{fn}: argument `variant` must be one of ('sps', 'sps+'), got {variant!r}")
  return _optimizer(fn, sgd(learning_rate=scaling),
                    scale_by_polyak(max_learning_rate=max_learning_rate, f_min=f_min, eps=eps, variant=variant))
