"""Sampling: a diagonal multivariate normal parameterised by its mean and log standard deviation."""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from jax.scipy.stats import norm as _normal

from gradxform import _numerics

__all__ = ["multi_normal"]


class MultiNormalDiagFromLogScale:
  """A normal distribution with independent coordinates: mean `loc`, standard deviation exp(log_scale).

  Its parameters are exposed as given (`params` is [loc, log_scale]), so that gradient estimators can
  differentiate samples and log-densities with respect to them.
  """

  def __init__(self, loc: jax.typing.ArrayLike, log_scale: jax.typing.ArrayLike):
    self._log_scale = jnp.asarray(log_scale)
    self._scale = jnp.exp(log_scale)
    self._mean = jnp.asarray(loc)
    self._param_shape = jax.lax.broadcast_shapes(self._mean.shape, self._scale.shape)

  def sample(self, shape: Sequence[int], key: jax.Array) -> jax.Array:
    """Draws samples of shape `shape + param_shape`: loc + exp(log_scale) * N(0, 1) (float32 noise)."""
    noise = jax.random.normal(key, shape=tuple(shape) + self._param_shape)
    return _numerics.add(_numerics.mul(noise, self._scale), self._mean)

  def log_prob(self, x: jax.typing.ArrayLike) -> jax.Array:
    """The log-density of `x` (shape `batch + param_shape`), summed over the parameter axes."""
    x, mean, scale = _numerics.promote(x, self._mean, self._scale)
    per_coordinate = _normal.logpdf(x, loc=mean, scale=scale)
    return jnp.sum(per_coordinate, axis=tuple(-(i + 1) for i in range(len(self._param_shape))))

  @property
  def log_scale(self) -> jax.Array:
    """The log standard deviation, as given."""
    return self._log_scale

  @property
  def params(self) -> Sequence[jax.Array]:
    """[loc, log_scale]."""
    return [self._mean, self._log_scale]


def multi_normal(loc: jax.typing.ArrayLike, log_scale: jax.typing.ArrayLike) -> MultiNormalDiagFromLogScale:
  """A diagonal multivariate normal with mean `loc` and standard deviation exp(`log_scale`).

  Args:
    loc: the mean.
    log_scale: the log standard deviation, broadcastable with `loc`.

  Returns:
    A distribution with `sample(shape, key)`, `log_prob(x)`, `log_scale` and `params`.
  """
  return MultiNormalDiagFromLogScale(loc=loc, log_scale=log_scale)
