"""Reductions of pytrees to one value: inner products, sums, extremes, norms, sizes, closeness.

Each leaf is reduced on its own and the per-leaf results are combined left to right from an initial
value (the order `jax.tree.reduce` uses), in the dtype standard promotion gives: a float32 leaf and a
bfloat16 leaf combine in float32. Nothing is raveled or concatenated across leaves.
"""

from __future__ import annotations

import functools
import operator
from typing import Any, Union

import jax
import jax.numpy as jnp

from gradxform import _errors
from gradxform import _tree
from gradxform.tree_utils import _zip

__all__ = ["tree_allclose", "tree_max", "tree_min", "tree_norm", "tree_size", "tree_sum", "tree_vdot"]

def _leaf_vdot(a: Any, b: Any) -> jax.Array:
  """sum(conj(a) * b) over all elements of two arrays, at the highest matmul precision."""
  with _zip.standard_promotion():
    return jnp.vdot(jnp.asarray(a), jnp.asarray(b), precision=jax.lax.Precision.HIGHEST)


def tree_vdot(tree_x: Any, tree_y: Any) -> jax.typing.ArrayLike:
  """The inner product of two pytrees: the sum over all leaves of sum(conj(x) * y).

  Computed at `jax.lax.Precision.HIGHEST`; each pair of leaves must have the same shape.

  Args:
    tree_x: the first tree (conjugated where complex).
    tree_y: a tree with the structure and leaf shapes of `tree_x`.

  Returns:
    A scalar in the promoted dtype of the leaves (the Python int 0 for trees without leaves).
  """
  treedef, rows = _zip.zip_leaves("tree_vdot", (tree_x, tree_y), ("tree_x", "tree_y"))
  del treedef
  products = []
  for i, (x, y) in enumerate(rows):
    if y is None:
      _zip.raise_none_leaf("tree_vdot", tree_x, i, "tree_x", "tree_y")
    if jnp.shape(x) != jnp.shape(y):
      path, _ = _zip.leaf_path(tree_x, i)
      raise _zip.LeafMismatchError(
          f"tree_vdot: tree_x and tree_y differ at {path}: shape {jnp.shape(x)} vs {jnp.shape(y)}")
    products.append(_leaf_vdot(x, y))
  return _zip.reduce_leaves(_zip.add, products, 0)


def tree_sum(tree: Any, associative_reduction: bool = False) -> jax.typing.ArrayLike:
  """The sum of all elements of all leaves of a pytree.

  Args:
    tree: a tree of arrays.
    associative_reduction: combine the per-leaf sums pairwise (`jax.tree.reduce_associative`), which
      traces faster for trees with many leaves but adds in a different order, so the last bits may differ.

  Returns:
    A scalar (the Python int 0 for a tree without leaves).
  """
  sums = jax.tree.map(jnp.sum, tree)
  if associative_reduction:
    if not hasattr(jax.tree, "reduce_associative"):
      raise _errors.HyperparameterError(
          "tree_sum: argument `associative_reduction=True` needs jax.tree.reduce_associative (JAX >= 0.6.0)")
    return jax.tree.reduce_associative(_zip.add, sums, identity=0)
  return jax.tree.reduce(_zip.add, sums, initializer=0)


def _extreme(tree: Any, leaf_fn, combine, initial: float) -> jax.typing.ArrayLike:
  values = [leaf_fn(x) for x in jax.tree.leaves(tree) if jnp.size(x) != 0]  # empty leaves have no extreme
  return _zip.reduce_leaves(combine, values, initial)


def tree_max(tree: Any) -> jax.typing.ArrayLike:
  """The largest element of all leaves of a pytree.

  Args:
    tree: a tree of arrays; empty leaves are skipped.

  Returns:
    A scalar; the Python float -inf when no leaf has an element.
  """
  return _extreme(tree, jnp.max, _zip.maximum, -float("inf"))


def tree_min(tree: Any) -> jax.typing.ArrayLike:
  """The smallest element of all leaves of a pytree.

  Args:
    tree: a tree of arrays; empty leaves are skipped.

  Returns:
    A scalar; the Python float inf when no leaf has an element.
  """
  return _extreme(tree, jnp.min, _zip.minimum, float("inf"))


def tree_size(tree: Any) -> int:
  """The number of elements in all leaves of a pytree.

  Args:
    tree: a tree of arrays (None leaves count for nothing).

  Returns:
    A Python int.
  """
  return sum(jnp.size(leaf) for leaf in jax.tree.leaves(tree))


def tree_norm(tree: Any, ord: Union[int, str, float, None] = None,  # pylint: disable=redefined-builtin
              squared: bool = False) -> jax.Array:
  """The vector norm of a pytree, as if all its leaves were concatenated into one vector.

  `ord=None` or 2: sqrt(sum |x|^2); `ord=1`: sum |x|; `ord=inf` (or "inf", "infinity"): max |x|.

  Args:
    tree: a tree of arrays (real or complex).
    ord: the order of the norm: None, 1, 2 or inf.
    squared: return the square of the norm (for ord 2, without taking the square root).

  Returns:
    A 0-d array.
  """
  if ord is None or ord == 2:
    sq_norm = _tree.squared_norm(tree) if jax.tree.leaves(tree) else 0
    return jnp.array(sq_norm if squared else jnp.sqrt(sq_norm))
  if ord == 1:
    norm = tree_sum(jax.tree.map(jnp.abs, tree))
  elif ord == jnp.inf or ord in ("inf", "infinity"):
    norm = tree_max(jax.tree.map(jnp.abs, tree))
  else:
    raise _errors.HyperparameterError(
        f"tree_norm: argument `ord` must be None, 1, 2 or inf ('inf', 'infinity'), got {ord!r}")
  return jnp.array(jnp.square(norm) if squared else norm)


def _leaf_allclose(a, b, rtol, atol, equal_nan):
  with _zip.standard_promotion():
    return jnp.allclose(a, b, rtol=rtol, atol=atol, equal_nan=equal_nan)


def tree_allclose(a: Any, b: Any, rtol: jax.typing.ArrayLike = 1e-05, atol: jax.typing.ArrayLike = 1e-08,
                  equal_nan: bool = False):
  """Whether two pytrees are elementwise equal within a tolerance: |a - b| <= atol + rtol |b| everywhere.

  Args:
    a: a tree.
    b: a tree with the structure of `a`.
    rtol: the relative tolerance.
    atol: the absolute tolerance.
    equal_nan: count NaNs in the same place as equal.

  Returns:
    A boolean 0-d array (the Python bool True for trees without leaves).
  """
  treedef, rows = _zip.zip_leaves("tree_allclose", (a, b), ("a", "b"))
  del treedef
  verdicts = []
  for i, (x, y) in enumerate(rows):
    if y is None:
      _zip.raise_none_leaf("tree_allclose", a, i, "a", "b")
    verdicts.append(_leaf_allclose(x, y, rtol, atol, equal_nan))
  return functools.reduce(operator.and_, verdicts, True)
