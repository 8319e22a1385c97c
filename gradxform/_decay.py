"""Terms added to the updates: decoupled weight decay (AdamW's) and annealed gradient noise."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradxform import _base
from gradxform import _combine
from gradxform import _errors
from gradxform import _numerics
from gradxform import _tree

__all__ = ["AddNoiseState", "WeightDecaySchedule", "add_decayed_weights", "add_noise"]


class WeightDecaySchedule(NamedTuple):
  """State of `add_decayed_weights` with a scheduled weight decay: the step count."""
  count: jax.typing.ArrayLike


def _add_decayed_weights_init(params, *, weight_decay, **_):
  del params
  return WeightDecaySchedule(count=jnp.zeros([], jnp.int32)) if callable(weight_decay) else _base.EmptyState()


def _decayed_leaf(g, p, rate):
  return (_numerics.add(g, _numerics.mul(rate, p)),)


def _add_decayed_weights_update(updates, state, params=None, *, weight_decay, **extra_args):
  del extra_args
  _errors.require_params(params, "add_decayed_weights")
  if callable(weight_decay):
    _errors.expect_state(state, (WeightDecaySchedule,), "add_decayed_weights")
    rate = weight_decay(state.count)
    state = WeightDecaySchedule(count=_numerics.safe_increment(state.count))
  else:
    rate = weight_decay
    if isinstance(rate, (int, float)) and rate == 0.0:
      return updates, state
  updates, _ = _tree.leafwise(lambda g, p: _decayed_leaf(g, p, rate), updates, (), (params,),
                              extra_names=("params",))
  return updates, state


def add_decayed_weights(weight_decay: _base.ScalarOrSchedule = 0.0,
                        mask: Any | Callable[[_base.Params], Any] | None = None
                        ) -> _base.GradientTransformationExtraArgs:
  """Adds weight_decay * params to the updates: decoupled weight decay (Loshchilov & Hutter, 2019).

  Args:
    weight_decay: the rate (>= 0) or a schedule of it.
    mask: where to decay: a tree of booleans like the params (or a prefix), or a function params -> tree;
      None decays everything.
  """
  # Any sign: a negative rate grows the weights (Fromage uses one); optimizers check their own ranges.
  _errors.check_number("add_decayed_weights", "weight_decay", weight_decay, allow_schedule=True)
  tx = _base.transformation("add_decayed_weights", _add_decayed_weights_init, _add_decayed_weights_update,
                            weight_decay=weight_decay)
  if mask is not None:
    return _combine.masked(tx, mask)
  return tx


# ----------------------------------------------------------------------------------------------
# Gradient noise.


class AddNoiseState(NamedTuple):
  """State of `add_noise`: the step count (for annealing) and the PRNG key of the next step."""
  count: jax.Array
  rng_key: jax.Array


def _is_typed_key(x: Any) -> bool:
  return isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def _check_key(key: Any) -> None:
  if _is_typed_key(key) or isinstance(key, jax.core.Tracer):
    return
  is_int = isinstance(key, (int, np.integer)) and not isinstance(key, bool)
  is_int_scalar = (isinstance(key, (jax.Array, np.ndarray)) and np.ndim(key) == 0
                   and jnp.issubdtype(key.dtype, jnp.integer))
  if not (is_int or is_int_scalar):
    raise _errors.HyperparameterTypeError(
        f"add_noise: argument `key` must be an int seed or a key from jax.random.key, got "
        f"{type(key).__name__} {key!r} (wrap a raw uint32 key with jax.random.wrap_key_data)")


def _add_noise_init(params, *, key, **_):
  del params
  return AddNoiseState(count=jnp.zeros([], jnp.int32), rng_key=key if _is_typed_key(key) else jax.random.key(key))


def _add_noise_update(updates, state, params=None, *, eta, gamma, **extra_args):
  del params, extra_args
  _errors.expect_state(state, (AddNoiseState,), "add_noise")
  count = _numerics.safe_increment(state.count)
  std = jnp.sqrt(_numerics.div(eta, _numerics.decay_power(count, gamma)))
  next_key, sample_key = jax.random.split(state.rng_key)
  leaves, treedef = _tree.flatten(updates)
  _tree.check_inexact(updates, leaves)
  # One key per non-None leaf, in leaf order: the same draws as optax for the same key.
  keys = iter(jax.random.split(sample_key, sum(g is not None for g in leaves)))
  noisy = [None if g is None else
           _numerics.add(g, _numerics.mul(std, jax.random.normal(next(keys), jnp.shape(g), g.dtype)))
           for g in leaves]
  return treedef.unflatten(noisy), AddNoiseState(count=count, rng_key=next_key)


def add_noise(eta: jax.typing.ArrayLike, gamma: jax.typing.ArrayLike, key: jax.Array | int | None = None, *,
              seed: int | None = None) -> _base.GradientTransformationExtraArgs:
  """Adds Gaussian noise of variance eta / t**gamma to the updates at step t (Neelakantan et al., 2015).

  Args:
    eta: base variance of the noise (>= 0).
    gamma: annealing exponent of the variance.
    key: a key from `jax.random.key`, or an int seed; None warns and uses seed 0.
    seed: deprecated spelling of an int `key`; give one of the two.

  Returns:
    The transformation; its state is an AddNoiseState.
  """
  _errors.check_nonnegative("add_noise", "eta", eta)
  _errors.check_number("add_noise", "gamma", gamma)
  if seed is not None:
    warnings.warn("add_noise: `seed` is deprecated, pass the seed (or a key) as `key`", DeprecationWarning,
                  stacklevel=2)
    if key is not None:
      raise _errors.HyperparameterError("add_noise: give either `key` or `seed`, not both")
    key = seed
  if key is None:
    warnings.warn("add_noise: no `key` given, using seed 0; pass `key` (it will become required)", stacklevel=2)
    key = 0
  _check_key(key)
  return _base.transformation("add_noise", _add_noise_init, _add_noise_update, eta=eta, gamma=gamma, key=key)
