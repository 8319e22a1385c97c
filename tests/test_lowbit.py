"""Low-bit Adam state (gradxform._lowbit): 8-bit blockwise-quantised moments and bfloat16 moments with
stochastic rounding.

Every tolerance against optax is derived from the codebook's resolution: one quantisation moves a value by
at most half the largest gap between neighbouring codes times its block's absmax (`_half_gap`), and an
exponential moving average with decay b carries an error e forward as b * e, so after T steps a moment is
off by at most half_gap * absmax * (1 + b + ... + b^(T-1)).
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradxform
from gradxform import _lowbit as lowbit
from convergence import train_digits

STEPS = 10


def _half_gap(signed: bool) -> float:
  return float(np.max(np.diff(lowbit.dynamic_codebook(signed)))) / 2


def _grads(params, t):
  return jax.tree.map(lambda p: None if p is None else
                      (0.3 * p.astype(jnp.float32) + jax.random.normal(jax.random.key(t), p.shape)).astype(p.dtype),
                      params, is_leaf=lambda x: x is None)


# ----------------------------------------------------------------------------------------------
# Codebooks and blockwise quantisation.


@pytest.mark.parametrize("signed", [True, False])
def test_codebook_is_sorted_256_values_with_zero_and_ends(signed):
  codebook = lowbit.dynamic_codebook(signed)
  assert codebook.shape == (256,) and codebook.dtype == np.float32
  assert np.all(np.diff(codebook) > 0)
  assert 0.0 in codebook and codebook[-1] == 1.0
  assert codebook[0] == (-1.0 if signed else 0.0)
  # Dynamic: finer near 0. The top decade (0.1, 1] has 64 (signed) / 128 (unsigned) codes, the smallest
  # non-zero magnitude is 1e-6 / 1e-7.
  assert np.sum(codebook > 0.1) == (64 if signed else 128)
  assert np.min(np.abs(codebook[codebook != 0])) == pytest.approx(1e-7)


@pytest.mark.parametrize("signed", [True, False])
def test_round_trip_error_is_within_half_a_code_of_the_block_absmax(signed):
  key_a, key_b = jax.random.split(jax.random.key(0))
  # Magnitudes spread over ~10 decades, 300 x 50 elements: blocks of 256 with a padded last block.
  x = jax.random.normal(key_a, (300, 50)) * jnp.exp(3.0 * jax.random.normal(key_b, (300, 50)))
  x = x if signed else jnp.abs(x)
  q = lowbit.quantize_blockwise(x, signed=signed, block_size=256)
  assert q.codes.shape == (59, 256) and q.codes.dtype == jnp.uint8 and q.block_absmax.dtype == jnp.float32
  back = lowbit.dequantize_blockwise(q, x.shape, signed=signed)
  absmax = jnp.repeat(q.block_absmax, 256)[:x.size].reshape(x.shape)
  error = np.asarray(jnp.abs(back - x) / absmax)
  assert error.max() <= _half_gap(signed) * (1 + 1e-5), error.max()
  assert np.all(np.asarray(jnp.max(jnp.abs(back.reshape(-1)[:15_000 // 256 * 256].reshape(-1, 256)), axis=1)
                           == q.block_absmax[:-1]))  # each block's absmax is stored exactly
  # The nearest code, as a search on the midpoints finds it (the encoder computes it from the decade
  # instead); they may differ only where x is within rounding of a midpoint, by one code.
  codebook = lowbit.dynamic_codebook(signed)
  normalized = np.asarray(lowbit._to_blocks(x, 256) / jnp.where(q.block_absmax > 0, q.block_absmax, 1)[:, None])
  nearest = np.searchsorted((codebook[1:] + codebook[:-1]) / 2, normalized)
  if not signed:
    nearest = np.where((normalized > 0) & (nearest == 0), 1, nearest)  # a positive nu never becomes 0
  differ = nearest != np.asarray(q.codes)
  assert differ.mean() < 1e-3 and np.all(np.abs(nearest.astype(int) - np.asarray(q.codes, int)) <= 1)
  # Zeros stay zero, an all-zero block codes as zeros, a positive value never becomes 0.
  q = lowbit.quantize_blockwise(jnp.array([0.0, 1e-12, 1.0, 0.0, 0.0, 0.0]), signed=signed, block_size=3)
  back = np.asarray(lowbit.dequantize_blockwise(q, (6,), signed=signed))
  assert back[0] == 0 and back[2] == 1 and np.all(back[3:] == 0)
  assert (back[1] == 0) if signed else (back[1] == pytest.approx(1e-7))


# ----------------------------------------------------------------------------------------------
# Against optax.adam.


def _beside_optax(tx, ref, params, leaf):
  """STEPS updates of `tx` and optax's `ref` on the same gradients; also the largest |mu| and nu of `leaf`
  seen along optax's trajectory."""
  state, ref_state = tx.init(params), ref.init(params)
  mu_max = nu_max = 0.0
  for t in range(STEPS):
    grads = _grads(params, t)
    updates, state = tx.update(grads, state)
    with jax.numpy_dtype_promotion("standard"):
      ref_updates, ref_state = ref.update(grads, ref_state)
    mu_max = max(mu_max, float(jnp.max(jnp.abs(ref_state.mu[leaf]))))
    nu_max = max(nu_max, float(jnp.max(ref_state.nu[leaf])))
  return updates, state, ref_updates, ref_state, mu_max, nu_max


