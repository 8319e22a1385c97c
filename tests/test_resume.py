"""Checkpoint and resume, and step counters at the end of their range.

Every optimizer alias that mirrors one of optax's trains a tiny least-squares problem for 10 steps. A
second run stops after 5, writes `gradxform.state_dict(state)` with `numpy.savez`, loads it into a fresh
`jax.eval_shape(tx.init, params)` with `gradxform.load_state_dict` and continues for 5 more: params and
state must equal the uninterrupted run bit for bit (structure, dtypes, weak types, bytes). The same
jitted step serves both runs and must be traced once: a loaded state that differed in any dtype or weak
type from the one `update` returns would retrace it.

Int32 step counters saturate at int32 max instead of wrapping to negative values (DESIGN.md, section 1).
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradxform

# name -> constructor arguments: options chosen so that as much state as possible is exercised.
ALIASES = {
    "adabelief": {"learning_rate": 0.05},
    "adadelta": {"learning_rate": 0.5, "weight_decay": 0.01},
    "adafactor": {"learning_rate": 0.05, "min_dim_size_to_factor": 2, "momentum": 0.9},  # w (3, 2) is factored
    "adagrad": {"learning_rate": 0.05},
    "adam": {"learning_rate": 0.05},
    "adamax": {"learning_rate": 0.05},
    "adamaxw": {"learning_rate": 0.05},
    "adamw": {"learning_rate": 0.05, "weight_decay": 0.01},
    "adan": {"learning_rate": 0.05, "weight_decay": 0.01},
    "amsgrad": {"learning_rate": 0.05},
    "fromage": {"learning_rate": 0.05},
    "lamb": {"learning_rate": 0.05, "weight_decay": 0.01},
    "lars": {"learning_rate": 0.05, "weight_decay": 0.01},
    "lbfgs": {},
    "lion": {"learning_rate": 0.05},
    "nadam": {"learning_rate": 0.05},
    "nadamw": {"learning_rate": 0.05},
    "noisy_sgd": {"learning_rate": 0.05, "key": 0},
    "novograd": {"learning_rate": 0.05},
    "optimistic_adam": {"learning_rate": 0.05},
    "optimistic_adam_v2": {"learning_rate": 0.05},
    "optimistic_gradient_descent": {"learning_rate": 0.05},
    "polyak_sgd": {"max_learning_rate": 0.1},
    "radam": {"learning_rate": 0.05},
    "rmsprop": {"learning_rate": 0.05, "centered": True, "momentum": 0.5},
    "rprop": {"learning_rate": 0.05},
    "sgd": {"learning_rate": 0.05, "momentum": 0.9, "nesterov": True},
    "sign_sgd": {"learning_rate": 0.05},
    "signum": {"learning_rate": 0.05},
    "sm3": {"learning_rate": 0.05},
    "yogi": {"learning_rate": 0.05},
}

X = jnp.asarray(np.random.RandomState(0).randn(8, 3), jnp.float32)
Y = jnp.asarray(np.random.RandomState(1).randn(8, 2), jnp.float32)
TARGET = jnp.asarray([0.5, -0.25, 1.0, 0.0], jnp.float32)


def _params():
  return {"w": jnp.full((3, 2), 0.1, jnp.float32), "b": jnp.zeros((2,), jnp.float32),
          "h": jnp.ones((4,), jnp.bfloat16)}


def loss(params):
  """Least squares on (X, Y) for w, b, and a bfloat16 leaf pulled towards TARGET."""
  residual = X @ params["w"] + params["b"] - Y
  return jnp.mean(residual ** 2) + jnp.mean((params["h"].astype(jnp.float32) - TARGET) ** 2)


def _build(name):
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # optimistic_adam is deprecated, as in optax
    return getattr(gradxform, name)(**ALIASES[name])


def _step_fn(name, tx, traces):
  @jax.jit
  def step(params, state):
    traces.append(name)
    if name == "lbfgs":  # the loop optax documents for lbfgs (see tests/test_lbfgs.py)
      value, grad = gradxform.value_and_grad_from_state(loss)(params, state=state)
      updates, state = tx.update(grad, state, params, value=value, grad=grad, value_fn=loss)
    else:
      value, grad = jax.value_and_grad(loss)(params)
      updates, state = tx.update(grad, state, params, value=value)  # polyak_sgd reads `value`
    return gradxform.apply_updates(params, updates), state
  return step


def _bits(x):
  """The leaf as numpy, PRNG keys as their key data (add_noise keeps a typed key)."""
  if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
    return np.asarray(jax.random.key_data(x))
  return np.asarray(x)


def assert_bitwise_equal(got, expected):
  assert jax.tree.structure(got) == jax.tree.structure(expected)
  for path_and_x, y in zip(jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(expected)):
    path, x = path_and_x
    where = jax.tree_util.keystr(path)
    assert (x.shape, x.dtype, getattr(x, "weak_type", None)) == (y.shape, y.dtype, getattr(y, "weak_type", None)), where
    np.testing.assert_array_equal(_bits(x), _bits(y), err_msg=where)
    assert _bits(x).tobytes() == _bits(y).tobytes(), where  # -0.0 vs 0.0 and NaN payloads too


def test_every_optax_alias_is_covered():
  from optax._src import alias
  aliases = {name for name in dir(optax) if name[0].islower() and getattr(alias, name, None) is getattr(optax, name)}
  assert aliases == set(ALIASES)


@pytest.mark.parametrize("name", sorted(ALIASES))
def test_resume_from_state_dict_is_bit_exact(name, tmp_path):
  tx = _build(name)
  traces = []
  step = _step_fn(name, tx, traces)
  params, state = _params(), tx.init(_params())
  for i in range(10):
    if i == 5:
      saved_params, saved = params, gradxform.state_dict(state)
    params, state = step(params, state)
  assert all(np.all(np.isfinite(np.asarray(p, np.float32))) for p in jax.tree.leaves(params))
  assert float(loss(params)) < float(loss(_params())), "the run did not train"

  path = tmp_path / "opt_state.npz"
  np.savez(path, **saved)
  with np.load(path) as data:
    resumed = gradxform.load_state_dict(jax.eval_shape(tx.init, _params()), data)
  assert set(gradxform.state_dict(resumed)) == set(saved)
  resumed_params = saved_params
  for _ in range(5):
    resumed_params, resumed = step(resumed_params, resumed)

  assert_bitwise_equal(resumed_params, params)
  assert_bitwise_equal(resumed, state)
  assert len(traces) == 1, f"{name}: the jitted step was traced {len(traces)} times"


# ----------------------------------------------------------------------------------------------
# Saturating step counters.

INT32_MAX = np.iinfo(np.int32).max
SMALL = {"w": jnp.ones((3, 2), jnp.float32), "b": jnp.ones((2,), jnp.bfloat16)}
SMALL_GRADS = {"w": jnp.full((3, 2), 0.5, jnp.float32), "b": jnp.full((2,), -0.5, jnp.bfloat16)}

SATURATING = {
    "adam": (lambda: gradxform.adam(0.1), ["[0].count"]),
    "sgd with momentum and a schedule": (
        lambda: gradxform.sgd(gradxform.linear_schedule(0.1, 0.01, 100), momentum=0.9), ["[1].count"]),
    "inject_hyperparams(adam)": (
        lambda: gradxform.inject_hyperparams(gradxform.adam)(learning_rate=gradxform.cosine_decay_schedule(0.1, 100)),
        [".count", ".hyperparams_states['learning_rate'].count", ".inner_state[0].count"]),
    # mini_step runs modulo k (it never grows past k - 1), so only the other counters are set near max.
    "MultiSteps": (lambda: gradxform.MultiSteps(gradxform.adam(0.1), 2),
                   [".gradient_step", ".inner_opt_state[0].count"]),
    "apply_if_finite": (lambda: gradxform.apply_if_finite(gradxform.adam(0.1), 2), [".inner_state[0].count"]),
    "scale_by_schedule": (
        lambda: gradxform.scale_by_schedule(gradxform.warmup_cosine_decay_schedule(0.0, 1.0, 5, 50)), [".count"]),
}


def _int32_leaves(state):
  return {jax.tree_util.keystr(path): x for path, x in jax.tree_util.tree_leaves_with_path(state)
          if x.dtype == jnp.int32}


def _set_counts(state, paths, value):
  return jax.tree_util.tree_map_with_path(
      lambda path, x: jnp.full_like(x, value) if jax.tree_util.keystr(path) in paths else x, state)


@pytest.mark.parametrize("name", sorted(SATURATING))
def test_step_counters_saturate_at_int32_max(name):
  make, counts = SATURATING[name]
  tx = make()
  state = tx.init(SMALL)
  assert set(counts) <= set(_int32_leaves(state)), sorted(_int32_leaves(state))
  state = _set_counts(state, counts, INT32_MAX - 1)
  step = jax.jit(tx.update)
  for _ in range(3):
    updates, state = step(SMALL_GRADS, state, SMALL)
    assert all(np.all(np.isfinite(np.asarray(u, np.float32))) for u in jax.tree.leaves(updates))
  found = _int32_leaves(state)
  for path in counts:
    assert int(found[path]) == INT32_MAX, f"{path} = {int(found[path])}"
  assert all(int(x) >= 0 for x in found.values())


def test_apply_if_finite_total_notfinite_saturates():
  """Under NaN gradients the skip counters grow; total_notfinite stops at int32 max."""
  tx = gradxform.apply_if_finite(gradxform.adam(0.1), 5)
  state = tx.init(SMALL)
  state = state._replace(total_notfinite=jnp.asarray(INT32_MAX - 1, jnp.int32))
  nan_grads = jax.tree.map(lambda g: jnp.full_like(g, jnp.nan), SMALL_GRADS)
  step = jax.jit(tx.update)
  for _ in range(3):
    updates, state = step(nan_grads, state, SMALL)
    assert all(np.all(np.asarray(u, np.float32) == 0) for u in jax.tree.leaves(updates))
  assert int(state.total_notfinite) == INT32_MAX and int(state.notfinite_count) == 3
  assert int(state.inner_state[0].count) == 0
