"""Sophia: a clipped, diagonally preconditioned momentum method (Liu et al., 2023), and Hutchinson's estimator.

Sophia divides the gradient momentum by an EMA of a diagonal Hessian estimate (refreshed every
`update_interval` steps) and clips each coordinate of the result.
"""

from __future__ import annotations

import functools
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
from gradxform.tree_utils import tree_dtype, tree_random_like, tree_size

__all__ = ["HutchinsonState", "SophiaState", "hutchinson_estimator_diag_hessian", "sophia"]


class HutchinsonState(NamedTuple):
  """State of `hutchinson_estimator_diag_hessian`: the PRNG key of the next probe."""
  key: jax.Array


class SophiaState(NamedTuple):
  """State of Sophia's scaling: step count, momentum, Hessian-diagonal EMA and the estimator's state."""
  count: jax.Array
  mu: _base.Updates
  nu: _base.Updates
  hessian_fn_state: Any


def _hutchinson_init(params, *, random_seed, **_):
  del params
  return HutchinsonState(key=random_seed if random_seed is not None else jax.random.PRNGKey(0))


def _hutchinson_update(updates, state, params=None, obj_fn=None, **extra_args):
  del updates, extra_args
  _errors.expect_state(state, (HutchinsonState,), "hutchinson_estimator_diag_hessian")
  _errors.require_params(params, "hutchinson_estimator_diag_hessian")
  _errors.require_extra_args("hutchinson_estimator_diag_hessian", {"obj_fn": obj_fn}, ("obj_fn",))
  key, probe_key = jax.random.split(state.key)
  signs = tree_random_like(probe_key, params, jax.random.rademacher, dtype=jnp.float32)
  signs = _tree.cast(signs, tree_dtype(params, "lowest"))
  hvp = jax.jvp(jax.grad(obj_fn), (params,), (signs,))[1]
  return jax.tree.map(_numerics.mul, hvp, signs), HutchinsonState(key=key)


def hutchinson_estimator_diag_hessian(random_seed: Optional[jax.Array] = None):
  """Hutchinson's estimator of the Hessian diagonal: z * (H z) for a Rademacher probe z.

  Its update ignores the gradients and needs params and `obj_fn=` (the loss as a function of params).

  Args:
    random_seed: the PRNG key of the first probe (None: `jax.random.PRNGKey(0)`).

  Returns:
    A GradientTransformationExtraArgs returning the estimate in place of the updates.
  """
  return _base.transformation("hutchinson_estimator_diag_hessian", _hutchinson_init, _hutchinson_update,
                              random_seed=random_seed)


def _moment(new, old, decay):
  """(1 - decay) * new + decay * old in the promoted dtype (a bfloat16 mu_dtype meets float32 gradients)."""
  return jax.tree.map(lambda g, m: _numerics.add(_numerics.mul(1 - decay, g), _numerics.mul(decay, m)), new, old)


@functools.partial(jax.jit, inline=True)
def _debiased(moment, decay, count):
  """moment / (1 - decay**count), the whole tree in one compiled computation as optax does (same rounding)."""
  correction = 1 - _numerics.decay_power(decay, count)
  return jax.tree.map(lambda t: t / correction.astype(t.dtype), moment)


def _sophia_init(params, *, mu_dtype, hessian_diagonal_fn, **_):
  return SophiaState(count=jnp.zeros([], jnp.int32), mu=_tree.zeros_like(params, dtype=mu_dtype),
                     nu=_tree.zeros_like(params), hessian_fn_state=hessian_diagonal_fn.init(params))


def _clip_leaf(u, clip_threshold):
  u, low, high = _numerics.promote(u, -clip_threshold, clip_threshold)
  return jnp.clip(u, low, high)


def _sophia_update(updates, state, params=None, *, b1, b2, eps, gamma, clip_threshold, update_interval,
                   hessian_diagonal_fn, mu_dtype, verbose, print_win_rate_every_n_steps, **hess_fn_kwargs):
  _errors.expect_state(state, (SophiaState,), "scale_by_sophia")
  _errors.require_params(params, "sophia")
  count = _numerics.safe_increment(state.count)
  grads = updates
  mu = _moment(updates, state.mu, b1)
  mu_hat = _debiased(mu, b1, count)
  steps = jax.tree.map(lambda m, h: _numerics.div(m, _numerics.maximum(_numerics.mul(gamma, h), eps)),
                       mu_hat, state.nu)
  if clip_threshold is not None:
    if verbose:
      inside = jax.tree.reduce(lambda x, y: x + y, jax.tree.map(
          lambda u: jnp.sum(_less(jnp.abs(u), clip_threshold)), steps))
      win_rate = inside / tree_size(steps)
      jax.lax.cond(count % print_win_rate_every_n_steps == 0,
                   lambda: jax.debug.print("Sophia optimizer win rate: {}", win_rate), lambda: None)
    steps = jax.tree.map(lambda u: _clip_leaf(u, clip_threshold), steps)

  def refresh(hess_state, nu):
    diag, hess_state = hessian_diagonal_fn.update(grads, hess_state, params=params, **hess_fn_kwargs)
    return hess_state, _moment(diag, nu, b2)

  hess_state, nu = jax.lax.cond(jnp.equal(state.count % update_interval, 0), refresh, lambda h, n: (h, n),
                                state.hessian_fn_state, state.nu)
  return steps, SophiaState(count=count, mu=_tree.cast(mu, mu_dtype), nu=nu, hessian_fn_state=hess_state)


def _less(a, b):
  a, b = _numerics.promote(a, b)
  return a < b


