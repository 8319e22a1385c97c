"""Fenchel-Young losses (Blondel, Martins & Niculae, 2020): the generic constructor and the sparsemax losses.

A Fenchel-Young loss built on a convex "max" function Omega* is L(s, y) = Omega*(s) - <y, s> (+ a term
of y only); with Omega* = logsumexp it is the softmax cross entropy, with the Gini entropy the
sparsemax loss, which is exactly zero once the sparse prediction equals the target.
"""

from __future__ import annotations

from typing import Any, Protocol

import jax
import jax.numpy as jnp

from gradxform import _errors
from gradxform import _numerics
from gradxform.losses import _checks

__all__ = ["make_fenchel_young_loss", "sparsemax_loss", "multiclass_sparsemax_loss"]


class MaxFun(Protocol):
  """A convex function of the scores' last axis (a smoothed max), reduced to a scalar."""

  def __call__(self, scores, *args, **kwargs: Any) -> jax.typing.ArrayLike:
    ...


def make_fenchel_young_loss(max_fun: MaxFun):
  """Builds the Fenchel-Young loss max_fun(scores) - <targets, scores> over the last axis.

  Leading axes are batch axes (each row gets its own loss; nothing is flattened across rows).

  Args:
    max_fun: a function of a 1-D score vector (plus any extra arguments), e.g. `jax.nn.logsumexp`.

  Returns:
    `fenchel_young_loss(scores, targets, *args, **kwargs)`, with args and kwargs passed to `max_fun`.
  """
  if not callable(max_fun):
    raise _errors.HyperparameterTypeError(
        f"make_fenchel_young_loss: argument `max_fun` must be callable, got {type(max_fun).__name__}")
  max_last = jnp.vectorize(max_fun, signature="(n)->()")
  inner_last = jnp.vectorize(jnp.vdot, signature="(n),(n)->()")

  def fenchel_young_loss(scores, targets, *args, **kwargs):
    fn = "fenchel_young_loss (from make_fenchel_young_loss)"
    scores_shape, targets_shape = _checks.shape_of(scores), _checks.shape_of(targets)
    if (not scores_shape or not targets_shape or scores_shape[-1] != targets_shape[-1]
        or not _checks.shapes_broadcast(scores_shape[:-1], targets_shape[:-1])):
      raise _checks.LossShapeError(
          f"{fn}: `scores` {_checks.describe(scores)} and `targets` {_checks.describe(targets)} must "
          "have the same last (class) axis and broadcastable leading axes")
    return _numerics.sub(max_last(scores, *args, **kwargs), inner_last(*_numerics.promote(targets, scores)))

  fenchel_young_loss.__doc__ = f"""Fenchel-Young loss of `{getattr(max_fun, '__name__', 'max_fun')}` over the last axis.

  Args:
    scores: the model's scores, shape [..., n].
    targets: target vectors, shape [..., n].
    *args: passed to the max function.
    **kwargs: passed to the max function.

  Returns:
    the losses, shape [...].
  """
  return fenchel_young_loss


def sparsemax_loss(
    logits: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
) -> jax.Array:
  """Binary sparsemax loss: sparse_plus(-x) for label 1, sparse_plus(x) for label 0 (Blondel et al., sec. 4.4).

  Zero exactly when `jax.nn.sparse_sigmoid(logits)` equals the label.

  Args:
    logits: the model's scores.
    labels: labels in {0, 1}, broadcastable against `logits`.

  Returns:
    the elementwise losses.
  """
  _checks.broadcastable("sparsemax_loss", logits=logits, labels=labels)
  return jax.nn.sparse_plus(jnp.where(labels, -logits, logits))


@jax.custom_jvp
def simplex_projection(values: jax.Array) -> jax.Array:
  """Euclidean projection of a vector onto the probability simplex (sort-based; Duchi et al., 2008).

  Shared with `projections.projection_simplex`; differentiable, with the exact Jacobian on the support.
  """
  n = values.shape[0]
  ordered = jnp.sort(values)[::-1]
  running = jnp.cumsum(ordered)
  ranks = jnp.arange(n) + 1
  # The support size is the number of ranks k with 1/k + u_k - (sum of top k)/k > 0.
  in_support = _numerics.add(1 / ranks, _numerics.sub(ordered, _numerics.div(running, ranks))) > 0
  size = jnp.count_nonzero(in_support)
  threshold = _numerics.sub(values, _numerics.div(running[size - 1], size))
  return jax.nn.relu(_numerics.add(1 / size, threshold))


@simplex_projection.defjvp
def _simplex_projection_jvp(primals, tangents):
  (values,), (d_values,) = primals, tangents
  out = simplex_projection(values)
  support = out > 0
  # On the support the projection is the identity minus the support mean; off it, constant.
  mask = support.astype(d_values.dtype)
  mean = _numerics.div(jnp.dot(mask, d_values), jnp.count_nonzero(support))
  d_out = mask * d_values - mean * mask
  # The primal is float32 for low-precision scores (1/k is float32), so the tangent follows it.
  return out, d_out.astype(out.dtype)


def _sparsemax_loss_one(scores: jax.Array, label: jax.Array) -> jax.Array:
  """Sparsemax loss of one score vector: <p, s - s_y> + (1 - |p|^2) / 2 with p the projection of s."""
  probs = simplex_projection(scores)
  gaps = (scores - scores[label]).at[label].set(0.0)
  return _numerics.add(jnp.dot(*_numerics.promote(probs, jnp.where(probs, gaps, 0.0))),
                       0.5 * (1.0 - jnp.dot(probs, probs)))


def multiclass_sparsemax_loss(
    scores: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
) -> jax.Array:
  """Multiclass sparsemax loss (Martins & Astudillo, 2016), the Fenchel-Young loss of sparsemax.

  Args:
    scores: the model's scores, shape [batch, num_classes].
    labels: integer labels, shape [batch].

  Returns:
    the losses, shape [batch].
  """
  fn = "multiclass_sparsemax_loss"
  scores, labels = jnp.asarray(scores), jnp.asarray(labels)
  _checks.rank(fn, "scores", scores, 2, "[batch, num_classes]")
  _checks.rank(fn, "labels", labels, 1, "[batch]")
  if scores.shape[0] != labels.shape[0]:
    raise _checks.LossShapeError(
        f"{fn}: `scores` {_checks.describe(scores)} and `labels` {_checks.describe(labels)} must have "
        "the same batch size")
  return jax.vmap(_sparsemax_loss_one)(scores, labels)
