"""Joining schedules one after another, and the dtype helpers the schedules share.

Schedules mix integer step counts with floating hyperparameters. Optax relies on standard dtype
promotion for that; gradxform runs under strict promotion, so every integer-meets-float spot converts
the integer side explicitly, to the dtype (and weak type) standard promotion would give, so values and
dtypes stay identical to optax's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from gradxform import _base
from gradxform import _errors

_PYTHON_SCALARS = (bool, int, float, complex)


concrete = _errors.concrete_number


def _is_floating(x: Any) -> bool:
  """True for a Python float or anything with an inexact dtype."""
  if isinstance(x, float):
    return True
  dtype = getattr(x, "dtype", None)
  return dtype is not None and jnp.issubdtype(dtype, jnp.inexact)


def _is_integral_array(x: Any) -> bool:
  """True for a JAX or NumPy value (not a Python scalar) with an integer or boolean dtype."""
  if isinstance(x, _PYTHON_SCALARS):
    return False
  dtype = getattr(x, "dtype", None)
  return dtype is not None and (jnp.issubdtype(dtype, jnp.integer) or jnp.issubdtype(dtype, jnp.bool_))


def as_float(x: Any) -> Any:
  """Integer or boolean `x` as a weakly typed float (what standard promotion does when it meets a float).

  Floats and Python scalars come back unchanged. The conversion is exact for |x| < 2**24 and rounds
  to nearest beyond, as an int32 -> float32 cast does.
  """
  if not _is_integral_array(x):
    return x
  with jax.numpy_dtype_promotion("standard"):  # the one deliberate promotion: int -> weak float
    return jnp.asarray(x) * 1.0


def align(a: Any, b: Any, *, for_jnp: bool = False) -> tuple[Any, Any]:
  """Converts the integer side of an integer/float pair to float, as standard promotion would.

  Python scalars are left alone (they are weakly typed, so strict promotion accepts them, and Python
  computes a pair of them, as in optax). A NumPy integer is converted only when the pair goes to a
  `jnp` function (`for_jnp`) or meets a JAX array; otherwise NumPy computes it, as in optax.
  """
  is_jax = lambda x: isinstance(x, (jax.Array, jax.core.Tracer))
  if _is_integral_array(a) and _is_floating(b) and (is_jax(a) or is_jax(b) or for_jnp):
    a = as_float(a)
  if _is_integral_array(b) and _is_floating(a) and (is_jax(a) or is_jax(b) or for_jnp):
    b = as_float(b)
  return a, b


def _join(step, *, schedules, boundaries):
  output = schedules[0](step)
  for boundary, schedule in zip(boundaries, schedules[1:]):
    step_, boundary_ = align(step, boundary)
    output = jnp.where(step_ < boundary_, output, schedule(step_ - boundary_))
  return output


def join_schedules(schedules: Sequence[Callable], boundaries: Sequence[int]) -> _base.Bound:
  """Runs schedules one after another, each restarted from 0 at its boundary.

  Args:
    schedules: the schedules, in order (at least one).
    boundaries: the steps at which to switch to the next schedule, non-decreasing, one fewer than
      `schedules`.

  Returns:
    A schedule: `schedules[i](count - boundaries[i - 1])` for `boundaries[i - 1] <= count < boundaries[i]`
    (with `boundaries[-1] = 0` and `boundaries[len] = inf`).
  """
  fn = "join_schedules"
  if isinstance(schedules, (str, bytes)) or not isinstance(schedules, Sequence):
    raise _errors.HyperparameterTypeError(
        f"{fn}: argument `schedules` must be a sequence of schedules, got {type(schedules).__name__}")
  if isinstance(boundaries, (str, bytes)) or not isinstance(boundaries, Sequence):
    raise _errors.HyperparameterTypeError(
        f"{fn}: argument `boundaries` must be a sequence of step counts, got {type(boundaries).__name__}")
  schedules, boundaries = tuple(schedules), tuple(boundaries)
  if not schedules:
    raise _errors.HyperparameterError(f"{fn}: argument `schedules` must hold at least one schedule, got none")
  for i, schedule in enumerate(schedules):
    if not callable(schedule):
      raise _errors.HyperparameterTypeError(
          f"{fn}: argument `schedules[{i}]` must be a schedule (a callable), got {type(schedule).__name__}")
  if len(boundaries) != len(schedules) - 1:
    raise _errors.HyperparameterError(
        f"{fn}: argument `boundaries` must hold one fewer entry than `schedules` "
        f"({len(schedules) - 1}), got {len(boundaries)}")
  for i, boundary in enumerate(boundaries):
    _errors.check_number(fn, f"boundaries[{i}]", boundary)
  values = [concrete(b) for b in boundaries]
  for i in range(1, len(values)):
    if values[i - 1] is not None and values[i] is not None and values[i] < values[i - 1]:
      raise _errors.HyperparameterError(
          f"{fn}: argument `boundaries` must be non-decreasing, got {boundaries[i - 1]!r} "
          f"before {boundaries[i]!r}")
  return _base.Bound(_join, None, schedules=schedules, boundaries=boundaries)
