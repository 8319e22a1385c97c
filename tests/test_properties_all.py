"""Property tests over every optimizer alias (tests/test_properties.py covers a dozen in more depth).

For random trees (shapes incl. scalars and size-0 leaves, float32 and bfloat16 leaves), each alias:
- keeps its state's structure, shapes and dtypes across two updates (a jitted step sees one signature),
  and returns updates shaped and typed like the params (polyak_sgd: typed as optax's);
- gives finite updates for finite gradients (wherever optax does too: a non-finite update is accepted
  only where optax gives the same non-finite pattern);
- wrapped as `apply_if_finite(alias, 2)`, skips a NaN gradient: zero updates, params and the inner
  state unchanged bit for bit, `notfinite_count` and `total_notfinite` incremented, `last_finite` False.

Cheap by design (about 30 CPU-seconds for the file): `max_examples=2, derandomize=True, deadline=None`,
the same two trees for every alias (so eager kernels are shared), every check on the same example and
updates. lbfgs is left out (its line search needs `value_fn` and costs a compile per example);
polyak_sgd gets `value=`; sm3 gets non-empty leaves of rank >= 1 (the others are errors there, as in optax).
"""

from __future__ import annotations

import warnings

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradxform

ALIASES = {
    "adabelief": {"learning_rate": 0.1}, "adadelta": {"learning_rate": 1.0, "weight_decay": 0.01},
    "adafactor": {"learning_rate": 0.1, "min_dim_size_to_factor": 2}, "adagrad": {"learning_rate": 0.1},
    "adam": {"learning_rate": 0.1}, "adamax": {"learning_rate": 0.1}, "adamaxw": {"learning_rate": 0.1},
    "adamw": {"learning_rate": 0.1}, "adan": {"learning_rate": 0.1, "weight_decay": 0.01},
    "amsgrad": {"learning_rate": 0.1}, "fromage": {"learning_rate": 0.1},
    "lamb": {"learning_rate": 0.1, "weight_decay": 0.01}, "lars": {"learning_rate": 0.1, "weight_decay": 0.01},
    "lion": {"learning_rate": 0.1}, "nadam": {"learning_rate": 0.1}, "nadamw": {"learning_rate": 0.1},
    "noisy_sgd": {"learning_rate": 0.1, "key": 0}, "novograd": {"learning_rate": 0.1},
    "optimistic_adam": {"learning_rate": 0.1}, "optimistic_adam_v2": {"learning_rate": 0.1},
    "optimistic_gradient_descent": {"learning_rate": 0.1}, "polyak_sgd": {"max_learning_rate": 0.1},
    "radam": {"learning_rate": 0.1}, "rmsprop": {"learning_rate": 0.1, "centered": True, "momentum": 0.5},
    "rprop": {"learning_rate": 0.1}, "sgd": {"learning_rate": 0.1, "momentum": 0.9, "nesterov": True},
    "sign_sgd": {"learning_rate": 0.1}, "signum": {"learning_rate": 0.1}, "sm3": {"learning_rate": 0.1},
    "yogi": {"learning_rate": 0.1},
}

# Fixed keys, so that the first (simplest) draw of a derandomized run is already a mixed tree: a float32
# scalar, a bfloat16 matrix and an empty leaf; the later draw varies the shapes and dtypes. Shapes stay
# small (up to 2 axes): every new layout costs each alias a compilation, which is this file's budget.
shapes = st.lists(st.integers(0, 3), min_size=0, max_size=2).map(tuple)
trees = st.fixed_dictionaries({
    "a": st.tuples(shapes, st.sampled_from([jnp.float32, jnp.bfloat16])),
    "b": st.tuples(st.sampled_from([(2, 3), (3,)]) | shapes, st.sampled_from([jnp.bfloat16, jnp.float32])),
    "c": st.tuples(st.sampled_from([(0, 3), (0,), (2, 0)]), st.sampled_from([jnp.float32, jnp.bfloat16])),
})


def _build(lib, name):
  kwargs = ALIASES[name]
  with warnings.catch_warnings(), jax.numpy_dtype_promotion("standard"):
    warnings.simplefilter("ignore", DeprecationWarning)  # optimistic_adam is deprecated in both
    return getattr(lib, name)(**kwargs)


