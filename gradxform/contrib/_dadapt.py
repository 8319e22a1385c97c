"""Learning-rate-free Adam: D-Adaptation AdamW (Defazio & Mishchenko, 2023) and Prodigy (Mishchenko &
Defazio, 2023).

Both keep a running lower bound d on the distance to the solution, ||x0 - x*||, and use it as the step
size ("Learning-Rate-Free Learning by D-Adaptation", https://arxiv.org/abs/2301.07733; "Prodigy: An
Expeditiously Adaptive Parameter-Free Learner", https://arxiv.org/abs/2306.06101). The estimate and its
numerator are scalars kept in the lowest float dtype of the params at init; later steps promote them as
standard promotion does (as optax's do).
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from gradxform import _base
from gradxform import _errors
from gradxform import _numerics
from gradxform import _tree
from gradxform import tree_utils
from gradxform._moments import _zero_count

__all__ = ["DAdaptAdamWState", "ProdigyState", "dadapt_adamw", "prodigy"]


class DAdaptAdamWState(NamedTuple):
  """State of `dadapt_adamw`: Adam's moments, the weighted gradient sum, the estimate d and its numerator."""
  exp_avg: _base.Updates
  exp_avg_sq: _base.Updates
  grad_sum: _base.Updates
  estim_lr: jax.typing.ArrayLike
  numerator_weighted: jax.typing.ArrayLike
  count: jax.typing.ArrayLike


class ProdigyState(NamedTuple):
  """State of `prodigy`: as DAdaptAdamWState plus the starting point params0."""
  exp_avg: _base.Updates
  exp_avg_sq: _base.Updates
  grad_sum: _base.Updates
  params0: _base.Updates
  estim_lr: jax.typing.ArrayLike
  numerator_weighted: jax.typing.ArrayLike
  count: jax.typing.ArrayLike


def _scalar_dtype(params):
  return tree_utils.tree_dtype(params, "lowest")


def _step_scale(beta1, beta2, count):
  """Adam's bias correction folded into the step: sqrt(1 - beta2^t) / (1 - beta1^t)."""
  with jax.numpy_dtype_promotion("standard"):
    return (1 - beta2 ** count) ** 0.5 / (1 - beta1 ** count)


def _l1_norm(tree):
  return tree_utils.tree_sum(jax.tree.map(jnp.abs, tree))


# Short names: the formulas below are long chains of promoting arithmetic.
_mul, _add, _sub, _div = _numerics.mul, _numerics.add, _numerics.sub, _numerics.div


# ----------------------------------------------------------------------------------------------
# D-Adaptation AdamW.


def _dadapt_init(params, *, estim_lr0, **_):
  dtype = _scalar_dtype(params)
  return DAdaptAdamWState(exp_avg=_tree.zeros_like(params), exp_avg_sq=_tree.zeros_like(params),
                          grad_sum=_tree.zeros_like(params), estim_lr=jnp.asarray(estim_lr0, dtype=dtype),
                          numerator_weighted=jnp.zeros([], dtype=dtype), count=_zero_count())


def _dadapt_update(updates, state, params=None, *, learning_rate, betas, eps, estim_lr0, weight_decay,
                   **extra_args):
  del extra_args, estim_lr0
  _errors.expect_state(state, (DAdaptAdamWState,), "dadapt_adamw")
  _errors.require_params(params, "dadapt_adamw")
  beta1, beta2 = betas
  sb2 = beta2 ** 0.5
  sched = learning_rate(state.count) if callable(learning_rate) else learning_rate
  count = _numerics.safe_increment(state.count)
  dlr = _mul(_mul(state.estim_lr, sched), _step_scale(beta1, beta2, count)).astype(state.numerator_weighted.dtype)

  # <g, s / (sqrt(v) + eps)> with the state before this step: the numerator's new term.
  def weighted_sum(g, gs, eas):
    return (_div(gs, jnp.sqrt(eas) + eps),)
  s_weighted, _ = _tree.leafwise(weighted_sum, updates, (), (state.grad_sum, state.exp_avg_sq),
                                 extra_names=("state.grad_sum", "state.exp_avg_sq"))
  numerator_term = tree_utils.tree_vdot(updates, s_weighted)

  def leaf(g, ea, eas, gs):
    ea = _add(_mul(beta1, ea), _mul(_mul(1 - beta1, dlr), g))
    eas = _add(_mul(beta2, eas), _mul((1 - beta2) * g, g))
    gs = _add(_mul(sb2, gs), _mul(_mul(1 - sb2, dlr), g))
    return g, ea, eas, gs

  _, (exp_avg, exp_avg_sq, grad_sum) = _tree.leafwise(
      leaf, updates, (state.exp_avg, state.exp_avg_sq, state.grad_sum),
      state_names=("state.exp_avg", "state.exp_avg_sq", "state.grad_sum"))
  numerator = _add(_mul(sb2, state.numerator_weighted), _mul(_mul(1 - sb2, dlr), numerator_term))
  estim_lr = _numerics.maximum(state.estim_lr, _div(numerator, _mul(1 - sb2, _l1_norm(grad_sum))))

  def step(g, ea, eas, p):
    del g
    return (_sub(_mul(_mul(-weight_decay, dlr), p), _div(ea, jnp.sqrt(eas) + eps)),)

  new_updates, _ = _tree.leafwise(step, updates, (), (exp_avg, exp_avg_sq, params),
                                  extra_names=("exp_avg", "exp_avg_sq", "params"))
  return new_updates, DAdaptAdamWState(exp_avg=exp_avg, exp_avg_sq=exp_avg_sq, grad_sum=grad_sum,
                                       estim_lr=estim_lr, numerator_weighted=numerator, count=count)