def test_adam_8bit_tracks_optax_adam_within_the_codebook_resolution():
  b1, b2 = 0.9, 0.999
  params = {"big": jax.random.normal(jax.random.key(1), (64, 80)), "small": jnp.ones((3, 4))}  # 5120 / 12
  tx, ref = lowbit.scale_by_adam_8bit(b1, b2), optax.scale_by_adam(b1, b2)
  assert isinstance(tx.init(params).mu["big"], lowbit.QuantizedArray)
  assert tx.init(params).mu["small"].dtype == jnp.float32
  updates, state, ref_updates, ref_state, mu_max, nu_max = _beside_optax(tx, ref, params, "big")
  # Below min_quantized_size: float32 moments, Adam exactly.
  chex.assert_trees_all_close(updates["small"], ref_updates["small"])
  chex.assert_trees_all_close((state.mu["small"], state.nu["small"]), (ref_state.mu["small"], ref_state.nu["small"]))
  # Above: each moment within the accumulated quantisation error (10 % slack: the absmax of the quantised
  # trajectory's blocks differs slightly from the reference's).
  mu_bound = 1.1 * _half_gap(True) * mu_max * sum(b1 ** k for k in range(STEPS))
  nu_bound = 1.1 * _half_gap(False) * nu_max * sum(b2 ** k for k in range(STEPS))
  mu = lowbit.dequantize_blockwise(state.mu["big"], (64, 80), signed=True)
  nu = lowbit.dequantize_blockwise(state.nu["big"], (64, 80), signed=False)
  assert float(jnp.max(jnp.abs(mu - ref_state.mu["big"]))) <= mu_bound
  assert float(jnp.max(jnp.abs(nu - ref_state.nu["big"]))) <= nu_bound
  # The update m_hat / sqrt(v_hat), to first order: |du| <= dm_hat / sqrt(v_hat) + |u| dv_hat / (2 v_hat),
  # the moment errors being those bounds (times the bias corrections); factor 2 for second-order terms.
  bc1, bc2 = 1 - b1 ** STEPS, 1 - b2 ** STEPS
  nu_hat = ref_state.nu["big"] / bc2
  bound = 2 * (mu_bound / bc1 / (jnp.sqrt(nu_hat) + 1e-8) + jnp.abs(ref_updates["big"]) * nu_bound / bc2 / (2 * nu_hat))
  assert bool(jnp.all(jnp.abs(updates["big"] - ref_updates["big"]) <= bound))
  # And in aggregate the updates are close: 3 % mean relative difference.
  assert float(jnp.mean(jnp.abs(updates["big"] - ref_updates["big"])) / jnp.mean(jnp.abs(ref_updates["big"]))) < 0.03


