"""New pytrees shaped like a given one: filled with zeros, ones or a value, or broadcast to a batch."""

from __future__ import annotations

from typing import Any, Optional

import jax
import jax.numpy as jnp


__all__ = ["tree_batch_shape", "tree_full_like", "tree_ones_like", "tree_zeros_like"]


def tree_zeros_like(tree: Any, dtype: Optional[jax.typing.DTypeLike] = None) -> Any:
  """A pytree of zeros with the structure, leaf shapes and (unless `dtype` is given) dtypes of `tree`.

  Args:
    tree: the tree to copy the shape of (arrays, scalars or `jax.ShapeDtypeStruct`s).
    dtype: the dtype of every leaf of the result; None keeps each leaf's dtype.

  Returns:
    The tree of zeros.
  """
  return jax.tree.map(lambda x: jnp.zeros_like(x, dtype=dtype), tree)


def tree_ones_like(tree: Any, dtype: Optional[jax.typing.DTypeLike] = None) -> Any:
  """A pytree of ones with the structure, leaf shapes and (unless `dtype` is given) dtypes of `tree`.

  Args:
    tree: the tree to copy the shape of.
    dtype: the dtype of every leaf of the result; None keeps each leaf's dtype.

  Returns:
    The tree of ones.
  """
  return jax.tree.map(lambda x: jnp.ones_like(x, dtype=dtype), tree)


def tree_full_like(tree: Any, fill_value: jax.typing.ArrayLike,
                   dtype: Optional[jax.typing.DTypeLike] = None) -> Any:
  """A pytree with the structure and leaf shapes of `tree`, every element set to `fill_value`.

  Args:
    tree: the tree to copy the shape of.
    fill_value: the value (a scalar, or an array broadcastable to each leaf), cast to each leaf's dtype.
    dtype: the dtype of every leaf of the result; None keeps each leaf's dtype.

  Returns:
    The filled tree.
  """
  return jax.tree.map(lambda x: jnp.full_like(x, fill_value, dtype=dtype), tree)


def tree_batch_shape(tree: Any, shape: tuple[int, ...] = ()):
  """Broadcasts every leaf of a pytree to leading batch dimensions `shape`: (*leaf.shape) -> (*shape, *leaf.shape).

  Args:
    tree: a tree of arrays.
    shape: the batch dimensions to put in front.

  Returns:
    The tree of broadcast leaves.
  """
  return jax.tree.map(lambda x: jnp.broadcast_to(x, (*shape, *jnp.shape(x))), tree)
