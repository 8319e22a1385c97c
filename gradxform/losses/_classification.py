"""Classification losses: sigmoid and softmax cross entropies, hinge and perceptron losses, focal and poly losses.

The cross entropies work on log-probabilities from `jax.nn.log_sigmoid` / `jax.nn.log_softmax`, never on
log(probabilities), so large logits neither overflow nor lose their gradient.
"""

from __future__ import annotations

from typing import Optional, Union

import jax
import jax.numpy as jnp

from gradxform import _numerics
from gradxform.losses import _checks

__all__ = [
    "sigmoid_binary_cross_entropy", "hinge_loss", "perceptron_loss", "safe_softmax_cross_entropy",
    "softmax_cross_entropy", "softmax_cross_entropy_with_integer_labels", "multiclass_hinge_loss",
    "multiclass_perceptron_loss", "poly_loss_cross_entropy", "sigmoid_focal_loss",
]


# ----------------------------------------------------------------------------------------------
# Binary losses.


def _sigmoid_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """-y log(sigmoid(x)) - (1 - y) log(sigmoid(-x)), for labels already in the logits' dtype."""
  # log(1 - sigmoid(x)) is written log_sigmoid(-x): exact where 1 - sigmoid(x) would round to 0.
  return -labels * jax.nn.log_sigmoid(logits) - (1.0 - labels) * jax.nn.log_sigmoid(-logits)


def sigmoid_binary_cross_entropy(
    logits,
    labels,
):
  """Elementwise cross entropy of independent binary predictions given as logits.

  loss = -y log(sigmoid(x)) - (1 - y) log(1 - sigmoid(x)). Suits binary labels (logits for class 1)
  and multi-label problems (one logit and one target probability per class).

  Args:
    logits: floating-point logits.
    labels: labels in {0, 1} or target probabilities in [0, 1], broadcastable against `logits`.

  Returns:
    the cross entropies, with the broadcast shape of `logits` and `labels`.
  """
  fn = "sigmoid_binary_cross_entropy"
  _checks.floating(fn, "logits", logits)
  _checks.broadcastable(fn, logits=logits, labels=labels)
  logits = jnp.asarray(logits)
  return _sigmoid_cross_entropy(logits, jnp.asarray(labels).astype(logits.dtype))


def hinge_loss(
    predictor_outputs: jax.typing.ArrayLike, targets: jax.typing.ArrayLike
) -> jax.Array:
  """Binary hinge loss max(0, 1 - score * target).

  Args:
    predictor_outputs: the decision function's scores.
    targets: targets in {-1, 1}, broadcastable against the scores.

  Returns:
    the elementwise losses.
  """
  _checks.broadcastable("hinge_loss", predictor_outputs=predictor_outputs, targets=targets)
  return jnp.maximum(0, 1 - _numerics.mul(predictor_outputs, targets))


def perceptron_loss(
    predictor_outputs: jax.typing.ArrayLike, targets: jax.typing.ArrayLike
) -> jax.Array:
  """Binary perceptron loss max(0, -score * target).

  Args:
    predictor_outputs: the model's scores.
    targets: targets in {-1, 1}, of exactly the scores' shape.

  Returns:
    the elementwise losses.
  """
  _checks.same_shape("perceptron_loss", "predictor_outputs", predictor_outputs, "targets", targets)
  return jnp.maximum(0, _numerics.mul(-predictor_outputs, targets))


