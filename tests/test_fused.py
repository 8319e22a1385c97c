"""fused(tx): same updates and state as tx (bit-identical, or last-bit where a division is recomputed),
fewer bytes written (checked on the compiled program, not by timing), one compile for eager calls."""

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


def _decay_mask(params):
  return jax.tree.map(lambda p: p.ndim > 1, params)


# Rows marked "unfused" hold steps fused() does not recognise: they run through their own update.
CASES = {
    "adam": lambda: gradxform.adam(1e-2),
    "adam mu_dtype=bf16": lambda: gradxform.adam(1e-2, mu_dtype=jnp.bfloat16),
    "nadam": lambda: gradxform.nadam(1e-2),
    "adamw schedule": lambda: gradxform.adamw(_schedule(), weight_decay=1e-2),
    "nadamw": lambda: gradxform.nadamw(1e-2, weight_decay=1e-2),
    "sgd momentum": lambda: gradxform.sgd(1e-2, momentum=0.9),
    "sgd nesterov": lambda: gradxform.sgd(_schedule(), momentum=0.9, nesterov=True),
    "clip + adamw schedule": lambda: gradxform.chain(gradxform.clip_by_global_norm(1.0),
                                                      gradxform.adamw(_schedule(), weight_decay=1e-2)),
    "clip + nadam": lambda: gradxform.chain(gradxform.clip_by_global_norm(1.0), gradxform.nadam(1e-2)),
    "adam then clip": lambda: gradxform.chain(gradxform.adam(1e-2), gradxform.clip_by_global_norm(1e-3)),
    "nested chains": lambda: gradxform.chain(gradxform.chain(gradxform.clip_by_global_norm(1.0), gradxform.identity()),
                                              gradxform.chain(gradxform.scale_by_adam(), gradxform.scale(-1e-2))),
    "adamw masked (unfused mask)": lambda: gradxform.adamw(1e-2, weight_decay=1e-2, mask=_decay_mask),
    "clip + lion (unfused lion)": lambda: gradxform.chain(gradxform.clip_by_global_norm(1.0), gradxform.lion(1e-3)),
    "inject_hyperparams adamw": lambda: gradxform.inject_hyperparams(gradxform.adamw)(
        learning_rate=_schedule(), weight_decay=1e-2),
    "clip + inject_hyperparams nadam": lambda: gradxform.chain(
        gradxform.clip_by_global_norm(1.0), gradxform.inject_hyperparams(gradxform.nadam)(learning_rate=1e-2)),
    "param_groups (unfused partition)": lambda: gradxform.param_groups(
        gradxform.adamw, [gradxform.group("dense/*", learning_rate=1e-3)], learning_rate=1e-2),
}


def _run(tx, params, steps, jit):
  update = jax.jit(tx.update) if jit else tx.update
  state = tx.init(params)
  history = []
  for step in range(steps):
    grads = equivalence.gradients(params, step)
    updates, state = update(grads, state, params)
    params = gradxform.apply_updates(params, updates)
    history.append((updates, state, params))
  return history


def _assert_same(ours, reference, exact_low_precision=True):
  """Same structure and dtypes; bfloat16 bit-identical, float32 within 1e-6 relative (last bit)."""
  assert jax.tree.structure(ours) == jax.tree.structure(reference)
  for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(reference)):
    assert a.dtype == b.dtype
    if a.dtype in (jnp.bfloat16, jnp.float16) and exact_low_precision:
      np.testing.assert_array_equal(np.asarray(a, np.float32), np.asarray(b, np.float32))
    else:
      np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), rtol=1e-6, atol=1e-7)


# Where no step before a moment is recomputed, fused is bit-identical in every dtype.
EXACT = {"adam", "adam mu_dtype=bf16", "nadamw", "adamw schedule", "sgd nesterov", "inject_hyperparams adamw"}


