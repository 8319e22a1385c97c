"""Sign-based scalings: the sign of the gradient (signSGD) and Rprop's per-element adaptive steps."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from gradxform import _base
from gradxform import _errors
from gradxform import _numerics
from gradxform import _tree

__all__ = ["ScaleByRpropState", "scale_by_rprop", "scale_by_sign"]


def _sign_update(updates, state, params=None, **extra_args):
  del params, extra_args
  return _tree.map_updates(jnp.sign, updates), state


def scale_by_sign() -> _base.GradientTransformationExtraArgs:
  """Replaces each update element by its sign, -1, 0 or +1 (Bernstein et al., 2018).

  Returns:
    A stateless transformation.
  """
  return _base.transformation("scale_by_sign", _base.init_empty_state, _sign_update)


class ScaleByRpropState(NamedTuple):
  """State of `scale_by_rprop`: the per-element step sizes and the previous step taken."""
  step_sizes: _base.Updates
  prev_updates: _base.Updates


def _rprop_init(params, *, learning_rate, **_):
  # The fill value is converted straight to each leaf's dtype, never through a wider intermediate.
  fill = lambda z: z + jnp.asarray(learning_rate, dtype=z.dtype)
  return ScaleByRpropState(step_sizes=_tree.map_updates(fill, _tree.zeros_like(params)),
                           prev_updates=_tree.zeros_like(params))


def _rprop_leaf(g, step_size, prev, *, eta_minus, eta_plus, min_step_size, max_step_size):
  agreement = _numerics.mul(g, prev)
  factor = jnp.where(agreement > 0, *_numerics.promote(eta_plus, eta_minus))
  grown = jnp.clip(_numerics.mul(step_size, factor), min=min_step_size, max=max_step_size)
  new_step_size = jnp.where(agreement == 0, step_size, grown)
  # After a sign flip the stored step is zero, so the next agreement is 0 and the size is kept.
  new_prev = jnp.where(agreement < 0, jnp.zeros_like(g), _numerics.mul(new_step_size, jnp.sign(g)))
  # optax 0.2.8 returns the step stored at the previous call (zeroed after a sign flip), not the one
  # just computed: the first update is zero and each step lags one call behind. Kept for equivalence.
  update = jnp.where(agreement < 0, jnp.zeros_like(prev), prev)
  return update, new_step_size, new_prev


def _rprop_update(updates, state, params=None, *, learning_rate, eta_minus, eta_plus, min_step_size,
                  max_step_size, **extra_args):
  del params, learning_rate, extra_args
  _errors.expect_state(state, (ScaleByRpropState,), "scale_by_rprop")
  _errors.reject_complex(updates, "scale_by_rprop compares gradient signs and clips step sizes, which complex "
                         "numbers do not allow (optax fails there too)")
  leaf = lambda g, s, prev: _rprop_leaf(g, s, prev, eta_minus=eta_minus, eta_plus=eta_plus,
                                        min_step_size=min_step_size, max_step_size=max_step_size)
  updates, (step_sizes, prev_updates) = _tree.leafwise(
      leaf, updates, (state.step_sizes, state.prev_updates), state_names=("state.step_sizes", "state.prev_updates"))
  return updates, ScaleByRpropState(step_sizes=step_sizes, prev_updates=prev_updates)


def scale_by_rprop(learning_rate: jax.typing.ArrayLike, eta_minus: jax.typing.ArrayLike = 0.5,
                   eta_plus: jax.typing.ArrayLike = 1.2, min_step_size: jax.typing.ArrayLike = 1e-6,
                   max_step_size: jax.typing.ArrayLike = 50.0) -> _base.GradientTransformationExtraArgs:
  """Rprop (Riedmiller & Braun, 1993): a per-element step size that grows by eta_plus while the gradient keeps
  its sign and shrinks by eta_minus when it flips; the step taken is step_size * sign(g).

  Step sizes are clipped to [min_step_size, max_step_size]. After a sign flip the element takes no
  step (the iRprop- variant), so the following step keeps its size. As in optax 0.2.8, each call
  returns the step computed at the previous call (the first update is zero).

  Args:
    learning_rate: the initial step size of every element.
    eta_minus: factor applied to the step size after a sign change (< 1).
    eta_plus: factor applied while the sign is unchanged (> 1).
    min_step_size, max_step_size: bounds on the step size.

  Returns:
    The transformation (updates are positive along the gradient: chain with scale(-1) to descend).
  """
  fn = "scale_by_rprop"
  _errors.check_nonnegative(fn, "learning_rate", learning_rate)
  _errors.check_nonnegative(fn, "eta_minus", eta_minus)
  _errors.check_nonnegative(fn, "eta_plus", eta_plus)
  _errors.check_nonnegative(fn, "min_step_size", min_step_size)
  _errors.check_nonnegative(fn, "max_step_size", max_step_size)
  return _base.transformation(fn, _rprop_init, _rprop_update, learning_rate=learning_rate, eta_minus=eta_minus,
                              eta_plus=eta_plus, min_step_size=min_step_size, max_step_size=max_step_size)
