"""flat(tx) and FlatTree: the many-small-leaves path gives the per-leaf results, converts its state both
ways, and compiles to a handful of loops whatever the leaf count (checked on the compiled program)."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradxform
from tests import equivalence


def _schedule():
  return gradxform.warmup_cosine_decay_schedule(0.0, 1e-2, 2, 20)


ELEMENTWISE = {
    "adam": lambda: gradxform.adam(1e-2),
    "adamw": lambda: gradxform.adamw(_schedule(), weight_decay=1e-2),
    "clip + adamw": lambda: gradxform.chain(gradxform.clip_by_global_norm(1.0),
                                            gradxform.adamw(_schedule(), weight_decay=1e-2)),
    "nadamw": lambda: gradxform.nadamw(1e-2),
    "sgd nesterov": lambda: gradxform.sgd(1e-2, momentum=0.9, nesterov=True),
    "rmsprop centered": lambda: gradxform.rmsprop(1e-2, centered=True, momentum=0.5),
    "adagrad": lambda: gradxform.adagrad(1e-2),
    "adadelta": lambda: gradxform.adadelta(1.0),
    "amsgrad": lambda: gradxform.amsgrad(1e-2),
    "adamax": lambda: gradxform.adamax(1e-2),
    "adabelief": lambda: gradxform.adabelief(1e-2),
    "yogi": lambda: gradxform.yogi(1e-2),
    "adan": lambda: gradxform.adan(1e-2),
    "radam": lambda: gradxform.radam(1e-2),
    "lion": lambda: gradxform.lion(1e-3),
    "sign_sgd": lambda: gradxform.sign_sgd(1e-2),
    "optimistic_gradient_descent": lambda: gradxform.optimistic_gradient_descent(1e-2),
    "clip + sgd": lambda: gradxform.chain(gradxform.clip(0.5), gradxform.sgd(1e-2)),
}


def _float32_params():
  return jax.tree.map(lambda x: x.astype(jnp.float32), equivalence.mixed_params())


def _params_for(name):
  """Global-norm clipping sums a bfloat16 buffer in one reduction where per leaf each leaf's sum is rounded
  to bfloat16 first (as optax does): equal to float32 precision on float32 trees, to bfloat16's on others."""
  return _float32_params() if "clip" in name else equivalence.mixed_params()


def _per_leaf_and_flat(factory, steps=3, params=None):
  params = equivalence.mixed_params() if params is None else params
  tx, ftx = factory(), gradxform.flat(factory())
  state, fstate = tx.init(params), jax.jit(ftx.init)(params)
  p = fp = params
  for step in range(steps):
    grads = equivalence.gradients(params, step)
    updates, state = jax.jit(tx.update)(grads, state, p)
    fupdates, fstate = jax.jit(ftx.update)(grads, fstate, fp)
    p, fp = gradxform.apply_updates(p, updates), gradxform.apply_updates(fp, fupdates)
    equivalence.assert_trees_equivalent(fupdates, updates, f"updates at step {step}")
    equivalence.assert_trees_equivalent(gradxform.flat_state_to_tree(fstate), state, f"state at step {step}")
    equivalence.assert_trees_equivalent(fp, p, f"params at step {step}")
  return params, state, fstate


@pytest.mark.parametrize("name", list(ELEMENTWISE))
def test_flat_equals_per_leaf(name):
  _per_leaf_and_flat(ELEMENTWISE[name], params=_params_for(name))


def test_flat_global_norm_of_bfloat16_leaves_agrees_to_bfloat16_precision():
  params = equivalence.mixed_params()
  tx = gradxform.clip_by_global_norm(1.0)
  grads = equivalence.gradients(params, 0)
  ours, _ = gradxform.flat(tx).update(grads, tx.init(params), params)
  theirs, _ = tx.update(grads, tx.init(params), params)
  equivalence.assert_trees_equivalent(ours, theirs, "clipped", rtol=1e-2)


def test_state_converts_both_ways_and_training_continues_identically():
  factory = ELEMENTWISE["clip + adamw"]
  params, state, fstate = _per_leaf_and_flat(factory, steps=2, params=_float32_params())
  packed = gradxform.tree_state_to_flat(state, params)
  assert jax.tree.structure(packed) == jax.tree.structure(fstate)
  for a, b in zip(jax.tree.leaves(packed), jax.tree.leaves(fstate)):
    assert a.dtype == b.dtype and a.shape == b.shape
  equivalence.assert_trees_equivalent(gradxform.flat_state_to_tree(packed), state, "round trip")
  # a per-leaf state packed mid-training drives flat(tx) on, matching per-leaf training
  tx, ftx = factory(), gradxform.flat(factory())
  grads = equivalence.gradients(params, 5)
  u, _ = jax.jit(tx.update)(grads, state, params)
  fu, _ = jax.jit(ftx.update)(grads, packed, params)
  equivalence.assert_trees_equivalent(fu, u, "updates after conversion")
  # state_dict names buffers by dtype
  assert "1/0/mu/float32" in gradxform.state_dict(fstate)
  _, _, mixed = _per_leaf_and_flat(ELEMENTWISE["adam"], steps=1)
  assert {"0/mu/float32", "0/mu/bfloat16"} <= set(gradxform.state_dict(mixed))