def _trees(spec, seed, name):
  if name == "sm3":  # one accumulator per axis: 0-d and empty n-d params are errors there (and fail in optax)
    spec = {k: (tuple(max(d, 1) for d in shape) if len(shape) > 1 else shape or (1,), dtype)
            for k, (shape, dtype) in spec.items()}
  keys = jax.random.split(jax.random.key(seed), len(spec))
  params = {k: jax.random.normal(key, shape, jnp.float32).astype(dtype)
            for key, (k, (shape, dtype)) in zip(keys, sorted(spec.items()))}
  grads = jax.tree.map(lambda p: (0.5 * p + 0.25).astype(p.dtype), params)
  return params, grads


def _extra(name):
  return {"value": jnp.asarray(2.0, jnp.float32)} if name == "polyak_sgd" else {}


def _layout(tree):
  return str(jax.tree.structure(tree)), [(x.shape, x.dtype) for x in jax.tree.leaves(tree)]


def _as_f32(x):
  if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
    return np.asarray(jax.random.key_data(x))
  return np.asarray(x, np.float32)


def _optax_updates(name, grads, params):
  tx = _build(optax, name)
  with jax.numpy_dtype_promotion("standard"):
    state = tx.init(params)
    for _ in range(2):
      updates, state = tx.update(grads, state, params, **_extra(name))
  return updates


@pytest.mark.parametrize("name", sorted(ALIASES))
@hypothesis.settings(max_examples=2, deadline=None, derandomize=True,
                     suppress_health_check=[hypothesis.HealthCheck.too_slow])
@hypothesis.given(spec=trees, seed=st.integers(0, 2**16))
def test_layout_finiteness_and_skipping_nan_gradients(name, spec, seed):
  params, grads = _trees(spec, seed, name)
  tx = gradxform.apply_if_finite(_build(gradxform, name), 2)
  state = tx.init(params)
  layout, inner_layout = _layout(state), _layout(state.inner_state)

  # Two finite updates: apply_if_finite passes the alias's updates and state through unchanged.
  for _ in range(2):
    updates, state = tx.update(grads, state, params, **_extra(name))
    assert _layout(state) == layout and _layout(state.inner_state) == inner_layout
  assert bool(state.last_finite) and int(state.notfinite_count) == 0
  if name == "polyak_sgd" and _layout(updates) != _layout(params):
    # optax's polyak step is a float32 scalar when any leaf is float32, and promotes bfloat16 leaves: kept
    assert _layout(updates) == _layout(_optax_updates(name, grads, params))
  else:
    assert _layout(updates) == _layout(params)
  got = [_as_f32(u) for u in jax.tree.leaves(updates)]
  if not all(np.all(np.isfinite(u)) for u in got):  # only where optax gives the same non-finite pattern
    expected = [_as_f32(u) for u in jax.tree.leaves(_optax_updates(name, grads, params))]
    for u, e in zip(got, expected):
      np.testing.assert_array_equal(np.isfinite(u), np.isfinite(e), err_msg=name)

  # A NaN gradient (in one element of one leaf) is skipped.
  bad = dict(grads)
  target = next((k for k in sorted(bad) if bad[k].size), None)
  if target is None:  # every leaf has size 0: there is no element to poison
    return
  bad[target] = bad[target].reshape(-1).at[0].set(jnp.nan).reshape(bad[target].shape)
  skipped, new_state = tx.update(bad, state, params, **_extra(name))
  assert _layout(new_state) == layout
  for u in jax.tree.leaves(skipped):
    np.testing.assert_array_equal(np.asarray(u, np.float32), 0.0)
  for p, q in zip(jax.tree.leaves(gradxform.apply_updates(params, skipped)), jax.tree.leaves(params)):
    assert np.asarray(p).tobytes() == np.asarray(q).tobytes()
  for x, y in zip(jax.tree.leaves(new_state.inner_state), jax.tree.leaves(state.inner_state)):
    assert _as_f32(x).tobytes() == _as_f32(y).tobytes(), name
  assert int(new_state.notfinite_count) == 1 and int(new_state.total_notfinite) == int(state.total_notfinite) + 1
  assert not bool(new_state.last_finite)
