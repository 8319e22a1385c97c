"""Segmentation losses: soft Dice / Tversky loss, its generalized (frequency-weighted) and binary forms."""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from gradxform import _numerics
from gradxform.losses import _checks

__all__ = ["dice_loss", "multiclass_generalized_dice_loss", "binary_dice_loss"]

_REDUCTIONS = ("mean", "sum", "none")


def _add_channel(predictions, targets):
  """Gives a channel-less input (one rank below the other) a trailing channel axis of size 1."""
  if predictions.ndim == targets.ndim - 1:
    predictions = predictions[..., None]
  if targets.ndim == predictions.ndim - 1:
    targets = targets[..., None]
  return predictions, targets


def _check_probabilities(fn: str, predictions) -> None:
  """With apply_softmax=False, predictions must sum to 1 over classes; checked whenever values are known.

  Inside jit the values are unknown and the check is skipped (optax fails there with a tracer error).
  """
  sums = jnp.sum(predictions, axis=-1)
  try:
    valid = bool(jnp.allclose(sums, 1.0, rtol=1e-5))
  except jax.errors.ConcretizationTypeError:
    return
  if not valid:
    raise _checks.LossArgumentError(
        f"{fn}: with apply_softmax=False, `predictions` must be probabilities summing to 1 over the "
        f"last (class) axis; the sums range over [{float(jnp.min(sums)):.6f}, {float(jnp.max(sums)):.6f}]")


def _dice(fn, predictions, targets, *, class_weights, smooth, alpha, beta, apply_softmax,
          reduction, ignore_background, axis):
  if reduction not in _REDUCTIONS:
    raise _checks.LossArgumentError(
        f"{fn}: `reduction` must be one of {_REDUCTIONS}, got {reduction!r}")
  predictions, targets = _add_channel(jnp.asarray(predictions), jnp.asarray(targets))
  _checks.same_shape(fn, "predictions", predictions, "targets", targets)
  if class_weights is not None:
    _checks.rank(fn, "class_weights", class_weights, 1, "[num_classes]")
  if not apply_softmax:
    _check_probabilities(fn, predictions)
    probs = predictions
  elif predictions.shape[-1] == 1:
    probs = jax.nn.sigmoid(predictions)  # one channel: binary segmentation
  else:
    probs = jax.nn.softmax(predictions, axis=-1)
  if axis is None:
    axis = tuple(range(1, probs.ndim - 1))  # spatial axes: all but batch (first) and classes (last)
  else:
    _checks.axes(fn, axis, probs.ndim)

  overlap = jnp.sum(_numerics.mul(probs, targets), axis=axis)
  predicted = jnp.sum(probs, axis=axis)
  actual = jnp.sum(targets, axis=axis)
  # Tversky index: false positives weighted by alpha, false negatives by beta (Dice at 0.5, 0.5).
  denominator = _numerics.add(
      _numerics.add(_numerics.add(overlap, _numerics.mul(alpha, _numerics.sub(predicted, overlap))),
                    _numerics.mul(beta, _numerics.sub(actual, overlap))),
      smooth)
  loss = 1.0 - _numerics.div(_numerics.add(overlap, smooth), denominator)  # [..., classes]

  if class_weights is not None:
    loss = _numerics.mul(loss, class_weights)
  if ignore_background and probs.shape[-1] > 1:
    loss = loss[..., 1:]
  if reduction == "mean":
    return jnp.mean(loss, axis=-1)
  if reduction == "sum":
    return jnp.sum(loss, axis=-1)
  return loss


