"""Scalar-safe numerics: saturating counters and norms with a floor (no NaN gradients at zero)."""

from __future__ import annotations

import functools
from typing import Optional, Union

import jax
import jax.numpy as jnp
import numpy as np


def abs_sq(x: jax.typing.ArrayLike) -> jax.Array:
  """|x|^2 elementwise, real-valued for complex x."""
  if not isinstance(x, (np.ndarray, jax.Array)):
    raise TypeError(f"abs_sq: expected an array, got {type(x).__name__}")
  return (x.conj() * x).real


def safe_increment(count: jax.typing.ArrayLike) -> jax.typing.ArrayLike:
  """count + 1, saturating at the dtype's maximum instead of wrapping around."""
  dtype = jnp.asarray(count).dtype
  if jnp.issubdtype(dtype, jnp.integer):
    top = jnp.iinfo(dtype).max
  elif jnp.issubdtype(dtype, jnp.floating):
    top = jnp.finfo(dtype).max
  else:
    raise TypeError(f"safe_increment: count must have an integer or floating dtype, got {dtype}")
  top = jnp.array(top, dtype)
  return jnp.where(count < top, count + jnp.array(1, dtype), top)


safe_int32_increment = safe_increment


def safe_norm(x: jax.typing.ArrayLike, min_norm: jax.typing.ArrayLike,
              ord: Optional[Union[int, float, str]] = None,  # pylint: disable=redefined-builtin
              axis: Union[None, tuple[int, ...], int] = None, keepdims: bool = False) -> jax.Array:
  """max(norm(x), min_norm), with a gradient that is finite even where norm(x) is 0."""
  norm = jnp.linalg.norm(x, ord=ord, axis=axis, keepdims=True)
  x = jnp.where(norm <= min_norm, jnp.ones_like(x), x)
  norm = norm if keepdims else jnp.squeeze(norm, axis=axis)
  masked = jnp.linalg.norm(x, ord=ord, axis=axis, keepdims=keepdims)
  return jnp.where(norm <= min_norm, min_norm, masked)


def safe_root_mean_squares(x: jax.typing.ArrayLike, min_rms: jax.typing.ArrayLike) -> jax.Array:
  """max(rms(x), min_rms), with a finite gradient at 0."""
  rms = jnp.sqrt(jnp.mean(abs_sq(x)))
  x = jnp.where(rms <= min_rms, jnp.ones_like(x), x)
  return jnp.where(rms <= min_rms, min_rms, jnp.sqrt(jnp.mean(abs_sq(x))))


def dtype_of(x) -> np.dtype:
  """The dtype of an array or scalar, read without converting it to a device array."""
  return x.dtype if hasattr(x, "dtype") else np.result_type(x)


def promote(*xs):
  """Casts the array arguments to the dtype standard promotion would give, explicitly.

  gradxform runs clean under `jax_numpy_dtype_promotion="strict"`, yet must give the same dtypes as
  optax (which relies on standard promotion) when state, updates and hyperparameters mix dtypes.
  Python scalars are returned as they are (they are weakly typed and never widen an array).
  """
  arrays = [x for x in xs if not isinstance(x, (bool, int, float, complex))]
  if arrays and not any(isinstance(x, complex) for x in xs):
    first = dtype_of(arrays[0])
    # Fast path (most calls): one dtype, inexact, so Python scalars cannot change it.
    if jnp.issubdtype(first, jnp.inexact) and all(dtype_of(x) == first for x in arrays[1:]):
      return xs
  with jax.numpy_dtype_promotion("standard"):
    dtype = jnp.result_type(*xs)
  return tuple(x if isinstance(x, (bool, int, float, complex)) or dtype_of(x) == dtype
               else jnp.asarray(x).astype(dtype) for x in xs)


def add(a, b):
  """a + b with the dtype standard promotion gives (explicitly, so strict mode stays clean)."""
  a, b = promote(a, b)
  return a + b


def sub(a, b):
  """a - b with the dtype standard promotion gives."""
  a, b = promote(a, b)
  return a - b


def mul(a, b):
  """a * b with the dtype standard promotion gives."""
  a, b = promote(a, b)
  return a * b


def div(a, b):
  """a / b with the dtype standard promotion gives."""
  a, b = promote(a, b)
  return a / b


def maximum(a, b):
  """Elementwise max(a, b) with the dtype standard promotion gives."""
  a, b = promote(a, b)
  return jnp.maximum(a, b)


def decay_power(decay: jax.typing.ArrayLike, count: jax.typing.ArrayLike) -> jax.Array:
  """decay ** count for an int32 step count, as `pow(float, int)` (the dtype standard promotion gives)."""
  with jax.numpy_dtype_promotion("standard"):
    return decay ** count


@functools.partial(jax.jit, inline=True)
def bias_correction_factor(decay: jax.typing.ArrayLike, count: jax.typing.ArrayLike) -> jax.Array:
  """1 - decay ** count, Adam's bias correction (Kingma & Ba, 2014, sec. 3).

  Always compiled (inlined under an outer jit): eager `pow` can differ from compiled `pow` in the last
  bit, and optax compiles this factor too, so eager results agree with optax to the bit.
  """
  return 1 - decay_power(decay, count)