def test_adam_bf16_tracks_optax_adam_within_bfloat16_resolution():
  b1, b2 = 0.9, 0.999
  params = {"w": jax.random.normal(jax.random.key(1), (32, 40))}
  tx, ref = lowbit.scale_by_adam_bf16(b1, b2, seed=0), optax.scale_by_adam(b1, b2)
  updates, state, ref_updates, ref_state, mu_max, nu_max = _beside_optax(tx, ref, params, "w")
  # A stochastic rounding moves a value by less than one bfloat16 step, <= 2^-7 of it; carried by the EMA
  # as in the 8-bit case (10 % slack for the trajectory's own maxima).
  mu_error = jnp.abs(state.mu["w"].astype(jnp.float32) - ref_state.mu["w"])
  nu_error = jnp.abs(state.nu["w"].astype(jnp.float32) - ref_state.nu["w"])
  assert float(jnp.max(mu_error)) <= 1.1 * 2 ** -7 * mu_max * sum(b1 ** k for k in range(STEPS))
  assert float(jnp.max(nu_error)) <= 1.1 * 2 ** -7 * nu_max * sum(b2 ** k for k in range(STEPS))
  # Unbiased rounding: the errors are a random walk, well below that worst case on average (std of one
  # rounding <= 2^-8 of the value, times sqrt(1 / (1 - b1^2)) = 2.3 for the EMA: ~0.9 % of |mu|).
  assert float(jnp.mean(mu_error)) <= 0.01 * float(jnp.mean(jnp.abs(ref_state.mu["w"])))
  assert float(jnp.mean(jnp.abs(updates["w"] - ref_updates["w"])) / jnp.mean(jnp.abs(ref_updates["w"]))) < 0.01


def test_state_bytes_for_one_million_float32_params():
  params = {"w1": jax.ShapeDtypeStruct((512, 1024), jnp.float32), "w2": jax.ShapeDtypeStruct((1024, 512), jnp.float32),
            "b": jax.ShapeDtypeStruct((512,), jnp.float32)}

  def nbytes(tx):
    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(jax.eval_shape(tx.init, params)))

  reference = nbytes(optax.adam(1e-3))
  ratio_8bit, ratio_bf16 = nbytes(lowbit.adam_8bit(1e-3)) / reference, nbytes(lowbit.adam_bf16(1e-3)) / reference
  print(f"state bytes / optax.adam: adam_8bit {ratio_8bit:.3f}, adam_bf16 {ratio_bf16:.3f}")
  assert ratio_8bit <= 0.3
  assert 0.49 <= ratio_bf16 <= 0.51


# ----------------------------------------------------------------------------------------------
# Stochastic rounding.


@pytest.mark.parametrize("value", [1.0 + 0.3 * 2 ** -7, -3.0 - 0.7 * 2 ** -6, 2.0 ** -100 * (1 + 0.45 * 2 ** -7)])
def test_stochastic_rounding_is_unbiased(value):
  n = 200_000
  x = jnp.full((n,), value, jnp.float32)
  rounded = lowbit.stochastic_round(x, jnp.bfloat16, jax.random.key(0))
  assert rounded.dtype == jnp.bfloat16
  down, up = sorted({float(v) for v in np.asarray(rounded.astype(jnp.float32))})  # only the two neighbours
  gap = up - down
  assert down < float(x[0]) < up and gap > 0
  mean = np.mean(np.asarray(rounded.astype(jnp.float32), np.float64))
  # The mean of n Bernoulli choices has standard deviation <= gap / (2 sqrt(n)) = 0.0011 gap: allow 10 of them.
  assert abs(mean - float(x[0])) <= 0.011 * gap
  assert abs(mean - float(x[0].astype(jnp.bfloat16).astype(jnp.float32))) > 0.2 * gap  # unlike round-to-nearest


def test_stochastic_rounding_is_deterministic_per_key_and_keeps_inf_nan():
  x = jnp.linspace(-2.0, 2.0, 1001, dtype=jnp.float32)
  key = jax.random.key(7)
  first = lowbit.stochastic_round(x, jnp.bfloat16, key)
  chex.assert_trees_all_equal(first, lowbit.stochastic_round(x, jnp.bfloat16, jax.random.key_data(key)))
  assert not np.array_equal(np.asarray(first), np.asarray(lowbit.stochastic_round(x, jnp.bfloat16, jax.random.key(8))))
  special = jnp.array([jnp.inf, -jnp.inf, jnp.nan, 0.0, -0.0, 1.0], jnp.float32)
  out = np.asarray(lowbit.stochastic_round(special, "bfloat16", key).astype(jnp.float32))
  assert out[0] == np.inf and out[1] == -np.inf and np.isnan(out[2]) and np.all(out[3:] == [0.0, 0.0, 1.0])
  assert np.signbit(out[4])


