"""Perturbed functions: E_Z[f(x + sigma Z)] estimated by sampling, with an unbiased score-function gradient.

Berthet et al., 2020, "Learning with Differentiable Perturbed Optimizers" (https://arxiv.org/abs/2002.08676).
The gradient uses the score function of the noise, so `f` may be piecewise constant (an argmax, a sort).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from gradxform import tree_utils


class Normal:
  """Standard normal noise: `sample` and the log-density up to a constant."""

  def sample(self, key: jax.typing.ArrayLike, sample_shape: tuple[int, ...] = (),
             dtype: jax.typing.DTypeLike = float) -> jax.Array:
    """Draws standard normal samples of `sample_shape`."""
    return jax.random.normal(key, sample_shape, dtype)

  def log_prob(self, inputs: jax.Array) -> jax.Array:
    """log N(inputs; 0, 1) up to its additive constant: -x^2 / 2."""
    return -0.5 * inputs ** 2


class Gumbel:
  """Standard Gumbel noise: `sample` and the log-density."""

  def sample(self, key: jax.typing.ArrayLike, sample_shape: tuple[int, ...] = (),
             dtype: jax.typing.DTypeLike = float) -> jax.Array:
    """Draws standard Gumbel samples of `sample_shape`."""
    return jax.random.gumbel(key, sample_shape, dtype)

  def log_prob(self, inputs: jax.Array) -> jax.Array:
    """log Gumbel(inputs; 0, 1): -x - exp(-x)."""
    return -inputs - jnp.exp(-inputs)


def _score_weight(log_prob: jax.Array) -> jax.Array:
  """Equals 1, but its derivative is d log_prob (the "magic box" of Foerster et al., 2018)."""
  return jnp.exp(log_prob - jax.lax.stop_gradient(log_prob))


def make_perturbed_fun(fun: Callable[[Any], Any], num_samples: int = 1000, sigma: jax.typing.ArrayLike = 0.1,
                       noise=Gumbel(), use_baseline=True) -> Callable[[Any, Any], Any]:
  """Returns `perturbed(key, x)`: a Monte-Carlo estimate of E_Z[fun(x + sigma Z)], differentiable in x.

  Args:
    fun: the function to smooth (pytree in, pytree out); it need not be differentiable.
    num_samples: the number of noise samples per call.
    sigma: the noise scale (> 0).
    noise: the noise distribution: an object with `sample(key, shape, dtype)` and `log_prob(z)`.
    use_baseline: subtract fun(x) as a control variate in the gradient (lower variance, same mean).

  Returns:
    `perturbed(key, x) -> pytree`, shaped like `fun`'s output.
  """

  def one_sample(key, x, baseline):
    z = tree_utils.tree_random_like(key, x, sampler=noise.sample)
    shifted = jax.lax.stop_gradient(jax.tree.map(lambda xi, zi: xi + sigma * zi, x, z))
    z = jax.tree.map(lambda xi, si: (si - xi) / sigma, x, shifted)  # depends on x for the score gradient
    weight = _score_weight(tree_utils.tree_sum(jax.tree.map(noise.log_prob, z)))
    value = tree_utils.tree_scale(weight, fun(shifted))
    if use_baseline:
      value = tree_utils.tree_add_scale(value, 1 - weight, baseline)
    return value

  def perturbed(key, x):
    baseline = fun(jax.lax.stop_gradient(x)) if use_baseline else None
    keys = jax.random.split(key, num_samples)
    samples = jax.vmap(one_sample, in_axes=(0, None, None))(keys, x, baseline)
    return jax.tree.map(lambda s: jnp.mean(s, axis=0), samples)

  return perturbed