def _check_betas(fn, betas):
  if not isinstance(betas, (tuple, list)) or len(betas) != 2:
    raise _errors.HyperparameterTypeError(f"{fn}: argument `betas` must be a pair (beta1, beta2), got {betas!r}")
  _errors.check_decay(fn, "betas[0]", betas[0])
  _errors.check_decay(fn, "betas[1]", betas[1])


def dadapt_adamw(learning_rate: _base.ScalarOrSchedule = 1.0,
                 betas: tuple[jax.typing.ArrayLike, jax.typing.ArrayLike] = (0.9, 0.999),
                 eps: jax.typing.ArrayLike = 1e-8, estim_lr0: jax.typing.ArrayLike = 1e-6,
                 weight_decay: jax.typing.ArrayLike = 0.0) -> _base.GradientTransformationExtraArgs:
  """AdamW whose step size d is estimated on the fly by D-Adaptation (Defazio & Mishchenko, 2023).

  With lr_t = d * learning_rate * sqrt(1 - beta2^t) / (1 - beta1^t): m <- beta1 m + (1 - beta1) lr_t g,
  v <- beta2 v + (1 - beta2) g^2, s <- sqrt(beta2) s + (1 - sqrt(beta2)) lr_t g, and
  d <- max(d, r / ((1 - sqrt(beta2)) ||s||_1)) with r the weighted sum of <g, s / (sqrt(v) + eps)>.
  The update is -m / (sqrt(v) + eps) - weight_decay lr_t p. Needs the params.

  Args:
    learning_rate: multiplies the estimated step (1 in the paper), a number or a schedule.
    betas: (beta1, beta2), Adam's decay rates.
    eps: added to the denominator.
    estim_lr0: the initial estimate of d (a small lower bound).
    weight_decay: decoupled weight decay, scaled by the step lr_t.

  Returns:
    The optimizer; its state is a DAdaptAdamWState.
  """
  fn = "dadapt_adamw"
  _errors.check_learning_rate(fn, learning_rate)
  _check_betas(fn, betas)
  _errors.check_nonnegative(fn, "eps", eps)
  _errors.check_number(fn, "estim_lr0", estim_lr0, low=0.0, low_open=True)
  _errors.check_nonnegative(fn, "weight_decay", weight_decay)
  return _base.transformation(fn, _dadapt_init, _dadapt_update, learning_rate=learning_rate, betas=tuple(betas),
                              eps=eps, estim_lr0=estim_lr0, weight_decay=weight_decay)


# ----------------------------------------------------------------------------------------------
# Prodigy.


def _prodigy_init(params, *, estim_lr0, **_):
  dtype = _scalar_dtype(params)
  return ProdigyState(exp_avg=_tree.zeros_like(params), exp_avg_sq=_tree.zeros_like(params),
                      grad_sum=_tree.zeros_like(params), params0=params,
                      estim_lr=jnp.asarray(estim_lr0, dtype=dtype), numerator_weighted=jnp.zeros((), dtype=dtype),
                      count=_zero_count())


