"""with_metrics / metrics: values against numpy, the optional keys, fixed state structure, pass-through.

Every optimizer here runs jitted over a few steps on small trees; the wrapped run is compared bit for bit
with the unwrapped one, and the metrics with values computed in numpy (float64) from the same inputs.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradxform

BASE_KEYS = ["grad_norm", "update_norm", "param_norm"]


def np_norm(tree):
  """Global L2 norm in float64 numpy, None leaves skipped."""
  return float(np.sqrt(sum(np.sum(np.square(np.asarray(x, np.float64))) for x in jax.tree.leaves(tree))))


def signature(tree):
  """Structure, shapes, dtypes and weak types: what a jitted step is specialised on."""
  return jax.tree.structure(tree), [(x.shape, x.dtype, x.weak_type) for x in jax.tree.leaves(tree)]


def make_step(tx):
  def step(params, state, grads):
    updates, state = tx.update(grads, state, params)
    return gradxform.apply_updates(params, updates), updates, state
  return jax.jit(step)


def run(tx, params, grads_per_step):
  """(params before the step, updates, state after it) for each step of a jitted `tx`; state structure checked."""
  state = tx.init(params)
  first = signature(state)
  step = make_step(tx)
  trace = []
  for grads in grads_per_step:
    new_params, updates, state = step(params, state, grads)
    assert signature(state) == first
    trace.append((params, updates, state))
    params = new_params
  return trace


def tree_with_none(seed):
  """Nested dict/list/tuple with float32 and bfloat16 leaves (made in numpy: no eager compiles), a leaf
  whose gradient is None, and a bfloat16 leaf of 4096 elements (a bfloat16 sum of its squares would be
  off by far more than the tolerance)."""
  rng = np.random.default_rng(seed)

  def leaf(shape, dtype, scale=1.0):
    return jnp.asarray((scale * rng.standard_normal(shape)).astype(dtype))

  return {"dense": {"w": leaf((4, 5), np.float32), "b": leaf((3,), np.float32, 10.0)},
          "blocks": [leaf((2, 3, 4), np.float32, 0.1), (leaf((), np.float32), leaf((4, 5), jnp.bfloat16))],
          "big": leaf((64, 64), jnp.bfloat16), "frozen": leaf((3,), np.float32)}


def grads_with_none(step):
  grads = tree_with_none(step + 1)
  grads["frozen"] = None
  return grads


def test_adam_metrics_match_numpy_and_leave_updates_and_state_unchanged():
  params = tree_with_none(0)
  grads = [grads_with_none(i) for i in range(3)]
  wrapped = run(gradxform.with_metrics(gradxform.adam(0.1)), params, grads)
  plain = run(gradxform.adam(0.1), params, grads)
  for (p, updates, state), (p_ref, updates_ref, state_ref), g in zip(wrapped, plain, grads):
    chex.assert_trees_all_equal(p, p_ref)
    chex.assert_trees_all_equal(updates, updates_ref)
    chex.assert_trees_all_equal(state.inner_state, state_ref)
    assert updates["frozen"] is None
    values = gradxform.metrics(state)
    assert set(values) == set(BASE_KEYS)
    assert all(v.dtype == jnp.float32 and v.shape == () for v in values.values())
    np.testing.assert_allclose(values["grad_norm"], np_norm(g), rtol=1e-5)
    np.testing.assert_allclose(values["update_norm"], np_norm(updates), rtol=1e-5)
    np.testing.assert_allclose(values["param_norm"], np_norm(p), rtol=1e-5)


def test_init_state_and_abstract_init():
  params = {"w": jnp.ones((2, 3), jnp.float32)}
  tx = gradxform.with_metrics(gradxform.adam(0.1))
  state = tx.init(params)
  assert isinstance(state, gradxform.MetricsState)
  assert {k: float(v) for k, v in state.metrics.items()} == {k: 0.0 for k in BASE_KEYS}
  abstract = jax.eval_shape(tx.init, jax.ShapeDtypeStruct((2, 3), jnp.float32))
  assert jax.tree.structure(abstract.metrics) == jax.tree.structure(state.metrics)


def test_learning_rate_follows_schedule():
  params = {"w": jnp.array([1.0, -2.0], jnp.float32)}
  schedule = gradxform.linear_schedule(0.1, 0.0, 10)
  tx = gradxform.with_metrics(gradxform.inject_hyperparams(gradxform.adam)(learning_rate=schedule))
  assert set(tx.init(params).metrics) == set(BASE_KEYS) | {"learning_rate"}
  np.testing.assert_allclose(tx.init(params).metrics["learning_rate"], 0.1, rtol=1e-6)
  trace = run(tx, params, [{"w": jnp.array([0.5, 1.0], jnp.float32)}] * 3)
  for t, (_, _, state) in enumerate(trace):
    np.testing.assert_allclose(gradxform.metrics(state)["learning_rate"], 0.1 * (1 - t / 10), rtol=1e-6)


def test_several_learning_rates_are_named_by_path():
  params = {"a": jnp.ones(2, jnp.float32), "b": jnp.ones(3, jnp.float32)}
  tx = gradxform.with_metrics(gradxform.partition(
      {"enc": gradxform.inject_hyperparams(gradxform.sgd)(learning_rate=0.1),
       "dec": gradxform.inject_hyperparams(gradxform.sgd)(learning_rate=0.2)},
      {"a": "enc", "b": "dec"}))
  (_, _, state), = run(tx, params, [params])
  values = gradxform.metrics(state)
  assert set(values) == set(BASE_KEYS) | {"enc/learning_rate", "dec/learning_rate"}
  np.testing.assert_allclose([values["enc/learning_rate"], values["dec/learning_rate"]], [0.1, 0.2], rtol=1e-6)


def test_skipped_apply_if_finite():
  params = {"w": jnp.array([1.0, 2.0], jnp.float32)}
  good = {"w": jnp.array([0.5, -1.0], jnp.float32)}
  bad = {"w": jnp.array([jnp.nan, 1.0], jnp.float32)}
  tx = gradxform.with_metrics(gradxform.apply_if_finite(gradxform.adam(0.1), 3))
  assert "skipped" in tx.init(params).metrics
  trace = run(tx, params, [good, bad, good])
  assert [float(gradxform.metrics(s)["skipped"]) for _, _, s in trace] == [0.0, 1.0, 0.0]
  assert float(gradxform.metrics(trace[1][2])["update_norm"]) == 0.0  # apply_if_finite zeroed it
  assert np.isnan(gradxform.metrics(trace[1][2])["grad_norm"])


def test_skipped_multisteps_alternates_and_counts_dropped_mini_steps():
  params = {"w": jnp.array([1.0, 2.0], jnp.float32)}
  grads = [{"w": jnp.array([0.5, -1.0], jnp.float32) * (i + 1)} for i in range(4)]
  tx = gradxform.with_metrics(gradxform.MultiSteps(gradxform.adam(0.1), every_k_schedule=2))
  trace = run(tx, params, grads)
  assert [float(gradxform.metrics(s)["skipped"]) for _, _, s in trace] == [1.0, 0.0, 1.0, 0.0]
  assert [float(gradxform.metrics(s)["update_norm"]) > 0 for _, _, s in trace] == [False, True, False, True]
  # A mini-step dropped by should_skip_update_fn (the NaN one) does not count towards the k.
  grads[1] = {"w": jnp.array([jnp.nan, 1.0], jnp.float32)}
  tx = gradxform.with_metrics(gradxform.MultiSteps(gradxform.adam(0.1), every_k_schedule=2,
                                                   should_skip_update_fn=gradxform.skip_not_finite))
  trace = run(tx, params, grads)
  assert [float(gradxform.metrics(s)["skipped"]) for _, _, s in trace] == [1.0, 1.0, 0.0, 1.0]


def test_optax_transformation_inside():
  params = {"w": jnp.array([1.0, -2.0, 3.0], jnp.float32)}
  grads = [{"w": jnp.array([0.5, 1.0, -0.25], jnp.float32) * (i + 1)} for i in range(3)]
  with jax.numpy_dtype_promotion("standard"):  # optax relies on implicit promotion
    wrapped = run(gradxform.with_metrics(optax.adam(0.1)), params, grads)
    plain = run(optax.adam(0.1), params, grads)
  for (p, updates, state), (_, updates_ref, state_ref), g in zip(wrapped, plain, grads):
    chex.assert_trees_all_equal(updates, updates_ref)
    chex.assert_trees_all_equal(state.inner_state, state_ref)
    values = gradxform.metrics(state)
    np.testing.assert_allclose([values[k] for k in BASE_KEYS], [np_norm(g), np_norm(updates), np_norm(p)],
                               rtol=1e-5)


def test_metrics_without_with_metrics_is_a_clear_error():
  state = gradxform.adam(0.1).init({"w": jnp.ones(2, jnp.float32)})
  with pytest.raises(gradxform.GradxformError, match=r"gradxform\.with_metrics") as info:
    gradxform.metrics(state)
  assert isinstance(info.value, ValueError)


def test_several_metrics_states_are_prefixed_by_position():
  params = {"w": jnp.array([3.0, 4.0], jnp.float32)}
  grads = {"w": jnp.array([6.0, 8.0], jnp.float32)}
  tx = gradxform.chain(gradxform.with_metrics(gradxform.scale(0.5)), gradxform.with_metrics(gradxform.scale(-1.0)))
  _, state = tx.update(grads, tx.init(params), params)
  values = {k: float(v) for k, v in gradxform.metrics(state).items()}
  assert values == {"0/grad_norm": 10.0, "0/update_norm": 5.0, "0/param_norm": 5.0,
                    "1/grad_norm": 5.0, "1/update_norm": 5.0, "1/param_norm": 5.0}
  nested = gradxform.with_metrics(gradxform.chain(gradxform.with_metrics(gradxform.scale(0.5))))
  _, state = nested.update(grads, nested.init(params))
  values = gradxform.metrics(state)
  assert set(values) == set(BASE_KEYS) | {f"inner/0/{k}" for k in BASE_KEYS}
  assert np.isnan(values["param_norm"])  # no params given to update


def test_extra_args_are_forwarded_and_wrapper_is_hashable():
  seen = []

  def update(updates, state, params=None, **extra_args):
    seen.append(extra_args)
    return updates, state

  inner = gradxform.GradientTransformationExtraArgs(lambda params: (), update)
  tx = gradxform.with_metrics(inner)
  params = {"w": jnp.ones(2, jnp.float32)}
  tx.update(params, tx.init(params), params, value=1.5)
  assert seen == [{"value": 1.5}]
  plain = gradxform.with_metrics(gradxform.GradientTransformation(lambda params: (), lambda u, s, p=None: (u, s)))
  plain.update(params, plain.init(params), params, value=1.5)  # dropped for an inner that takes none
  assert gradxform.with_metrics(gradxform.adam(0.1)) == gradxform.with_metrics(gradxform.adam(0.1))
  assert hash(gradxform.with_metrics(gradxform.adam(0.1))) == hash(gradxform.with_metrics(gradxform.adam(0.1)))
