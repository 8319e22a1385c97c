"""Reading and changing the dtypes of pytree leaves."""

from __future__ import annotations

import functools
from typing import Optional, TypeVar

import jax
import jax.numpy as jnp

from gradxform import _base
from gradxform import _errors
from gradxform.tree_utils import _zip

__all__ = ["tree_cast", "tree_cast_like", "tree_dtype"]

T = TypeVar("T")

_HANDLERS = (None, "promote", "highest", "lowest")


class DtypeMismatchError(_errors.GradxformError, ValueError):
  """The leaves of a tree that must share one dtype (or ordered dtypes) do not."""


def tree_cast_like(tree: T, other_tree: _base.ArrayTree) -> T:
  """Casts each leaf of `tree` to the dtype of the matching leaf of `other_tree`.

  Args:
    tree: the tree to cast.
    other_tree: a tree with the structure of `tree`; where its leaf has no dtype (None, a Python
      number), the leaf of `tree` is left as it is.

  Returns:
    The cast tree.
  """
  treedef, rows = _zip.zip_leaves("tree_cast_like", (tree, other_tree), ("tree", "other_tree"))
  return treedef.unflatten([t.astype(o.dtype) if hasattr(o, "dtype") else t for t, o in rows])


def tree_cast(tree: _base.ArrayTree, dtype: Optional[jax.typing.DTypeLike]) -> _base.ArrayTree:
  """Casts every leaf of a pytree to `dtype`; returns the tree unchanged when `dtype` is None.

  Args:
    tree: a tree of arrays.
    dtype: the target dtype, or None.

  Returns:
    The cast tree.
  """
  if dtype is None:
    return tree
  return jax.tree.map(lambda t: t.astype(dtype), tree)


def _lower_dtype(a, b):
  """The one of `a`, `b` that promotes to the other; an error when neither does (int32 vs uint32)."""
  with jax.numpy_dtype_promotion("standard"):  # the ordering is standard promotion's lattice, by definition
    joined = jnp.promote_types(a, b)
  if joined == a:
    return b
  if joined == b:
    return a
  raise DtypeMismatchError(
      f"tree_dtype: cannot order dtypes {a} and {b}: neither promotes to the other, so the tree has no "
      "highest or lowest dtype; use mixed_dtype_handler='promote'")


def _higher_dtype(a, b):
  return b if _lower_dtype(a, b) == a else a


def _promote_dtypes(a, b):
  with jax.numpy_dtype_promotion("standard"):
    return jnp.promote_types(a, b)


def tree_dtype(tree: _base.ArrayTree, mixed_dtype_handler: Optional[str] = None) -> jax.typing.DTypeLike:
  """The dtype of the leaves of a pytree.

  Args:
    tree: a tree of arrays. A tree without leaves has JAX's default dtype (that of `jnp.asarray([])`).
    mixed_dtype_handler: what to do when the leaves have different dtypes: None raises an error;
      "promote" returns the dtype they promote to together (`jnp.promote_types`); "highest" / "lowest"
      the leaf dtype every other promotes to / that promotes to every other (an error if some pair of
      leaf dtypes is not ordered that way, such as int32 and uint32).

  Returns:
    A dtype.

  Raises:
    DtypeMismatchError (a ValueError): mixed dtypes with `mixed_dtype_handler=None`, or no highest or
      lowest dtype.
    HyperparameterError (a ValueError): an unknown `mixed_dtype_handler`.
  """
  leaves = jax.tree.leaves(tree)
  if not leaves:
    return jnp.asarray(leaves).dtype
  dtypes = [jnp.asarray(leaf).dtype for leaf in leaves]
  if mixed_dtype_handler is None:
    wrong = [(path, dtype) for (path, _), dtype in zip(jax.tree_util.tree_leaves_with_path(tree), dtypes)
             if dtype != dtypes[0]]
    if wrong:
      details = "; ".join(f"{jax.tree_util.keystr(path) or 'the root'} is {dtype}" for path, dtype in wrong)
      raise DtypeMismatchError(
          f"tree_dtype: the leaves have different dtypes (the first is {dtypes[0]}; {details}); pass "
          "mixed_dtype_handler='promote', 'highest' or 'lowest' to accept mixed dtypes")
    return dtypes[0]
  if mixed_dtype_handler == "promote":
    return functools.reduce(_promote_dtypes, dtypes)
  if mixed_dtype_handler == "highest":
    return functools.reduce(_higher_dtype, dtypes)
  if mixed_dtype_handler == "lowest":
    return functools.reduce(_lower_dtype, dtypes)
  raise _errors.HyperparameterError(
      f"tree_dtype: argument `mixed_dtype_handler` must be one of {_HANDLERS}, got {mixed_dtype_handler!r}")