def sigmoid_focal_loss(
    logits: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    *,
    alpha: Optional[jax.typing.ArrayLike] = None,
    gamma: jax.typing.ArrayLike = 2.0,
) -> jax.Array:
  """Focal loss: the sigmoid cross entropy scaled by (1 - p_t)^gamma (Lin et al., 2017).

  FL = -alpha_t (1 - p_t)^gamma log(p_t), with p_t the predicted probability of the true outcome and
  alpha_t = alpha for positives, 1 - alpha for negatives. The weight (1 - p_t)^gamma is computed as
  exp(gamma log(1 - p_t)), with log(1 - p_t) a weighted logsumexp of the two log-sigmoids, so it stays
  finite and smooth for large logits and for gamma < 2; soft labels in [0, 1] work too.

  Args:
    logits: floating-point logits.
    labels: labels in {0, 1} or soft targets in [0, 1], broadcastable against `logits`.
    alpha: optional weight of the positive class, in (0, 1); None weighs both classes by 1.
    gamma: focusing exponent; 0 gives the plain cross entropy.

  Returns:
    the elementwise losses.
  """
  fn = "sigmoid_focal_loss"
  _checks.floating(fn, "logits", logits)
  _checks.broadcastable(fn, logits=logits, labels=labels)
  logits = jnp.asarray(logits)
  labels = jnp.asarray(labels).astype(logits.dtype)
  cross_entropy = _sigmoid_cross_entropy(logits, labels)
  # log(1 - p_t) = log((1 - y) p + y (1 - p)), both terms in log space.
  log_miss = jax.nn.logsumexp(
      jnp.stack([jax.nn.log_sigmoid(logits), jax.nn.log_sigmoid(-logits)], axis=-1), axis=-1,
      b=jnp.stack([1 - labels, labels], axis=-1))
  loss = _numerics.mul(cross_entropy, jnp.exp(_numerics.mul(gamma, log_miss)))
  if alpha is None:
    return loss
  weight = _numerics.add(_numerics.mul(alpha, labels), _numerics.mul(1.0 - alpha, 1.0 - labels))
  return _numerics.mul(weight, loss)


# ----------------------------------------------------------------------------------------------
# Softmax cross entropies.


@jax.custom_jvp
def _weighted_log_softmax(logits: jax.Array, weights: jax.Array) -> jax.Array:
  """weights * log_softmax(logits), with 0 (not NaN) where a weight is 0: the 0 log 0 = 0 convention."""
  log_probs = jax.nn.log_softmax(logits, axis=-1)
  return jnp.where(weights != 0, _numerics.mul(weights, log_probs), 0.0)


@_weighted_log_softmax.defjvp
def _weighted_log_softmax_jvp(primals, tangents):
  # Differentiating the masked product directly would give 0 * inf = NaN at logits = -inf; the
  # analytic derivative w * (dx - <dx, softmax(x)>) + dw * log_softmax(x) has no such term.
  logits, weights = primals
  d_logits, d_weights = tangents
  log_probs = jax.nn.log_softmax(logits, axis=-1)
  out = jnp.where(weights != 0, _numerics.mul(weights, log_probs), 0.0)
  mean_tangent = jnp.sum(d_logits * jax.nn.softmax(logits, axis=-1), axis=-1, keepdims=True)
  d_out = _numerics.add(
      _numerics.sub(_numerics.mul(weights, d_logits), _numerics.mul(weights, mean_tangent)),
      _numerics.mul(d_weights, log_probs))
  return out, d_out


def safe_softmax_cross_entropy(
    logits: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
) -> jax.Array:
  """Softmax cross entropy that treats 0 * log(0) as 0, so logits may be -inf where labels are 0.

  Values and gradients stay finite when some classes are excluded with -inf logits.

  Args:
    logits: floating-point logits, shape [..., num_classes].
    labels: target distributions broadcastable against `logits`.

  Returns:
    the cross entropies, shape [...].
  """
  fn = "safe_softmax_cross_entropy"
  _checks.floating(fn, "logits", logits)
  _checks.broadcastable(fn, logits=logits, labels=labels)
  logits = jnp.asarray(logits)
  labels = jnp.asarray(labels)
  if not jnp.issubdtype(labels.dtype, jnp.inexact):
    # Integer/bool labels carry no tangent the rule could multiply; they mean the same as floats.
    labels = labels.astype(_checks.standard_dtype(logits, labels))
  return -jnp.sum(_weighted_log_softmax(logits, labels), axis=-1)


