"""flatten, lookahead, snapshot / monitor / measure_with_ema and keep_params_nonnegative against optax 0.2.8.

Rows run on the shared mixed pytree (float32 and bfloat16 leaves), eagerly and under jax.jit. Lookahead
works on LookaheadParams, which each library defines, so it has its own loop; it compares the fast and
slow updates and params as well as the state.
"""

import inspect
import logging

import jax
import jax.numpy as jnp
import optax
import pytest

import gradxform
from convergence import digits_data, digits_loss
from equivalence import Ref, assert_equivalent, assert_trees_equivalent, gradients, mixed_params


def squared_norm(tree):
  """A scalar measurement (computed in float32 so bfloat16 leaves mix cleanly)."""
  return sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in jax.tree.leaves(tree))


def is_large(tree):
  """A bool measurement: is the squared norm above 100?"""
  return squared_norm(tree) > 100.0


def leaf_abs(tree):
  """A measurement shaped like the updates."""
  return jax.tree.map(jnp.abs, tree)


def leaf_max_abs(tree):
  """A tree of per-leaf scalars, in each leaf's dtype."""
  return jax.tree.map(lambda x: jnp.max(jnp.abs(x)), tree)


MONITORED = Ref("monitor", {
    "norm": squared_norm,
    "norm_ema": Ref("measure_with_ema", squared_norm, 0.9),
    "large_ema": Ref("measure_with_ema", is_large, 0.5, debias=False),
    "max_ema": Ref("measure_with_ema", leaf_max_abs, 0.8, accumulator_dtype=jnp.bfloat16),
    "ema": Ref("ema", 0.9),
})

ROWS = [
    Ref("flatten", Ref("adam", 1e-2)),
    Ref("flatten", Ref("scale_by_adam", b1=0.5, mu_dtype=jnp.bfloat16)),
    Ref("chain", Ref("clip_by_global_norm", 1.0), Ref("flatten", Ref("adam", 1e-2))),
    Ref("snapshot", "norm", squared_norm),
    Ref("chain", Ref("sgd", 0.1, momentum=0.9), Ref("snapshot", "max_abs", leaf_max_abs), Ref("clip", 0.1)),
    MONITORED,
    Ref("chain", Ref("adam", 1e-2),
        Ref("monitor", {"norm": squared_norm, "norm_ema": Ref("measure_with_ema", squared_norm, 0.9)}),
        Ref("clip_by_global_norm", 1.0)),
    Ref("measure_with_ema", leaf_abs, 0.9), Ref("measure_with_ema", leaf_abs, 0.5, debias=False),
    Ref("measure_with_ema", leaf_abs, 0.7, accumulator_dtype=jnp.bfloat16),
    Ref("keep_params_nonnegative"),
    Ref("chain", Ref("sgd", 0.5, momentum=0.5), Ref("keep_params_nonnegative")),
]


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("spec", ROWS, ids=repr)
def test_equivalent_to_optax(spec, jit):
  assert_equivalent(spec, jit=jit)


def test_flatten_passes_extra_args():
  def factor_update(updates, state, params=None, *, factor, **extra_args):
    del params, extra_args
    return jax.tree.map(lambda g: g * factor, updates), state
  inner = gradxform.GradientTransformationExtraArgs(lambda params: (), factor_update)
  tx = gradxform.flatten(inner)
  params = mixed_params()
  updates, _ = tx.update(gradients(params, 0), tx.init(params), params, factor=2.0)
  expected = jax.tree.map(lambda g: g.astype(jnp.float32) * 2.0, gradients(params, 0))
  assert_trees_equivalent(updates, expected, "flatten with an extra argument")


def test_keep_params_nonnegative_keeps_params_nonnegative():
  params = jax.tree.map(jnp.abs, mixed_params())
  tx = gradxform.keep_params_nonnegative()
  updates, _ = tx.update(gradients(params, 0), tx.init(params), params)
  for p in jax.tree.leaves(gradxform.apply_updates(params, updates)):
    assert bool(jnp.all(p >= 0))


# ----------------------------------------------------------------------------------------------
# lookahead: its own loop, each library with its own LookaheadParams.


def _run_lookahead(lib, spec, steps, jit, params):
  tx = spec.build(lib)
  update = jax.jit(tx.update) if jit else tx.update
  apply = jax.jit(lib.apply_updates) if jit else lib.apply_updates
  with jax.numpy_dtype_promotion("standard" if lib is optax else "strict"):
    params = lib.LookaheadParams.init_synced(params)
    state = jax.jit(tx.init)(params) if jit else tx.init(params)
    history = [(None, state, params)]
    for step in range(steps):
      updates, state = update(gradients(params.fast, step), state, params)
      params = apply(params, updates)
      history.append((updates, state, params))
  return history


