"""Differentially private gradient aggregation and DP-SGD (Abadi et al., 2016)."""

from __future__ import annotations

import warnings
from typing import NamedTuple, Optional

import jax

from gradxform import _base
from gradxform import _errors
from gradxform import _numerics
from gradxform._clip import per_example_global_norm_clip
from gradxform._alias import _optimizer
from gradxform._moments import trace
from gradxform._scale import scale_by_learning_rate

__all__ = ["DifferentiallyPrivateAggregateState", "differentially_private_aggregate", "dpsgd"]


class DifferentiallyPrivateAggregateState(NamedTuple):
  """State of `differentially_private_aggregate`: the PRNG key for the next step's noise."""
  rng_key: jax.Array


def _as_key(key):
  """A typed PRNG key from a typed key or an integer seed (raw uint32 keys are treated as seeds too)."""
  if isinstance(key, jax.Array) and jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
    return key
  return jax.random.key(key)


def _dp_init(params, *, key, **_):
  del params
  return DifferentiallyPrivateAggregateState(rng_key=key)


def _dp_update(updates, state, params=None, *, l2_norm_clip, noise_std, **extra_args):
  del params, extra_args
  _errors.expect_state(state, (DifferentiallyPrivateAggregateState,), "differentially_private_aggregate")
  leaves, treedef = jax.tree.flatten(updates)
  batch_size = leaves[0].shape[0]
  clipped, _ = per_example_global_norm_clip(leaves, l2_norm_clip)
  new_key, *keys = jax.random.split(state.rng_key, len(leaves) + 1)

  def noised(g, k):
    noise = _numerics.mul(noise_std, jax.random.normal(k, g.shape, g.dtype))
    return _numerics.div(_numerics.add(g, noise), batch_size)

  out = [noised(g, k) for g, k in zip(clipped, keys)]
  return treedef.unflatten(out), DifferentiallyPrivateAggregateState(rng_key=new_key)


def differentially_private_aggregate(l2_norm_clip: jax.typing.ArrayLike, noise_multiplier: jax.typing.ArrayLike,
                                     key: jax.Array | int | None = None, *,
                                     seed: int | None = None) -> _base.GradientTransformation:
  """Clips per-example gradients, sums them, adds Gaussian noise and divides by the batch size.

  Each update leaf carries a leading batch axis of per-example gradients; each example is clipped to
  global L2 norm `l2_norm_clip`, and the noise has standard deviation l2_norm_clip * noise_multiplier.

  Args:
    l2_norm_clip: the largest per-example global norm.
    noise_multiplier: the noise standard deviation relative to `l2_norm_clip`.
    key: a PRNG key or an integer seed for the noise (None warns and uses key 0).
    seed: deprecated integer seed; use `key`.

  Returns:
    A GradientTransformation taking per-example gradients and returning the private mean gradient.
  """
  fn = "differentially_private_aggregate"
  _errors.check_nonnegative(fn, "l2_norm_clip", l2_norm_clip)
  _errors.check_nonnegative(fn, "noise_multiplier", noise_multiplier)
  if seed is not None:
    warnings.warn(f'{fn}: argument "seed" is deprecated, pass "key" instead.', DeprecationWarning,
                  stacklevel=2)
    if key is not None:
      raise _errors.HyperparameterError(f"{fn}: give only one of the arguments `seed` and `key`")
    key = jax.random.key(seed)
  if key is None:
    warnings.warn(f'{fn}: no "key" given; using key 0. Pass a key to choose the noise.', stacklevel=2)
    key = jax.random.key(0)
  noise_std = _numerics.mul(l2_norm_clip, noise_multiplier)
  return _base.transformation(fn, _dp_init, _dp_update, key=_as_key(key), l2_norm_clip=l2_norm_clip,
                              noise_std=noise_std)


def dpsgd(learning_rate: _base.ScalarOrSchedule, l2_norm_clip: jax.typing.ArrayLike,
          noise_multiplier: jax.typing.ArrayLike, seed: int, momentum: Optional[jax.typing.ArrayLike] = None,
          nesterov: bool = False) -> _base.GradientTransformation:
  """DP-SGD: SGD (optionally with momentum) on differentially private aggregated gradients (Abadi et al., 2016).

  Args:
    learning_rate: step size, a number or a schedule.
    l2_norm_clip: the largest per-example global norm.
    noise_multiplier: the noise standard deviation relative to `l2_norm_clip`.
    seed: integer seed of the noise.
    momentum: momentum coefficient, or None for none.
    nesterov: use Nesterov momentum.

  Returns:
    A GradientTransformation taking per-example gradients.
  """
  fn = "dpsgd"
  _errors.check_learning_rate(fn, learning_rate)
  _errors.check_nonnegative(fn, "l2_norm_clip", l2_norm_clip)
  _errors.check_nonnegative(fn, "noise_multiplier", noise_multiplier)
  _errors.check_number(fn, "seed", seed)
  _errors.check_decay(fn, "momentum", momentum, allow_none=True)
  # The same key optax derives from the seed, without its deprecation warning (the user cannot avoid it).
  steps = [differentially_private_aggregate(l2_norm_clip=l2_norm_clip, noise_multiplier=noise_multiplier,
                                            key=jax.random.key(seed))]
  if momentum is not None:
    steps.append(trace(decay=momentum, nesterov=nesterov))
  else:
    steps.append(_base.identity())
  steps.append(scale_by_learning_rate(learning_rate))
  return _optimizer(fn, *steps)
