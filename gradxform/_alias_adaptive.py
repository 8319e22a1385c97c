"""Optimizers built on the adaptive-moment scalings: AdaBelief, Yogi, Adan, NovoGrad, Lion, optimistic
gradient methods, SM3 and noisy SGD.

Signatures and defaults are optax 0.2.8's. Each alias checks its arguments under its own name, then
chains its pieces (scaling, optional weight decay, learning rate).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, Optional, Union

import jax

from gradxform import _base
from gradxform import _errors
from gradxform._adaptive import (scale_by_adan, scale_by_belief, scale_by_lion, scale_by_novograd,
                                 scale_by_optimistic_gradient, scale_by_sm3, scale_by_yogi)
from gradxform._alias import _check_adam_family, _optimizer
from gradxform._decay import add_decayed_weights, add_noise
from gradxform._moments import _nu_dtype_arg, scale_by_adam
from gradxform._scale import scale, scale_by_learning_rate

__all__ = ["adabelief", "adan", "lion", "noisy_sgd", "novograd", "optimistic_adam", "optimistic_adam_v2",
           "optimistic_gradient_descent", "sm3", "yogi"]

ArrayLike = jax.typing.ArrayLike
Mask = Optional[Union[Any, Callable[[_base.Params], Any]]]


def _check_weight_decay(name, weight_decay):
  _errors.check_number(name, "weight_decay", weight_decay, low=0.0, allow_schedule=True)


def adabelief(learning_rate: _base.ScalarOrSchedule, b1: ArrayLike = 0.9, b2: ArrayLike = 0.999,
              eps: ArrayLike = 1e-16, eps_root: ArrayLike = 1e-16, *,
              nesterov: bool = False) -> _base.GradientTransformationExtraArgs:
  """AdaBelief: Adam dividing by the spread of g around its average (Zhuang et al., 2020). See `scale_by_belief`.

  Args:
    learning_rate: step size, a number or a schedule.
    b1, b2: decay rates of the first moment and of the squared prediction error, in [0, 1).
    eps: added to the denominator outside the square root.
    eps_root: added to the second moment at every step.
    nesterov: Nesterov momentum on the first moment.

  Returns:
    The optimizer (a chain of scale_by_belief and the learning rate).
  """
  _check_adam_family("adabelief", learning_rate, b1, b2, eps, eps_root)
  return _optimizer("adabelief", scale_by_belief(b1=b1, b2=b2, eps=eps, eps_root=eps_root, nesterov=nesterov),
                    scale_by_learning_rate(learning_rate))


def yogi(learning_rate: _base.ScalarOrSchedule, b1: ArrayLike = 0.9, b2: ArrayLike = 0.999,
         eps: ArrayLike = 1e-3) -> _base.GradientTransformationExtraArgs:
  """Yogi: Adam with an additive, sign-controlled second-moment update (Zaheer et al., 2018). See `scale_by_yogi`.

  Args:
    learning_rate: step size, a number or a schedule.
    b1, b2: decay rates of the first and second moments, in [0, 1).
    eps: added to the denominator outside the square root.

  Returns:
    The optimizer (a chain of scale_by_yogi and the learning rate).
  """
  _check_adam_family("yogi", learning_rate, b1, b2, eps)
  return _optimizer("yogi", scale_by_yogi(b1=b1, b2=b2, eps=eps), scale_by_learning_rate(learning_rate))


def adan(learning_rate: _base.ScalarOrSchedule, b1: ArrayLike = 0.98, b2: ArrayLike = 0.92, b3: ArrayLike = 0.99,
         eps: ArrayLike = 1e-8, eps_root: ArrayLike = 1e-8, weight_decay: _base.ScalarOrSchedule = 0.0,
         mask: Mask = None) -> _base.GradientTransformationExtraArgs:
  """Adan: adaptive Nesterov momentum from gradient differences (Xie et al., 2022). See `scale_by_adan`.

  Args:
    learning_rate: step size, a number or a schedule.
    b1, b2, b3: decays of the gradient, gradient-difference and squared-term averages, in [0, 1).
    eps, eps_root: added outside / inside the square root.
    weight_decay: decoupled weight decay (times the learning rate), a number or a schedule.
    mask: where to decay: a tree of booleans like the params, or a function params -> such a tree.

  Returns:
    The optimizer (scale_by_adan, add_decayed_weights, learning rate).
  """
  _check_adam_family("adan", learning_rate, b1, b2, eps, eps_root, weight_decay)
  _errors.check_decay("adan", "b3", b3)
  return _optimizer("adan", scale_by_adan(b1=b1, b2=b2, b3=b3, eps=eps, eps_root=eps_root),
                    add_decayed_weights(weight_decay, mask), scale_by_learning_rate(learning_rate))


def novograd(learning_rate: _base.ScalarOrSchedule, b1: ArrayLike = 0.9, b2: ArrayLike = 0.25,
             eps: ArrayLike = 1e-6, eps_root: ArrayLike = 0.0,
             weight_decay: _base.ScalarOrSchedule = 0.0) -> _base.GradientTransformationExtraArgs:
  """NovoGrad: momentum on gradients normalised by per-leaf norm averages (Ginsburg et al., 2019).

  See `scale_by_novograd`; the update needs the params.

  Args:
    learning_rate: step size, a number or a schedule.
    b1: momentum coefficient, in [0, 1).
    b2: decay of the squared-norm average, in [0, 1).
    eps, eps_root: added outside / inside the square root.
    weight_decay: coefficient of the params added inside the momentum (a number: optax annotates a
      schedule, but its scaling multiplies the params by it directly).

  Returns:
    The optimizer (a chain of scale_by_novograd and the learning rate).
  """
  _check_adam_family("novograd", learning_rate, b1, b2, eps, eps_root)
  _errors.check_nonnegative("novograd", "weight_decay", weight_decay)
  return _optimizer("novograd", scale_by_novograd(b1=b1, b2=b2, eps=eps, eps_root=eps_root,
                                                  weight_decay=weight_decay),
                    scale_by_learning_rate(learning_rate))


def lion(learning_rate: _base.ScalarOrSchedule, b1: ArrayLike = 0.9, b2: ArrayLike = 0.99,
         mu_dtype: Optional[Any] = None, weight_decay: _base.ScalarOrSchedule = 1e-3,
         mask: Mask = None) -> _base.GradientTransformationExtraArgs:
  """Lion: signed momentum steps with decoupled weight decay (Chen et al., 2023). See `scale_by_lion`.

  Lion's steps have unit size per coordinate, so its learning rate is usually 3-10x smaller than Adam's.

  Args:
    learning_rate: step size, a number or a schedule.
    b1: weight of the momentum in the update direction, in [0, 1].
    b2: decay of the momentum, in [0, 1).
    mu_dtype: dtype of the momentum (None: the dtype the arithmetic gives).
    weight_decay: decoupled weight decay (times the learning rate), a number or a schedule.
    mask: where to decay: a tree of booleans like the params, or a function params -> such a tree.

  Returns:
    The optimizer (scale_by_lion, add_decayed_weights, learning rate).
  """
  _errors.check_learning_rate("lion", learning_rate)
  _errors.check_number("lion", "b1", b1, low=0.0, high=1.0)
  _errors.check_decay("lion", "b2", b2)
  _check_weight_decay("lion", weight_decay)
  return _optimizer("lion", scale_by_lion(b1=b1, b2=b2, mu_dtype=mu_dtype), add_decayed_weights(weight_decay, mask),
                    scale_by_learning_rate(learning_rate))


def optimistic_gradient_descent(learning_rate: _base.ScalarOrSchedule, alpha: _base.ScalarOrSchedule = 1.0,
                                beta: _base.ScalarOrSchedule = 1.0) -> _base.GradientTransformationExtraArgs:
  """Optimistic gradient descent: steps lr * ((alpha + beta) g_t - beta g_{t-1}) (Mokhtari et al., 2019).

  Suited to min-max games, where plain gradient descent-ascent cycles.

  Args:
    learning_rate: step size, a number or a schedule.
    alpha: coefficient of the current gradient (a number).
    beta: coefficient of the correction by the previous gradient (a number).

  Returns:
    The optimizer (a chain of scale_by_optimistic_gradient and the learning rate).
  """
  _errors.check_learning_rate("optimistic_gradient_descent", learning_rate)
  _errors.check_number("optimistic_gradient_descent", "alpha", alpha)
  _errors.check_number("optimistic_gradient_descent", "beta", beta)
  return _optimizer("optimistic_gradient_descent", scale_by_optimistic_gradient(alpha=alpha, beta=beta),
                    scale_by_learning_rate(learning_rate))


def optimistic_adam(learning_rate: ArrayLike, optimism: Optional[ArrayLike] = None, b1: ArrayLike = 0.9,
                    b2: ArrayLike = 0.999, eps: ArrayLike = 1e-08, eps_root: ArrayLike = 0.0,
                    mu_dtype: Optional[Any] = None, *,
                    nesterov: bool = True, nu_dtype: Any | None = None) -> _base.GradientTransformationExtraArgs:
  """Optimistic Adam, first version (deprecated: use `optimistic_adam_v2`) (Daskalakis et al., 2018).

  Adam's direction a_t enters an optimistic step: -((lr + optimism) a_t - optimism a_{t-1}).

  Args:
    learning_rate: step size; a number, not a schedule.
    optimism: weight of the correction by the previous direction; None uses the learning rate.
    b1, b2, eps, eps_root, mu_dtype, nesterov: as in `adam` (Nesterov momentum by default).
    nu_dtype: gradxform addition, as in `adam`: dtype of the second moment (None: the params').

  Returns:
    The optimizer (scale_by_adam, scale_by_optimistic_gradient, sign flip).
  """
  warnings.warn("optimistic_adam is deprecated; optimistic_adam_v2 replaces it (and takes schedules)",
                DeprecationWarning, stacklevel=2)
  if callable(learning_rate):
    raise _errors.HyperparameterError(
        "optimistic_adam: argument `learning_rate` must be a number, not a schedule; "
        "optimistic_adam_v2 accepts schedules")
  _check_adam_family("optimistic_adam", learning_rate, b1, b2, eps, eps_root)
  _errors.check_number("optimistic_adam", "optimism", optimism, allow_none=True)
  _nu_dtype_arg("optimistic_adam", nu_dtype)
  optimism = learning_rate if optimism is None else optimism
  return _optimizer("optimistic_adam",
                    scale_by_adam(b1=b1, b2=b2, eps=eps, eps_root=eps_root, mu_dtype=mu_dtype, nesterov=nesterov,
                                  nu_dtype=nu_dtype),
                    scale_by_optimistic_gradient(alpha=learning_rate, beta=optimism),
                    scale_by_learning_rate(1.0))


def optimistic_adam_v2(learning_rate: _base.ScalarOrSchedule, *, alpha: ArrayLike = 1.0, beta: ArrayLike = 1.0,
                       b1: ArrayLike = 0.9, b2: ArrayLike = 0.999, eps: ArrayLike = 1e-08,
                       eps_root: ArrayLike = 0.0, mu_dtype: Optional[Any] = None,
                       nesterov: bool = True, nu_dtype: Any | None = None) -> _base.GradientTransformationExtraArgs:
  """Optimistic Adam: lr * ((alpha + beta) a_t - beta a_{t-1}), a_t Adam's direction (Daskalakis et al., 2018).

  Args:
    learning_rate: step size, a number or a schedule.
    alpha: coefficient of the current Adam direction.
    beta: coefficient of the correction by the previous direction.
    b1, b2, eps, eps_root, mu_dtype, nesterov: as in `adam` (Nesterov momentum by default).
    nu_dtype: gradxform addition, as in `adam`: dtype of the second moment (None: the params').

  Returns:
    The optimizer (scale_by_adam, scale_by_optimistic_gradient, learning rate).
  """
  _check_adam_family("optimistic_adam_v2", learning_rate, b1, b2, eps, eps_root)
  _errors.check_number("optimistic_adam_v2", "alpha", alpha)
  _errors.check_number("optimistic_adam_v2", "beta", beta)
  _nu_dtype_arg("optimistic_adam_v2", nu_dtype)
  return _optimizer("optimistic_adam_v2",
                    scale_by_adam(b1=b1, b2=b2, eps=eps, eps_root=eps_root, mu_dtype=mu_dtype, nesterov=nesterov,
                                  nu_dtype=nu_dtype),
                    scale_by_optimistic_gradient(alpha=alpha, beta=beta), scale_by_learning_rate(learning_rate))


def sm3(learning_rate: ArrayLike, momentum: ArrayLike = 0.9) -> _base.GradientTransformationExtraArgs:
  """SM3: memory-efficient AdaGrad with per-axis accumulators, plus momentum (Anil et al., 2019).

  See `scale_by_sm3`: params must be real and of rank >= 1.

  Args:
    learning_rate: step size; a number, not a schedule.
    momentum: momentum coefficient, in [0, 1).

  Returns:
    The optimizer (a chain of scale_by_sm3 and scale(-learning_rate)).
  """
  _errors.check_number("sm3", "learning_rate", learning_rate, low=0.0)
  _errors.check_decay("sm3", "momentum", momentum)
  return _optimizer("sm3", scale_by_sm3(momentum), scale(-learning_rate))


def noisy_sgd(learning_rate: _base.ScalarOrSchedule, eta: ArrayLike = 0.01, gamma: ArrayLike = 0.55,
              key: ArrayLike | None = None, *, seed: int | None = None) -> _base.GradientTransformationExtraArgs:
  """SGD on gradients plus annealed Gaussian noise of variance eta / t**gamma (Neelakantan et al., 2015).

  Args:
    learning_rate: step size, a number or a schedule.
    eta: base variance of the noise (>= 0).
    gamma: annealing exponent of the variance.
    key: a key from `jax.random.key`, or an int seed; None warns and uses seed 0.
    seed: deprecated spelling of an int `key`.

  Returns:
    The optimizer (a chain of add_noise and the learning rate).
  """
  _errors.check_learning_rate("noisy_sgd", learning_rate)
  _errors.check_nonnegative("noisy_sgd", "eta", eta)
  _errors.check_number("noisy_sgd", "gamma", gamma)
  return _optimizer("noisy_sgd", add_noise(eta, gamma, key, seed=seed), scale_by_learning_rate(learning_rate))
