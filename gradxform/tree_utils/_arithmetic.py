"""Leafwise arithmetic on pytrees: sums, differences, products, scaling, selection, clipping.

Mixed-dtype trees (float32 with bfloat16) give the dtypes and weak types standard promotion gives,
whatever the global promotion setting (see `_zip.standard_promotion`); `None` subtrees stay None.
"""

from __future__ import annotations

from typing import Any, Optional

import jax
import jax.numpy as jnp

from gradxform import _numerics
from gradxform import _tree
from gradxform.tree_utils import _zip

__all__ = ["tree_add", "tree_add_scale", "tree_clip", "tree_conj", "tree_div", "tree_mul", "tree_real",
           "tree_scale", "tree_sub", "tree_update_moment_per_elem_norm", "tree_where"]


def tree_add(tree_x: Any, tree_y: Any, *other_trees: Any) -> Any:
  """Adds two or more pytrees leaf by leaf.

  Args:
    tree_x: the first tree; it fixes the structure.
    tree_y: a tree with the structure of `tree_x`.
    *other_trees: more trees with that structure, added too.

  Returns:
    The tree of sums `x + y + ...`.
  """
  trees = (tree_x, tree_y, *other_trees)
  names = ("tree_x", "tree_y", *(f"other_trees[{i}]" for i in range(len(other_trees))))
  treedef, rows = _zip.zip_leaves("tree_add", trees, names)
  out = []
  for i, row in enumerate(rows):
    for other, name in zip(row[1:], names[1:]):
      if other is None:
        _zip.raise_none_leaf("tree_add", tree_x, i, "tree_x", name)
    out.append(_zip.reduce_leaves(_zip.add, row, 0))
  return treedef.unflatten(out)


def tree_sub(tree_x: Any, tree_y: Any) -> Any:
  """Subtracts two pytrees leaf by leaf.

  Args:
    tree_x: the first tree; it fixes the structure.
    tree_y: a tree with the structure of `tree_x`.

  Returns:
    The tree of differences `x - y`.
  """
  return _zip.map_binary("tree_sub", _zip.sub, tree_x, tree_y)


def tree_mul(tree_x: Any, tree_y: Any) -> Any:
  """Multiplies two pytrees leaf by leaf (elementwise).

  Args:
    tree_x: the first tree; it fixes the structure.
    tree_y: a tree with the structure of `tree_x`.

  Returns:
    The tree of products `x * y`.
  """
  return _zip.map_binary("tree_mul", _zip.mul, tree_x, tree_y)


def tree_div(tree_x: Any, tree_y: Any) -> Any:
  """Divides two pytrees leaf by leaf (true division: integer leaves give floats).

  Args:
    tree_x: the numerators; this tree fixes the structure.
    tree_y: the denominators, a tree with the structure of `tree_x`.

  Returns:
    The tree of quotients `x / y`.
  """
  return _zip.map_binary("tree_div", _zip.div, tree_x, tree_y)


def tree_scale(scalar: jax.typing.ArrayLike, tree: Any) -> Any:
  """Multiplies every leaf of a pytree by a scalar.

  Args:
    scalar: the factor.
    tree: the tree to scale.

  Returns:
    The tree `scalar * tree`.
  """
  return jax.tree.map(lambda x: _zip.mul(scalar, x), tree)


def tree_add_scale(tree_x: Any, scalar: jax.typing.ArrayLike, tree_y: Any) -> Any:
  """Adds a scaled pytree to another: `tree_x + scalar * tree_y`, an axpy.

  Args:
    tree_x: the first tree; where it has None the result has None (whatever `tree_y` has there).
    scalar: the factor applied to `tree_y` (made a jax array first).
    tree_y: a tree with the structure of `tree_x`.

  Returns:
    The tree `tree_x + scalar * tree_y`.
  """
  scalar = jnp.asarray(scalar)
  treedef, rows = _zip.zip_leaves("tree_add_scale", (tree_x, tree_y), ("tree_x", "tree_y"), none_is_leaf=True)
  out = []
  for i, (x, y) in enumerate(rows):
    if x is not None and y is None:
      _zip.raise_none_leaf("tree_add_scale", tree_x, i, "tree_x", "tree_y", none_is_leaf=True)
    out.append(None if x is None else _zip.add(x, _zip.mul(scalar, y)))
  return treedef.unflatten(out)


def _where_leaf(condition, x, y):
  with _zip.standard_promotion():
    return jnp.where(condition, x, y)


def tree_where(condition: Any, tree_x: Any, tree_y: Any) -> Any:
  """Selects, elementwise, the leaves of `tree_x` where `condition` holds and those of `tree_y` elsewhere.

  Args:
    condition: a boolean (scalar or broadcastable array) applied to every leaf.
    tree_x: the values taken where `condition` is true.
    tree_y: the values taken elsewhere; a tree with the structure of `tree_x`.

  Returns:
    The tree of `jnp.where(condition, x, y)`.
  """
  return _zip.map_binary("tree_where", lambda x, y: _where_leaf(condition, x, y), tree_x, tree_y)


def _clip_leaf(g, min_value, max_value):
  with _zip.standard_promotion():
    return jnp.clip(g, min_value, max_value)


def tree_clip(tree: Any, min_value: Optional[jax.typing.ArrayLike] = None,
              max_value: Optional[jax.typing.ArrayLike] = None) -> Any:
  """Clips every leaf of a pytree to `[min_value, max_value]`.

  Args:
    tree: the tree to clip.
    min_value: the lower bound; None for none.
    max_value: the upper bound; None for none.

  Returns:
    The tree of `jnp.clip(x, min_value, max_value)`.
  """
  return jax.tree.map(lambda g: _clip_leaf(g, min_value, max_value), tree)


def tree_conj(tree: Any) -> Any:
  """The complex conjugate of every leaf of a pytree (real leaves are returned as they are).

  Args:
    tree: a tree of arrays.

  Returns:
    The tree of `jnp.conj(x)`.
  """
  return jax.tree.map(jnp.conj, tree)


def tree_real(tree: Any) -> Any:
  """The real part of every leaf of a pytree.

  Args:
    tree: a tree of arrays.

  Returns:
    The tree of `jnp.real(x)`.
  """
  return jax.tree.map(jnp.real, tree)


def _elementwise_norm_power(g, order):
  """|g|**order elementwise: g**order for real g, (|g|^2)**(order/2) for complex g."""
  if jnp.isrealobj(g):
    return g ** order
  half_order = order / 2
  if half_order.is_integer():
    half_order = int(half_order)  # an integer power lowers to repeated multiplication, a float one to pow
  return _numerics.abs_sq(g) ** half_order


def tree_update_moment_per_elem_norm(updates: Any, moments: Any, decay: jax.typing.ArrayLike,
                                     order: int) -> Any:
  """Moving average of the `order`-th power of each element's modulus: (1 - decay) |g|^order + decay m.

  For real updates this is `tree_update_moment`; for complex updates it averages |g|^order, a real
  quantity, instead of the complex power g^order.

  Args:
    updates: the new values g; a None leaf gives None.
    moments: the previous averages m, shaped like `updates`.
    decay: the weight of the previous average, in [0, 1].
    order: the power.

  Returns:
    The tree of new averages.
  """
  def leaf(g, m):
    with _zip.standard_promotion():
      return ((1 - decay) * _elementwise_norm_power(g, order) + decay * m,)

  new, _ = _tree.leafwise(leaf, updates, (), (moments,), extra_names=("moments",), check_shapes=False)
  return new