def _prodigy_update(updates, state, params=None, *, learning_rate, betas, beta3, eps, estim_lr0, estim_lr_coef,
                    weight_decay, safeguard_warmup, **extra_args):
  del extra_args
  _errors.expect_state(state, (ProdigyState,), "prodigy")
  _errors.require_params(params, "prodigy")
  beta1, beta2 = betas
  beta3 = beta2 ** 0.5 if beta3 is None else beta3
  count = _numerics.safe_increment(state.count)
  sched = learning_rate(state.count) if callable(learning_rate) else learning_rate
  d_old = state.estim_lr
  dlr = jnp.asarray(_mul(_mul(d_old, sched), _step_scale(beta1, beta2, count)), dtype=d_old.dtype)
  # The warm-up safeguard weighs grad_sum by d alone, leaving out the (bias-corrected) learning rate.
  gs_weight = d_old if safeguard_warmup else dlr

  def diff(g, p0, p):
    return (_sub(p0, p),)
  param_diff, _ = _tree.leafwise(diff, updates, (), (state.params0, params), extra_names=("state.params0", "params"))
  numerator_term = tree_utils.tree_vdot(updates, param_diff)

  def leaf(g, ea, eas, gs):
    dg = _mul(d_old, g)
    ea = _add(_mul(beta1, ea), _mul(1 - beta1, dg))
    eas = _add(_mul(beta2, eas), _mul(_mul(1 - beta2, dg), dg))
    gs = _add(_mul(beta3, gs), _div(_mul(gs_weight, dg), estim_lr0))
    return g, ea, eas, gs

  _, (exp_avg, exp_avg_sq, grad_sum) = _tree.leafwise(
      leaf, updates, (state.exp_avg, state.exp_avg_sq, state.grad_sum),
      state_names=("state.exp_avg", "state.exp_avg_sq", "state.grad_sum"))
  numerator = _add(_mul(beta3, state.numerator_weighted), _mul(_mul(_div(d_old, estim_lr0), dlr), numerator_term))
  estimate = _div(_mul(estim_lr_coef, numerator), _l1_norm(grad_sum))
  estim_lr = _numerics.maximum(d_old, estimate)

  def step(g, ea, eas, p):
    del g
    return (_sub(_mul(_mul(-weight_decay, dlr), p), _div(_mul(dlr, ea), _add(jnp.sqrt(eas), _mul(estim_lr, eps)))),)

  new_updates, _ = _tree.leafwise(step, updates, (), (exp_avg, exp_avg_sq, params),
                                  extra_names=("exp_avg", "exp_avg_sq", "params"))
  return new_updates, ProdigyState(exp_avg=exp_avg, exp_avg_sq=exp_avg_sq, grad_sum=grad_sum,
                                   params0=state.params0, estim_lr=estim_lr, numerator_weighted=numerator,
                                   count=count)


def prodigy(learning_rate: _base.ScalarOrSchedule = 1.0,
            betas: tuple[jax.typing.ArrayLike, jax.typing.ArrayLike] = (0.9, 0.999),
            beta3: Optional[jax.typing.ArrayLike] = None, eps: jax.typing.ArrayLike = 1e-8,
            estim_lr0: jax.typing.ArrayLike = 1e-6, estim_lr_coef: jax.typing.ArrayLike = 1.0,
            weight_decay: jax.typing.ArrayLike = 0.0,
            safeguard_warmup: bool = False) -> _base.GradientTransformationExtraArgs:
  """Prodigy: D-Adaptation with the distance estimated from <g, x0 - x> (Mishchenko & Defazio, 2023).

  With dg = d g and lr_t = d * learning_rate * sqrt(1 - beta2^t) / (1 - beta1^t):
  m <- beta1 m + (1 - beta1) dg;  v <- beta2 v + (1 - beta2) dg^2;  s <- beta3 s + lr_t dg / d0;
  r <- beta3 r + (d / d0) lr_t <g, x0 - x>;  d <- max(d, coef r / ||s||_1). The update is
  -lr_t m / (sqrt(v) + d eps) - weight_decay lr_t p. Needs the params.

  Args:
    learning_rate: multiplies the estimated step (1 in the paper), a number or a schedule.
    betas: (beta1, beta2), Adam's decay rates.
    beta3: decay of s and r; None means sqrt(beta2).
    eps: added to the denominator (scaled by d).
    estim_lr0: the initial estimate d0 of d.
    estim_lr_coef: multiplies each new estimate (larger: bolder steps).
    weight_decay: decoupled weight decay, scaled by the step lr_t.
    safeguard_warmup: weigh s by d instead of lr_t (avoids overestimating d during a warm-up schedule).

  Returns:
    The optimizer; its state is a ProdigyState.
  """
  fn = "prodigy"
  _errors.check_learning_rate(fn, learning_rate)
  _check_betas(fn, betas)
  _errors.check_decay(fn, "beta3", beta3, allow_none=True)
  _errors.check_nonnegative(fn, "eps", eps)
  _errors.check_number(fn, "estim_lr0", estim_lr0, low=0.0, low_open=True)
  _errors.check_nonnegative(fn, "estim_lr_coef", estim_lr_coef)
  _errors.check_nonnegative(fn, "weight_decay", weight_decay)
  return _base.transformation(fn, _prodigy_init, _prodigy_update, learning_rate=learning_rate,
                              betas=tuple(betas), beta3=beta3, eps=eps, estim_lr0=estim_lr0,
                              estim_lr_coef=estim_lr_coef, weight_decay=weight_decay,
                              safeguard_warmup=safeguard_warmup)
