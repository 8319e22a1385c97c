"""Regression losses: squared, L2, Huber and log-cosh errors, and the cosine similarity/distance."""

from __future__ import annotations

from typing import Optional, Union

import jax
import jax.numpy as jnp

from gradxform import _numerics
from gradxform.losses import _checks

__all__ = ["squared_error", "l2_loss", "huber_loss", "log_cosh", "cosine_similarity", "cosine_distance"]


def _errors_of(fn: str, predictions, targets):
  """predictions - targets (or predictions alone), after checking the two broadcast together."""
  if targets is None:
    return predictions
  _checks.broadcastable(fn, predictions=predictions, targets=targets)
  return _numerics.sub(predictions, targets)


def squared_error(
    predictions: jax.typing.ArrayLike,
    targets: Optional[jax.typing.ArrayLike] = None,
) -> jax.Array:
  """Elementwise squared error (predictions - targets)**2; its mean is the MSE.

  Args:
    predictions: floating-point predictions of any shape.
    targets: targets of exactly the shape of `predictions` (no broadcasting), or None for zeros.

  Returns:
    the squared errors, shaped like `predictions`.
  """
  _checks.floating("squared_error", "predictions", predictions)
  if targets is not None:
    # The shapes must match exactly, so that a stray broadcast ((n,) vs (n, 1)) cannot pass silently.
    _checks.same_shape("squared_error", "predictions", predictions, "targets", targets)
    predictions = _numerics.sub(predictions, targets)
  return predictions ** 2


def l2_loss(
    predictions: jax.typing.ArrayLike,
    targets: Optional[jax.typing.ArrayLike] = None,
) -> jax.Array:
  """Half the squared error, 0.5 * (predictions - targets)**2 (Bishop's convention).

  Args:
    predictions: floating-point predictions of any shape.
    targets: targets of exactly the shape of `predictions`, or None for zeros.

  Returns:
    the halved squared errors, shaped like `predictions`.
  """
  _checks.floating("l2_loss", "predictions", predictions)
  if targets is not None:
    _checks.same_shape("l2_loss", "predictions", predictions, "targets", targets)
  return 0.5 * squared_error(jnp.asarray(predictions), targets)


def huber_loss(
    predictions: jax.typing.ArrayLike,
    targets: Optional[jax.typing.ArrayLike] = None,
    *,
    delta: jax.typing.ArrayLike = 1.0,
) -> jax.Array:
  """Huber loss: quadratic for errors up to `delta`, linear beyond.

  loss(e) = 0.5 e^2 for |e| <= delta, and 0.5 delta^2 + delta (|e| - delta) otherwise; its gradient
  is the error clipped to [-delta, delta].

  Args:
    predictions: floating-point predictions of any shape.
    targets: targets broadcastable against `predictions`, or None for zeros.
    delta: where the loss turns from quadratic to linear.

  Returns:
    the elementwise losses.
  """
  _checks.floating("huber_loss", "predictions", predictions)
  size = jnp.abs(_errors_of("huber_loss", predictions, targets))
  inner = jnp.minimum(*_numerics.promote(size, delta))
  # |e| - min(|e|, delta) rather than max(|e| - delta, 0): at |e| == delta only one branch gets gradient.
  outer = _numerics.sub(size, inner)
  return _numerics.add(0.5 * inner ** 2, _numerics.mul(delta, outer))


def log_cosh(
    predictions: jax.typing.ArrayLike,
    targets: Optional[jax.typing.ArrayLike] = None,
) -> jax.Array:
  """log(cosh(predictions - targets)): about e^2 / 2 near 0 and |e| - log 2 far away, smooth everywhere.

  Computed as logaddexp(e, -e) - log 2, which never overflows (Chen et al., 2019).

  Args:
    predictions: floating-point predictions of any shape.
    targets: targets broadcastable against `predictions`, or None for zeros.

  Returns:
    the elementwise losses.
  """
  _checks.floating("log_cosh", "predictions", predictions)
  e = jnp.asarray(_errors_of("log_cosh", predictions, targets))
  return jnp.logaddexp(e, -e) - jnp.log(2.0).astype(e.dtype)


def _check_pair(fn: str, predictions, targets, axis, where):
  _checks.floating(fn, "predictions", predictions)
  _checks.floating(fn, "targets", targets)
  shape = _checks.broadcastable(fn, predictions=predictions, targets=targets)
  _checks.broadcastable(fn, predictions=predictions, targets=targets, where=where)
  _checks.axes(fn, axis, len(shape))


def _cosine_similarity(predictions, targets, epsilon, axis, where):
  def unit(v):
    squared_norm = jnp.square(v).sum(axis=axis, where=where, keepdims=True)
    # max(norm^2, epsilon) as jnp.clip does it, so ties split the gradient the same way.
    return _numerics.div(v, jnp.sqrt(_numerics.maximum(epsilon, squared_norm)))

  return _numerics.mul(unit(predictions), unit(targets)).sum(axis=axis, where=where)


def cosine_similarity(
    predictions: jax.typing.ArrayLike,
    targets: jax.typing.ArrayLike,
    *,
    epsilon: jax.typing.ArrayLike = 0.0,
    axis: Union[int, tuple[int, ...], None] = -1,
    where: Union[jax.typing.ArrayLike, None] = None,
) -> jax.Array:
  """Cosine of the angle between predictions and targets along `axis`.

  Each vector is divided by sqrt(max(|v|^2, epsilon)) before the inner product.

  Args:
    predictions: floating-point vectors, shape [..., dim].
    targets: floating-point vectors broadcastable against `predictions`.
    epsilon: floor for the squared norms in the denominator.
    axis: axis or axes holding the vector components (None: all).
    where: optional mask of the components to include.

  Returns:
    the similarities, shape [...].
  """
  _check_pair("cosine_similarity", predictions, targets, axis, where)
  return _cosine_similarity(jnp.asarray(predictions), jnp.asarray(targets), epsilon, axis, where)


def cosine_distance(
    predictions: jax.typing.ArrayLike,
    targets: jax.typing.ArrayLike,
    *,
    epsilon: jax.typing.ArrayLike = 0.0,
    axis: Union[int, tuple[int, ...], None] = -1,
    where: Union[jax.typing.ArrayLike, None] = None,
) -> jax.Array:
  """One minus the cosine similarity: 0 for aligned vectors, 2 for opposite ones.

  Args:
    predictions: floating-point vectors, shape [..., dim].
    targets: floating-point vectors broadcastable against `predictions`.
    epsilon: floor for the squared norms in the denominator.
    axis: axis or axes holding the vector components (None: all).
    where: optional mask of the components to include.

  Returns:
    the distances, shape [...].
  """
  _check_pair("cosine_distance", predictions, targets, axis, where)
  return 1.0 - _cosine_similarity(jnp.asarray(predictions), jnp.asarray(targets), epsilon, axis, where)