def _loss(tree):
  return sum(jnp.sum(jnp.sin(x.astype(jnp.float32)) ** 2) for x in jax.tree.leaves(tree))


def test_flat_params_train_like_tree_params():
  """Params kept as a FlatTree (unpacked in the loss): gradients arrive flat; results equal per-leaf."""
  tx = ELEMENTWISE["adamw"]()
  ftx = gradxform.flat(ELEMENTWISE["adamw"]())
  params = equivalence.mixed_params()
  flat_params = gradxform.FlatTree.of(params)
  assert isinstance(flat_params, gradxform.FlatTree) and len(jax.tree.leaves(flat_params)) == 2

  @jax.jit
  def step(p, s):
    g = jax.grad(_loss)(p)
    u, s = tx.update(g, s, p)
    return gradxform.apply_updates(p, u), s

  @jax.jit
  def flat_step(fp, s):
    g = jax.grad(lambda q: _loss(q.unflatten()))(fp)
    assert isinstance(g, gradxform.FlatTree)
    u, s = ftx.update(g, s, fp)
    return gradxform.apply_updates(fp, u), s

  state, fstate = tx.init(params), ftx.init(flat_params)
  for _ in range(3):
    params, state = step(params, state)
    flat_params, fstate = flat_step(flat_params, fstate)
  equivalence.assert_trees_equivalent(flat_params.unflatten(), params, "params")
  equivalence.assert_trees_equivalent(gradxform.flat_state_to_tree(fstate), state, "state")


def _fusions(fn, *args):
  text = jax.jit(fn).lower(*args).compile().as_text()
  return len(re.findall(r" fusion\(", text[text.index("ENTRY"):]))


def test_flat_step_compiles_to_a_few_loops_whatever_the_leaf_count():
  params = {f"p{i}": jnp.full((8,), 0.5 + i, jnp.float32) for i in range(60)}
  tx = gradxform.chain(gradxform.clip_by_global_norm(1.0), gradxform.adamw(_schedule(), weight_decay=1e-4))

  def step(p, s, g, tx):
    u, s = tx.update(g, s, p)
    return gradxform.apply_updates(p, u), s

  per_leaf = _fusions(lambda p, s, g: step(p, s, g, tx), params, tx.init(params), params)
  fparams = gradxform.FlatTree.of(params)
  ftx = gradxform.flat(tx)
  flat = _fusions(lambda p, s, g: step(p, s, g, ftx), fparams, ftx.init(fparams), fparams)
  assert per_leaf >= 120  # at least two loops per leaf
  assert flat <= 12


def test_flattree_round_trip_and_repr():
  params = equivalence.mixed_params()
  packed = gradxform.FlatTree.of(params)
  back = packed.unflatten()
  assert jax.tree.structure(back) == jax.tree.structure(params)
  for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(params)):
    assert a.dtype == b.dtype and a.shape == b.shape
    np.testing.assert_array_equal(np.asarray(a, np.float32), np.asarray(b, np.float32))
  assert repr(packed).startswith("FlatTree(6 leaves in bfloat16[")


@pytest.mark.parametrize("factory, named", [
    (lambda: gradxform.lamb(1e-2), "lamb"),
    (lambda: gradxform.adamw(1e-2, mask=lambda p: jax.tree.map(lambda x: x.ndim > 1, p)), "masked"),
    (lambda: gradxform.chain(gradxform.clip_by_block_rms(1.0), gradxform.adam(1e-2)), "clip_by_block_rms"),
    (lambda: gradxform.adafactor(1e-2), "adafactor"),
    (lambda: gradxform.novograd(1e-2), "novograd"),
])
def test_non_elementwise_steps_are_rejected_by_name(factory, named):
  with pytest.raises(gradxform.HyperparameterTypeError, match=rf"flat: .*{named}.* is not elementwise"):
    gradxform.flat(factory())


def test_bad_leaves_and_layouts_are_named():
  ftx = gradxform.flat(gradxform.adam(1e-2))
  with pytest.raises(gradxform.LeafTypeError, match=r"\['b'\]"):
    ftx.init({"a": jnp.ones((2,)), "b": None})
  params = {"a": jnp.ones((2,)), "b": jnp.ones((3,))}
  state = ftx.init(params)
  with pytest.raises(gradxform.TreeMismatchError, match="params do not have the layout of the updates"):
    ftx.update(params, state, {"a": jnp.ones((2,)), "b": jnp.ones((4,))})


def test_state_with_moments_in_another_dtype_converts_to_the_flat_init_structure():
  params = _float32_params()
  tx, ftx = gradxform.adam(1e-2, mu_dtype=jnp.bfloat16), gradxform.flat(gradxform.adam(1e-2, mu_dtype=jnp.bfloat16))
  packed = gradxform.tree_state_to_flat(tx.init(params), params)
  reference = ftx.init(params)
  assert jax.tree.structure(packed) == jax.tree.structure(reference)
  assert [x.dtype for x in jax.tree.leaves(packed)] == [x.dtype for x in jax.tree.leaves(reference)]
  equivalence.assert_trees_equivalent(gradxform.flat_state_to_tree(packed), tx.init(params), "round trip")
