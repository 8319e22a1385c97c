"""Input checks shared by the losses: they name the loss, the argument and the shapes at fault.

Every check reads only static information (shapes, dtypes, Python arguments), so it runs once at
trace time, costs nothing in a compiled step, and replaces JAX's deep broadcasting or gather errors
with a message that says which argument of which loss is wrong.
"""

from __future__ import annotations

import operator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gradxform import _errors

__all__: list[str] = []


class LossShapeError(_errors.GradxformError, ValueError):
  """Loss inputs whose shapes cannot work together (mismatched, wrong rank, bad axis)."""


class LossDtypeError(_errors.GradxformError, TypeError):
  """A loss input whose dtype the loss cannot use (integer logits, float class labels)."""


class LossArgumentError(_errors.GradxformError, ValueError):
  """A static option of a loss (a reduction name, an axis type, a class id) that cannot work."""


def shape_of(x: Any) -> tuple[int, ...]:
  """The shape of an array or Python scalar, without moving it to a device."""
  return tuple(x.shape) if hasattr(x, "shape") else np.shape(x)


def dtype_of(x: Any) -> np.dtype:
  """The dtype JAX gives `x` (Python scalars get JAX's default dtypes)."""
  return jax.dtypes.result_type(x)


def standard_dtype(*xs: Any) -> np.dtype:
  """The dtype standard promotion gives `xs` (what optax's implicit promotion produces)."""
  with jax.numpy_dtype_promotion("standard"):
    return jnp.result_type(*xs)


def describe(x: Any) -> str:
  """`float32[4, 5]`: dtype and shape, as the messages show an input."""
  return f"{dtype_of(x)}{list(shape_of(x))}"


def floating(fn: str, name: str, x: Any) -> None:
  """Raises LossDtypeError unless `x` has a floating-point dtype."""
  if not jnp.issubdtype(dtype_of(x), jnp.floating):
    raise LossDtypeError(f"{fn}: `{name}` must have a floating-point dtype, got {describe(x)}")


def integer(fn: str, name: str, x: Any) -> None:
  """Raises LossDtypeError unless `x` has an integer dtype (class indices)."""
  if not jnp.issubdtype(dtype_of(x), jnp.integer):
    raise LossDtypeError(f"{fn}: `{name}` must hold integer class indices, got {describe(x)}")


def same_shape(fn: str, name_a: str, a: Any, name_b: str, b: Any) -> None:
  """Raises LossShapeError unless `a` and `b` have exactly the same shape."""
  if shape_of(a) != shape_of(b):
    raise LossShapeError(
        f"{fn}: `{name_a}` and `{name_b}` must have the same shape, got {describe(a)} and {describe(b)}")


def broadcastable(fn: str, **named: Any) -> tuple[int, ...]:
  """Returns the broadcast shape of the named inputs (None ones skipped); raises LossShapeError if none."""
  present = {k: v for k, v in named.items() if v is not None}
  try:
    return np.broadcast_shapes(*(shape_of(v) for v in present.values()))
  except ValueError:
    listed = ", ".join(f"`{k}` {describe(v)}" for k, v in present.items())
    raise LossShapeError(f"{fn}: {listed} do not broadcast together") from None


def shapes_broadcast(*shapes: tuple[int, ...]) -> bool:
  """True when the shapes broadcast together."""
  try:
    np.broadcast_shapes(*shapes)
  except ValueError:
    return False
  return True


def rank(fn: str, name: str, x: Any, expected: int, meaning: str = "") -> None:
  """Raises LossShapeError unless `x` has rank `expected`."""
  if len(shape_of(x)) != expected:
    detail = f" ({meaning})" if meaning else ""
    raise LossShapeError(f"{fn}: `{name}` must have rank {expected}{detail}, got {describe(x)}")


def axes(fn: str, axis: Any, ndim: int, name: str = "axis") -> tuple[int, ...] | None:
  """`axis` (int, tuple of ints, or None for all) as non-negative axes; raises LossArgumentError if out of range."""
  if axis is None:
    return None
  many = isinstance(axis, (tuple, list))
  try:
    given = [operator.index(a) for a in axis] if many else [operator.index(axis)]
  except TypeError:
    raise LossArgumentError(
        f"{fn}: `{name}` must be an int, a tuple of ints or None, got {type(axis).__name__} {axis!r}") from None
  for a in given:
    if not -ndim <= a < ndim:
      raise LossArgumentError(f"{fn}: `{name}`={axis!r} is out of range for an input of rank {ndim}")
  out = tuple(a % ndim for a in given)
  if len(set(out)) != len(out):
    raise LossArgumentError(f"{fn}: `{name}`={axis!r} names an axis twice")
  return out
