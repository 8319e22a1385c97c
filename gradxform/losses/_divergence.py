"""Kullback-Leibler divergences between a target distribution and predicted log-probabilities."""

from __future__ import annotations

from typing import Union
import warnings

import jax
import jax.numpy as jnp

from gradxform import _numerics
from gradxform.losses import _checks

__all__ = ["kl_divergence", "kl_divergence_with_log_targets", "generalized_kl_divergence",
           "convex_kl_divergence"]


def _check(fn: str, log_predictions, targets, axis, where, targets_name: str = "targets") -> None:
  _checks.floating(fn, "log_predictions", log_predictions)
  _checks.floating(fn, targets_name, targets)
  shape = _checks.broadcastable(fn, log_predictions=log_predictions, **{targets_name: targets})
  _checks.broadcastable(fn, log_predictions=log_predictions, **{targets_name: targets}, where=where)
  _checks.axes(fn, axis, len(shape))


def _kl_divergence(log_predictions, targets, axis, where):
  # 0 log 0 = 0: zero-probability targets contribute nothing (instead of 0 * -inf = NaN).
  log_targets = jnp.where(targets == 0, 0, jnp.log(targets))
  pointwise = _numerics.mul(targets, _numerics.sub(log_targets, log_predictions))
  return jnp.sum(pointwise, axis=axis, where=where)


def kl_divergence(
    log_predictions: jax.typing.ArrayLike,
    targets: jax.typing.ArrayLike,
    axis: Union[int, tuple[int, ...], None] = -1,
    where: Union[jax.typing.ArrayLike, None] = None,
) -> jax.Array:
  """KL(targets || predictions) = sum_j t_j (log t_j - log p_j), the relative entropy.

  Args:
    log_predictions: log-probabilities of the predicted distribution, shape [..., dim].
    targets: probabilities of the target distribution, broadcastable against `log_predictions`;
      zero entries count as 0 (0 log 0 = 0).
    axis: axis or axes of the distribution (None: all).
    where: optional mask of the entries to include.

  Returns:
    the divergences, shape [...].
  """
  _check("kl_divergence", log_predictions, targets, axis, where)
  return _kl_divergence(log_predictions, targets, axis, where)


def kl_divergence_with_log_targets(
    log_predictions: jax.typing.ArrayLike,
    log_targets: jax.typing.ArrayLike,
    axis: Union[int, tuple[int, ...], None] = -1,
    where: Union[jax.typing.ArrayLike, None] = None,
) -> jax.Array:
  """KL divergence with both distributions given as log-probabilities: sum_j exp(l_j) (l_j - log p_j).

  Args:
    log_predictions: log-probabilities of the predicted distribution, shape [..., dim].
    log_targets: log-probabilities of the target distribution, broadcastable against `log_predictions`.
    axis: axis or axes of the distribution (None: all).
    where: optional mask of the entries to include.

  Returns:
    the divergences, shape [...].
  """
  _check("kl_divergence_with_log_targets", log_predictions, log_targets, axis, where, "log_targets")
  pointwise = _numerics.mul(jnp.exp(log_targets), _numerics.sub(log_targets, log_predictions))
  return jnp.sum(pointwise, axis=axis, where=where)


def _generalized(fn: str, log_predictions, targets, axis, where):
  _check(fn, log_predictions, targets, axis, where)
  mass = jnp.sum(_numerics.sub(jnp.exp(log_predictions), targets), axis=axis, where=where)
  return _numerics.add(_kl_divergence(log_predictions, targets, axis, where), mass)


def generalized_kl_divergence(
    log_predictions: jax.typing.ArrayLike,
    targets: jax.typing.ArrayLike,
    axis: Union[int, tuple[int, ...], None] = -1,
    where: Union[jax.typing.ArrayLike, None] = None,
) -> jax.Array:
  """KL divergence for unnormalized measures: sum_j t_j (log t_j - log p_j) + p_j - t_j.

  This is the Bregman divergence of f(x) = x log x - x (Bregman, 1967; Boyd & Vandenberghe, p. 90);
  it equals the KL divergence when both sides sum to 1.

  Args:
    log_predictions: log of the predicted (possibly unnormalized) measure, shape [..., dim].
    targets: the target measure, non-negative, broadcastable against `log_predictions`.
    axis: axis or axes of the measure (None: all).
    where: optional mask of the entries to include.

  Returns:
    the divergences, shape [...].
  """
  return _generalized("generalized_kl_divergence", log_predictions, targets, axis, where)


def convex_kl_divergence(
    log_predictions: jax.typing.ArrayLike,
    targets: jax.typing.ArrayLike,
    axis: Union[int, tuple[int, ...], None] = -1,
    where: Union[jax.typing.ArrayLike, None] = None,
) -> jax.Array:
  """Deprecated name of `generalized_kl_divergence` (warns with a DeprecationWarning, as optax does).

  Args:
    log_predictions: log of the predicted (possibly unnormalized) measure, shape [..., dim].
    targets: the target measure, non-negative, broadcastable against `log_predictions`.
    axis: axis or axes of the measure (None: all).
    where: optional mask of the entries to include.

  Returns:
    the divergences, shape [...].
  """
  warnings.warn("convex_kl_divergence is deprecated; use generalized_kl_divergence instead.",
                DeprecationWarning, stacklevel=2)
  return _generalized("convex_kl_divergence", log_predictions, targets, axis, where)