def dice_loss(
    predictions: jax.typing.ArrayLike,
    targets: jax.typing.ArrayLike,
    *,
    class_weights: Optional[jax.typing.ArrayLike] = None,
    smooth: jax.typing.ArrayLike = 1.,
    alpha: jax.typing.ArrayLike = 0.5,
    beta: jax.typing.ArrayLike = 0.5,
    apply_softmax: bool = True,
    reduction: str = "mean",
    ignore_background: bool = False,
    axis: Optional[jax.typing.ArrayLike] = None,
) -> jax.Array:
  r"""Soft Dice (Tversky) loss per class, reduced over classes (Milletari et al., 2016).

  For class c, with I the overlap sum p t, P = sum p and T = sum t over the summed axes:
  loss_c = 1 - (I + smooth) / (I + alpha (P - I) + beta (T - I) + smooth). alpha = beta = 0.5 is the
  Dice loss; alpha > beta penalizes false positives more, beta > alpha false negatives.

  Args:
    predictions: logits [..., num_classes], or [..., 1] / [...] for binary segmentation (sigmoid).
    targets: one-hot targets of the same shape (or binary targets [..., 1] / [...]).
    class_weights: optional [num_classes] weights of the per-class losses.
    smooth: added to numerator and denominator; keeps empty classes finite.
    alpha: weight of false positives.
    beta: weight of false negatives.
    apply_softmax: False when `predictions` are already probabilities (checked to sum to 1 when
      the values are concrete).
    reduction: "mean" or "sum" over classes, or "none" for per-class losses.
    ignore_background: drop class 0 from the result (when there is more than one class).
    axis: axis or axes to sum over; None sums all axes but the first (batch) and last (classes).

  Returns:
    the losses: [...] batch shape for "mean"/"sum", [..., num_classes] for "none".
  """
  return _dice("dice_loss", predictions, targets, class_weights=class_weights,
               smooth=smooth, alpha=alpha, beta=beta, apply_softmax=apply_softmax, reduction=reduction,
               ignore_background=ignore_background, axis=axis)


def multiclass_generalized_dice_loss(
    predictions: jax.typing.ArrayLike,
    targets: jax.typing.ArrayLike,
    *,
    smooth: jax.typing.ArrayLike = 1.,
    apply_softmax: bool = True,
    ignore_background: bool = False,
) -> jax.Array:
  """Generalized Dice loss: per-class Dice losses weighted by inverse squared class frequency (Sudre et al., 2017).

  The weights 1 / (f_c^2 + 1e-7), with f_c the number of target pixels of class c in the batch, are
  normalized to average 1, so rare classes count as much as frequent ones.

  Args:
    predictions: logits [..., num_classes].
    targets: one-hot targets [..., num_classes].
    smooth: added to numerator and denominator of each Dice ratio.
    apply_softmax: False when `predictions` are already probabilities.
    ignore_background: drop class 0 before averaging.

  Returns:
    the scalar loss, averaged over classes and batch.
  """
  fn = "multiclass_generalized_dice_loss"
  predictions, targets = jnp.asarray(predictions), jnp.asarray(targets)
  _checks.same_shape(fn, "predictions", predictions, "targets", targets)
  if targets.ndim == 0:
    raise _checks.LossShapeError(f"{fn}: `targets` needs a class axis, got {_checks.describe(targets)}")
  frequencies = jnp.sum(targets, axis=tuple(range(targets.ndim - 1)))
  squared = frequencies ** 2
  if not jnp.issubdtype(squared.dtype, jnp.inexact):
    squared = squared.astype(_checks.standard_dtype(squared, 1e-7))  # integer counts: float32 weights
  weights = 1.0 / (squared + 1e-7)
  weights = weights / jnp.sum(weights) * len(weights)
  losses = _dice(fn, predictions, targets, class_weights=weights, smooth=smooth,
                 alpha=0.5, beta=0.5, apply_softmax=apply_softmax, reduction="none",
                 ignore_background=ignore_background, axis=None)
  return jnp.mean(losses)


def binary_dice_loss(
    predictions: jax.typing.ArrayLike,
    targets: jax.typing.ArrayLike,
    *,
    smooth: jax.typing.ArrayLike = 1.,
    apply_sigmoid: bool = True,
) -> jax.Array:
  """Dice loss of a binary segmentation given as one logit (or probability) per pixel.

  Args:
    predictions: logits [...] or [..., 1].
    targets: binary targets of the same shape.
    smooth: added to numerator and denominator.
    apply_sigmoid: False when `predictions` are probabilities. (As in optax, the inputs are then
      checked to sum to 1 over their single channel, so only all-ones predictions pass.)

  Returns:
    the losses, batch shape [...] without the channel axis.
  """
  predictions, targets = jnp.asarray(predictions), jnp.asarray(targets)
  if predictions.ndim == 0:
    raise _checks.LossShapeError(
        f"binary_dice_loss: `predictions` needs at least a batch axis, got {_checks.describe(predictions)}")
  if predictions.ndim == targets.ndim and predictions.shape[-1] != 1:
    predictions, targets = predictions[..., None], targets[..., None]
  return _dice("binary_dice_loss", predictions, targets, class_weights=None,
               smooth=smooth, alpha=0.5, beta=0.5, apply_softmax=apply_sigmoid, reduction="mean",
               ignore_background=False, axis=None)