# ----------------------------------------------------------------------------------------------
# Training.


def test_digits_accuracy_matches_float32_adam():
  """Softmax regression on digits (640 + 10 params), min_quantized_size=0 so every leaf is quantised."""
  results = {name: train_digits(tx)[2] for name, tx in [
      ("adam", gradxform.adam(0.05)),
      ("adam_8bit", lowbit.adam_8bit(0.05, min_quantized_size=0)),
      ("adam_bf16", lowbit.adam_bf16(0.05)),
  ]}
  print("digits test accuracy:", {name: round(acc, 4) for name, acc in results.items()})
  assert results["adam"] >= 0.9
  for name in ("adam_8bit", "adam_bf16"):
    assert abs(results[name] - results["adam"]) <= 0.01, results


# ----------------------------------------------------------------------------------------------
# jit, eager, mixed trees.


def _mixed_params():
  keys = jax.random.split(jax.random.key(3), 3)
  return {"dense": {"w": jax.random.normal(keys[0], (40, 30)), "scale": jnp.bfloat16(0.5)},
          "list": [jax.random.normal(keys[1], (700,), jnp.bfloat16), jnp.zeros((0, 3)), jnp.ones((5,))],
          "frozen": None}


@pytest.mark.parametrize("make", [
    lambda: lowbit.adamw_8bit(gradxform.linear_schedule(0.1, 0.01, 3), min_quantized_size=100, block_size=64),
    lambda: lowbit.adamw_bf16(0.1, seed=3),
], ids=["adamw_8bit", "adamw_bf16"])
def test_jit_and_eager_agree_and_state_layout_is_fixed(make):
  tx, params = make(), _mixed_params()
  initial = tx.init(params)
  layout = lambda s: (jax.tree.structure(s), [(x.shape, x.dtype) for x in jax.tree.leaves(s)])
  step = jax.jit(tx.update)
  eager = jitted = initial
  for t in range(3):
    grads = _grads(params, t)
    grads["list"][2] = None  # a None gradient: its state passes through
    eager_updates, eager = tx.update(grads, eager, params)
    jitted_updates, jitted = step(grads, jitted, params)
    assert layout(eager) == layout(jitted) == layout(initial)
    assert jax.tree.map(lambda u: u.dtype, eager_updates) == jax.tree.map(lambda g: g.dtype, grads)
  chex.assert_trees_all_equal(eager, jitted)  # same compiled per-leaf kernel: the state agrees bit for bit
  chex.assert_trees_all_close(eager_updates, jitted_updates, rtol=1e-6, atol=1e-7)
  assert eager_updates["list"][2] is None and eager_updates["frozen"] is None
  inner = eager[0]
  chex.assert_trees_all_equal(inner.mu["list"][2], initial[0].mu["list"][2])
  if isinstance(inner, lowbit.ScaleByAdam8bitState):
    assert isinstance(inner.mu["dense"]["w"], lowbit.QuantizedArray)  # 1200 >= 100
    assert inner.mu["list"][2].dtype == jnp.float32  # 5 < 100
  else:
    assert inner.key.dtype == jnp.uint32 and not np.array_equal(inner.key, initial[0].key)
    assert inner.mu["list"][0].dtype == jnp.bfloat16 and inner.mu["dense"]["w"].dtype == jnp.bfloat16
  assert make() == make() and hash(make()) == hash(make())


# ----------------------------------------------------------------------------------------------
# Errors.