def _prepare_where(fn: str, where, logits: jax.Array, axis):
  """`where` as an array of logits' rank: a mask of the batch shape gets the class axes inserted."""
  if where is None:
    return None
  where = jnp.asarray(where)
  if where.ndim != logits.ndim:
    if axis is None:
      raise _checks.LossShapeError(
          f"{fn}: with axis=None, `where` must have the rank of `logits` {_checks.describe(logits)}, "
          f"got {_checks.describe(where)}")
    try:
      where = jnp.expand_dims(where, axis)
    except ValueError:
      raise _checks.LossShapeError(
          f"{fn}: `where` {_checks.describe(where)} must have the shape of `logits` "
          f"{_checks.describe(logits)} or its shape without axis={axis!r}") from None
  _checks.broadcastable(fn, logits=logits, where=where)
  return where


def _softmax_cross_entropy(logits, labels, axis, where):
  log_probs = jax.nn.log_softmax(logits, axis, where)
  return -_numerics.mul(labels, log_probs).sum(axis, where=where)


def softmax_cross_entropy(
    logits: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    axis: Union[int, tuple[int, ...], None] = -1,
    where: Union[jax.typing.ArrayLike, None] = None,
) -> jax.Array:
  """Cross entropy between target distributions and the softmax of the logits along `axis`.

  loss_i = -sum_j y_ij log_softmax(x_i)_j. Also called categorical cross entropy.

  Args:
    logits: floating-point logits, e.g. [batch, num_classes].
    labels: target distributions (one-hot or soft), broadcastable against `logits`.
    axis: class axis or axes (None: all axes).
    where: optional mask of the entries to include, shaped like `logits` or like its batch shape.

  Returns:
    the cross entropies, with the class axes reduced.
  """
  fn = "softmax_cross_entropy"
  _checks.floating(fn, "logits", logits)
  logits = jnp.asarray(logits)
  _checks.axes(fn, axis, logits.ndim)
  _checks.broadcastable(fn, logits=logits, labels=labels)
  where = _prepare_where(fn, where, logits, axis)
  return _softmax_cross_entropy(logits, labels, axis, where)


def softmax_cross_entropy_with_integer_labels(
    logits: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    axis: Union[int, tuple[int, ...]] = -1,
    where: Union[jax.typing.ArrayLike, None] = None,
) -> jax.Array:
  """Softmax cross entropy against integer class labels: logsumexp(x_i) - x_i[y_i].

  Only the true class's logit is read (no full log-softmax is formed). With a tuple `axis`, the
  class axes are flattened in order and a label is a flat index into them.

  Args:
    logits: floating-point logits, e.g. [batch, num_classes].
    labels: integer labels in [0, num_classes), shaped like `logits` without the class axes.
    axis: class axis, or a tuple of class axes.
    where: optional mask, shaped like `logits` or like its batch shape; fully masked rows give 0.

  Returns:
    the cross entropies, with the shape of `labels`.
  """
  fn = "softmax_cross_entropy_with_integer_labels"
  _checks.floating(fn, "logits", logits)
  _checks.integer(fn, "labels", labels)
  if not isinstance(axis, (int, tuple)):
    raise _checks.LossArgumentError(
        f"{fn}: `axis` must be an int or a tuple of ints, got {type(axis).__name__} {axis!r}")
  logits = jnp.asarray(logits)
  labels = jnp.asarray(labels)
  class_axes = _checks.axes(fn, axis, logits.ndim)
  where = _prepare_where(fn, where, logits, axis)
  batch_axes = tuple(a for a in range(logits.ndim) if a not in class_axes)
  batch_shape = tuple(logits.shape[a] for a in batch_axes)
  if labels.ndim != len(batch_shape) or not _checks.shapes_broadcast(labels.shape, batch_shape):
    raise _checks.LossShapeError(
        f"{fn}: `labels` {_checks.describe(labels)} must have the shape of `logits` "
        f"{_checks.describe(logits)} without the class axes {class_axes}, i.e. {list(batch_shape)}")
  if isinstance(axis, tuple):
    # Classes become one trailing axis: batch axes first, then the class axes in the order given.
    order = batch_axes + class_axes
    logits = logits.transpose(order).reshape(batch_shape + (-1,))
    if where is not None:
      where = where.transpose(order)
      where = where.reshape(where.shape[:len(batch_axes)] + (-1,))
    axis = len(batch_axes)
  else:
    axis = class_axes[0]
  true_logits = jnp.take_along_axis(logits, jnp.expand_dims(labels, axis), axis=axis).take(0, axis=axis)
  out = jax.nn.logsumexp(logits, axis=axis, where=where) - true_logits
  if where is not None:
    out = jnp.where(jnp.any(where, axis), out, 0.0)
  return out


