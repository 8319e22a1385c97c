"""Random pytrees: one PRNG key per leaf, and samples shaped like a given tree."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Optional, Union

import jax

from gradxform import _base

__all__ = ["tree_random_like", "tree_split_key_like", "tree_unwrap_random_key_data"]

PRNGKey = jax.Array
Shape = tuple[int, ...]


def tree_split_key_like(rng_key: PRNGKey, target_tree: _base.ArrayTree) -> _base.ArrayTree:
  """Splits a PRNG key into one key per leaf of `target_tree`, in leaf order.

  Args:
    rng_key: the key to split (`jax.random.split(rng_key, number_of_leaves)`).
    target_tree: the tree whose structure the result has.

  Returns:
    A tree of keys with the structure of `target_tree`.
  """
  treedef = jax.tree.structure(target_tree)
  return jax.tree.unflatten(treedef, jax.random.split(rng_key, treedef.num_leaves))


def tree_random_like(
    rng_key: PRNGKey,
    target_tree: _base.ArrayTree,
    sampler: Union[Callable[[PRNGKey, Shape, jax.typing.DTypeLike], jax.typing.ArrayLike],
                   Callable[[PRNGKey, Shape, jax.typing.DTypeLike, jax.sharding.Sharding],
                            jax.typing.ArrayLike]] = jax.random.normal,
    dtype: Optional[jax.typing.DTypeLike] = None,
) -> _base.ArrayTree:
  """A random tree shaped like `target_tree`: each leaf drawn by `sampler` with its own key.

  The keys are `tree_split_key_like(rng_key, target_tree)`, so the result is reproducible per leaf.

  Args:
    rng_key: the PRNG key.
    target_tree: a tree of arrays giving the structure, shapes and (unless `dtype` is set) dtypes.
    sampler: `sampler(key, shape, dtype)` returning an array, such as `jax.random.normal` (the default)
      or `jax.random.uniform`; if it accepts `out_sharding`, each sample gets its leaf's sharding.
    dtype: the dtype of every sample; None (or another falsy value) uses each leaf's dtype. Samplers
      limit the dtypes they accept (`jax.random.rademacher` wants integers).

  Returns:
    A tree with the structure of `target_tree` whose leaves are samples.
  """
  keys = tree_split_key_like(rng_key, target_tree)
  with_sharding = "out_sharding" in inspect.signature(sampler).parameters

  def sample(leaf, key):
    leaf_dtype = dtype or leaf.dtype
    if with_sharding:
      return sampler(key, leaf.shape, leaf_dtype, out_sharding=jax.typeof(leaf).sharding)
    return sampler(key, leaf.shape, leaf_dtype)

  return jax.tree.map(sample, target_tree, keys)


def _unwrap_key(x):
  if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
    return jax.random.key_data(x)
  return x


def tree_unwrap_random_key_data(input_tree: _base.ArrayTree) -> _base.ArrayTree:
  """Replaces the typed PRNG keys (`jax.random.key`) in a tree by their raw uint32 data.

  Typed keys cannot be compared numerically; their data can.

  Args:
    input_tree: a tree of arrays and keys.

  Returns:
    The tree with every typed key replaced by `jax.random.key_data(key)`.
  """
  return jax.tree.map(_unwrap_key, input_tree)