@pytest.mark.parametrize("call, error, fragments", [
    (lambda: lowbit.adam_8bit(0.1, block_size=0), gradxform.HyperparameterError, ["adam_8bit", "`block_size`"]),
    (lambda: lowbit.scale_by_adam_8bit(block_size=2.5), gradxform.HyperparameterTypeError, ["`block_size`", "int"]),
    (lambda: lowbit.adamw_8bit(0.1, block_size=True), gradxform.HyperparameterTypeError, ["`block_size`"]),
    (lambda: lowbit.adam_8bit(0.1, min_quantized_size=-1), gradxform.HyperparameterError, ["`min_quantized_size`"]),
    (lambda: lowbit.adam_8bit(0.1, b2=1.0), gradxform.HyperparameterError, ["adam_8bit", "`b2`"]),
    (lambda: lowbit.adam_bf16(0.1, seed=1.5), gradxform.HyperparameterTypeError, ["adam_bf16", "`seed`"]),
    (lambda: lowbit.stochastic_round(jnp.ones(3), jnp.float16, jax.random.key(0)),
     gradxform.HyperparameterTypeError, ["stochastic_round", "`dtype`", "bfloat16"]),
], ids=["block_size_0", "block_size_float", "block_size_bool", "min_size_negative", "b2", "seed", "round_dtype"])
def test_bad_hyperparameters_name_the_argument(call, error, fragments):
  with pytest.raises(error) as info:
    call()
  assert all(f in str(info.value) for f in fragments), str(info.value)


COMPLEX = {"c": jnp.ones((2,), jnp.complex64), "r": jnp.ones((2,))}


@pytest.mark.parametrize("make", [lambda: lowbit.adam_8bit(0.1, min_quantized_size=0), lambda: lowbit.adam_bf16(0.1)],
                         ids=["8bit", "bf16"])
def test_bad_leaves_and_states_name_their_place(make):
  tx = make()
  with pytest.raises(gradxform.LeafTypeError, match=r"params at \['c'\].*complex"):
    tx.init(COMPLEX)
  real = {"c": jnp.ones((2,)), "r": jnp.ones((2,))}
  with pytest.raises(gradxform.LeafTypeError, match=r"updates at \['c'\].*complex"):
    tx.update(COMPLEX, tx.init(real), real)
  with pytest.raises(gradxform.LeafTypeError, match=r"\['i'\].*int32"):
    tx.init({"i": jnp.arange(3)})
  with pytest.raises(gradxform.LeafTypeError, match=r"updates at \['c'\].*int32"):
    jax.jit(tx.update)({"c": jnp.arange(2), "r": jnp.ones((2,))}, tx.init(real), real)
  with pytest.raises(gradxform.StateMismatchError, match="expected its own state"):
    tx.update(real, gradxform.adam(0.1).init(real), real)
  with pytest.raises(gradxform.TreeMismatchError, match=r"\['r'\]"):
    tx.update(real, tx.init({"c": jnp.ones((2,)), "r": jnp.ones((300,))}), real)  # 2 blocks, not 1


def test_state_made_with_another_min_quantized_size_is_named():
  params = {"w": jnp.ones((300,))}
  state = lowbit.adam_8bit(0.1, min_quantized_size=1000).init(params)
  expected = r"state.mu differ at \['w'\].*QuantizedArray.*min_quantized_size"
  with pytest.raises(gradxform.TreeMismatchError, match=expected):
    lowbit.adam_8bit(0.1, min_quantized_size=100).update(params, state, params)


def test_bf16_second_moment_keeps_growing_where_round_to_nearest_stalls():
  """g = 1 every step: nu_t = 1 - b2^t, growing by 0.1 % of the remaining gap per step, less than half a
  bfloat16 step once nu > ~0.2: round-to-nearest stalls there, stochastic rounding follows on average."""
  params = {"w": jnp.zeros((2000,))}
  grads = {"w": jnp.ones((2000,))}

  def final_nu(tx):
    def step(state, _):
      return tx.update(grads, state)[1], None
    return jax.jit(lambda s: jax.lax.scan(step, s, None, length=600)[0])(tx.init(params)).nu["w"]

  expected = 1 - 0.999 ** 600
  stochastic = float(jnp.mean(final_nu(lowbit.scale_by_adam_bf16()).astype(jnp.float32)))
  nearest = float(jnp.mean(final_nu(gradxform.scale_by_adam(nu_dtype=jnp.bfloat16)).astype(jnp.float32)))
  assert abs(stochastic - expected) <= 0.01 * expected, (stochastic, expected)
  assert abs(nearest - expected) > 0.05 * expected, (nearest, expected)