def scale_by_sophia(b1: jax.typing.ArrayLike = 0.965, b2: jax.typing.ArrayLike = 0.99,
                    eps: jax.typing.ArrayLike = 1e-8, gamma: jax.typing.ArrayLike = 0.01,
                    clip_threshold: Optional[jax.typing.ArrayLike] = 1.0,
                    update_interval: jax.typing.ArrayLike = 10,
                    hessian_diagonal_fn: Union[_base.GradientTransformation,
                                               _base.GradientTransformationExtraArgs]
                    = hutchinson_estimator_diag_hessian(),
                    mu_dtype: Optional[Any] = None, verbose: bool = False,
                    print_win_rate_every_n_steps: jax.typing.ArrayLike = 0) -> _base.GradientTransformationExtraArgs:
  """Sophia's scaling: clip(m_hat / max(gamma h, eps), +-clip_threshold), h an EMA of Hessian diagonals.

  Not exported from `gradxform.contrib` (as in optax); `sophia` chains it with weight decay and the lr.

  Args:
    b1: decay of the gradient momentum.
    b2: decay of the Hessian-diagonal EMA.
    eps: floor of the denominator.
    gamma: scale of the Hessian diagonal.
    clip_threshold: per-coordinate clipping bound, or None for no clipping.
    update_interval: refresh the Hessian estimate every this many steps.
    hessian_diagonal_fn: the estimator; it gets the extra keyword arguments of `update`.
    mu_dtype: dtype of the momentum.
    verbose: print the fraction of unclipped coordinates.
    print_win_rate_every_n_steps: how often to print it.

  Returns:
    A GradientTransformationExtraArgs; its update needs params.
  """
  return _base.transformation(
      "scale_by_sophia", _sophia_init, _sophia_update, b1=b1, b2=b2, eps=eps, gamma=gamma,
      clip_threshold=clip_threshold, update_interval=update_interval,
      hessian_diagonal_fn=_base.with_extra_args_support(hessian_diagonal_fn),
      mu_dtype=_tree.canonical_dtype(mu_dtype), verbose=verbose,
      print_win_rate_every_n_steps=print_win_rate_every_n_steps)


def sophia(learning_rate: _base.ScalarOrSchedule, b1: jax.typing.ArrayLike = 0.965,
           b2: jax.typing.ArrayLike = 0.99, eps: jax.typing.ArrayLike = 1e-8,
           weight_decay: jax.typing.ArrayLike = 1e-4,
           weight_decay_mask: Optional[Union[Any, Callable[[_base.Params], Any]]] = None,
           gamma: jax.typing.ArrayLike = 0.01, clip_threshold: Optional[jax.typing.ArrayLike] = 1.0,
           update_interval: jax.typing.ArrayLike = 10,
           hessian_diagonal_fn: Union[_base.GradientTransformation, _base.GradientTransformationExtraArgs]
           = hutchinson_estimator_diag_hessian(),
           mu_dtype: Optional[Any] = None, verbose: bool = False,
           print_win_rate_every_n_steps: jax.typing.ArrayLike = 0) -> _base.GradientTransformationExtraArgs:
  """Sophia (Liu et al., 2023, "Sophia: A Scalable Stochastic Second-order Optimizer").

  m <- b1 m + (1 - b1) g;  every `update_interval` steps h <- b2 h + (1 - b2) diag_estimate;
  update = -lr (clip(m_hat / max(gamma h, eps), clip_threshold) + weight_decay x). With the default
  Hutchinson estimator, pass the loss function as `update(..., obj_fn=loss_fn)`.

  Args:
    learning_rate: step size, a number or a schedule.
    b1: decay of the gradient momentum, in [0, 1).
    b2: decay of the Hessian-diagonal EMA, in [0, 1).
    eps: floor of the denominator.
    weight_decay: decoupled weight decay.
    weight_decay_mask: a tree of booleans (or a function of params giving one) selecting decayed leaves.
    gamma: scale of the Hessian diagonal.
    clip_threshold: per-coordinate clipping bound, or None for no clipping.
    update_interval: refresh the Hessian estimate every this many steps.
    hessian_diagonal_fn: the Hessian-diagonal estimator, a transformation returning the estimate.
    mu_dtype: dtype of the momentum; None keeps the params' dtype.
    verbose: print the fraction of unclipped coordinates.
    print_win_rate_every_n_steps: how often to print it.

  Returns:
    A GradientTransformationExtraArgs; its update needs params (and what the estimator needs).
  """
  fn = "sophia"
  _errors.check_learning_rate(fn, learning_rate)
  _errors.check_decay(fn, "b1", b1)
  _errors.check_decay(fn, "b2", b2)
  _errors.check_nonnegative(fn, "eps", eps)
  _errors.check_number(fn, "weight_decay", weight_decay, low=0.0, allow_schedule=True)
  _errors.check_nonnegative(fn, "gamma", gamma)
  _errors.check_nonnegative(fn, "clip_threshold", clip_threshold, allow_none=True)
  _errors.check_positive_int(fn, "update_interval", update_interval)
  return _optimizer(fn, scale_by_sophia(b1=b1, b2=b2, eps=eps, gamma=gamma, clip_threshold=clip_threshold,
                                        update_interval=update_interval, hessian_diagonal_fn=hessian_diagonal_fn,
                                        mu_dtype=mu_dtype, verbose=verbose,
                                        print_win_rate_every_n_steps=print_win_rate_every_n_steps),
                    add_decayed_weights(weight_decay, mask=weight_decay_mask),
                    scale_by_learning_rate(learning_rate))
