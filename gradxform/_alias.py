"""The classic optimizers, each a short chain of the transformations it is made of.

sgd (with momentum / Nesterov), AdaGrad, RMSprop, Adadelta, and the Adam family. Signatures and
defaults are optax 0.2.8's. Each alias checks its arguments under its own name, then chains.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Optional, Union

import jax

from gradxform import _base
from gradxform import _errors
from gradxform._combine import chain
from gradxform._decay import add_decayed_weights
from gradxform._moments import (_nu_dtype_arg, scale_by_adam, scale_by_adamax, scale_by_amsgrad, scale_by_radam,
                                trace)
from gradxform._rms import scale_by_adadelta, scale_by_rms, scale_by_rss, scale_by_stddev
from gradxform._scale import scale_by_learning_rate

ArrayLike = jax.typing.ArrayLike
Mask = Optional[Union[Any, Callable[[_base.Params], Any]]]


def _optimizer(name: str, *steps: _base.GradientTransformation) -> _base.GradientTransformationExtraArgs:
  return _base.rename(chain(*steps), name)


def _check_adam_family(name, learning_rate, b1, b2, eps, eps_root=0.0, weight_decay=None):
  _errors.check_learning_rate(name, learning_rate)
  _errors.check_decay(name, "b1", b1)
  _errors.check_decay(name, "b2", b2)
  _errors.check_nonnegative(name, "eps", eps)
  _errors.check_nonnegative(name, "eps_root", eps_root)
  if weight_decay is not None:
    _errors.check_number(name, "weight_decay", weight_decay, low=0.0, allow_schedule=True)


def sgd(learning_rate: _base.ScalarOrSchedule, momentum: Optional[ArrayLike] = None, nesterov: bool = False,
        accumulator_dtype: Optional[Any] = None) -> _base.GradientTransformationExtraArgs:
  """Stochastic gradient descent, optionally with (Nesterov) momentum (Robbins & Monro, 1951; Polyak, 1964).

  Args:
    learning_rate: step size, a number or a schedule.
    momentum: momentum coefficient in [0, 1), or None for plain SGD.
    nesterov: Nesterov's accelerated momentum (Sutskever et al., 2013).
    accumulator_dtype: dtype of the momentum buffer; None keeps the params' dtype.
  """
  _errors.check_learning_rate("sgd", learning_rate)
  _errors.check_decay("sgd", "momentum", momentum, allow_none=True)
  first = (trace(decay=momentum, nesterov=nesterov, accumulator_dtype=accumulator_dtype)
           if momentum is not None else _base.identity())
  return _optimizer("sgd", first, scale_by_learning_rate(learning_rate))


def adagrad(learning_rate: _base.ScalarOrSchedule, initial_accumulator_value: ArrayLike = 0.1,
            eps: ArrayLike = 1e-7) -> _base.GradientTransformationExtraArgs:
  """AdaGrad: per-coordinate steps lr * g / sqrt(sum of past g^2 + eps) (Duchi et al., 2011).

  Args:
    learning_rate: step size, a number or a schedule.
    initial_accumulator_value: starting value of the sum of squares.
    eps: added inside the root.
  """
  _errors.check_learning_rate("adagrad", learning_rate)
  _errors.check_nonnegative("adagrad", "initial_accumulator_value", initial_accumulator_value)
  _errors.check_nonnegative("adagrad", "eps", eps)
  return _optimizer("adagrad", scale_by_rss(initial_accumulator_value=initial_accumulator_value, eps=eps),
                    scale_by_learning_rate(learning_rate))


def rmsprop(learning_rate: _base.ScalarOrSchedule, decay: ArrayLike = 0.9, eps: ArrayLike = 1e-8,
            initial_scale: ArrayLike = 0.0, eps_in_sqrt: bool = True, centered: bool = False,
            momentum: Optional[ArrayLike] = None, nesterov: bool = False,
            bias_correction: bool = False) -> _base.GradientTransformationExtraArgs:
  """RMSprop: lr * g / sqrt(E[g^2] + eps), optionally centred and with momentum (Hinton, 2012; Graves, 2013).

  Args:
    learning_rate: step size, a number or a schedule.
    decay: decay of the squared-gradient average, in [0, 1).
    eps: added inside the root (or outside, with eps_in_sqrt=False).
    initial_scale: initial value of the average.
    eps_in_sqrt: where eps goes.
    centered: divide by the running standard deviation (E[g^2] - E[g]^2) instead.
    momentum: momentum applied after scaling, or None.
    nesterov: Nesterov form of that momentum.
    bias_correction: debias the averages.
  """
  _errors.check_learning_rate("rmsprop", learning_rate)
  _errors.check_decay("rmsprop", "decay", decay)
  _errors.check_nonnegative("rmsprop", "eps", eps)
  _errors.check_decay("rmsprop", "momentum", momentum, allow_none=True)
  scaling = scale_by_stddev if centered else scale_by_rms
  return _optimizer(
      "rmsprop",
      scaling(decay=decay, eps=eps, initial_scale=initial_scale, eps_in_sqrt=eps_in_sqrt,
              bias_correction=bias_correction),
      scale_by_learning_rate(learning_rate),
      trace(decay=momentum, nesterov=nesterov) if momentum is not None else _base.identity())


def adadelta(learning_rate: Optional[_base.ScalarOrSchedule] = None, rho: ArrayLike = 0.9, eps: ArrayLike = 1e-6,
             weight_decay: Union[ArrayLike, _base.Schedule] = 0.0,
             weight_decay_mask: Mask = None) -> _base.GradientTransformationExtraArgs:
  """Adadelta: steps sqrt(E[dx^2] + eps) / sqrt(E[g^2] + eps) * g, optionally times lr (Zeiler, 2012).

  Args:
    learning_rate: optional step size (None: the unit step of the paper).
    rho: decay of both running averages, in [0, 1).
    eps: added inside both roots.
    weight_decay: L2 decay added to the gradient before scaling.
    weight_decay_mask: where to apply the decay (tree of booleans or a function of the params).
  """
  _errors.check_learning_rate("adadelta", learning_rate, allow_none=True)
  _errors.check_decay("adadelta", "rho", rho)
  _errors.check_nonnegative("adadelta", "eps", eps)
  _errors.check_number("adadelta", "weight_decay", weight_decay, low=0.0, allow_schedule=True)
  return _optimizer("adadelta", add_decayed_weights(weight_decay, mask=weight_decay_mask),
                    scale_by_adadelta(rho=rho, eps=eps), scale_by_learning_rate(learning_rate))


def adam(learning_rate: _base.ScalarOrSchedule, b1: ArrayLike = 0.9, b2: ArrayLike = 0.999, eps: ArrayLike = 1e-8,
         eps_root: ArrayLike = 0.0, mu_dtype: Optional[Any] = None, *,
         nesterov: bool = False, nu_dtype: Any | None = None) -> _base.GradientTransformationExtraArgs:
  """Adam: lr * m_hat / (sqrt(v_hat + eps_root) + eps) (Kingma & Ba, 2014). See `scale_by_adam`.

  Args:
    learning_rate: step size, a number or a schedule.
    b1, b2: decay rates of the first and second moments, in [0, 1).
    eps, eps_root: added outside / inside the square root.
    mu_dtype: dtype of the first moment (None: the params' dtype).
    nesterov: Nesterov momentum (this is NAdam, Dozat 2016).
    nu_dtype: gradxform addition: dtype of the second moment (None: the params' dtype, as in optax);
      see `scale_by_adam`.
  """
  _check_adam_family("adam", learning_rate, b1, b2, eps, eps_root)
  _nu_dtype_arg("adam", nu_dtype)
  return _optimizer("adam", scale_by_adam(b1=b1, b2=b2, eps=eps, eps_root=eps_root, mu_dtype=mu_dtype,
                                          nesterov=nesterov, nu_dtype=nu_dtype),
                    scale_by_learning_rate(learning_rate))


def nadam(learning_rate: _base.ScalarOrSchedule, b1: ArrayLike = 0.9, b2: ArrayLike = 0.999,
          eps: ArrayLike = 1e-8, eps_root: ArrayLike = 0.0, mu_dtype: Optional[Any] = None, *,
          nesterov: bool = True, nu_dtype: Any | None = None) -> _base.GradientTransformationExtraArgs:
  """NAdam: Adam with Nesterov momentum (Dozat, 2016); `adam(..., nesterov=True)` (nu_dtype: as in `adam`)."""
  _check_adam_family("nadam", learning_rate, b1, b2, eps, eps_root)
  _nu_dtype_arg("nadam", nu_dtype)
  return _base.rename(adam(learning_rate, b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov, nu_dtype=nu_dtype),
                      "nadam")


def adamw(learning_rate: _base.ScalarOrSchedule, b1: ArrayLike = 0.9, b2: ArrayLike = 0.999, eps: ArrayLike = 1e-8,
          eps_root: ArrayLike = 0.0, mu_dtype: Optional[Any] = None,
          weight_decay: _base.ScalarOrSchedule = 1e-4, mask: Mask = None, *,
          nesterov: bool = False, nu_dtype: Any | None = None) -> _base.GradientTransformationExtraArgs:
  """AdamW: Adam plus decoupled weight decay, lr * (m_hat / (sqrt(v_hat) + eps) + wd * p) (Loshchilov & Hutter, 2019).

  Args:
    learning_rate, b1, b2, eps, eps_root, mu_dtype, nesterov, nu_dtype: as in `adam`.
    weight_decay: decay rate (multiplied by the learning rate, as in PyTorch), a number or a schedule.
    mask: where to decay: a tree of booleans like the params, or a function params -> such a tree.
  """
  _check_adam_family("adamw", learning_rate, b1, b2, eps, eps_root, weight_decay)
  _nu_dtype_arg("adamw", nu_dtype)
  return _optimizer("adamw",
                    scale_by_adam(b1=b1, b2=b2, eps=eps, eps_root=eps_root, mu_dtype=mu_dtype, nesterov=nesterov,
                                  nu_dtype=nu_dtype),
                    add_decayed_weights(weight_decay, mask), scale_by_learning_rate(learning_rate))


def nadamw(learning_rate: _base.ScalarOrSchedule, b1: ArrayLike = 0.9, b2: ArrayLike = 0.999,
           eps: ArrayLike = 1e-8, eps_root: ArrayLike = 0.0, mu_dtype: Optional[Any] = None,
           weight_decay: _base.ScalarOrSchedule = 1e-4, mask: Mask = None, *,
           nesterov: bool = True, nu_dtype: Any | None = None) -> _base.GradientTransformationExtraArgs:
  """NAdamW: AdamW with Nesterov momentum; `adamw(..., nesterov=True)` (nu_dtype: as in `adam`)."""
  _check_adam_family("nadamw", learning_rate, b1, b2, eps, eps_root, weight_decay)
  _nu_dtype_arg("nadamw", nu_dtype)
  return _base.rename(adamw(learning_rate, b1, b2, eps, eps_root, mu_dtype, weight_decay, mask,
                            nesterov=nesterov, nu_dtype=nu_dtype), "nadamw")


def adamax(learning_rate: _base.ScalarOrSchedule, b1: ArrayLike = 0.9, b2: ArrayLike = 0.999,
           eps: ArrayLike = 1e-8) -> _base.GradientTransformationExtraArgs:
  """Adamax: Adam with the infinity norm, lr * m_hat / max(|g| + eps, b2 u) (Kingma & Ba, 2014, sec. 7).

  Args:
    learning_rate: step size, a number or a schedule.
    b1, b2: decay rates of the first moment and of the infinity norm, in [0, 1).
    eps: added to |g|.
  """
  _check_adam_family("adamax", learning_rate, b1, b2, eps)
  return _optimizer("adamax", scale_by_adamax(b1=b1, b2=b2, eps=eps), scale_by_learning_rate(learning_rate))


def adamaxw(learning_rate: _base.ScalarOrSchedule, b1: ArrayLike = 0.9, b2: ArrayLike = 0.999,
            eps: ArrayLike = 1e-8, weight_decay: _base.ScalarOrSchedule = 1e-4,
            mask: Mask = None) -> _base.GradientTransformationExtraArgs:
  """AdamaxW: Adamax plus decoupled weight decay.

  Args:
    learning_rate, b1, b2, eps: as in `adamax`.
    weight_decay, mask: as in `adamw`.
  """
  _check_adam_family("adamaxw", learning_rate, b1, b2, eps, weight_decay=weight_decay)
  return _optimizer("adamaxw", scale_by_adamax(b1=b1, b2=b2, eps=eps), add_decayed_weights(weight_decay, mask),
                    scale_by_learning_rate(learning_rate))


def amsgrad(learning_rate: _base.ScalarOrSchedule, b1: ArrayLike = 0.9, b2: ArrayLike = 0.999,
            eps: ArrayLike = 1e-8, eps_root: ArrayLike = 0.0, mu_dtype: Optional[Any] = None,
            bias_correction_mu: bool = True, bias_correction_nu: bool = True, *,
            nu_dtype: Any | None = None) -> _base.GradientTransformationExtraArgs:
  """AMSGrad: Adam dividing by the running maximum of the second moment (Reddi et al., 2018).

  Args:
    learning_rate, b1, b2, eps, eps_root, mu_dtype: as in `adam`.
    bias_correction_mu, bias_correction_nu: debias the first / second moment.
    nu_dtype: gradxform addition: dtype of `nu` and `nu_max` (None: the params' dtype, as in optax).
  """
  _check_adam_family("amsgrad", learning_rate, b1, b2, eps, eps_root)
  _nu_dtype_arg("amsgrad", nu_dtype)
  return _optimizer("amsgrad",
                    scale_by_amsgrad(b1=b1, b2=b2, eps=eps, eps_root=eps_root, mu_dtype=mu_dtype,
                                     bias_correction_mu=bias_correction_mu, bias_correction_nu=bias_correction_nu,
                                     nu_dtype=nu_dtype),
                    scale_by_learning_rate(learning_rate))


def radam(learning_rate: _base.ScalarOrSchedule, b1: ArrayLike = 0.9, b2: ArrayLike = 0.999, eps: ArrayLike = 1e-8,
          eps_root: ArrayLike = 0.0, threshold: ArrayLike = 5.0, *,
          nesterov: bool = False) -> _base.GradientTransformationExtraArgs:
  """RAdam: Adam with the variance rectification term (Liu et al., 2020). See `scale_by_radam`.

  Args:
    learning_rate, b1, b2, eps, eps_root, nesterov: as in `adam`.
    threshold: rho_t from which the adaptive term is used.
  """
  _check_adam_family("radam", learning_rate, b1, b2, eps, eps_root)
  return _optimizer("radam", scale_by_radam(b1=b1, b2=b2, eps=eps, eps_root=eps_root, threshold=threshold,
                                            nesterov=nesterov), scale_by_learning_rate(learning_rate))
