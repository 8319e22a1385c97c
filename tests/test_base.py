"""The contract: trivial transformations, extra args, None leaves, abstract init, hashing, interop, updates."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradxform
from equivalence import assert_trees_equivalent, gradients, mixed_params


def test_identity_set_to_zero_and_stateless_behave():
  params = mixed_params()
  grads = gradients(params, 0)
  updates, state = gradxform.identity().update(grads, gradxform.identity().init(params))
  assert state == gradxform.EmptyState()
  assert_trees_equivalent(updates, grads, "identity")
  zeros, _ = gradxform.set_to_zero().update(grads, gradxform.EmptyState())
  assert all(float(jnp.abs(z).max()) == 0.0 for z in jax.tree.leaves(zeros))
  assert gradxform.init_empty_state(params) == gradxform.EmptyState()


def test_types_are_optax_compatible():
  tx = gradxform.adam(1e-3)
  assert isinstance(tx, gradxform.GradientTransformation)
  assert isinstance(tx, gradxform.GradientTransformationExtraArgs)
  init, update = tx  # unpackable like optax's NamedTuple
  assert callable(init) and callable(update)
  for name in ["Params", "Updates", "OptState", "Schedule", "ScalarOrSchedule", "TransformInitFn",
               "TransformUpdateFn", "TransformUpdateExtraArgsFn"]:
    assert hasattr(gradxform, name), name


@pytest.mark.parametrize("make", [lambda: gradxform.adam(1e-3), lambda: gradxform.sgd(0.1, momentum=0.9),
                                  lambda: gradxform.chain(gradxform.clip(1.0), gradxform.scale(2.0))])
def test_unknown_keyword_arguments_are_accepted_and_ignored(make):
  tx = make()
  params = {"w": jnp.ones((3,))}
  plain, _ = tx.update(params, tx.init(params), params)
  with_extras, _ = tx.update(params, tx.init(params), params, value=jnp.array(1.0), grad=params, value_fn=abs)
  np.testing.assert_array_equal(plain["w"], with_extras["w"])


def test_with_extra_args_support_wraps_a_plain_transformation():
  calls = []

  def update(updates, state, params=None):
    calls.append(params)
    return updates, state

  plain = gradxform.GradientTransformation(gradxform.init_empty_state, update)
  wrapped = gradxform.with_extra_args_support(plain)
  assert isinstance(wrapped, gradxform.GradientTransformationExtraArgs)
  wrapped.update({"a": 1.0}, gradxform.EmptyState(), None, value=3.0)
  assert calls == [None]
  already = gradxform.adam(1e-3)
  assert gradxform.with_extra_args_support(already) is already


@pytest.mark.parametrize("make", [lambda: gradxform.adam(1e-2), lambda: gradxform.sgd(0.1, momentum=0.9),
                                  lambda: gradxform.rmsprop(1e-2, centered=True),
                                  lambda: gradxform.adamw(1e-2, mask=lambda p: jax.tree.map(lambda x: x.ndim > 1, p)),
                                  lambda: gradxform.chain(gradxform.clip_by_global_norm(1.0), gradxform.adagrad(0.1))])
@pytest.mark.parametrize("jit", [False, True])
def test_none_update_leaves_pass_through_with_state_unchanged(make, jit):
  tx = make()
  params = {"w": jnp.ones((2, 3)), "frozen": jnp.full((3,), 2.0)}
  grads = {"w": jnp.full((2, 3), 0.5), "frozen": None}
  state = tx.init(params)
  update = jax.jit(tx.update) if jit else tx.update
  updates, new_state = update(grads, state, params)
  assert updates["frozen"] is None
  assert updates["w"].shape == (2, 3) and float(jnp.abs(updates["w"]).max()) > 0
  old = jax.tree_util.tree_flatten_with_path(state)[0]
  new = jax.tree_util.tree_flatten_with_path(new_state)[0]
  assert [p for p, _ in old] == [p for p, _ in new]
  for (path, a), (_, b) in zip(old, new):
    if "frozen" in jax.tree_util.keystr(path):
      np.testing.assert_array_equal(a, b)


def test_none_params_leaves_are_kept():
  params = {"w": jnp.ones(2), "buffer": None}
  tx = gradxform.adam(0.1)
  updates, _ = tx.update({"w": jnp.ones(2), "buffer": None}, tx.init(params))
  new = gradxform.apply_updates(params, updates)
  assert new["buffer"] is None and new["w"].dtype == jnp.float32


def test_init_accepts_shape_dtype_structs_and_eval_shape():
  params = mixed_params()
  abstract = jax.tree.map(lambda p: jax.ShapeDtypeStruct(p.shape, p.dtype), params)
  tx = gradxform.chain(gradxform.clip_by_global_norm(1.0), gradxform.adamw(1e-3))
  concrete = tx.init(params)
  from_abstract = tx.init(abstract)
  assert_trees_equivalent(from_abstract, concrete, "init from ShapeDtypeStruct")
  shapes = jax.eval_shape(tx.init, abstract)
  assert jax.tree.map(lambda s: (s.shape, s.dtype), shapes) == jax.tree.map(lambda s: (s.shape, s.dtype), concrete)


def test_inf_params_give_a_finite_state():
  params = {"w": jnp.array([jnp.inf, -jnp.inf, 1.0])}
  for init in (gradxform.adam(1e-3).init, jax.jit(gradxform.adam(1e-3).init)):
    state = init(params)
    assert bool(jnp.all(jnp.isfinite(state[0].mu["w"])))
    assert bool(jnp.all(state[0].nu["w"] == 0))


def test_equal_constructions_are_equal_and_hashable():
  def build():
    return gradxform.chain(gradxform.clip_by_global_norm(1.0),
                           gradxform.adamw(gradxform.warmup_cosine_decay_schedule(0.0, 1e-3, 10, 100),
                                           weight_decay=1e-4))
  a, b = build(), build()
  assert a == b and hash(a) == hash(b)
  assert gradxform.adam(1e-3) != gradxform.adam(2e-3)
  assert len({gradxform.sgd(0.1), gradxform.sgd(0.1), gradxform.sgd(0.2)}) == 2


def test_static_transformation_argument_does_not_retrace():
  traces = []

  def step_impl(params, state, grads, tx):
    traces.append(1)
    updates, state = tx.update(grads, state, params)
    return gradxform.apply_updates(params, updates), state

  step = jax.jit(step_impl, static_argnums=3)
  params = {"w": jnp.ones(3)}
  state = gradxform.adam(1e-3).init(params)
  for _ in range(3):
    params, state = step(params, state, params, gradxform.adam(1e-3))  # rebuilt each step
  assert len(traces) == 1


def test_gradxform_inside_optax_chain_and_optax_inside_gradxform_chain():
  params = mixed_params()
  reference = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-2))
  mixed_a = optax.chain(gradxform.clip_by_global_norm(1.0), optax.adam(1e-2))
  mixed_b = gradxform.chain(optax.clip_by_global_norm(1.0), gradxform.adam(1e-2))
  with jax.numpy_dtype_promotion("standard"):
    states = [tx.init(params) for tx in (reference, mixed_a, mixed_b)]
    for step in range(2):
      grads = gradients(params, step)
      results = [tx.update(grads, s, params) for tx, s in zip((reference, mixed_a, mixed_b), states)]
      states = [r[1] for r in results]
      for updates, _ in results[1:]:
        assert_trees_equivalent(updates, results[0][0], "mixed chains")


def test_optax_extra_args_reach_an_optax_transformation_inside_gradxform_chain():
  seen = {}

  def update(updates, state, params=None, **extra_args):
    seen.update(extra_args)
    return updates, state

  inner = optax.GradientTransformationExtraArgs(optax.init_empty_state, update)
  tx = gradxform.chain(gradxform.scale(1.0), inner)
  tx.update({"a": jnp.ones(1)}, tx.init({"a": jnp.ones(1)}), None, value=5.0)
  assert seen == {"value": 5.0}


def test_named_chain_state_is_keyed_by_name():
  tx = gradxform.named_chain(("clip", gradxform.clip(1.0)), ("adam", gradxform.adam(0.1)))
  state = tx.init({"w": jnp.ones(2)})
  assert list(state.keys()) == ["clip", "adam"]
  with pytest.raises(gradxform.HyperparameterError, match="unique"):
    gradxform.named_chain(("a", gradxform.clip(1.0)), ("a", gradxform.adam(0.1)))


def test_empty_chain_is_the_identity_and_empty_trees_work():
  tx = gradxform.chain()
  updates, state = tx.update({"w": jnp.ones(2)}, tx.init({"w": jnp.ones(2)}))
  assert state == () and float(updates["w"][0]) == 1.0
  adam = gradxform.adam(1e-3)
  updates, state = adam.update({}, adam.init({}), {})
  assert updates == {}


def test_apply_updates_keeps_param_dtypes_and_matches_optax():
  params = mixed_params()
  updates = jax.tree.map(lambda p: jnp.ones(p.shape, jnp.float32), params)
  ours = gradxform.apply_updates(params, updates)
  with jax.numpy_dtype_promotion("standard"):
    theirs = optax.apply_updates(params, updates)
  assert_trees_equivalent(ours, theirs, "apply_updates")


def test_incremental_and_periodic_update_match_optax():
  new, old = mixed_params(), gradients(mixed_params(), 0)
  with jax.numpy_dtype_promotion("standard"):
    ours = gradxform.incremental_update(new, old, 0.1)
    theirs = optax.incremental_update(new, old, 0.1)
  assert_trees_equivalent(ours, theirs, "incremental_update")
  for step in (0, 1, 4, 5):
    ours = gradxform.periodic_update(new, old, jnp.array(step), 5)
    theirs = optax.periodic_update(new, old, jnp.array(step), 5)
    assert_trees_equivalent(ours, theirs, f"periodic_update at {step}")


def test_safe_increment_saturates_and_counters_do_not_wrap():
  top = jnp.iinfo(jnp.int32).max
  assert int(gradxform.safe_int32_increment(jnp.array(top, jnp.int32))) == top
  assert int(gradxform.safe_increment(jnp.array(5, jnp.int32))) == 6
  assert float(gradxform.safe_increment(jnp.array(1.5, jnp.float32))) == 2.5
  tx = gradxform.adam(1e-3)
  params = {"w": jnp.ones(2)}
  state = tx.init(params)
  state = (state[0]._replace(count=jnp.array(top - 1, jnp.int32)),) + state[1:]
  for _ in range(3):
    updates, state = tx.update(params, state)
  assert int(state[0].count) == top and bool(jnp.all(jnp.isfinite(updates["w"])))


def test_safe_norms_match_optax():
  x = jnp.array([[3.0, 4.0], [0.0, 0.0]])
  for axis in (None, 1):
    np.testing.assert_allclose(gradxform.safe_norm(x, 1e-3, axis=axis), optax.safe_norm(x, 1e-3, axis=axis))
  np.testing.assert_allclose(gradxform.safe_root_mean_squares(x, 1e-3), optax.safe_root_mean_squares(x, 1e-3))
  grad = jax.grad(lambda v: gradxform.safe_norm(v, 1e-6))(jnp.zeros(3))
  assert bool(jnp.all(jnp.isfinite(grad)))


def test_tree_level_moment_helpers_match_optax():
  params = mixed_params()
  grads = gradients(params, 0)
  with jax.numpy_dtype_promotion("standard"):
    assert_trees_equivalent(gradxform.update_moment(grads, params, 0.9, 2),
                            optax.tree.update_moment(grads, params, 0.9, 2), "update_moment")
    assert_trees_equivalent(gradxform.update_infinity_moment(grads, params, 0.9, 1e-3),
                            optax.tree.update_infinity_moment(grads, params, 0.9, 1e-3), "update_infinity_moment")
    count = jnp.array(3, jnp.int32)
    assert_trees_equivalent(gradxform.bias_correction(params, 0.9, count),
                            optax.tree.bias_correction(params, 0.9, count), "bias_correction")


def test_jitted_init_keeps_the_param_sharding(tmp_path):
  """Under jax.jit(tx.init) the state follows each param's sharding (optax's lands replicated)."""
  import subprocess
  import sys
  import textwrap
  script = textwrap.dedent("""
      import os
      os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
      import jax, jax.numpy as jnp
      from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
      import gradxform
      mesh = jax.make_mesh((4,), ("x",), axis_types=(AxisType.Auto,))
      sharding = NamedSharding(mesh, P("x"))
      params = {"w": jax.device_put(jnp.array([[1.0], [jnp.inf], [-2.0], [3.0]]), sharding)}
      tx = gradxform.chain(gradxform.clip_by_global_norm(1.0), gradxform.adamw(1e-3),
                           gradxform.rmsprop(0.1, initial_scale=1.0))
      for init in (tx.init, jax.jit(tx.init)):
        state = init(params)
        for leaf in (state[1][0].mu["w"], state[1][0].nu["w"], state[2][0].nu["w"]):
          assert leaf.sharding.spec == P("x"), leaf.sharding
          assert bool(jnp.all(jnp.isfinite(leaf))), leaf
        assert bool(jnp.all(state[2][0].nu["w"] == 1.0))
      print("ok")
  """)
  result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
  assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


def test_int_and_float_hyperparameters_are_not_confused():
  assert gradxform.scale(1) != gradxform.scale(1.0)
  assert gradxform.constant_schedule(1) != gradxform.constant_schedule(1.0)
  assert gradxform.scale(2.0) == gradxform.scale(2.0)


def test_transformations_pickle_and_copy_by_value():
  import copy
  import pickle
  tx = gradxform.chain(gradxform.clip_by_global_norm(1.0),
                       gradxform.adamw(gradxform.warmup_cosine_decay_schedule(0.0, 1e-3, 10, 100)))
  restored = pickle.loads(pickle.dumps(tx))
  assert restored == tx and hash(restored) == hash(tx)
  assert copy.deepcopy(tx) == tx
