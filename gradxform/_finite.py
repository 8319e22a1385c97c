"""Guards against non-finite updates: skip a step that has them (apply_if_finite), or zero the NaNs."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradxform import _base
from gradxform import _combine
from gradxform import _conditional
from gradxform import _errors
from gradxform import _numerics
from gradxform import _tree

__all__ = ["ApplyIfFiniteState", "ZeroNansState", "apply_if_finite", "zero_nans"]


class ApplyIfFiniteState(NamedTuple):
  """State of `apply_if_finite`.

  Attributes:
    notfinite_count: consecutive updates with an inf or NaN so far (0 after a finite one).
    last_finite: whether the last update was all finite.
    total_notfinite: updates with an inf or NaN since init (never reset).
    inner_state: the inner transformation's state.
  """
  notfinite_count: Any
  last_finite: Any
  total_notfinite: Any
  inner_state: Any


def _all_finite(updates: Any) -> jax.Array:
  """A bool scalar: every element of every leaf is finite (True for an empty tree)."""
  result = jnp.array(True)
  for leaf in jax.tree.leaves(updates):
    result = jnp.logical_and(result, jnp.all(jnp.isfinite(leaf)))
  return result


def _apply_if_finite_init(params, *, inner, **_):
  return ApplyIfFiniteState(notfinite_count=jnp.zeros([], jnp.int32), last_finite=jnp.array(True, jnp.bool_),
                            total_notfinite=jnp.zeros([], jnp.int32), inner_state=inner.init(params))


def _update_dtypes(inner, updates, inner_state, params, extra_args) -> tuple:
  """The dtypes of the updates `inner.update` returns, leaf by leaf (None for None leaves); trace only."""
  static = {k: v for k, v in extra_args.items() if not isinstance(v, jax.Array)}
  dynamic = {k: v for k, v in extra_args.items() if isinstance(v, jax.Array)}
  out = jax.eval_shape(lambda u, s, p, d: inner.update(u, s, p, **static, **d)[0], updates, inner_state, params,
                       dynamic)
  return tuple(None if o is None else o.dtype for o in _tree.flatten(out)[0])


def _zeros_in(updates, *, dtypes):
  """Zeros shaped like `updates`, leaf i in dtypes[i]; None leaves stay None."""
  leaves, treedef = _tree.flatten(updates)
  return treedef.unflatten([None if g is None else jnp.zeros_like(g, dtype=d) for g, d in zip(leaves, dtypes)])


def _apply_if_finite_update(updates, state, params=None, *, inner, max_consecutive_errors, **extra_args):
  _errors.expect_state(state, (ApplyIfFiniteState,), "apply_if_finite")
  finite = _all_finite(updates)
  notfinite_count = jnp.where(finite, jnp.zeros([], jnp.int32), _numerics.safe_increment(state.notfinite_count))
  count, limit = _numerics.promote(notfinite_count, max_consecutive_errors)
  # After more than max_consecutive_errors bad steps in a row, give up and let the update through.
  accept = jnp.logical_or(finite, count > limit)

  def run_if(reject):
    return _conditional._run_if(  # pylint: disable=protected-access
        accept, inner, reject, updates, state.inner_state, params, extra_args)

  try:
    new_updates, inner_state = run_if(_tree.zeros_like)
  except TypeError as err:
    if isinstance(err, _errors.GradxformError):
      raise
    # lax.cond needs both branches to agree: an inner that changes an update's dtype (polyak_sgd turns
    # bfloat16 into float32, as in optax, where apply_if_finite fails here) is skipped with zeros of the
    # dtypes it returns. The extra trace happens on this path only, and never reaches the compiled step.
    dtypes = _update_dtypes(inner, updates, state.inner_state, params, extra_args)
    if dtypes == tuple(None if g is None else _numerics.dtype_of(g) for g in _tree.flatten(updates)[0]):
      raise
    new_updates, inner_state = run_if(_base.Bound(_zeros_in, None, dtypes=dtypes))
  total = jnp.where(finite, state.total_notfinite, _numerics.safe_increment(state.total_notfinite))
  return new_updates, ApplyIfFiniteState(notfinite_count=notfinite_count, last_finite=finite,
                                         total_notfinite=total, inner_state=inner_state)


def apply_if_finite(inner: _base.GradientTransformation,
                    max_consecutive_errors: int) -> _base.GradientTransformation:
  """Skips steps whose updates contain an inf or NaN (zero updates, inner state kept), up to a limit.

  After `max_consecutive_errors` skipped steps in a row, the next non-finite update is applied anyway.

  Args:
    inner: the transformation to guard.
    max_consecutive_errors: how many consecutive non-finite updates to skip before giving up.

  Returns:
    A GradientTransformationExtraArgs with an ApplyIfFiniteState.
  """
  inner = _combine._as_transformation(inner, "apply_if_finite: argument `inner`")  # pylint: disable=protected-access
  _errors.check_nonnegative("apply_if_finite", "max_consecutive_errors", max_consecutive_errors)
  return _base.transformation("apply_if_finite", _apply_if_finite_init, _apply_if_finite_update, inner=inner,
                              max_consecutive_errors=max_consecutive_errors)


class ZeroNansState(NamedTuple):
  """State of `zero_nans`: per leaf, a bool scalar saying whether the last update had a NaN there."""
  found_nan: Any


def _zero_nans_init(params, **_):
  return ZeroNansState(found_nan=jax.tree.map(lambda _: jnp.array(False, dtype=jnp.bool_), params))


def _zero_nan_leaf(g):
  return jnp.where(jnp.isnan(g), jnp.zeros_like(g), g)


def _zero_nans_update(updates, state, params=None, **extra_args):
  del params, extra_args
  _errors.expect_state(state, (ZeroNansState,), "zero_nans")
  found_nan = _tree.map_updates(lambda g: jnp.any(jnp.isnan(g)), updates)
  return _tree.map_updates(_zero_nan_leaf, updates), ZeroNansState(found_nan=found_nan)


def zero_nans() -> _base.GradientTransformation:
  """Replaces NaNs in the updates with zeros (infinities are kept).

  The state records, per leaf, whether a NaN was found in the last update; it is not read back.

  Returns:
    A GradientTransformationExtraArgs with a ZeroNansState.
  """
  return _base.transformation("zero_nans", _zero_nans_init, _zero_nans_update)
