"""Self-supervised and metric-learning losses: NT-Xent (contrastive) and the triplet margin loss."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gradxform import _numerics
from gradxform.losses import _checks
from gradxform.losses import _regression

__all__ = ["ntxent", "triplet_margin_loss"]


def ntxent(
    embeddings: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    temperature: jax.typing.ArrayLike = 0.07,
) -> jax.Array:
  """Normalized temperature-scaled cross entropy (NT-Xent, the SimCLR loss; Chen et al., 2020).

  For every positive pair (i, j) (same label, i != j), the loss is the cross entropy of picking j
  among j and all of i's negatives (other labels), with cosine similarities divided by
  `temperature` as logits; the result is the mean over positive pairs.

  Args:
    embeddings: floating-point embeddings, shape [batch, features].
    labels: group labels, shape [batch]; equal labels mark positive pairs.
    temperature: the softmax temperature.

  Returns:
    the scalar loss.
  """
  fn = "ntxent"
  _checks.floating(fn, "embeddings", embeddings)
  embeddings, labels = jnp.asarray(embeddings), jnp.asarray(labels)
  _checks.rank(fn, "embeddings", embeddings, 2, "[batch, features]")
  if labels.ndim < 1 or labels.shape[0] != embeddings.shape[0]:
    raise _checks.LossShapeError(
        f"{fn}: `labels` {_checks.describe(labels)} and `embeddings` {_checks.describe(embeddings)} "
        "must have the same leading (batch) dimension")
  epsilon = jnp.finfo(embeddings.dtype).eps
  similarity = _numerics.div(
      _regression._cosine_similarity(embeddings[None, :, :], embeddings[:, None, :], epsilon, -1, None),
      temperature)

  same = labels[:, None] == labels[None, :]
  # Positives exclude each embedding paired with itself. (`same != eye` rather than `same & ~eye`
  # keeps a NaN label, unequal to itself, on the diagonal as optax does.)
  positive = same != jnp.eye(same.shape[0], dtype=bool)
  negatives = jnp.where(~same, similarity, -jnp.inf)
  positives = jnp.where(positive, similarity, -jnp.inf)

  # Shift by the row maximum (a constant for the gradient) so exp never overflows.
  row_max = jax.lax.stop_gradient(jnp.max(jnp.concatenate((negatives, positives), axis=-1), axis=1,
                                          keepdims=True))
  negatives = negatives - row_max
  positives = positives - row_max
  normalizer = jnp.sum(jnp.exp(negatives), axis=1, keepdims=True) + jnp.exp(positives)
  log_probs = positives - jnp.log(normalizer)
  return _numerics.div(-jnp.where(positive, log_probs, 0.0).sum(), positive.sum())


def triplet_margin_loss(
    anchors: jax.typing.ArrayLike,
    positives: jax.typing.ArrayLike,
    negatives: jax.typing.ArrayLike,
    axis: int = -1,
    norm_degree: jax.typing.ArrayLike = 2,
    margin: jax.typing.ArrayLike = 1.0,
    eps: jax.typing.ArrayLike = 1e-6,
) -> jax.Array:
  """Triplet margin loss max(d(a, p) - d(a, n) + margin, 0) (Balntas et al., 2016).

  d(x, y) = (sum (x - y)^norm_degree + eps)^(1 / norm_degree) along `axis`; eps keeps the gradient
  finite at d = 0. As in optax the difference is raised as it is, without an absolute value, so the
  distance is a norm for even degrees only.

  Args:
    anchors: floating-point anchor embeddings, shape [batch, features].
    positives: embeddings that should be near the anchors, same shape.
    negatives: embeddings that should be far from the anchors, same shape.
    axis: the feature axis.
    norm_degree: the p of the p-norm distance.
    margin: the minimum gap between the negative and the positive distance.
    eps: added inside the root for numerical stability.

  Returns:
    the losses, with `axis` reduced.
  """
  fn = "triplet_margin_loss"
  for name, value in (("anchors", anchors), ("positives", positives), ("negatives", negatives)):
    _checks.floating(fn, name, value)
  shape = _checks.broadcastable(fn, anchors=anchors, positives=positives, negatives=negatives)
  _checks.axes(fn, axis, len(shape))

  def distance(other):
    powered = _power(_numerics.sub(anchors, other), norm_degree).sum(axis)
    return _power(_numerics.add(powered, eps), 1 / norm_degree)

  gap = _numerics.add(_numerics.sub(distance(positives), distance(negatives)), margin)
  return jnp.maximum(gap, 0)


def _power(x, exponent):
  """x ** exponent as jnp.power computes it, with float exponents promoted explicitly."""
  if isinstance(exponent, (int, float)) or not jnp.issubdtype(_checks.dtype_of(exponent), jnp.inexact):
    return jnp.power(x, exponent)  # a Python or integer exponent never widens x
  return jnp.power(*_numerics.promote(x, exponent))
