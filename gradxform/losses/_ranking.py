"""Ranking losses: costs of the ranking induced by item scores against graded relevance labels.

They work on the last axis (the list of items); leading axes are batches of lists. Invalid items are
masked with `where` and never count, and lists without valid items contribute 0 to a mean instead of
NaN.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Optional

import jax
import jax.numpy as jnp

from gradxform import _numerics
from gradxform.losses import _checks

__all__ = ["ranking_softmax_loss"]


def _reduce(loss: jax.Array, where: Optional[jax.Array], reduce_fn: Optional[Callable]) -> jax.Array:
  """`reduce_fn(loss, where=where)`, with the NaN of an all-masked mean turned into 0.

  A mean over no valid list is 0/0; it becomes 0 unless the losses themselves hold a NaN, which is
  passed on rather than hidden. Without `reduce_fn`, masked lists are set to 0 so that summing the
  unreduced losses equals the sum reduction.
  """
  if reduce_fn is None:
    return loss if where is None else jnp.where(where, loss, 0.0)
  out = reduce_fn(loss, where=where)
  if reduce_fn is jnp.mean:
    genuine_nan = jnp.any(jnp.isnan(loss))
    out = jnp.where(jnp.isnan(out) & ~genuine_nan, 0.0, out)
  return out


def ranking_softmax_loss(
    logits: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    *,
    where: Optional[jax.typing.ArrayLike] = None,
    weights: Optional[jax.typing.ArrayLike] = None,
    reduce_fn: Optional[Callable[..., jax.typing.ArrayLike]] = jnp.mean
) -> jax.Array:
  r"""Listwise softmax loss -sum_i y_i log softmax(s)_i over the items of each list.

  Args:
    logits: floating-point item scores, shape [..., list_size].
    labels: relevance labels, broadcastable against `logits`.
    where: optional mask [..., list_size] of the valid items; invalid items are left out.
    weights: optional per-item weights, multiplying the labels.
    reduce_fn: reduction over lists called as `reduce_fn(losses, where=valid_lists)`, e.g.
      `jnp.mean` (the default) or `jnp.sum`; None returns the per-list losses.

  Returns:
    the reduced loss, or the [...] per-list losses when `reduce_fn` is None.
  """
  fn = "ranking_softmax_loss"
  _checks.floating(fn, "logits", logits)
  logits = jnp.asarray(logits)
  if logits.ndim == 0:
    raise _checks.LossShapeError(f"{fn}: `logits` needs a list axis, got {_checks.describe(logits)}")
  _checks.broadcastable(fn, logits=logits, labels=labels, where=where, weights=weights)
  if reduce_fn is not None and not callable(reduce_fn):
    raise _checks.LossArgumentError(
        f"{fn}: `reduce_fn` must be a function or None, got {type(reduce_fn).__name__}")
  labels = jnp.asarray(labels).astype(logits.dtype)
  if where is not None:
    where = jnp.asarray(where)
    labels = jnp.where(where, labels, jnp.zeros_like(labels))
    logits = jnp.where(where, logits, jnp.full_like(logits, -jnp.inf))
  if weights is not None:
    labels = _numerics.mul(labels, weights)
  loss = -jnp.sum(_numerics.mul(labels, jax.nn.log_softmax(logits, axis=-1)), axis=-1, where=where)
  valid_lists = None if where is None else jnp.any(where, axis=-1)
  return _reduce(loss, valid_lists, reduce_fn)
