"""Mechanic: a learned global scale on the updates of any base optimizer (Cutkosky et al., 2023).

Mechanic keeps the initial parameters x0 and the sum of the base optimizer's updates Delta, and
plays x_t = x0 + s_t * Delta_t, learning s_t online with several coin-betting accumulators, one per
decay rate beta_i = 1 - 10^-i (arXiv:2306.00144).
"""

from __future__ import annotations

from typing import NamedTuple, Union

import jax
import jax.numpy as jnp

from gradxform import _base
from gradxform import _errors
from gradxform import _numerics
from gradxform import _tree
from gradxform.tree_utils import tree_dtype, tree_norm, tree_vdot

__all__ = ["MechanicState", "mechanize"]


class MechanicState(NamedTuple):
  """State of `mechanize`: the base optimizer's state, a step count, the per-beta accumulators, x0."""
  base_optimizer_state: _base.OptState
  count: jax.typing.ArrayLike
  r: jax.typing.ArrayLike
  m: jax.typing.ArrayLike
  v: jax.typing.ArrayLike
  s: jax.typing.ArrayLike
  x0: _base.Updates


def _mechanic_init(params, *, base_optimizer, weight_decay, eps, s_init, num_betas, **_):
  del weight_decay, eps
  lowest = tree_dtype(params, "lowest")
  zeros = jnp.zeros([num_betas], dtype=lowest)
  return MechanicState(base_optimizer_state=base_optimizer.init(params), count=jnp.zeros([], jnp.int32),
                       r=zeros, m=zeros, v=zeros,
                       s=_numerics.mul(jnp.ones([num_betas], dtype=lowest), s_init), x0=params)


def _mechanic_update(updates, state, params=None, *, base_optimizer, weight_decay, eps, s_init, num_betas,
                     **extra_args):
  _errors.expect_state(state, (MechanicState,), "mechanize")
  _errors.require_params(params, "mechanize")
  add, sub, mul, div = _numerics.add, _numerics.sub, _numerics.mul, _numerics.div
  count_inc = _numerics.safe_increment(state.count)
  base_updates, base_state = base_optimizer.update(updates, state.base_optimizer_state, params, **extra_args)
  # The first call adopts the params it is given as x0 (init may have seen placeholders).
  x0 = jax.lax.cond(state.count == 0, lambda: params, lambda: state.x0)
  s_sum = jnp.sum(state.s)
  grad_norm = tree_norm(updates)
  param_norm = tree_norm(params)
  decay_coef = div(mul(mul(weight_decay, s_sum), grad_norm), add(param_norm, eps))
  decayed, _ = _tree.leafwise(lambda g, p: (add(g, mul(decay_coef, p)),), updates, extras=(params,),
                              extra_names=("params",))
  delta_prev = jax.tree.map(lambda x, x_init: div(sub(x_init, x), add(s_sum, eps)), params, x0)
  delta = jax.tree.map(sub, delta_prev, base_updates)
  h = tree_vdot(decayed, delta_prev)
  # lax.clamp needs one dtype; optax's bounds and h differ when params mix dtypes.
  low, h_full, high = _numerics.promote(-state.m, mul(jnp.ones_like(state.m), h), state.m)
  clipped_h = jax.lax.clamp(low, h_full, high)
  betas = jnp.array([1.0 - 0.1**i for i in range(1, num_betas + 1)], dtype=state.s.dtype)
  m = _numerics.maximum(mul(betas, state.m), add(jnp.abs(h), eps))
  v = add(mul(jnp.square(betas), state.v), jnp.square(h))
  r = add(mul(betas, state.r), mul(clipped_h, state.s))
  wealth = add(mul(s_init / betas.size, m), jnp.maximum(0.0, r))
  s = div(wealth, add(jnp.sqrt(v), eps))
  s_total = jnp.sum(s)
  new_updates = jax.tree.map(lambda x_init, d, x: sub(sub(x_init, mul(s_total, d)), x), x0, delta, params)
  return new_updates, MechanicState(base_optimizer_state=base_state, count=count_inc, r=r, m=m, v=v, s=s, x0=x0)


def mechanize(
    base_optimizer: Union[_base.GradientTransformation, _base.GradientTransformationExtraArgs],
    weight_decay: jax.typing.ArrayLike = 1e-2,
    eps: jax.typing.ArrayLike = 1e-8,
    s_init: jax.typing.ArrayLike = 1e-6,
    num_betas: int = 6,
) -> _base.GradientTransformationExtraArgs:
  r"""Mechanic: learns the scale of `base_optimizer`'s updates on the fly (Cutkosky et al., 2023).

  The parameters are x0 + s * Delta where Delta accumulates the base updates, and s = sum_i s_i is
  tuned online from h_t = <g_t + wd-term, Delta_{t-1}>, one accumulator per beta_i = 1 - 10^-i.
  Use the base optimizer with its usual schedule and a base learning rate of about 1.

  Args:
    base_optimizer: the optimizer whose updates are rescaled.
    weight_decay: Mechanic's own weight decay (not the base optimizer's), scaled by s and |g|/|x|.
    eps: numerical-stability constant.
    s_init: the initial scale, split over the betas.
    num_betas: how many decay rates 1 - 10^-1, ..., 1 - 10^-num_betas to run in parallel.

  Returns:
    A gradient transformation; its `update` needs `params` and passes extra arguments to the base.
  """
  _errors.check_nonnegative("mechanize", "weight_decay", weight_decay)
  _errors.check_nonnegative("mechanize", "eps", eps)
  _errors.check_nonnegative("mechanize", "s_init", s_init)
  _errors.check_positive_int("mechanize", "num_betas", num_betas)
  if not isinstance(num_betas, int):
    raise _errors.HyperparameterTypeError(f"mechanize: argument `num_betas` must be an int, got {num_betas!r}")
  base = _base.with_extra_args_support(base_optimizer)
  return _base.transformation("mechanize", _mechanic_init, _mechanic_update, base_optimizer=base,
                              weight_decay=weight_decay, eps=eps, s_init=s_init, num_betas=num_betas)