@pytest.mark.parametrize("name", list(CASES))
def test_fused_equals_unfused_under_jit(name):
  factory = CASES[name]
  params = equivalence.mixed_params()
  reference = _run(factory(), params, 3, jit=True)
  ours = _run(gradxform.fused(factory()), params, 3, jit=True)
  for a, b in zip(ours, reference):
    _assert_same(a, b)
    if name in EXACT:
      for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x, np.float32), np.asarray(y, np.float32))
  # and the very same state class and fields as the unfused transformation
  assert (jax.tree.structure(equivalence.canonical(ours[-1][1]))
          == jax.tree.structure(equivalence.canonical(reference[-1][1])))


def test_fused_matches_optax_through_the_equivalence_harness():
  """fused(chain(clip, adamw(schedule))) against optax's own chain, updates, params and whole state."""
  import optax  # pylint: disable=import-outside-toplevel
  spec = equivalence.Ref("chain", equivalence.Ref("clip_by_global_norm", 1.0),
                         equivalence.Ref("adamw", equivalence.Ref("warmup_cosine_decay_schedule", 0.0, 1e-2, 2, 20),
                                         weight_decay=1e-2))
  params = equivalence.mixed_params()
  ours, theirs = gradxform.fused(spec.build(gradxform)), spec.build(optax)
  ours_state = ours.init(params)
  with jax.numpy_dtype_promotion("standard"):
    theirs_state = theirs.init(params)
  ours_params = theirs_params = params
  for step in range(3):
    grads = equivalence.gradients(params, step)
    ours_updates, ours_state = jax.jit(ours.update)(grads, ours_state, ours_params)
    with jax.numpy_dtype_promotion("standard"):
      theirs_updates, theirs_state = jax.jit(theirs.update)(grads, theirs_state, theirs_params)
      theirs_params = optax.apply_updates(theirs_params, theirs_updates)
    ours_params = gradxform.apply_updates(ours_params, ours_updates)
    equivalence.assert_trees_equivalent(ours_updates, theirs_updates, f"updates at step {step}")
    equivalence.assert_trees_equivalent(ours_state, theirs_state, f"state at step {step}")
    equivalence.assert_trees_equivalent(ours_params, theirs_params, f"params at step {step}")


def test_state_moves_between_fused_and_unfused():
  tx = gradxform.chain(gradxform.clip_by_global_norm(1.0), gradxform.adamw(_schedule(), weight_decay=1e-2))
  fast = gradxform.fused(tx)
  params = equivalence.mixed_params()
  state = tx.init(params)
  for step in range(4):  # alternate: fused, unfused, fused, unfused on the same state
    which = fast if step % 2 == 0 else tx
    _, state = jax.jit(which.update)(equivalence.gradients(params, step), state, params)
  reference = _run(tx, params, 4, jit=True)[-1][1]
  _assert_same(state, reference)
  assert gradxform.state_dict(state).keys() == gradxform.state_dict(fast.init(params)).keys()


def test_eager_calls_run_one_cached_program_and_equal_jit():
  tx = gradxform.fused(gradxform.chain(gradxform.clip_by_global_norm(1.0), gradxform.adam(1e-2)))
  params = equivalence.mixed_params()
  traces = []
  original = gradxform._fused.fused_update  # pylint: disable=protected-access

  def counting(*args, **kwargs):
    traces.append(1)
    return original(*args, **kwargs)

  gradxform._fused.fused_update = counting  # pylint: disable=protected-access
  gradxform._fused._compiled_update.cache_clear()  # pylint: disable=protected-access
  try:
    eager = _run(tx, params, 3, jit=False)
  finally:
    gradxform._fused.fused_update = original  # pylint: disable=protected-access
  assert len(traces) == 1  # traced once, then the cached executable ran the other two steps
  for a, b in zip(eager, _run(tx, params, 3, jit=True)):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
      np.testing.assert_array_equal(np.asarray(x, np.float32), np.asarray(y, np.float32))


def _big_leaf_outputs(tx, n=65536):
  """How many loops of the compiled step write an n-element float32 array (fusions whose shape is f32[n])."""
  params = {"w": jnp.linspace(-1.0, 1.0, n, dtype=jnp.float32)}
  state = tx.init(params)

  def step(p, s, g):
    u, s = tx.update(g, s, p)
    return gradxform.apply_updates(p, u), s

  text = jax.jit(step, donate_argnums=(0, 1)).lower(params, state, params).compile().as_text()
  entry = text[text.index("ENTRY"):]
  return len(re.findall(rf"= \(?f32\[{n}\]\{{0\}}[^=]*? fusion\(", entry))


