"""Clipping: elementwise (clip) and by the global norm of all updates (clip_by_global_norm)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gradxform import _base
from gradxform import _errors
from gradxform import _numerics
from gradxform import _tree

__all__ = ["clip", "clip_by_global_norm"]


def _clip_update(updates, state, params=None, *, max_delta, **extra_args):
  del params, extra_args
  return _tree.map_updates(lambda g: jnp.clip(g, -max_delta, max_delta), updates), state


def clip(max_delta: jax.typing.ArrayLike) -> _base.GradientTransformationExtraArgs:
  """Clips every update element to [-max_delta, max_delta].

  Args:
    max_delta: the bound, >= 0.
  """
  _errors.check_nonnegative("clip", "max_delta", max_delta)
  return _base.transformation("clip", _base.init_empty_state, _clip_update, max_delta=max_delta)


def _clip_by_global_norm_update(updates, state, params=None, *, max_norm, **extra_args):
  del params, extra_args
  norm = _tree.global_norm(updates)
  keep = norm < max_norm

  def leaf(g):
    # select (not a multiplication by min(1, max_norm / norm)) keeps unclipped updates bit-identical.
    clipped = _numerics.mul(g / norm.astype(g.dtype), max_norm)
    return jax.lax.select(keep, g, clipped)

  return _tree.map_updates(leaf, updates), state


def clip_by_global_norm(max_norm: jax.typing.ArrayLike) -> _base.GradientTransformationExtraArgs:
  """Rescales all updates together so their global L2 norm is at most `max_norm` (Pascanu et al., 2013).

  g <- g * max_norm / ||g||  where ||g|| >= max_norm, unchanged otherwise; ||g|| is over all leaves.

  Args:
    max_norm: the largest allowed global norm, > 0.
  """
  _errors.check_number("clip_by_global_norm", "max_norm", max_norm, low=0.0, low_open=True)
  return _base.transformation("clip_by_global_norm", _base.init_empty_state, _clip_by_global_norm_update,
                              max_norm=max_norm)
