"""state_dict / load_state_dict: key names, exact round trips, npz files, abstract templates, errors."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradxform as gx
from gradxform import _errors

# Shapes (), (3,), (2, 3); float32 and bfloat16; dict, list and tuple nodes.
PARAMS = {
    "encoder": {"w": jnp.arange(6, dtype=jnp.float32).reshape(2, 3) / 7, "b": jnp.ones(3, jnp.bfloat16)},
    "layers": [jnp.asarray(0.5, jnp.float32), (jnp.asarray([1.0, -2.0, 3.0], jnp.bfloat16),)],
}

MASK = {"encoder": {"w": True, "b": False}, "layers": [True, (False,)]}
LABELS = {"encoder": {"w": "a", "b": "b"}, "layers": ["a", ("a",)]}

TRANSFORMS = {
    "adam": gx.adam(0.1),
    "chain": gx.chain(gx.clip_by_global_norm(1.0), gx.adamw(0.1)),
    "inject_hyperparams": gx.inject_hyperparams(gx.adam)(learning_rate=0.1),
    "partition": gx.partition({"a": gx.adam(0.1), "b": gx.set_to_zero()}, LABELS),
    "masked": gx.masked(gx.adam(0.1), MASK),
    "multi_steps": gx.MultiSteps(gx.adam(0.1), 2),
    "sgd": gx.sgd(0.1),
}


@functools.cache
def _step_fn(name):
  """One jitted training step per transformation, compiled once for the whole file."""
  tx = TRANSFORMS[name]

  @jax.jit
  def step(params, state):
    # A deterministic gradient that differs per leaf and per step, so every moment changes.
    grads = jax.tree.map(lambda p: jnp.cos(p) + p * 0.5, params)
    updates, state = tx.update(grads, state, params)
    return gx.apply_updates(params, updates), state

  return step


def _train(name, steps, params=PARAMS, state=None):
  if state is None:
    state = TRANSFORMS[name].init(params)
  step = _step_fn(name)
  for _ in range(steps):
    params, state = step(params, state)
  return params, state


def _assert_bitwise_equal(a, b):
  """Same tree structure (classes, fields, keys), and leaf by leaf the same dtype, weak type and bytes."""
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    assert isinstance(y, jax.Array)
    assert x.dtype == y.dtype and x.shape == y.shape and x.weak_type == y.weak_type
    assert np.asarray(x).tobytes() == np.asarray(y).tobytes()


def test_adam_keys_and_values():
  state = gx.adam(0.1).init(PARAMS)
  d = gx.state_dict(state)
  params_keys = ["encoder/b", "encoder/w", "layers/0", "layers/1/0"]
  assert list(d) == ["0/count"] + [f"0/mu/{k}" for k in params_keys] + [f"0/nu/{k}" for k in params_keys]
  assert d["0/count"].dtype == np.int32 and d["0/count"].shape == ()
  assert d["0/mu/encoder/b"].dtype == jnp.bfloat16 and d["0/mu/encoder/w"].shape == (2, 3)
  assert all(isinstance(v, np.ndarray) for v in d.values())


def test_chain_keys_skip_empty_states():
  _, state = _train("chain", 1)
  d = gx.state_dict(state)
  # clip_by_global_norm's state (index 0) and adamw's EmptyStates hold no data: no key.
  assert sorted(d) == sorted(["1/0/count"] + [f"1/0/{m}/{k}" for m in ("mu", "nu")
                                              for k in ("encoder/b", "encoder/w", "layers/0", "layers/1/0")])
  assert d["1/0/count"] == 1
  assert d["1/0/nu/layers/1/0"].dtype == jnp.bfloat16 and d["1/0/nu/layers/0"].dtype == np.float32
  np.testing.assert_array_equal(d["1/0/mu/encoder/w"], np.asarray(state[1][0].mu["encoder"]["w"]))


def test_values_are_copies():
  state = gx.adam(0.1).init(PARAMS)
  d = gx.state_dict(state)
  d["0/mu/encoder/w"][...] = 7.0  # writable, and the state does not see it
  assert float(jnp.sum(state[0].mu["encoder"]["w"])) == 0.0


def test_special_states_keys():
  """hyperparams dicts, partition labels, MaskedNode leaves and MultiSteps fields get readable keys."""
  keys = {name: set(gx.state_dict(TRANSFORMS[name].init(PARAMS))) for name in TRANSFORMS}
  assert {"count", "hyperparams/learning_rate", "hyperparams/b1",
          "inner_state/0/mu/encoder/w"} <= keys["inject_hyperparams"]
  assert "inner_states/a/inner_state/0/mu/encoder/w" in keys["partition"]
  assert not any(k.startswith("inner_states/b") for k in keys["partition"])  # set_to_zero: no state
  assert not any("encoder/b" in k for k in keys["masked"])  # the MaskedNode holds nothing
  assert "inner_state/0/nu/layers/0" in keys["masked"]
  assert {"mini_step", "gradient_step", "acc_grads/encoder/b", "inner_opt_state/0/count"} <= keys["multi_steps"]
  assert keys["sgd"] == set()


@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_exact_round_trip_after_steps(name):
  _, state = _train(name, 3)
  _assert_bitwise_equal(state, gx.load_state_dict(state, gx.state_dict(state)))
  # An abstract template gives the same state.
  template = jax.eval_shape(TRANSFORMS[name].init, PARAMS)
  _assert_bitwise_equal(state, gx.load_state_dict(template, gx.state_dict(state)))


def test_npz_round_trip_with_bfloat16(tmp_path):
  _, state = _train("chain", 2)
  path = tmp_path / "opt_state.npz"
  np.savez(path, **gx.state_dict(state))
  with np.load(path) as loaded:
    # numpy cannot name bfloat16 and loads it as raw bytes; load_state_dict must read them back.
    assert loaded["1/0/mu/encoder/b"].dtype == np.dtype("V2")
    restored = gx.load_state_dict(gx.chain(gx.clip_by_global_norm(1.0), gx.adamw(0.1)).init(PARAMS), loaded)
  _assert_bitwise_equal(state, restored)
  assert restored[1][0].mu["encoder"]["b"].dtype == jnp.bfloat16


def test_raw_bytes_do_not_fill_a_numpy_dtype_slot():
  """A V2 array (a bfloat16 saved by numpy) is not silently reinterpreted as float16."""
  template = {"x": jnp.zeros(2, jnp.float16)}
  raw = np.asarray(jnp.ones(2, jnp.bfloat16)).view("V2")
  with pytest.raises(gx.StateMismatchError, match=r"x: expected float16, got \|V2"):
    gx.load_state_dict(template, {"x": raw})


def test_template_sharding_is_used():
  device = jax.devices()[0]
  sharding = jax.sharding.SingleDeviceSharding(device)
  template = {"a": jax.ShapeDtypeStruct((3,), jnp.float32, sharding=sharding),
              "b": jax.device_put(jnp.zeros(2, jnp.bfloat16), sharding)}
  d = {"a": np.arange(3, dtype=np.float32), "b": np.asarray(jnp.ones(2, jnp.bfloat16))}
  out = gx.load_state_dict(template, d)
  assert out["a"].sharding == sharding and out["b"].sharding == sharding
  np.testing.assert_array_equal(np.asarray(out["a"]), d["a"])
  assert out["b"].dtype == jnp.bfloat16


def test_continue_training_is_bit_identical(tmp_path):
  name = "chain"
  full_params, full_state = _train(name, 10)
  params, state = _train(name, 5)
  np.savez(tmp_path / "state.npz", **gx.state_dict(state))
  np.savez(tmp_path / "params.npz", **gx.state_dict(params))  # params are a tree too
  template = jax.eval_shape(TRANSFORMS[name].init, PARAMS)
  with np.load(tmp_path / "state.npz") as s, np.load(tmp_path / "params.npz") as p:
    state = gx.load_state_dict(template, s)
    params = gx.load_state_dict(jax.eval_shape(lambda: PARAMS), p)
  params, state = _train(name, 5, params, state)
  _assert_bitwise_equal(full_state, state)
  _assert_bitwise_equal(full_params, params)


# ----------------------------------------------------------------------------------------------
# Errors.


def _template_and_dict():
  state = gx.adam(0.1).init(PARAMS)
  return state, gx.state_dict(state)


def test_every_missing_key_is_listed():
  state, d = _template_and_dict()
  for key in ("0/count", "0/mu/layers/0", "0/nu/encoder/w"):
    del d[key]
  for strict in (True, False):
    with pytest.raises(gx.StateMismatchError) as info:
      gx.load_state_dict(state, d, strict=strict)
    message = str(info.value)
    assert "missing keys (3)" in message
    assert all(key in message for key in ("0/count", "0/mu/layers/0", "0/nu/encoder/w"))


def test_unexpected_keys_strict_and_not():
  state, d = _template_and_dict()
  d["0/mu/extra"] = np.zeros(3, np.float32)
  d["other"] = np.zeros((), np.int32)
  with pytest.raises(gx.StateMismatchError) as info:
    gx.load_state_dict(state, d)
  assert "unexpected keys (2" in str(info.value)
  assert "0/mu/extra" in str(info.value) and "    other" in str(info.value)
  _assert_bitwise_equal(state, gx.load_state_dict(state, d, strict=False))


def test_all_problems_in_one_message():
  state, d = _template_and_dict()
  del d["0/nu/layers/0"]
  d["stray"] = np.zeros(1, np.float32)
  d["0/mu/encoder/w"] = np.zeros((3, 2), np.float32)  # transposed
  d["0/mu/layers/0"] = np.zeros((1,), np.float32)
  d["0/mu/encoder/b"] = np.zeros(3, np.float32)  # float32 into a bfloat16 slot: never cast silently
  d["0/count"] = np.zeros((), np.int64)
  with pytest.raises(gx.StateMismatchError) as info:
    gx.load_state_dict(state, d)
  message = str(info.value)
  assert "missing keys (1)" in message and "0/nu/layers/0" in message
  assert "unexpected keys (1" in message and "stray" in message
  assert "shape mismatches (2)" in message
  assert "0/mu/encoder/w: expected (2, 3), got (3, 2)" in message
  assert "0/mu/layers/0: expected (), got (1,)" in message
  assert "dtype mismatches (2)" in message
  assert "0/mu/encoder/b: expected bfloat16, got float32" in message
  assert "0/count: expected int32, got int64" in message
  assert isinstance(info.value, ValueError) and isinstance(info.value, gx.GradxformError)


def test_duplicate_keys_name_both_paths():
  state = {"a/b": jnp.zeros(2), "a": {"b": jnp.ones(2)}}
  with pytest.raises(_errors.StateDictKeyError) as info:
    gx.state_dict(state)
  message = str(info.value)
  assert "['a/b']" in message and "['a']['b']" in message and "'a/b'" in message
  with pytest.raises(_errors.StateDictKeyError):
    gx.load_state_dict(state, {})


def test_none_empty_and_python_scalar_leaves():
  state = {"n": None, "e": gx.EmptyState(), "m": gx.MaskedNode(), "f": 1.5, "i": 3, "x": jnp.ones(2)}
  d = gx.state_dict(state)
  assert sorted(d) == ["f", "i", "x"]
  restored = gx.load_state_dict(state, d)
  assert jax.tree.structure(restored, is_leaf=lambda v: v is None) == jax.tree.structure(
      state, is_leaf=lambda v: v is None)
  assert restored["f"] == 1.5 and type(restored["f"]) is float and type(restored["i"]) is int
  assert isinstance(restored["x"], jax.Array) and restored["x"].dtype == jnp.float32