LOOKAHEAD_ROWS = [
    Ref("lookahead", Ref("sgd", 0.1), 2, 0.5),
    Ref("lookahead", Ref("adam", 1e-2), 3, 0.3, reset_state=True),
    Ref("lookahead", Ref("sgd", 0.1, momentum=0.9), 1, 0.8, reset_state=True),
    Ref("lookahead", Ref("chain", Ref("clip_by_global_norm", 1.0), Ref("adam", 1e-2)), sync_period=2,
        slow_step_size=jnp.float32(0.5)),
]


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("spec", LOOKAHEAD_ROWS, ids=repr)
def test_lookahead_equivalent_to_optax(spec, jit):
  ours = _run_lookahead(gradxform, spec, 4, jit, mixed_params())
  theirs = _run_lookahead(optax, spec, 4, jit, mixed_params())
  for step, ((u, s, p), (tu, ts, tp)) in enumerate(zip(ours, theirs)):
    if u is not None:
      assert_trees_equivalent(u, tu, f"{spec}: LookaheadParams updates at step {step}")
    assert_trees_equivalent(s, ts, f"{spec}: state at step {step}")
    assert_trees_equivalent(p, tp, f"{spec}: LookaheadParams (fast, slow) after step {step}")


def test_lookahead_synchronizes_fast_and_slow():
  history = _run_lookahead(gradxform, Ref("lookahead", Ref("sgd", 0.1), 2, 0.5), 4, False, mixed_params())
  for step, (_, _, params) in enumerate(history):
    synced = jax.tree.map(lambda f, s: bool(jnp.allclose(f, s, rtol=1e-2, atol=1e-2)), params.fast, params.slow)
    assert all(jax.tree.leaves(synced)) == (step % 2 == 0), step


def test_lookahead_init_with_plain_params_logs_and_matches_optax(caplog):
  params = mixed_params()
  with caplog.at_level(logging.WARNING):
    ours = gradxform.lookahead(gradxform.adam(1e-2), 2, 0.5).init(params)
  assert "fast" in caplog.text
  with jax.numpy_dtype_promotion("standard"):
    theirs = optax.lookahead(optax.adam(1e-2), 2, 0.5).init(params)
  assert_trees_equivalent(ours, theirs, "lookahead init on plain params")


def test_lookahead_trains_on_digits():
  """Lookahead(adam) on softmax regression: the slow params reach the default thresholds."""
  (x, y), (x_test, y_test) = digits_data()
  tx = gradxform.lookahead(gradxform.adam(2e-2), sync_period=5, slow_step_size=0.5)
  params = gradxform.LookaheadParams.init_synced(
      {"w": jnp.zeros((64, 10), jnp.float32), "b": jnp.zeros((10,), jnp.float32)})

  @jax.jit
  def run(params):
    def step(carry, _):
      params, state = carry
      loss, grads = jax.value_and_grad(digits_loss)(params.fast, x, y)
      updates, state = tx.update(grads, state, params)
      return (gradxform.apply_updates(params, updates), state), loss
    (params, _), losses = jax.lax.scan(step, (params, tx.init(params)), None, length=150)
    return params, losses

  params, losses = run(params)
  slow_loss = digits_loss(params.slow, x, y)
  accuracy = jnp.mean(jnp.argmax(x_test @ params.slow["w"] + params.slow["b"], axis=1) == y_test)
  assert slow_loss < 0.3 * losses[0], (losses[0], slow_loss)
  assert accuracy >= 0.9, accuracy


# ----------------------------------------------------------------------------------------------
# Signatures and names.


def _parameters(fn):
  return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]


@pytest.mark.parametrize("name", ["flatten", "lookahead", "snapshot", "monitor", "measure_with_ema",
                                  "keep_params_nonnegative"])
def test_signature_matches_optax(name):
  assert _parameters(getattr(gradxform, name)) == _parameters(getattr(optax, name))


@pytest.mark.parametrize("name", ["LookaheadState", "LookaheadParams", "SnapshotState", "MonitorState",
                                  "NonNegativeParamsState"])
def test_state_fields_match_optax(name):
  ours, theirs = getattr(gradxform, name), getattr(optax, name)
  assert ours.__name__ == theirs.__name__ and ours._fields == theirs._fields


