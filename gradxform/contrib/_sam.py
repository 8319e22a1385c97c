"""Sharpness-aware minimization (Foret et al., 2021) as a wrapper of two optimizers, and `normalize`.

SAM alternates `sync_period - 1` adversarial ascent steps (by `adv_optimizer`) with one descent step
(by `optimizer`) taken with the gradient at the adversarial point, applied from the point the ascent
started. In the default transparent mode the steps are spread over consecutive `update` calls; in
opaque mode one `update` runs them all, taking gradients from the `grad_fn` keyword argument.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from gradxform import _base
from gradxform import _errors
from gradxform import _numerics
from gradxform import _tree
from gradxform._update import apply_updates

__all__ = ["NormalizeState", "SAMState", "normalize", "sam"]

NormalizeState = _base.EmptyState


class SAMState(NamedTuple):
  """State of `sam`: steps since the last descent, both optimizers' states and the ascent's start point."""
  steps_since_sync: jax.Array
  opt_state: _base.OptState
  adv_state: _base.OptState
  cache: Optional[_base.Params]


def _normalize_update(updates, state, params=None, **extra_args):
  del params, extra_args
  norm = _tree.global_norm(updates)
  return _tree.map_updates(lambda g: _numerics.div(g, norm), updates), state


def normalize() -> _base.GradientTransformationExtraArgs:
  """Divides the updates by their global L2 norm (SAM's ascent direction, g / ||g||).

  Returns:
    A stateless GradientTransformation.
  """
  return _base.transformation("normalize", _base.init_empty_state, _normalize_update)


def _select(cond, if_true, if_false):
  """cond * if_true + (1 - cond) * if_false per leaf (arithmetic, as a NaN in either side propagates)."""
  def leaf(t, f):
    on, off = cond.astype(jnp.asarray(t).dtype), jnp.logical_not(cond).astype(jnp.asarray(f).dtype)
    return _numerics.add(on * t, off * f)
  return jax.tree.map(leaf, if_true, if_false)


def _negate(tree):
  return jax.tree.map(lambda x: -x, tree)


def _sam_init(params, *, optimizer, adv_optimizer, opaque_mode, **_):
  return SAMState(steps_since_sync=jnp.zeros([], jnp.int32), opt_state=optimizer.init(params),
                  adv_state=adv_optimizer.init(params), cache=None if opaque_mode else params)


def _transparent_update(updates, state, params, *, optimizer, adv_optimizer, sync_period, reset_state):
  _errors.require_params(params, "sam")
  first = state.steps_since_sync == 0
  last = state.steps_since_sync == sync_period - 1
  adv_updates, adv_state = adv_optimizer.update(updates, state.adv_state, params)
  adv_updates = _negate(adv_updates)
  # The descent step is taken from the cached start point: its update is relative to the current params.
  opt_updates, opt_state = optimizer.update(updates, state.opt_state, state.cache)
  opt_updates = jax.tree.map(lambda c, p, u: _numerics.add(_numerics.sub(c, p), u), state.cache, params,
                             opt_updates)
  cache = _select(first, params, state.cache)
  new_updates = _select(last, opt_updates, adv_updates)
  restart = adv_optimizer.init(params) if reset_state else state.adv_state
  adv_state = _select(last, restart, adv_state)
  opt_state = _select(last, opt_state, state.opt_state)
  steps = (state.steps_since_sync + 1) % sync_period
  return new_updates, SAMState(steps_since_sync=steps, opt_state=opt_state, adv_state=adv_state, cache=cache)


def _opaque_update(updates, state, params, *, optimizer, adv_optimizer, sync_period, reset_state,
                   batch_axis_name, grad_fn):
  _errors.require_extra_args("sam", {"grad_fn": grad_fn}, ("grad_fn",))
  adv_params, adv_updates, adv_state = params, updates, state.adv_state
  for i in range(sync_period - 1):
    adv_updates, adv_state = adv_optimizer.update(adv_updates, adv_state, adv_params)
    adv_params = apply_updates(adv_params, _negate(adv_updates))
    adv_updates = grad_fn(adv_params, i)
    if batch_axis_name is not None:
      adv_updates = jax.lax.pmean(adv_updates, axis_name=batch_axis_name)
  if reset_state:
    adv_state = adv_optimizer.init(params)
  new_updates, opt_state = optimizer.update(adv_updates, state.opt_state, params)
  return new_updates, SAMState(steps_since_sync=jnp.zeros([], jnp.int32), opt_state=opt_state,
                               adv_state=adv_state, cache=None)


def _sam_update(updates, state, params=None, *, optimizer, adv_optimizer, sync_period, reset_state, opaque_mode,
                batch_axis_name, grad_fn=None, **extra_args):
  del extra_args
  _errors.expect_state(state, (SAMState,), "sam")
  if opaque_mode:
    return _opaque_update(updates, state, params, optimizer=optimizer, adv_optimizer=adv_optimizer,
                          sync_period=sync_period, reset_state=reset_state, batch_axis_name=batch_axis_name,
                          grad_fn=grad_fn)
  return _transparent_update(updates, state, params, optimizer=optimizer, adv_optimizer=adv_optimizer,
                             sync_period=sync_period, reset_state=reset_state)


def sam(optimizer: _base.GradientTransformation, adv_optimizer: _base.GradientTransformation,
        sync_period: int = 2, reset_state: bool = True, opaque_mode: bool = False,
        batch_axis_name: Optional[str] = None) -> _base.GradientTransformationExtraArgs:
  """Sharpness-aware minimization: ascent steps by `adv_optimizer`, then a descent step by `optimizer`.

  With `adv_optimizer = chain(normalize(), sgd(rho))` and `sync_period=2` this is the SAM of Foret et
  al. (2021): x_adv = x + rho g / ||g||, then x <- x - lr * grad(x_adv).

  Args:
    optimizer: the outer (descent) optimizer.
    adv_optimizer: the inner (ascent) optimizer; its updates are negated.
    sync_period: steps per cycle: sync_period - 1 ascent steps and one descent step (>= 1).
    reset_state: re-initialize the ascent optimizer's state after each descent step.
    opaque_mode: run the whole cycle in one `update`, which then needs `grad_fn(params, i)` as a
      keyword argument; otherwise each `update` call is one step of the cycle.
    batch_axis_name: in opaque mode, the axis over which to average the ascent gradients (pmean).

  Returns:
    A GradientTransformationExtraArgs; its update needs params.
  """
  _errors.check_number("sam", "sync_period", sync_period, low=1.0)
  return _base.transformation("sam", _sam_init, _sam_update,
                              optimizer=_base.with_extra_args_support(optimizer),
                              adv_optimizer=_base.with_extra_args_support(adv_optimizer),
                              sync_period=sync_period, reset_state=reset_state, opaque_mode=opaque_mode,
                              batch_axis_name=batch_axis_name)
