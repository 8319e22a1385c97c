"""Mixed precision: any transformation's arithmetic in float32 for bfloat16/float16 params and state.

`mixed_precision(inner)` widens the narrow floating leaves it hands to `inner.update` (updates, params,
state, floating extra arguments such as `value=` or `grad=`) to `compute_dtype`, and narrows what comes
back to the dtypes that came in. eps is then added, g^2 accumulated and divisions done in float32, while
params, updates and state stay in their own dtypes: the state's structure and dtypes never change.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gradxform import _base
from gradxform import _combine
from gradxform import _errors
from gradxform import _tree

__all__ = ["mixed_precision"]


def _is_narrow(x: Any, compute_dtype: np.dtype) -> bool:
  """A real floating array with fewer bits than `compute_dtype` (bfloat16 or float16 against float32)."""
  dtype = getattr(x, "dtype", None)
  if dtype is None or not isinstance(x, (jax.Array, np.ndarray, np.generic)):
    return False
  return jnp.issubdtype(dtype, jnp.floating) and jnp.finfo(dtype).bits < jnp.finfo(compute_dtype).bits


def _widen(tree: Any, compute_dtype: np.dtype) -> Any:
  """`tree` with its narrow floating leaves cast to `compute_dtype`; every other leaf (None, ints,
  complex, wide floats, functions) as it is."""
  return jax.tree.map(lambda x: x.astype(compute_dtype) if _is_narrow(x, compute_dtype) else x, tree,
                      is_leaf=_tree.is_none)


def _cast_back(new: Any, old: Any, what: str) -> Any:
  """Each leaf of `new` cast to the dtype of the matching leaf of `old` (None and dtype-less leaves kept)."""
  new_leaves, new_def = jax.tree.flatten(new, is_leaf=_tree.is_none)
  old_leaves, old_def = jax.tree.flatten(old, is_leaf=_tree.is_none)
  if new_def != old_def:
    raise _errors.StateMismatchError(
        f"mixed_precision: the inner transformation returned {what} with another structure than it was "
        f"given ({new_def} vs {old_def}), so their dtypes cannot be restored")

  def leaf(n, o):
    if n is None or o is None or not hasattr(n, "dtype") or not hasattr(o, "dtype") or n.dtype == o.dtype:
      return n
    return jnp.asarray(n).astype(o.dtype)

  return new_def.unflatten([leaf(n, o) for n, o in zip(new_leaves, old_leaves)])


def _mixed_init(params, *, inner, **_):
  return inner.init(params)


def _mixed_update(updates, state, params=None, *, inner, compute_dtype, **extra_args):
  wide_params = None if params is None else _widen(params, compute_dtype)
  wide_extra = {name: _widen(value, compute_dtype) for name, value in extra_args.items()}
  new_updates, new_state = inner.update(_widen(updates, compute_dtype), _widen(state, compute_dtype),
                                        wide_params, **wide_extra)
  return _cast_back(new_updates, updates, "updates"), _cast_back(new_state, state, "a state")


def _compute_dtype_arg(compute_dtype: Any) -> np.dtype:
  try:
    dtype = _tree.canonical_dtype(compute_dtype)
  except TypeError as err:
    raise _errors.HyperparameterTypeError(
        f"mixed_precision: argument `compute_dtype` must be a floating dtype, got {compute_dtype!r}") from err
  if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
    raise _errors.HyperparameterTypeError(
        f"mixed_precision: argument `compute_dtype` must be a floating dtype, got {dtype}")
  return dtype


def mixed_precision(inner: _base.GradientTransformation,
                    compute_dtype: Any = jnp.float32) -> _base.GradientTransformationExtraArgs:
  """Runs `inner` in `compute_dtype` for narrower floating leaves; updates and state keep their dtypes.

  Args:
    inner: any gradient transformation (gradxform's, optax's, or an (init, update) pair). Its `init` is
      used as it is, so state dtypes are those `inner` chooses (`mu_dtype`, `nu_dtype`…).
    compute_dtype: the floating dtype `inner.update` computes in (default float32). Floating leaves
      narrower than it (bfloat16, float16) in the updates, params, state and extra keyword arguments are
      cast up before the call; each returned update is cast back to its input's dtype and each state leaf
      to the dtype it came in with. Integer, complex and already-wide leaves, and None updates, pass as
      they are.

  Returns:
    A transformation with `inner`'s state, structure and dtypes unchanged by `update`; with float32
    params it is `inner` exactly.
  """
  inner = _combine._as_transformation(inner, "mixed_precision: argument `inner`")  # pylint: disable=protected-access
  return _base.transformation("mixed_precision", _mixed_init, _mixed_update, inner=inner,
                              compute_dtype=_compute_dtype_arg(compute_dtype))
