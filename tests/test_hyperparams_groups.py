"""Hyperparameters by name (`hyperparams`, `set_hyperparams`), parameter groups, `describe`, `masks`.

Parameter groups are checked against the hand-written optax equivalent (`optax.partition` over
`optax.inject_hyperparams`); setting a hyperparameter is checked not to retrace a jitted step.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradxform
from tests.equivalence import assert_trees_equivalent

PARAMS = {
    "encoder": {"w": jnp.linspace(-1.0, 1.0, 12, dtype=jnp.float32).reshape(4, 3), "b": jnp.zeros(3)},
    "norm": {"scale": jnp.ones(3)},
    "head": [jnp.full((3, 2), 0.5), jnp.zeros(2)],
}


def grads_at(step: int):
  return jax.tree.map(lambda p: jnp.cos(p + step) + 0.1 * step, PARAMS)


def optax_call(fn, *args):
  with jax.numpy_dtype_promotion("standard"):  # optax relies on implicit promotion
    return fn(*args)


# ----------------------------------------------------------------------------------------------
# hyperparams / set_hyperparams


def test_hyperparams_reads_every_injected_value_by_its_shortest_name():
  tx = gradxform.chain(gradxform.clip_by_global_norm(1.0),
                       gradxform.inject_hyperparams(gradxform.adamw)(learning_rate=0.1, weight_decay=0.01))
  values = gradxform.hyperparams(tx.init(PARAMS))
  assert set(values) == {"learning_rate", "b1", "b2", "eps", "eps_root", "weight_decay"}
  np.testing.assert_allclose(values["learning_rate"], 0.1)
  np.testing.assert_allclose(values["weight_decay"], 0.01)


def test_ambiguous_names_get_their_path_and_set_needs_it():
  tx = gradxform.partition({"enc": gradxform.inject_hyperparams(gradxform.sgd)(learning_rate=0.1),
                            "rest": gradxform.inject_hyperparams(gradxform.adam)(learning_rate=0.2)},
                           lambda p: jax.tree.map(lambda _: "rest", p) | {"encoder": {"w": "enc", "b": "enc"}})
  state = tx.init(PARAMS)
  values = gradxform.hyperparams(state)
  assert {"enc/learning_rate", "rest/learning_rate", "b1"} <= set(values)
  with pytest.raises(gradxform.HyperparameterError, match=r"ambiguous.*enc/learning_rate.*rest/learning_rate"):
    gradxform.set_hyperparams(state, learning_rate=1.0)
  new = gradxform.set_hyperparams(state, **{"enc/learning_rate": 0.5}, b1=0.8)
  np.testing.assert_allclose(gradxform.hyperparams(new)["enc/learning_rate"], 0.5)
  np.testing.assert_allclose(gradxform.hyperparams(new)["rest/learning_rate"], 0.2)
  np.testing.assert_allclose(gradxform.hyperparams(new)["b1"], 0.8)
  np.testing.assert_allclose(gradxform.hyperparams(state)["enc/learning_rate"], 0.1)  # the old one is untouched


def test_unknown_name_lists_the_valid_ones():
  state = gradxform.inject_hyperparams(gradxform.adam)(learning_rate=0.1).init(PARAMS)
  with pytest.raises(gradxform.HyperparameterError, match=r"no hyperparameter named `lr`.*'learning_rate'"):
    gradxform.set_hyperparams(state, lr=0.5)


@pytest.mark.parametrize("value,error,match", [
    ("fast", gradxform.HyperparameterTypeError, "must be a number"),
    (None, gradxform.HyperparameterTypeError, "must be a number"),
    (float("nan"), gradxform.HyperparameterError, "NaN"),
    (np.ones(3), gradxform.HyperparameterError, r"shape \(\)"),
])
def test_bad_values_are_rejected_naming_the_hyperparameter(value, error, match):
  state = gradxform.inject_hyperparams(gradxform.adam)(learning_rate=0.1).init(PARAMS)
  with pytest.raises(error, match=match) as info:
    gradxform.set_hyperparams(state, learning_rate=value)
  assert "learning_rate" in str(info.value)


def test_a_scheduled_hyperparameter_cannot_be_set_by_hand():
  state = gradxform.inject_hyperparams(gradxform.adam)(
      learning_rate=gradxform.linear_schedule(0.1, 0.0, 10)).init(PARAMS)
  with pytest.raises(gradxform.HyperparameterError, match="driven by a schedule"):
    gradxform.set_hyperparams(state, learning_rate=0.5)


def test_set_keeps_structure_dtypes_weak_types_and_sharding_and_does_not_retrace():
  tx = gradxform.MultiSteps(gradxform.masked(
      gradxform.inject_hyperparams(gradxform.adam, hyperparam_dtype=jnp.float32)(learning_rate=0.1),
      jax.tree.map(lambda p: p.ndim >= 1, PARAMS)), every_k_schedule=1)
  traces = []

  @jax.jit
  def step(params, state, step_number):
    traces.append(1)
    grads = jax.tree.map(lambda p: jnp.cos(p + step_number), params)
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  params, state = PARAMS, tx.init(PARAMS)
  params, state = step(params, state, 0.0)
  params, state = step(params, state, 0.5)  # the state now comes from the step itself
  traces.clear()
  new = gradxform.set_hyperparams(state, learning_rate=0.0)
  chex.assert_trees_all_equal_structs(new, state)
  old_leaves, new_leaves = jax.tree.leaves(state), jax.tree.leaves(new)
  assert [x.dtype for x in old_leaves] == [x.dtype for x in new_leaves]
  assert [x.weak_type for x in old_leaves] == [x.weak_type for x in new_leaves]
  assert [x.sharding for x in old_leaves] == [x.sharding for x in new_leaves]
  frozen_params, new = step(params, new, 1.0)
  assert not traces, "set_hyperparams made the jitted step retrace"
  chex.assert_trees_all_equal(frozen_params, params)  # learning rate 0: nothing moves
  np.testing.assert_allclose(gradxform.hyperparams(new)["learning_rate"], 0.0)


def test_set_hyperparams_works_under_jit():
  tx = gradxform.inject_hyperparams(gradxform.sgd)(learning_rate=0.1, momentum=0.9)
  state = tx.init(PARAMS)
  new = jax.jit(lambda s, lr: gradxform.set_hyperparams(s, learning_rate=lr))(state, jnp.float32(0.3))
  np.testing.assert_allclose(gradxform.hyperparams(new)["learning_rate"], 0.3)
  np.testing.assert_allclose(gradxform.hyperparams(new)["momentum"], 0.9)


# ----------------------------------------------------------------------------------------------
# param_groups


GROUPS = [gradxform.group(r"(/b|scale|head/1)$", weight_decay=0.0, learning_rate=0.05),
          gradxform.group(r"^encoder/w$", learning_rate=0.2, b1=0.5)]


def optax_labels(params):
  def label(path, _):
    path = "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)
    if path.endswith(("/b", "scale", "head/1")):
      return "group0"
    return "group1" if path == "encoder/w" else "default"
  return jax.tree_util.tree_map_with_path(label, params)


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_param_groups_equal_hand_written_optax_partition_of_injected_optimizers(jit):
  ours = gradxform.param_groups(gradxform.adamw, GROUPS, learning_rate=0.1, weight_decay=0.1)
  injected = optax.inject_hyperparams(optax.adamw, hyperparam_dtype=jnp.float32)
  theirs = optax.partition({"group0": injected(learning_rate=0.05, weight_decay=0.0),
                            "group1": injected(learning_rate=0.2, b1=0.5, weight_decay=0.1),
                            "default": injected(learning_rate=0.1, weight_decay=0.1)}, optax_labels)
  our_update, their_update = (jax.jit(ours.update), jax.jit(theirs.update)) if jit else (ours.update, theirs.update)
  our_state, their_state = ours.init(PARAMS), theirs.init(PARAMS)
  for step in range(3):
    grads = grads_at(step)
    our_updates, our_state = our_update(grads, our_state, PARAMS)
    their_updates, their_state = optax_call(their_update, grads, their_state, PARAMS)
    assert_trees_equivalent(our_updates, their_updates, f"updates at step {step}")
    assert_trees_equivalent(our_state, their_state, f"state at step {step}")
  assert type(our_state).__name__ == type(their_state).__name__ == "PartitionState"


def test_a_frozen_group_has_zero_updates_and_no_state():
  tx = gradxform.param_groups(gradxform.adam, [gradxform.group(r"^encoder/", frozen=True)], learning_rate=0.1)
  state = tx.init(PARAMS)
  frozen_state = state.inner_states["group0"]
  assert jax.tree.leaves(frozen_state) == []
  for moment in (state.inner_states["default"].inner_state.inner_state[0].mu,):
    assert isinstance(moment["encoder"]["w"], gradxform.MaskedNode)
  updates, _ = jax.jit(tx.update)(grads_at(0), state, PARAMS)
  chex.assert_trees_all_equal(updates["encoder"], jax.tree.map(jnp.zeros_like, PARAMS["encoder"]))
  assert float(jnp.abs(updates["head"][0]).sum()) > 0


def test_group_hyperparameters_are_set_by_group_number_or_path():
  tx = gradxform.param_groups(gradxform.adamw, GROUPS, learning_rate=0.1, weight_decay=0.1)
  state = tx.init(PARAMS)
  values = gradxform.hyperparams(state)
  np.testing.assert_allclose(values["group0/learning_rate"], 0.05)
  np.testing.assert_allclose(values["group1/b1"], 0.5)
  np.testing.assert_allclose(values["default/weight_decay"], 0.1)
  assert {v.dtype for v in values.values()} == {jnp.dtype(jnp.float32)}
  state = gradxform.set_hyperparams(state, group=1, learning_rate=0.3)
  state = gradxform.set_hyperparams(state, **{"default/learning_rate": 0.01})
  state = gradxform.set_hyperparams(state, group="default", weight_decay=0.0)
  values = gradxform.hyperparams(state)
  np.testing.assert_allclose(values["group1/learning_rate"], 0.3)
  np.testing.assert_allclose(values["default/learning_rate"], 0.01)
  np.testing.assert_allclose(values["default/weight_decay"], 0.0)
  np.testing.assert_allclose(values["group0/learning_rate"], 0.05)
  with pytest.raises(gradxform.HyperparameterError, match="no hyperparameters in group 7"):
    gradxform.set_hyperparams(state, group=7, learning_rate=0.3)


def test_bf16_params_keep_float32_hyperparameters():
  params = jax.tree.map(lambda p: p.astype(jnp.bfloat16), PARAMS)
  state = gradxform.param_groups(gradxform.adamw, GROUPS[:1], learning_rate=0.1).init(params)
  assert {v.dtype for v in gradxform.hyperparams(state).values()} == {jnp.dtype(jnp.float32)}


def test_a_group_that_matches_nothing_is_an_error_naming_its_pattern():
  tx = gradxform.param_groups(gradxform.adam, [gradxform.group(r"^decoder/")], learning_rate=0.1)
  with pytest.raises(gradxform.HyperparameterError, match=r"group 0 \(pattern '\^decoder/'\) matches no parameter"):
    tx.init(PARAMS)


@pytest.mark.parametrize("make,match", [
    (lambda: gradxform.param_groups(gradxform.adam, [gradxform.group("b", lr=0.1)], learning_rate=0.1),
     r"groups\[0\].*\['lr'\].*not parameters of adam"),
    (lambda: gradxform.param_groups(gradxform.adam, [], learning_rat=0.1), r"defaults names \['learning_rat'\]"),
    (lambda: gradxform.group("(unclosed"), "not a valid regex"),
    (lambda: gradxform.group("b", frozen=True, learning_rate=0.1), "frozen group"),
    (lambda: gradxform.param_groups(gradxform.adam, gradxform.group("b"), learning_rate=0.1), "list of"),
    (lambda: gradxform.param_groups(gradxform.adam, ["b"], learning_rate=0.1), r"groups\[0\]"),
])
def test_bad_group_arguments_fail_at_construction(make, match):
  with pytest.raises((gradxform.HyperparameterError, gradxform.HyperparameterTypeError), match=match):
    make()


# ----------------------------------------------------------------------------------------------
# describe and masks


def test_describe_lists_each_leaf_with_group_hyperparameters_and_state_bytes():
  tx = gradxform.param_groups(gradxform.adamw, GROUPS + [gradxform.group("^head/0$", frozen=True)],
                              learning_rate=0.1, weight_decay=0.1)
  table = gradxform.describe(tx, PARAMS)
  rows = {row.path: row for row in table}
  assert rows["encoder/w"].group == "group1" and rows["encoder/w"].hyperparams["learning_rate"] == pytest.approx(0.2)
  assert rows["encoder/b"].group == "group0" and rows["encoder/b"].hyperparams["weight_decay"] == 0.0
  assert rows["head/0"].group == "group2" and rows["head/0"].state_bytes == 0 and rows["head/0"].hyperparams == {}
  assert rows["encoder/w"].state_bytes == 2 * 12 * 4  # mu and nu
  real_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tx.init(PARAMS)))
  assert table.total_state_bytes() == real_bytes
  text = str(table)
  assert "encoder/w" in text and "group1" in text and f"{real_bytes:,}" in text


def test_describe_any_transformation_with_abstract_params():
  abstract = jax.tree.map(lambda p: jax.ShapeDtypeStruct(p.shape, jnp.bfloat16), PARAMS)
  table = gradxform.describe(gradxform.adam(1e-3, mu_dtype=jnp.float32), abstract)
  rows = {row.path: row for row in table}
  assert rows["head/0"].state_bytes == 6 * (4 + 2)  # mu float32, nu bfloat16
  assert rows["(shared)"].state_bytes == 4  # the step count


def test_decay_mask_selects_matrices_and_works_as_adamw_mask():
  assert gradxform.masks.decay_mask(PARAMS) == {"encoder": {"w": True, "b": False}, "norm": {"scale": False},
                                                 "head": [True, False]}
  ours = gradxform.adamw(0.1, weight_decay=0.5, mask=gradxform.masks.decay_mask)
  theirs = optax.adamw(0.1, weight_decay=0.5, mask=gradxform.masks.decay_mask(PARAMS))
  our_updates, _ = ours.update(grads_at(0), ours.init(PARAMS), PARAMS)
  their_updates, _ = optax_call(theirs.update, grads_at(0), theirs.init(PARAMS), PARAMS)
  assert_trees_equivalent(our_updates, their_updates, "adamw with decay_mask")