def test_fused_clip_adamw_writes_no_clipped_gradient():
  """optax's (and the unfused) clip + adamw writes the clipped gradient; fused writes only mu, nu and params."""
  tx = gradxform.chain(gradxform.clip_by_global_norm(1.0), gradxform.adamw(_schedule(), weight_decay=1e-4))
  unfused, fused = _big_leaf_outputs(tx), _big_leaf_outputs(gradxform.fused(tx))
  assert fused == 3
  assert unfused == 4


def test_fused_reaches_inside_inject_hyperparams_and_set_hyperparams_still_works():
  def make():
    return gradxform.chain(gradxform.clip_by_global_norm(1.0),
                           gradxform.inject_hyperparams(gradxform.adamw)(learning_rate=1e-2, weight_decay=1e-4))
  assert _big_leaf_outputs(gradxform.fused(make())) == 3 and _big_leaf_outputs(make()) == 4
  tx = gradxform.fused(make())
  params = equivalence.mixed_params()
  state = gradxform.set_hyperparams(tx.init(params), learning_rate=0.0)
  updates, state = jax.jit(tx.update)(equivalence.gradients(params, 0), state, params)
  assert all(float(jnp.max(jnp.abs(u))) == 0.0 for u in jax.tree.leaves(updates))
  assert float(gradxform.hyperparams(state)["learning_rate"]) == 0.0


def test_errors_name_the_step_and_its_place():
  tx = gradxform.fused(gradxform.chain(gradxform.clip_by_global_norm(1.0), gradxform.adamw(1e-2)))
  params = equivalence.mixed_params()
  state = tx.init(params)
  grads = equivalence.gradients(params, 0)
  with pytest.raises(gradxform.MissingParamsError, match=r"adamw \(chain step 2 of 2\) > add_decayed_weights"):
    tx.update(grads, state, None)
  wrong = (state[0], (gradxform.TraceState(trace=params), *state[1][1:]))
  with pytest.raises(gradxform.StateMismatchError, match=r"scale_by_adam expected its own state"):
    jax.jit(tx.update)(grads, wrong, params)
  bad = dict(grads, scale=jnp.zeros((7,), jnp.bfloat16))
  with pytest.raises(gradxform.TreeMismatchError, match=r"scale"):
    jax.jit(tx.update)(bad, state, params)
  with pytest.raises(gradxform.HyperparameterTypeError, match="fused: argument `tx`"):
    gradxform.fused(3)


def test_none_updates_pass_through():
  tx = gradxform.fused(gradxform.chain(gradxform.clip_by_global_norm(1.0), gradxform.adam(1e-2)))
  params = {"a": jnp.ones((3,)), "b": jnp.ones((2,))}
  state = tx.init(params)
  updates, new_state = jax.jit(tx.update)({"a": jnp.ones((3,)), "b": None}, state, params)
  assert updates["b"] is None
  np.testing.assert_array_equal(new_state[1][0].mu["b"], state[1][0].mu["b"])
  assert float(jnp.abs(updates["a"]).sum()) > 0


def test_eager_call_with_a_callable_extra_argument_runs_unjitted():
  """A step needing `value_fn` (zoom line search) inside fused: eager calls pass the callable through."""
  tx = gradxform.fused(gradxform.chain(gradxform.clip_by_global_norm(10.0), gradxform.sgd(1.0),
                                       gradxform.scale_by_zoom_linesearch(max_linesearch_steps=3)))
  params = {"w": jnp.array([1.0, -2.0])}

  def value_fn(p):
    return jnp.sum(p["w"] ** 2)

  value, grad = jax.value_and_grad(value_fn)(params)
  updates, _ = tx.update(grad, tx.init(params), params, value=value, grad=grad, value_fn=value_fn)
  assert float(value_fn(gradxform.apply_updates(params, updates))) < float(value)