# ----------------------------------------------------------------------------------------------
# Multiclass margin losses.

_dot_last = jnp.vectorize(jnp.dot, signature="(n),(n)->()")


def _one_hot_scores(fn: str, scores, labels):
  scores = jnp.asarray(scores)
  labels = jnp.asarray(labels)
  if scores.ndim == 0:
    raise _checks.LossShapeError(f"{fn}: `scores` needs a class axis, got {_checks.describe(scores)}")
  one_hot = jax.nn.one_hot(labels, scores.shape[-1])
  try:
    _checks.broadcastable(fn, scores=scores, one_hot_labels=one_hot)
  except _checks.LossShapeError:
    raise _checks.LossShapeError(
        f"{fn}: `labels` {_checks.describe(labels)} must have the shape of `scores` "
        f"{_checks.describe(scores)} without its last (class) axis") from None
  return scores, one_hot


def multiclass_hinge_loss(
    scores: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
) -> jax.Array:
  """Multiclass hinge loss max_j (s_j + [j != y]) - s_y.

  Args:
    scores: the model's scores, shape [..., num_classes].
    labels: integer labels, shape [...].

  Returns:
    the losses, shape [...].
  """
  scores, one_hot = _one_hot_scores("multiclass_hinge_loss", scores, labels)
  margins = _numerics.sub(_numerics.add(scores, 1.0), one_hot)
  return _numerics.sub(jnp.max(margins, axis=-1), _dot_last(*_numerics.promote(scores, one_hot)))


def multiclass_perceptron_loss(
    scores: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
) -> jax.Array:
  """Multiclass perceptron loss max_j s_j - s_y (Collins, 2002).

  Args:
    scores: the model's scores, shape [..., num_classes].
    labels: integer labels, shape [...].

  Returns:
    the losses, shape [...].
  """
  scores, one_hot = _one_hot_scores("multiclass_perceptron_loss", scores, labels)
  return _numerics.sub(jnp.max(scores, axis=-1), _dot_last(*_numerics.promote(scores, one_hot)))


def poly_loss_cross_entropy(
    logits: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    *,
    epsilon: jax.typing.ArrayLike = 2.0,
    axis: Union[int, tuple[int, ...], None] = -1,
    where: Union[jax.typing.ArrayLike, None] = None,
) -> jax.Array:
  """Poly-1 loss: softmax cross entropy + epsilon * (1 - p_t) (Leng et al., 2022).

  p_t is the probability given to the target, sum_j y_j softmax(x)_j, so only the first term of the
  cross entropy's polynomial expansion is reweighted.

  Args:
    logits: floating-point logits, shape [..., num_classes].
    labels: floating-point target distributions broadcastable against `logits`.
    epsilon: coefficient of the first polynomial term (the paper suggests 2.0 for ImageNet
      classification, -1.0 for detection).
    axis: class axis or axes (None: all axes).
    where: optional mask of the entries to include, broadcastable against `logits`.

  Returns:
    the losses, with the class axes reduced.
  """
  fn = "poly_loss_cross_entropy"
  _checks.floating(fn, "logits", logits)
  _checks.floating(fn, "labels", labels)
  logits = jnp.asarray(logits)
  _checks.axes(fn, axis, logits.ndim)
  _checks.broadcastable(fn, logits=logits, labels=labels, where=where)
  probs = jax.nn.softmax(logits, axis=axis, where=where)
  miss = jnp.sum(_numerics.mul(labels, 1 - probs), axis=axis, where=where)
  cross_entropy = _softmax_cross_entropy(logits, labels, axis, _prepare_where(fn, where, logits, axis))
  return _numerics.add(cross_entropy, _numerics.mul(epsilon, miss))
