"""Property tests: for random trees (shapes incl. scalars and size-0 leaves, f32/bf16/f16 leaves), every
optimizer keeps its state's structure and dtypes, gives finite updates for finite float32/bfloat16
gradients, and agrees with optax on where NaN gradients propagate. (NaN/inf/huge/tiny gradients for every
alias are compared with optax value by value in tests/test_propagation.py.)

float16 is compared with optax rather than required finite: with Adam's eps = 1e-8 (below float16's
smallest subnormal) and (1 - b2) * g^2 underflowing, 0 / 0 happens in optax too. The dtype-policy work
(float32 internal arithmetic) is what removes it."""

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradxform

OPTIMIZERS = {
    "sgd": dict(learning_rate=0.1, momentum=0.9, nesterov=True), "adagrad": dict(learning_rate=0.1),
    "rmsprop": dict(learning_rate=0.01, centered=True, momentum=0.5), "adadelta": dict(learning_rate=1.0),
    "adam": dict(learning_rate=1e-3), "adamw": dict(learning_rate=1e-3, weight_decay=0.1),
    "nadam": dict(learning_rate=1e-3), "nadamw": dict(learning_rate=1e-3), "adamax": dict(learning_rate=1e-3),
    "adamaxw": dict(learning_rate=1e-3), "amsgrad": dict(learning_rate=1e-3), "radam": dict(learning_rate=1e-3),
}

shapes = st.lists(st.integers(0, 3), min_size=0, max_size=3).map(tuple)
dtypes = st.sampled_from([jnp.float32, jnp.bfloat16, jnp.float16])
leaves = st.tuples(shapes, dtypes)
trees = st.dictionaries(st.sampled_from(list("abcdef")), leaves, min_size=1, max_size=4)


def _build(spec, seed):
  keys = jax.random.split(jax.random.key(seed), len(spec))
  params = {name: jax.random.normal(k, shape, jnp.float32).astype(dtype)
            for k, (name, (shape, dtype)) in zip(keys, sorted(spec.items()))}
  grads = jax.tree.map(lambda p: (p * 0.5 + 0.25).astype(p.dtype), params)
  return params, grads


def _layout(state):
  return jax.tree.structure(state), [(x.shape, x.dtype) for x in jax.tree.leaves(state)]


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
@hypothesis.settings(max_examples=2, deadline=None, derandomize=True)
@hypothesis.given(spec=trees, seed=st.integers(0, 2**16))
def test_state_layout_is_preserved_and_finite_in_finite_out(name, spec, seed):
  tx = getattr(gradxform, name)(**OPTIMIZERS[name])
  reference = getattr(optax, name)(**OPTIMIZERS[name])
  params, grads = _build(spec, seed)
  state = tx.init(params)
  with jax.numpy_dtype_promotion("standard"):
    reference_state = reference.init(params)
  layout = _layout(state)
  for _ in range(2):
    updates, state = tx.update(grads, state, params)
    with jax.numpy_dtype_promotion("standard"):
      expected, reference_state = reference.update(grads, reference_state, params)
    assert _layout(state) == layout
    for u, e, p in zip(jax.tree.leaves(updates), jax.tree.leaves(expected), jax.tree.leaves(params)):
      assert u.shape == p.shape and u.dtype == e.dtype
      u32, e32 = np.asarray(u, np.float32), np.asarray(e, np.float32)
      np.testing.assert_array_equal(np.isnan(u32), np.isnan(e32))
      if p.dtype != jnp.float16:
        assert np.all(np.isfinite(u32))
    params = gradxform.apply_updates(params, updates)