def test_names_and_helpers():
  assert gradxform.NonNegativeParamsState is gradxform.EmptyState
  synced = gradxform.LookaheadParams.init_synced({"a": jnp.ones(2)})
  assert synced.fast is synced.slow
  assert _parameters(gradxform.LookaheadParams.init_synced) == _parameters(optax.LookaheadParams.init_synced)


# ----------------------------------------------------------------------------------------------
# Clear errors, of the builtin type optax raises.


@pytest.mark.parametrize("sync_period", [0, -3])
def test_lookahead_sync_period_must_be_positive(sync_period):
  with pytest.raises(ValueError):
    optax.lookahead(optax.sgd(0.1), sync_period, 0.5)
  with pytest.raises(gradxform.HyperparameterError, match="lookahead: argument `sync_period`"):
    gradxform.lookahead(gradxform.sgd(0.1), sync_period, 0.5)


def test_lookahead_slow_step_size_must_be_a_number():
  with pytest.raises(gradxform.HyperparameterTypeError, match="lookahead: argument `slow_step_size`"):
    gradxform.lookahead(gradxform.sgd(0.1), 2, "half")


@pytest.mark.parametrize("params", [None, "plain"], ids=["no params", "plain params"])
def test_lookahead_needs_lookahead_params(params):
  plain = mixed_params()
  params = plain if params == "plain" else None
  with jax.numpy_dtype_promotion("standard"):
    optax_tx = optax.lookahead(optax.sgd(0.1), 2, 0.5)
    with pytest.raises(AttributeError):
      optax_tx.update(plain, optax_tx.init(plain), params)
  tx = gradxform.lookahead(gradxform.sgd(0.1), 2, 0.5)
  with pytest.raises(AttributeError, match=r"lookahead: needs params as LookaheadParams\(fast=..., slow=...\)") as info:
    tx.update(plain, tx.init(gradxform.LookaheadParams.init_synced(plain)), params)
  assert isinstance(info.value, gradxform.GradxformError)


def test_keep_params_nonnegative_needs_params():
  tx = gradxform.keep_params_nonnegative()
  with pytest.raises(ValueError):
    optax.keep_params_nonnegative().update(mixed_params(), optax.EmptyState(), None)
  with pytest.raises(gradxform.MissingParamsError, match="keep_params_nonnegative"):
    tx.update(mixed_params(), tx.init(mixed_params()))


def test_keep_params_nonnegative_names_mismatched_leaf():
  tx = gradxform.keep_params_nonnegative()
  params = mixed_params()
  bad = {**params, "scale": jnp.ones((4,), jnp.bfloat16)}
  with pytest.raises(gradxform.TreeMismatchError, match=r"keep_params_nonnegative: .*\['scale'\]"):
    tx.update(bad, tx.init(params), params)


@pytest.mark.parametrize("build, message", [
    (lambda: gradxform.flatten(0.1), "flatten: argument `inner` is not a gradient transformation"),
    (lambda: gradxform.lookahead("sgd", 2, 0.5), "lookahead: argument `fast_optimizer` is not a gradient"),
    (lambda: gradxform.snapshot("norm", 3.0), "snapshot: argument `measure` must be a function"),
    (lambda: gradxform.monitor({"norm": 3.0}), r"monitor: measures\['norm'\] is not a function and is not"),
    (lambda: gradxform.monitor([squared_norm]), "monitor: argument `measures` must be a dict"),
    (lambda: gradxform.measure_with_ema(None, 0.9), "measure_with_ema: argument `measure` must be a function"),
], ids=["flatten", "lookahead", "snapshot", "monitor measure", "monitor measures", "measure_with_ema"])
def test_not_a_transformation_or_function(build, message):
  with pytest.raises(TypeError, match=message):
    build()


@pytest.mark.parametrize("decay", [1.0, -0.1])
def test_measure_with_ema_decay_range(decay):
  with pytest.raises(gradxform.HyperparameterError, match="measure_with_ema: argument `decay`"):
    gradxform.measure_with_ema(squared_norm, decay)


def test_monitor_error_names_the_measure():
  tx = gradxform.monitor({"avg": gradxform.ema(0.9)})
  params = mixed_params()
  state = tx.init(params)
  bad = {**params, "scale": jnp.ones((4,), jnp.bfloat16)}
  with pytest.raises(gradxform.TreeMismatchError, match=r"monitor > ema \(measure 'avg'\)"):
    tx.update(bad, state, params)


def test_monitor_without_measures_is_identity():
  tx = gradxform.monitor({})
  params = mixed_params()
  updates, state = tx.update(gradients(params, 0), tx.init(params), params)
  assert_trees_equivalent(updates, gradients(params, 0), "monitor({}) updates")
  assert state == gradxform.MonitorState({}, ())
