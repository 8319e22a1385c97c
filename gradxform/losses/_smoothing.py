"""Label smoothing (Müller, Kornblith & Hinton, 2019)."""

from __future__ import annotations

from typing import Union

import jax
import jax.numpy as jnp

from gradxform import _numerics
from gradxform.losses import _checks

__all__ = ["smooth_labels"]


def smooth_labels(
    labels: jax.typing.ArrayLike,
    alpha: jax.typing.ArrayLike,
    *,
    axis: Union[int, tuple[int, ...], None] = -1,
    where: Union[jax.typing.ArrayLike, None] = None,
) -> jax.Array:
  """Mixes one-hot labels with the uniform distribution: (1 - alpha) * labels + alpha / num_classes.

  Smoothed targets discourage over-confident logits and tend to improve calibration.

  Args:
    labels: floating-point one-hot labels.
    alpha: the smoothing factor, in [0, 1].
    axis: class axis or axes (None: all).
    where: optional mask of the valid classes; the uniform part is spread over these only.

  Returns:
    the smoothed labels, shaped like `labels` (broadcast with `where`).
  """
  fn = "smooth_labels"
  _checks.floating(fn, "labels", labels)
  labels = jnp.asarray(labels)
  _checks.axes(fn, axis, labels.ndim)
  if where is None:
    num_classes = jnp.size(labels, axis)
  else:
    _checks.broadcastable(fn, labels=labels, where=where)
    num_classes = jnp.sum(where, axis, keepdims=True)
  kept = _numerics.mul(1.0 - alpha, labels)
  share = _numerics.div(alpha, num_classes)
  weak_alpha = isinstance(alpha, float) or (isinstance(alpha, jax.Array) and alpha.weak_type
                                            and jnp.issubdtype(alpha.dtype, jnp.inexact))
  if weak_alpha and isinstance(num_classes, jax.Array):
    # A Python float over an integer count is weakly typed under standard promotion: it takes the
    # labels' dtype instead of widening them.
    share = share.astype(kept.dtype)
  return _numerics.add(kept, share)
