"""Running a real-valued transformation on complex parameters by splitting them into (real, imaginary).

Some optimizers (or their analyses) assume real parameters. Wrapping one in `split_real_and_imaginary`
lets it see every complex leaf as a pair of real arrays; the updates it returns are recombined.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradxform import _base
from gradxform import _errors
from gradxform import _numerics

__all__ = ["SplitRealAndImaginaryState", "split_real_and_imaginary"]


class SplitRealAndImaginaryArrays(NamedTuple):
  """A complex leaf as two real arrays, the form the inner transformation sees."""
  real: jax.typing.ArrayLike
  imaginary: jax.typing.ArrayLike


class SplitRealAndImaginaryState(NamedTuple):
  """State of `split_real_and_imaginary`: the inner transformation's state (over the split tree)."""
  inner_state: _base.OptState


def _split(x: Any) -> Any:
  return SplitRealAndImaginaryArrays(x.real, x.imag) if jnp.iscomplexobj(x) else x


def _is_pair(x: Any) -> bool:
  return isinstance(x, SplitRealAndImaginaryArrays)


def _join(x: Any) -> Any:
  if not _is_pair(x):
    return x
  imaginary = _numerics.mul(x.imaginary, 1j)  # a complex scalar: the weak complex type standard rules give
  return _numerics.add(x.real, imaginary)


def _split_init(params, *, inner, **_):
  return SplitRealAndImaginaryState(inner.init(jax.tree.map(_split, params)))


def _split_update(updates, state, params=None, *, inner, **extra_args):
  del extra_args  # the inner update is called as optax calls it: without extra arguments
  _errors.expect_state(state, (SplitRealAndImaginaryState,), "split_real_and_imaginary")
  new_updates, inner_state = inner.update(jax.tree.map(_split, updates), state.inner_state,
                                          jax.tree.map(_split, params))
  return jax.tree.map(_join, new_updates, is_leaf=_is_pair), SplitRealAndImaginaryState(inner_state)


def split_real_and_imaginary(inner: _base.GradientTransformation) -> _base.GradientTransformationExtraArgs:
  """Runs `inner` on complex leaves split into (real, imaginary) pairs; real leaves pass as they are.

  The inner state holds SplitRealAndImaginaryArrays pairs where the params are complex; the returned
  updates are complex again (real + 1j * imaginary).

  Args:
    inner: the transformation to run on the real-valued view.

  Returns:
    The transformation; its state is a SplitRealAndImaginaryState.
  """
  if not (callable(getattr(inner, "init", None)) and callable(getattr(inner, "update", None))):
    raise _errors.HyperparameterTypeError(
        f"split_real_and_imaginary: argument `inner` must be a gradient transformation (with init and update), "
        f"got {type(inner).__name__}")
  return _base.transformation("split_real_and_imaginary", _split_init, _split_update, inner=inner)
