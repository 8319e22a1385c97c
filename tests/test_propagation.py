"""Extreme gradient values, float64 and counted skips, for every optimizer alias, against optax.

- NaN / +inf / -inf / huge (1e30) / tiny (1e-30, subnormal) gradient entries, float32 and bfloat16 leaves:
  after each of two updates, gradxform's updates AND state have exactly optax's non-finite pattern (the
  positions of NaN, +inf and -inf) and finite values close to optax's. tests/test_properties.py does the
  same, one value at a time, for a dozen classic optimizers; here every alias of test_properties_all.
- float64 under x64 (`jax.enable_x64(True)`, a context manager: nothing leaks into other tests): state
  layout (structure, shapes, dtypes) kept over two updates, updates typed like the params, finite in
  finite out, and updates and state close to optax's on the same float64 inputs.
- `MultiSteps(adam, every_k_schedule=2, should_skip_update_fn=skip_not_finite)`: NaN gradients are
  skipped (params and inner state unchanged bit for bit) and counted exactly as optax counts them.

Cheap by design: one fixed tree per dtype setting, shared by every alias (eager kernels are shared).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradxform
from test_properties_all import ALIASES, _build, _extra

ALIAS_NAMES = sorted(ALIASES)


def _as_f64(x):
  x = jnp.asarray(x)
  if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
    return np.asarray(jax.random.key_data(x)).astype(np.float64)
  return np.asarray(x.astype(jnp.float32) if x.dtype == jnp.bfloat16 else x).astype(np.float64)


def _tolerance(dtype):
  return {"bfloat16": 2e-2, "float64": 1e-6}.get(str(dtype), 1e-5)


def _assert_same_pattern_and_close(got, expected, what):
  """Same structure, shapes and (for arrays) dtypes; NaN, +inf, -inf at the same places; finite values close."""
  got_leaves, got_def = jax.tree_util.tree_flatten_with_path(got)
  exp_leaves, exp_def = jax.tree_util.tree_flatten_with_path(expected)
  assert [p for p, _ in got_leaves] == [p for p, _ in exp_leaves], f"{what}: {got_def} vs {exp_def}"
  for (path, g), (_, e) in zip(got_leaves, exp_leaves):
    where = f"{what}{jax.tree_util.keystr(path)}"
    g, e = jnp.asarray(g), jnp.asarray(e)
    assert g.shape == e.shape, f"{where}: shape {g.shape} vs optax {e.shape}"
    assert g.dtype == e.dtype, f"{where}: dtype {g.dtype} vs optax {e.dtype}"
    g64, e64 = _as_f64(g), _as_f64(e)
    np.testing.assert_array_equal(np.isnan(g64), np.isnan(e64), err_msg=f"{where}: NaN positions")
    np.testing.assert_array_equal(np.isposinf(g64), np.isposinf(e64), err_msg=f"{where}: +inf positions")
    np.testing.assert_array_equal(np.isneginf(g64), np.isneginf(e64), err_msg=f"{where}: -inf positions")
    finite = np.isfinite(e64)
    tol = max(_tolerance(g.dtype), _tolerance(e.dtype))
    np.testing.assert_allclose(g64[finite], e64[finite], rtol=tol, atol=tol * 1e-3, err_msg=where)


def _run_both(name, params, grads):
  """gradxform's initial state, and two updates of gradxform and of optax (under standard promotion):
  [((updates, state), (optax updates, optax state))], one per step."""
  ours, theirs = _build(gradxform, name), _build(optax, name)
  state = initial = ours.init(params)
  with jax.numpy_dtype_promotion("standard"):
    reference_state = theirs.init(params)
  steps = []
  for _ in range(2):
    updates, state = ours.update(grads, state, params, **_extra(name))
    with jax.numpy_dtype_promotion("standard"):
      expected, reference_state = theirs.update(grads, reference_state, params, **_extra(name))
    steps.append(((updates, state), (expected, reference_state)))
  return initial, steps


# ----------------------------------------------------------------------------------------------
# NaN / inf / huge / tiny gradient entries.

F32_TINY = float(np.float32(1e-40))  # subnormal in float32
# One special value per leaf (per-leaf norms then show per-leaf behaviour), all leaves (2, 3): every alias
# shares the same two eager (shape, dtype) kernel sets, float32 and bfloat16.
PARAMS = np.asarray([[0.5, -1.0, 0.25], [1.5, -0.75, 2.0]])
EXTREME_PARAMS = {k: jnp.asarray(PARAMS, dtype) for k, dtype in [
    ("nan", jnp.float32), ("inf", jnp.float32), ("ninf", jnp.bfloat16), ("huge", jnp.bfloat16),
    ("huge32", jnp.float32), ("tiny", jnp.float32)]}
EXTREME_GRADS = {k: jnp.asarray(v, EXTREME_PARAMS[k].dtype) for k, v in {
    "nan": [[0.5, np.nan, -0.25], [0.1, 0.2, -0.3]],
    "inf": [[np.inf, 0.3, -0.7], [0.1, -0.2, 0.4]],
    "ninf": [[-np.inf, 0.5, -0.25], [0.1, 0.2, -0.3]],
    "huge": [[1e30, -0.5, 0.3], [-1e30, 0.25, 0.1]],
    "huge32": [[1e30, -1e30, 0.5], [0.1, 0.2, -0.3]],
    "tiny": [[1e-30, F32_TINY, 0.0], [-F32_TINY, -1e-30, 0.5]],
}.items()}


@pytest.mark.parametrize("name", ALIAS_NAMES)
def test_extreme_gradients_propagate_as_in_optax(name):
  _, steps = _run_both(name, EXTREME_PARAMS, EXTREME_GRADS)
  for i, ((updates, state), (expected, reference_state)) in enumerate(steps, 1):
    _assert_same_pattern_and_close(updates, expected, f"{name} step {i} updates")
    _assert_same_pattern_and_close(state, reference_state, f"{name} step {i} state")


# ----------------------------------------------------------------------------------------------
# float64 under x64.

def _f64_trees():
  params = {"w": jnp.asarray(PARAMS, jnp.float64), "b": jnp.asarray(PARAMS[::-1] * 0.1, jnp.float64)}
  grads = jax.tree.map(lambda p: 0.5 * p + 0.25, params)
  return params, grads


def _layout(tree):
  return str(jax.tree.structure(tree)), [(jnp.shape(x), jnp.result_type(x)) for x in jax.tree.leaves(tree)]


@pytest.mark.parametrize("name", ALIAS_NAMES)
def test_float64_under_x64_keeps_layout_and_matches_optax(name):
  with jax.enable_x64(True):
    params, grads = _f64_trees()
    initial, steps = _run_both(name, params, grads)
    layout = _layout(initial)
    for i, ((updates, state), (expected, reference_state)) in enumerate(steps, 1):
      assert _layout(state) == layout, f"{name} step {i}: state layout changed"
      assert _layout(updates) == _layout(params), f"{name} step {i}: updates not typed like the params"
      assert all(np.all(np.isfinite(_as_f64(u))) for u in jax.tree.leaves(updates)), name
      _assert_same_pattern_and_close(updates, expected, f"{name} step {i} updates")
      _assert_same_pattern_and_close(state, reference_state, f"{name} step {i} state")


# ----------------------------------------------------------------------------------------------
# MultiSteps + skip_not_finite.

def _paths(tree):
  return [(jax.tree_util.keystr(path), jnp.shape(x), jnp.result_type(x))
          for path, x in jax.tree_util.tree_leaves_with_path(tree)]


def _bits(tree):
  return [np.asarray(x).tobytes() for x in jax.tree.leaves(tree)]


def test_multisteps_skip_not_finite_skips_and_counts_nan_steps_as_optax():
  params = {k: EXTREME_PARAMS[k] for k in ("nan", "ninf")}
  finite = jax.tree.map(lambda p: (0.5 * p + 0.25).astype(p.dtype), params)
  nan = dict(finite, nan=finite["nan"].at[0, 1].set(jnp.nan))
  inf = dict(finite, ninf=finite["ninf"].at[1, 2].set(-jnp.inf))
  both = {"nan": nan["nan"], "ninf": inf["ninf"]}
  ours = gradxform.MultiSteps(gradxform.adam(0.1), every_k_schedule=2,
                              should_skip_update_fn=gradxform.skip_not_finite)
  theirs = optax.MultiSteps(optax.adam(0.1), every_k_schedule=2, should_skip_update_fn=optax.skip_not_finite)
  state = ours.init(params)
  with jax.numpy_dtype_promotion("standard"):
    reference_state = theirs.init(params)
  step, reference_step = jax.jit(ours.update), jax.jit(theirs.update)  # one compile each, not one per op
  reference_params = params
  assert _paths(state) == _paths(reference_state)
  # finite, NaN, finite (emits), -inf, NaN and -inf, finite, finite (emits), NaN
  for i, grads in enumerate([finite, nan, finite, inf, both, finite, finite, nan]):
    updates, new_state = step(grads, state, params)
    with jax.numpy_dtype_promotion("standard"):
      expected, reference_state = reference_step(grads, reference_state, reference_params)
      reference_params = optax.apply_updates(reference_params, expected)
    bad = sum(int(np.sum(~np.isfinite(np.asarray(g, np.float32)))) for g in jax.tree.leaves(grads))
    assert bool(new_state.skip_state["should_skip"]) == (bad > 0), i
    assert int(new_state.skip_state["num_not_finite"]) == bad, i
    if bad:  # skipped: zero updates, params, counters, inner state and accumulators unchanged bit for bit
      assert all(np.all(np.asarray(u, np.float32) == 0) for u in jax.tree.leaves(updates)), i
      assert _bits(gradxform.apply_updates(params, updates)) == _bits(params), i
      assert _bits(new_state[:4]) == _bits(state[:4]), i
    state, params = new_state, gradxform.apply_updates(params, updates)
    # the whole MultiSteps state (counters, inner state, accumulators, skip_state) is optax's
    assert _paths(state) == _paths(reference_state), i
    _assert_same_pattern_and_close(state, reference_state, f"step {i} state")
    _assert_same_pattern_and_close(params, reference_params, f"step {i} params")
    assert int(state.mini_step) == int(reference_state.mini_step), i
    assert int(state.gradient_step) == int(reference_state.gradient_step), i
  assert int(state.gradient_step) == 2 and int(state.mini_step) == 0
