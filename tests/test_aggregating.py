"""`gradxform.experimental.aggregating` agrees with optax 0.2.8's: per-example updates in, one update out.

Rows run on per-example pseudo-gradients (a leading batch axis of 4 on every leaf of the mixed pytree),
eagerly and under jit, comparing updates, params and the full state with optax at every step.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradxform
from equivalence import Ref, assert_equivalent, gradients, mixed_params

BATCH = 4
AGG = "experimental.aggregating."


def per_example_gradients(params, step):
  """Pseudo-gradients with a leading example axis: one call of `gradients` per example."""
  examples = [gradients(params, 100 * step + i) for i in range(BATCH)]
  return jax.tree.map(lambda *xs: jnp.stack(xs), *examples)


def per_example_two_axes(params, step):
  """Examples laid out on two axes (2 x 2)."""
  return jax.tree.map(lambda x: x.reshape((2, 2) + x.shape[1:]), per_example_gradients(params, step))


ROWS = [
    (Ref(AGG + "process", Ref("identity"), Ref(AGG + "average_per_element_updates"), Ref("adam", 1e-2)),
     per_example_gradients),
    (Ref(AGG + "process", Ref("clip", 0.5), Ref(AGG + "average_per_element_updates", (0, 1)), Ref("sgd", 0.1)),
     per_example_two_axes),
    (Ref(AGG + "process", Ref("identity"), Ref(AGG + "average_incrementally_updates", 0, 2), Ref("adam", 1e-2)),
     per_example_gradients),
    (Ref(AGG + "process", Ref("identity"), Ref(AGG + "average_incrementally_updates", 0, 1), Ref("sgd", 0.1)),
     per_example_gradients),
    (Ref(AGG + "add_mean_variance_to_opt", Ref("adam", 1e-2)), per_example_gradients),
    (Ref(AGG + "accumulate_avg_updates", 2), None),
    (Ref(AGG + "accumulate_avg_updates", 1), None),
]


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("spec,grads_fn", ROWS, ids=[repr(r[0]) for r in ROWS])
def test_aggregation_matches_optax(spec, grads_fn, jit):
  assert_equivalent(spec, steps=4, jit=jit, grads_fn=grads_fn)


def float32_params():
  return jax.tree.map(lambda p: p.astype(jnp.float32), mixed_params())


# With accumulation, optax's variance EMA widens bfloat16 leaves to float32 and its lax.cond then fails: these
# rows run on float32 params in both libraries; test_bfloat16_state_keeps_its_dtype covers bfloat16 in gradxform.
ACCUMULATING = [
    (Ref(AGG + "add_mean_variance_to_opt", Ref("sgd", 0.1), ema_decay=0.5, accumulation_steps=2),
     per_example_gradients),
    (Ref(AGG + "add_mean_variance_to_opt", Ref("sgd", 0.1), per_elt_axis=[0, 1], accumulation_steps=3),
     per_example_two_axes),
]


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("spec,grads_fn", ACCUMULATING, ids=[repr(r[0]) for r in ACCUMULATING])
def test_accumulating_aggregation_matches_optax(spec, grads_fn, jit):
  assert_equivalent(spec, steps=4, jit=jit, grads_fn=grads_fn, params=float32_params())


def test_bfloat16_state_keeps_its_dtype():
  params = mixed_params()
  tx = gradxform.experimental.aggregating.add_mean_variance_to_opt(gradxform.sgd(0.1), accumulation_steps=2)
  state = tx.init(params)
  update = jax.jit(tx.update)
  for step in range(4):
    updates, new_state = update(per_example_gradients(params, step), state, params)
    assert jax.tree.map(lambda a: a.dtype, new_state) == jax.tree.map(lambda a: a.dtype, state)
    state = new_state
  assert jax.tree.map(lambda a: a.dtype, updates) == jax.tree.map(lambda a: a.dtype, params)


def test_unbiased_mean_and_variance_match_optax_and_the_data():
  params = mixed_params()
  results = []
  for lib in (gradxform, optax):
    tx = lib.experimental.aggregating.add_mean_variance_to_opt(lib.sgd(0.1), ema_decay=0.5)
    state = tx.init(params)
    with jax.numpy_dtype_promotion("standard"):
      for step in range(3):
        _, state = tx.update(per_example_gradients(params, step), state, params)
      results.append(lib.experimental.aggregating.get_unbiased_mean_and_variance_ema(state))
  for ours, theirs in zip(*results):
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs)):
      np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), rtol=1e-2)
  # With decay 0.5 the first step's estimate weighs 1/7: check the variance is the sample variance mix.
  grads = [per_example_gradients(params, s)["dense"]["w"] for s in range(3)]
  variances = [jnp.var(g, axis=0, ddof=1) for g in grads]
  expected = (variances[2] * 0.5 + variances[1] * 0.25 + variances[0] * 0.125) / (1 - 0.5 ** 3)
  np.testing.assert_allclose(results[0][1]["dense"]["w"], expected, rtol=1e-4)


def test_batch_size_and_errors():
  agg = gradxform.experimental.aggregating
  tree = {"a": jnp.zeros((3, 2)), "b": jnp.zeros((3,))}
  assert agg.get_batch_size_from_per_elt_updates(tree, 0) == 3
  assert agg.get_batch_size_from_per_elt_updates({"a": jnp.zeros((2, 3, 5))}, [0, 1]) == 6
  with pytest.raises(ValueError, match="batch size"):
    agg.get_batch_size_from_per_elt_updates({"a": jnp.zeros((3, 2)), "b": jnp.zeros((4,))}, 0)
  with pytest.raises(ValueError, match="accumulation_steps"):
    agg.accumulate_avg_updates(0)
  with pytest.raises(ValueError, match="PerElementMeanAndVarianceEMAState"):
    agg.get_unbiased_mean_and_variance_ema(gradxform.adam(0.1).init(tree))
  tracker = agg.track_per_element_mean_and_variance_with_ema()
  with pytest.raises(TypeError, match="sample_size"):
    tracker.update(tree, tracker.init(tree), None, sum_sq_diff_grads=tree)
  assert isinstance(agg.average_per_element_updates(), agg.Aggregator)
  assert isinstance(agg.process(gradxform.identity(), agg.average_per_element_updates(), gradxform.sgd(0.1)),
                    agg.Aggregator)
