"""Opt-in smaller Adam state: 8-bit blockwise-quantised moments, and bfloat16 moments with stochastic rounding.

`scale_by_adam_8bit` (Dettmers et al., 2021, "8-bit Optimizers via Block-wise Quantization") keeps each moment
of a large leaf as a uint8 code per element plus a float32 absmax per block: ~1/4 of float32 Adam's state.
Leaves under `min_quantized_size` elements keep float32 moments (the paper's small-tensor rule).
`scale_by_adam_bf16` keeps bfloat16 moments (1/2), written back with unbiased stochastic rounding.
Both compute each step in float32, return updates in the gradient's dtype, and keep the state's structure
and dtypes fixed from step to step.
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradxform import _base
from gradxform import _errors
from gradxform import _moments
from gradxform import _numerics
from gradxform import _tree
from gradxform._alias import Mask, _check_adam_family, _optimizer
from gradxform._decay import add_decayed_weights
from gradxform._scale import scale_by_learning_rate

__all__ = ["QuantizedArray", "ScaleByAdam8bitState", "ScaleByAdamBf16State", "adam_8bit", "adam_bf16",
           "adamw_8bit", "adamw_bf16", "dequantize_blockwise", "dynamic_codebook", "quantize_blockwise",
           "scale_by_adam_8bit", "scale_by_adam_bf16", "stochastic_round"]

ArrayLike = jax.typing.ArrayLike


class QuantizedArray(NamedTuple):
  """A float array stored as 8-bit codes, block by block.

  The array is flattened, zero-padded to a whole number of blocks and reshaped to (n_blocks, block_size);
  element j of block b is `codebook[codes[b, j]] * block_absmax[b]` (see `dynamic_codebook`).
  """
  codes: jax.Array         # uint8, (n_blocks, block_size)
  block_absmax: jax.Array  # float32, (n_blocks,): each block's largest |value|, the codebook's scale


class ScaleByAdam8bitState(NamedTuple):
  """State of `scale_by_adam_8bit`: step count, then per leaf a QuantizedArray (leaves of at least
  `min_quantized_size` elements) or a float32 array shaped like the param (smaller leaves)."""
  count: jax.typing.ArrayLike
  mu: _base.Updates
  nu: _base.Updates


class ScaleByAdamBf16State(NamedTuple):
  """State of `scale_by_adam_bf16`: step count, the raw uint32 data of the rounding key
  (`jax.random.key_data`; plain arrays, so the state saves as npz), and bfloat16 moments."""
  count: jax.typing.ArrayLike
  key: jax.Array
  mu: _base.Updates
  nu: _base.Updates


# ----------------------------------------------------------------------------------------------
# The dynamic codebooks (built once, with numpy, at import).
#
# Dynamic quantisation (Dettmers, 2016; Dettmers et al., 2021, sec. 2): after the sign bit, the number of
# leading zero bits is a decimal exponent e (the value lies in decade (10^-(e+1), 10^-e]), the first 1 bit
# ends it, and the remaining bits are a linear fraction within the decade. So decade e holds 2^f(e)
# evenly spaced values ending at 10^-e, with one fraction bit fewer per decade down.
#
# Unsigned (nu, in [0, 1]): 8 bits, decades e = 0..7 with 7 - e fraction bits: 255 values from 1e-7 to 1,
# plus 0 (the all-zero pattern).
# Signed (mu, in [-1, 1]): 7 bits after the sign, decades 0..6 with 6 - e fraction bits: 127 magnitudes
# from 1e-6 to 1 per sign, plus 0. The 256th code (the pattern that would be -0) is given the value +1e-7,
# so the 256 values are distinct; it is an extra decade (0, 1e-7] on the positive side.
# Unlike bin midpoints, these grids end on the decade's top, so 0, 1 (and -1) are exact. A stored code is
# the value's index in the ascending codebook (0..255), not the bit pattern above.


class _Half(NamedTuple):
  """One sign's half of a codebook and its encoder's per-decade constants (index e = decade)."""
  values: np.ndarray    # ascending, 0 first
  lower: np.ndarray     # each decade's lower end (the value below its first code; 0 for the last)
  per_unit: np.ndarray  # codes per unit of value within the decade
  offset: np.ndarray    # index in `values` of the lower end


def _half(fraction_bits: tuple[int, ...]) -> _Half:
  n = len(fraction_bits)
  values = [0.0]
  lower, per_unit, offset = np.zeros(n), np.zeros(n), np.zeros(n, np.int32)
  for e in reversed(range(n)):  # bottom decade first, so `values` stays ascending
    hi, lo, count = 10.0 ** -e, (0.0 if e == n - 1 else 10.0 ** -(e + 1)), 2 ** fraction_bits[e]
    lower[e], per_unit[e], offset[e] = lo, count / (hi - lo), len(values) - 1
    values += [lo + (hi - lo) * k / count for k in range(1, count + 1)]
  return _Half(np.asarray(values), lower.astype(np.float32), per_unit.astype(np.float32), offset)


_UNSIGNED = _half((7, 6, 5, 4, 3, 2, 1, 0))
_POSITIVE = _half((6, 5, 4, 3, 2, 1, 0, 0))
_NEGATIVE = _half((6, 5, 4, 3, 2, 1, 0))
_UNSIGNED_CODEBOOK = _UNSIGNED.values.astype(np.float32)
_SIGNED_CODEBOOK = np.concatenate([-_NEGATIVE.values[:0:-1], _POSITIVE.values]).astype(np.float32)
_SIGNED_ZERO = len(_NEGATIVE.values) - 1  # index of 0 in the signed codebook (127)
_DECADE_TOPS = tuple(np.float32(10.0 ** -j) for j in range(1, 8))  # tops of decades 1..7
assert _UNSIGNED_CODEBOOK.shape == _SIGNED_CODEBOOK.shape == (256,)
assert np.all(np.diff(_UNSIGNED_CODEBOOK) > 0) and np.all(np.diff(_SIGNED_CODEBOOK) > 0)


def dynamic_codebook(signed: bool) -> np.ndarray:
  """The 256 float32 values, ascending, that 8-bit codes stand for (times the block's absmax).

  Args:
    signed: the signed codebook in [-1, 1] (first moments) or the unsigned one in [0, 1] (second moments).
  """
  return (_SIGNED_CODEBOOK if signed else _UNSIGNED_CODEBOOK).copy()


def _by_decade(decade, table, negative=None, negative_table=None):
  """table[decade] elementwise, as a chain of selects on constants (no gather); with `negative_table`,
  negative_table[decade] where `negative` (it is padded with its last decade to table's length)."""
  def value(j):
    pos = table[j]
    if negative_table is None:
      return pos
    neg = negative_table[min(j, len(negative_table) - 1)]
    return pos if neg == pos else jnp.where(negative, neg, pos)
  out = value(len(table) - 1)
  for j in reversed(range(len(table) - 1)):
    out = jnp.where(decade == j, value(j), out)
  return out


def _encode(x: jax.Array, signed: bool) -> jax.Array:
  """The index of the codebook value nearest to each element of x (float32, |x| <= 1), as uint8.

  Computed as the codebook is defined, not by search: the decade from 7 comparisons with its bounds, then
  the nearest point of that decade's evenly spaced grid (whose point k = 0 is the code just below it).
  Off by one code only where x is within float rounding of a midpoint between two codes.
  """
  magnitude = jnp.abs(x) if signed else x
  decade = sum((magnitude <= top).astype(jnp.int32) for top in _DECADE_TOPS)
  negative = x < 0 if signed else None
  tables = (_POSITIVE, _NEGATIVE) if signed else (_UNSIGNED, None)

  def pick(field, dtype):
    neg = None if tables[1] is None else getattr(tables[1], field).astype(dtype)
    return _by_decade(decade, getattr(tables[0], field).astype(dtype), negative, neg)

  # 0 <= k <= 2^f(e): the decade's bounds hold magnitude (NaN aside, caught by the final clip).
  k = jnp.round((magnitude - pick("lower", np.float32)) * pick("per_unit", np.float32)).astype(jnp.int32)
  offset = pick("offset", np.int32)
  if signed:
    code = _SIGNED_ZERO + jnp.where(negative, -(offset + k), offset + k)
  else:
    # A positive second moment never becomes 0: Adam divides by its root, and a 0 there would turn a
    # small first moment into a huge step. It goes to the smallest code (1e-7 of the block's absmax).
    code = jnp.where((magnitude > 0) & (offset + k == 0), 1, offset + k)
  return jnp.clip(code, 0, 255).astype(jnp.uint8)


# ----------------------------------------------------------------------------------------------
# Blockwise quantisation.


def _to_blocks(x: jax.Array, block_size: int) -> jax.Array:
  flat = x.reshape(-1)
  n_blocks = -(-flat.size // block_size)
  pad = n_blocks * block_size - flat.size
  return (jnp.pad(flat, (0, pad)) if pad else flat).reshape(n_blocks, block_size)


def _from_blocks(blocks: jax.Array, shape: tuple) -> jax.Array:
  return blocks.reshape(-1)[:math.prod(shape)].reshape(shape)


def _quantize_blocks(blocks: jax.Array, signed: bool) -> QuantizedArray:
  absmax = jnp.max(jnp.abs(blocks), axis=1)
  scale = jnp.where(absmax > 0, absmax, jnp.ones((), jnp.float32))  # an all-zero block codes as zeros
  return QuantizedArray(codes=_encode(blocks / scale[:, None], signed), block_absmax=absmax)


def _dequantize_blocks(q: QuantizedArray, signed: bool) -> jax.Array:
  table = jnp.asarray(_SIGNED_CODEBOOK if signed else _UNSIGNED_CODEBOOK)
  return table[q.codes.astype(jnp.int32)] * q.block_absmax[:, None]


def quantize_blockwise(x: ArrayLike, *, signed: bool = True, block_size: int = 256) -> QuantizedArray:
  """`x` (cast to float32) as a QuantizedArray: per block, x / absmax mapped to the nearest codebook value.

  Args:
    x: a real array.
    signed: use the signed codebook (any values) or the unsigned one (x must be >= 0).
    block_size: elements per block.
  """
  _check_int("quantize_blockwise", "block_size", block_size, 1)
  x = jnp.asarray(x)
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise _errors.LeafTypeError(f"quantize_blockwise: `x` must be a real floating array, got {x.dtype}")
  return _quantize_jit(x.astype(jnp.float32), signed=bool(signed), block_size=block_size)


_quantize_jit = jax.jit(lambda x, *, signed, block_size: _quantize_blocks(_to_blocks(x, block_size), signed),
                        static_argnames=("signed", "block_size"))
_dequantize_jit = jax.jit(lambda q, *, shape, signed: _from_blocks(_dequantize_blocks(q, signed), shape),
                          static_argnames=("shape", "signed"))


def dequantize_blockwise(q: QuantizedArray, shape: tuple, *, signed: bool = True) -> jax.Array:
  """The float32 array of `shape` that `q` stands for (padding dropped); inverse of `quantize_blockwise`."""
  return _dequantize_jit(q, shape=tuple(int(d) for d in shape), signed=bool(signed))


# ----------------------------------------------------------------------------------------------
# Stochastic rounding to bfloat16.


def _round_with_bits(x: jax.Array, noise: jax.Array) -> jax.Array:
  """float32 x to bfloat16, rounding up in magnitude with probability (dropped low 16 bits) / 2^16.

  Adding 16 uniform random bits (`noise` < 2^16) to the float32 bit pattern and keeping the top 16 rounds
  |x| up exactly when the noise carries into the kept bits, so the expected result is x (a carry into the
  exponent gives the next binade's first value, or inf past the largest bfloat16: correct too). inf stays
  inf (its low bits are zero); NaN is set apart, since its payload could carry or truncate to inf.
  """
  top = ((jax.lax.bitcast_convert_type(x, jnp.uint32) + noise) >> jnp.uint32(16)).astype(jnp.uint16)
  return jax.lax.bitcast_convert_type(jnp.where(jnp.isnan(x), jnp.uint16(0x7FC0), top), jnp.bfloat16)


def _widen(x: jax.Array) -> jax.Array:
  """x as float32 (exactly); bfloat16 by moving its bits up, ~8x faster on XLA:CPU than a conversion."""
  if x.dtype != jnp.bfloat16:
    return x.astype(jnp.float32)
  bits = jax.lax.bitcast_convert_type(x, jnp.uint16).astype(jnp.uint32) << jnp.uint32(16)
  return jax.lax.bitcast_convert_type(bits, jnp.float32)


def _as_key(key: jax.Array) -> jax.Array:
  key = jnp.asarray(key) if not isinstance(key, jax.Array) else key
  return key if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else jax.random.wrap_key_data(key)


def _mix(x: jax.Array) -> jax.Array:
  """MurmurHash3's 32-bit finaliser: a bijection of uint32; each input bit flips each output bit w.p. ~1/2."""
  for shift, factor in ((16, 0x85EBCA6B), (13, 0xC2B2AE35)):
    x = (x ^ (x >> jnp.uint32(shift))) * jnp.uint32(factor)
  return x ^ (x >> jnp.uint32(16))


def _noise(key: jax.Array, shape: tuple) -> jax.Array:
  """32 uniform random bits per element: two 32-bit seeds drawn from `key`, then a hash of each element's
  index. A counter-based hash fuses into the step (a threefry draw per element costs ~10x Adam's step on a
  CPU); rounding noise needs uniform, independent-looking bits, not cryptographic ones."""
  seeds = jax.random.bits(key, (2,), jnp.uint32)
  index = jax.lax.iota(jnp.uint32, math.prod(shape)).reshape(shape)
  return _mix(_mix(index * jnp.uint32(0x9E3779B9) + seeds[0]) ^ seeds[1])


def stochastic_round(x: ArrayLike, dtype: Any, key: jax.Array) -> jax.Array:
  """Rounds `x` to `dtype` at random, up or down to its two neighbours, with expectation `x` (unbiased).

  The same rounding `scale_by_adam_bf16` applies to its moments.

  Args:
    x: a real floating array; float16 and bfloat16 are widened to float32 first (exactly).
    dtype: the target; only bfloat16 is supported.
    key: a jax random key, typed (`jax.random.key`) or raw uint32 data (`jax.random.key_data`).

  Returns:
    A bfloat16 array of x's shape; inf and NaN stay as they are.
  """
  try:
    target = _tree.canonical_dtype(dtype)
  except TypeError as err:
    raise _errors.HyperparameterTypeError(
        f"stochastic_round: argument `dtype` must be bfloat16, got {dtype!r}") from err
  if target != jnp.bfloat16:
    raise _errors.HyperparameterTypeError(
        f"stochastic_round: argument `dtype` must be bfloat16 (the only target supported), got {target}")
  x = jnp.asarray(x)
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise _errors.LeafTypeError(f"stochastic_round: argument `x` must be a real floating array, got {x.dtype}")
  return _stochastic_round_jit(_widen(x), _as_key(key))


@jax.jit
def _stochastic_round_jit(x, key):
  return _round_with_bits(x, _noise(key, x.shape) & jnp.uint32(0xFFFF))


# ----------------------------------------------------------------------------------------------
# The per-leaf kernels (compiled even when called eagerly, so eager and jitted steps agree).


def _adam_f32(g, mu, nu, coefficients):
  """Adam's step in float32 from float32 moments: (update, new_mu, new_nu)."""
  b1, one_minus_b1, b2, one_minus_b2, eps, eps_root, bc1, bc2 = (
      jnp.asarray(c).astype(jnp.float32) for c in coefficients)
  new_mu = one_minus_b1 * g + b1 * mu
  new_nu = one_minus_b2 * (g * g) + b2 * nu
  update = (new_mu / bc1) / (jnp.sqrt(new_nu / bc2 + eps_root) + eps)
  return update, new_mu, new_nu


@functools.partial(jax.jit, inline=True)
def _adam_float32_kernel(g, mu, nu, coefficients):
  update, new_mu, new_nu = _adam_f32(_widen(g), _widen(mu), _widen(nu), coefficients)
  return update.astype(g.dtype), new_mu, new_nu


@functools.partial(jax.jit, static_argnames=("block_size",), inline=True)
def _adam_8bit_kernel(g, mu, nu, coefficients, *, block_size):
  blocks = _to_blocks(_widen(g), block_size)
  update, new_mu, new_nu = _adam_f32(blocks, _dequantize_blocks(mu, True), _dequantize_blocks(nu, False),
                                     coefficients)
  if jax.default_backend() == "cpu":
    # XLA:CPU would recompute the moments (their codebook gathers) in each of the three loops that read them
    # (block absmax, encoding, update); writing them out once is ~1.4x faster there. Elsewhere recomputing
    # is cheaper than the extra memory traffic. The values are the same either way.
    update, new_mu, new_nu = jax.lax.optimization_barrier((update, new_mu, new_nu))
  return (_from_blocks(update, g.shape).astype(g.dtype), _quantize_blocks(new_mu, True),
          _quantize_blocks(new_nu, False))


@functools.partial(jax.jit, inline=True)
def _adam_bf16_kernel(g, mu, nu, key_data, coefficients):
  update, new_mu, new_nu = _adam_f32(_widen(g), _widen(mu), _widen(nu), coefficients)
  # 32 random bits per element: the low half rounds mu, the high half nu.
  noise = _noise(jax.random.wrap_key_data(key_data), g.shape)
  return (update.astype(g.dtype), _round_with_bits(new_mu, noise & jnp.uint32(0xFFFF)),
          _round_with_bits(new_nu, noise >> jnp.uint32(16)))


def _coefficients(b1, b2, eps, eps_root, count):
  """The step's scalars for `_adam_f32`; 1 - b1 is formed here (in Python double for float hyperparameters,
  as optax forms it), the bias corrections 1 - b^t as gradxform's `scale_by_adam` computes them."""
  bc1, bc2 = (_numerics.bias_correction_factor(b, count) for b in (b1, b2))
  return (b1, 1 - b1, b2, 1 - b2, eps, eps_root, bc1, bc2)


# ----------------------------------------------------------------------------------------------
# Checks.


def _check_int(fn: str, name: str, value: Any, low: int) -> None:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
    hint = (" (under inject_hyperparams, list it in static_args)"
            if isinstance(value, (jax.Array, np.ndarray, jax.core.Tracer)) else "")
    raise _errors.HyperparameterTypeError(
        f"{fn}: argument `{name}` must be a Python int, got {type(value).__name__} {value!r}{hint}")
  if value < low:
    raise _errors.HyperparameterError(f"{fn}: argument `{name}` must be an int >= {low}, got {value!r}")


def _check_sizes(fn, block_size, min_quantized_size):
  _check_int(fn, "block_size", block_size, 1)
  _check_int(fn, "min_quantized_size", min_quantized_size, 0)


_COMPLEX_REASON = "low-bit Adam state holds real moments only (the codebooks and bfloat16 rounding are real)"


def _check_params(params: Any, fn: str):
  """Leaves (None included) and treedef of params; complex and integer leaves are errors naming their path."""
  _errors.reject_complex(params, _COMPLEX_REASON, name="params")
  leaves, treedef = _tree.flatten(params)
  for i, p in enumerate(leaves):
    if p is not None and not jnp.issubdtype(_numerics.dtype_of(p), jnp.floating):
      raise _errors.LeafTypeError(
          f"params at {_tree.leaf_paths(params)[i]} have dtype {_numerics.dtype_of(p)}: {fn} keeps moments for "
          "floating-point params only; pass None for that leaf (as equinox.filter does) or leave it out of the tree")
  return leaves, treedef


def _shape(x: Any) -> tuple:
  return tuple(x.shape) if hasattr(x, "shape") else tuple(np.shape(x))


def _check_8bit_leaf(updates, i, name, g_shape, s, quantized, block_size):
  """Raises TreeMismatchError if the state leaf `s` was not made by init for a param of g_shape."""
  n_blocks = -(-math.prod(g_shape) // block_size)
  if quantized:
    ok = (isinstance(s, tuple) and getattr(s, "_fields", None) == QuantizedArray._fields
          and _shape(s.codes) == (n_blocks, block_size) and _shape(s.block_absmax) == (n_blocks,))
    want = f"a QuantizedArray with codes {(n_blocks, block_size)} and block_absmax {(n_blocks,)}"
  else:
    ok = not isinstance(s, tuple) and hasattr(s, "shape") and _shape(s) == g_shape
    want = f"a float32 array of shape {g_shape}"
  if not ok:
    got = (f"a QuantizedArray with codes {_shape(s.codes)}" if isinstance(s, QuantizedArray)
           else _errors._describe(s))  # pylint: disable=protected-access
    raise _errors.TreeMismatchError(
        f"updates and {name} differ at {_tree.leaf_paths(updates)[i]}: updates of shape {g_shape} need {want}, "
        f"got {got} (was the state made by init for other params, or with another block_size or "
        "min_quantized_size?)")


def _map_moments(updates, state, leaf):
  """Runs `leaf(i, g, mu, nu) -> (update, new_mu, new_nu)` over the leaves of updates (i: the leaf's index);
  a None update keeps its moments. Returns the trees (updates, mu, nu)."""
  _errors.reject_complex(updates, _COMPLEX_REASON)
  g_leaves, treedef = _tree.flatten(updates)
  _tree.check_inexact(updates, g_leaves)
  mus, nus = (_tree.leaves_matching(treedef, tree, "updates", updates, name)
              for tree, name in ((state.mu, "state.mu"), (state.nu, "state.nu")))
  rows = [(None, mu, nu) if g is None else leaf(i, jnp.asarray(g), mu, nu)
          for i, (g, mu, nu) in enumerate(zip(g_leaves, mus, nus))]
  return tuple(treedef.unflatten([row[k] for row in rows]) for k in range(3))


# ----------------------------------------------------------------------------------------------
# scale_by_adam_8bit.


def _zeros_8bit(p, block_size, min_quantized_size):
  """Zero moment for one param leaf: float32 like it when small, else a QuantizedArray of zeros."""
  shape = _shape(p)
  size = math.prod(shape)
  if size < min_quantized_size:
    return _tree.zeros_like(p, jnp.float32)
  n_blocks = -(-size // block_size)
  return QuantizedArray(codes=jnp.zeros((n_blocks, block_size), jnp.uint8),
                        block_absmax=jnp.zeros((n_blocks,), jnp.float32))


def _adam_8bit_init(params, *, block_size, min_quantized_size, **_):
  leaves, treedef = _check_params(params, "scale_by_adam_8bit")
  moments = [[None if p is None else _zeros_8bit(p, block_size, min_quantized_size) for p in leaves]
             for _ in range(2)]  # mu, nu: separate buffers (a donated state must not alias them)
  return ScaleByAdam8bitState(count=jnp.zeros([], jnp.int32), mu=treedef.unflatten(moments[0]),
                              nu=treedef.unflatten(moments[1]))


def _adam_8bit_update(updates, state, params=None, *, b1, b2, eps, eps_root, block_size, min_quantized_size,
                      **extra_args):
  del params, extra_args
  _errors.expect_state(state, (ScaleByAdam8bitState,), "scale_by_adam_8bit")
  count = _numerics.safe_increment(state.count)
  coefficients = _coefficients(b1, b2, eps, eps_root, count)

  def leaf(i, g, mu, nu):
    quantized = g.size >= min_quantized_size
    _check_8bit_leaf(updates, i, "state.mu", g.shape, mu, quantized, block_size)
    _check_8bit_leaf(updates, i, "state.nu", g.shape, nu, quantized, block_size)
    if quantized:
      return _adam_8bit_kernel(g, mu, nu, coefficients, block_size=block_size)
    return _adam_float32_kernel(g, mu, nu, coefficients)

  new_updates, mu, nu = _map_moments(updates, state, leaf)
  return new_updates, ScaleByAdam8bitState(count=count, mu=mu, nu=nu)


def scale_by_adam_8bit(b1: ArrayLike = 0.9, b2: ArrayLike = 0.999, eps: ArrayLike = 1e-8,
                       eps_root: ArrayLike = 0.0, *, block_size: int = 256,
                       min_quantized_size: int = 4096) -> _base.GradientTransformationExtraArgs:
  """Adam's scaling with 8-bit blockwise-quantised moments (Dettmers et al., 2021).

  Each step dequantises mu and nu, updates them in float32 with the gradient, returns
  m_hat / (sqrt(v_hat + eps_root) + eps) computed from those moments as `scale_by_adam` computes it, and
  requantises: per block of `block_size` elements, value / block absmax to the nearest of 256 dynamic-code
  values (signed for mu, unsigned for nu; see `dynamic_codebook`). The quantisation error is at most half
  a code step (0.7 % of the block's absmax for mu, 0.35 % for nu) and much less for small values. A
  positive nu is never stored as 0. A non-finite moment makes its whole block non-finite.

  Args:
    b1, b2: decay rates of the first and second moments, in [0, 1).
    eps: added to the denominator outside the square root.
    eps_root: added inside the square root.
    block_size: elements per quantisation block (any positive int; the paper uses 2048; smaller blocks
      follow outliers more closely at 4 bytes of absmax per block).
    min_quantized_size: leaves with fewer elements keep float32 moments: `scale_by_adam` to float rounding.
  """
  _moments._check_adam_args("scale_by_adam_8bit", b1, b2, eps, eps_root)  # pylint: disable=protected-access
  _check_sizes("scale_by_adam_8bit", block_size, min_quantized_size)
  return _base.transformation("scale_by_adam_8bit", _adam_8bit_init, _adam_8bit_update, b1=b1, b2=b2, eps=eps,
                              eps_root=eps_root, block_size=int(block_size),
                              min_quantized_size=int(min_quantized_size))


def adam_8bit(learning_rate: _base.ScalarOrSchedule, b1: ArrayLike = 0.9, b2: ArrayLike = 0.999,
              eps: ArrayLike = 1e-8, eps_root: ArrayLike = 0.0, *, block_size: int = 256,
              min_quantized_size: int = 4096) -> _base.GradientTransformationExtraArgs:
  """Adam with 8-bit blockwise-quantised state: `scale_by_adam_8bit`, then -learning_rate (a number or a
  schedule); the other arguments as in `scale_by_adam_8bit`."""
  _check_adam_family("adam_8bit", learning_rate, b1, b2, eps, eps_root)
  _check_sizes("adam_8bit", block_size, min_quantized_size)
  return _optimizer("adam_8bit", scale_by_adam_8bit(b1, b2, eps, eps_root, block_size=block_size,
                                                    min_quantized_size=min_quantized_size),
                    scale_by_learning_rate(learning_rate))


def adamw_8bit(learning_rate: _base.ScalarOrSchedule, b1: ArrayLike = 0.9, b2: ArrayLike = 0.999,
               eps: ArrayLike = 1e-8, eps_root: ArrayLike = 0.0,
               weight_decay: _base.ScalarOrSchedule = 1e-4, mask: Mask = None, *, block_size: int = 256,
               min_quantized_size: int = 4096) -> _base.GradientTransformationExtraArgs:
  """AdamW with 8-bit blockwise-quantised state: `adam_8bit` plus decoupled weight decay (`weight_decay`,
  `mask`: as in `adamw`)."""
  _check_adam_family("adamw_8bit", learning_rate, b1, b2, eps, eps_root, weight_decay)
  _check_sizes("adamw_8bit", block_size, min_quantized_size)
  return _optimizer("adamw_8bit", scale_by_adam_8bit(b1, b2, eps, eps_root, block_size=block_size,
                                                     min_quantized_size=min_quantized_size),
                    add_decayed_weights(weight_decay, mask), scale_by_learning_rate(learning_rate))


# ----------------------------------------------------------------------------------------------
# scale_by_adam_bf16.


def _adam_bf16_init(params, *, seed, **_):
  leaves, treedef = _check_params(params, "scale_by_adam_bf16")
  moments = [treedef.unflatten([_tree.zeros_like(p, jnp.bfloat16) for p in leaves]) for _ in range(2)]
  return ScaleByAdamBf16State(count=jnp.zeros([], jnp.int32),
                              key=jax.random.key_data(jax.random.key(seed)), mu=moments[0], nu=moments[1])


def _adam_bf16_update(updates, state, params=None, *, b1, b2, eps, eps_root, seed, **extra_args):
  del params, extra_args, seed
  _errors.expect_state(state, (ScaleByAdamBf16State,), "scale_by_adam_bf16")
  count = _numerics.safe_increment(state.count)
  coefficients = _coefficients(b1, b2, eps, eps_root, count)
  typed = jnp.issubdtype(state.key.dtype, jax.dtypes.prng_key)
  next_key, step_key = jax.random.split(_as_key(state.key))

  def leaf(i, g, mu, nu):
    for name, s in (("state.mu", mu), ("state.nu", nu)):
      if _shape(s) != g.shape:
        _errors.raise_shape_mismatch("updates", name, _tree.leaf_paths(updates)[i], g.shape, _shape(s))
    return _adam_bf16_kernel(g, mu, nu, jax.random.key_data(jax.random.fold_in(step_key, i)), coefficients)

  new_updates, mu, nu = _map_moments(updates, state, leaf)
  key = next_key if typed else jax.random.key_data(next_key)
  return new_updates, ScaleByAdamBf16State(count=count, key=key, mu=mu, nu=nu)


def scale_by_adam_bf16(b1: ArrayLike = 0.9, b2: ArrayLike = 0.999, eps: ArrayLike = 1e-8,
                       eps_root: ArrayLike = 0.0, *, seed: int = 0) -> _base.GradientTransformationExtraArgs:
  """Adam's scaling with bfloat16 moments written back by unbiased stochastic rounding.

  Each step widens mu and nu to float32, computes Adam's moments and step in float32 (the step returned
  in the gradient's dtype), and stores the new moments as bfloat16 rounded at random, up or down, with
  expectation the float32 value (`stochastic_round`). Round-to-nearest would instead drop every change to
  nu smaller than half a bfloat16 step (b2 = 0.999 changes nu by 0.1 % a step; bfloat16 resolves 0.4 %).

  Args:
    b1, b2, eps, eps_root: as in `scale_by_adam`.
    seed: seeds the rounding key kept in the state (a Python int); results are deterministic given it.
  """
  _moments._check_adam_args("scale_by_adam_bf16", b1, b2, eps, eps_root)  # pylint: disable=protected-access
  _check_int("scale_by_adam_bf16", "seed", seed, -2 ** 63)
  return _base.transformation("scale_by_adam_bf16", _adam_bf16_init, _adam_bf16_update, b1=b1, b2=b2, eps=eps,
                              eps_root=eps_root, seed=int(seed))


def adam_bf16(learning_rate: _base.ScalarOrSchedule, b1: ArrayLike = 0.9, b2: ArrayLike = 0.999,
              eps: ArrayLike = 1e-8, eps_root: ArrayLike = 0.0, *,
              seed: int = 0) -> _base.GradientTransformationExtraArgs:
  """Adam with bfloat16 state and stochastic rounding: `scale_by_adam_bf16`, then -learning_rate (a number
  or a schedule); the other arguments as in `scale_by_adam_bf16`."""
  _check_adam_family("adam_bf16", learning_rate, b1, b2, eps, eps_root)
  _check_int("adam_bf16", "seed", seed, -2 ** 63)
  return _optimizer("adam_bf16", scale_by_adam_bf16(b1, b2, eps, eps_root, seed=seed),
                    scale_by_learning_rate(learning_rate))


def adamw_bf16(learning_rate: _base.ScalarOrSchedule, b1: ArrayLike = 0.9, b2: ArrayLike = 0.999,
               eps: ArrayLike = 1e-8, eps_root: ArrayLike = 0.0,
               weight_decay: _base.ScalarOrSchedule = 1e-4, mask: Mask = None, *,
               seed: int = 0) -> _base.GradientTransformationExtraArgs:
  """AdamW with bfloat16 state and stochastic rounding: `adam_bf16` plus decoupled weight decay
  (`weight_decay`, `mask`: as in `adamw`)."""
  _check_adam_family("adamw_bf16", learning_rate, b1, b2, eps, eps_root, weight_decay)
  _check_int("adamw_bf16", "seed", seed, -2 ** 63)
  return _optimizer("adamw_bf16", scale_by_adam_bf16(b1, b2, eps, eps_root, seed=seed),
                    add_decayed_weights(weight_decay, mask), scale_by_learning_rate(learning_rate))
