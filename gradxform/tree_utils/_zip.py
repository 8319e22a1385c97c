"""Walking several trees in step, and leaf arithmetic under standard dtype promotion.

The public tree functions follow `jax.tree.map`'s rules (the first tree fixes the structure, the others
must match it, `None` is an empty subtree unless a function treats it as a leaf) but report a mismatch
by its path, and compute in the dtype standard promotion gives, so they run under strict promotion.
"""

from __future__ import annotations

import functools
import operator
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp

from gradxform import _errors
from gradxform import _tree


class LeafMismatchError(_errors.TreeMismatchError, TypeError):
  """Two leaves that must pair up cannot: None against an array, or arrays of different shapes.

  Both a ValueError (a tree mismatch, as gradxform reports it) and a TypeError (what the leaf
  arithmetic raises in optax: `x + None`, a dot of different lengths), so handlers written for
  either catch it.
  """


def standard_promotion():
  """A context in which jax.numpy promotes dtypes by its standard rules, whatever the global setting.

  Optax's tree utilities are defined by standard promotion (a float32 leaf plus a bfloat16 leaf is
  float32; an int32 leaf against a Python float is a weakly typed float32). Leaf arithmetic here runs
  in this context so results carry exactly those dtypes and weak types, also when the caller has
  `jax_numpy_dtype_promotion="strict"` set; nothing else (no user callback) runs inside it.
  """
  return jax.numpy_dtype_promotion("standard")


def binary(op: Callable, a: Any, b: Any) -> Any:
  """`op(a, b)` with standard dtype promotion (NumPy arrays and Python scalars keep their own rules)."""
  with standard_promotion():
    return op(a, b)


add = functools.partial(binary, operator.add)
sub = functools.partial(binary, operator.sub)
mul = functools.partial(binary, operator.mul)
div = functools.partial(binary, operator.truediv)
maximum = functools.partial(binary, jnp.maximum)
minimum = functools.partial(binary, jnp.minimum)


def _describe(x: Any) -> str:
  if hasattr(x, "shape") and hasattr(x, "dtype"):
    return f"an array {x.dtype}{list(x.shape)}"
  return type(x).__name__


def zip_leaves(fn_name: str, trees: Sequence[Any], names: Sequence[str], *,
               none_is_leaf: bool = False) -> tuple[Any, list[tuple]]:
  """The treedef of `trees[0]` and, per leaf of it, the tuple of matching subtrees of all `trees`.

  Args:
    fn_name: the public function (named in error messages).
    trees: the trees; each must have the first one's structure (or have it as a prefix).
    names: argument names of the trees, for error messages.
    none_is_leaf: treat None in the first tree as a leaf (it then matches anything).

  Raises:
    TreeMismatchError: a tree's structure differs from the first's (names the first differing path).
  """
  first = trees[0]
  leaves, treedef = jax.tree_util.tree_flatten(first, is_leaf=_tree.is_none if none_is_leaf else None)
  columns = [leaves]
  for tree, name in zip(trees[1:], names[1:]):
    try:
      columns.append(_tree.leaves_matching(treedef, tree, names[0], first, name))
    except _errors.GradxformError as err:
      err.enter(fn_name)
      raise
  return treedef, list(zip(*columns))


def leaf_path(tree: Any, index: int, none_is_leaf: bool = False) -> tuple[str, Any]:
  """The readable path and the value of leaf `index` of `tree`."""
  with_path, _ = jax.tree_util.tree_flatten_with_path(tree, is_leaf=_tree.is_none if none_is_leaf else None)
  path, leaf = with_path[index]
  return jax.tree_util.keystr(path) or "the root", leaf


def raise_none_leaf(fn_name: str, tree: Any, index: int, name: str, other_name: str,
                    none_is_leaf: bool = False) -> None:
  """Raises LeafMismatchError for leaf `index` of `tree` (argument `name`), paired with a None in `other_name`."""
  where, leaf = leaf_path(tree, index, none_is_leaf)
  raise LeafMismatchError(f"{fn_name}: {other_name} has None at {where} where {name} has {_describe(leaf)}")


def map_binary(fn_name: str, op: Callable, tree_x: Any, tree_y: Any, names=("tree_x", "tree_y")) -> Any:
  """`op(x, y)` for each pair of leaves (None subtrees of tree_x stay None)."""
  treedef, rows = zip_leaves(fn_name, (tree_x, tree_y), names)
  out = []
  for i, (x, y) in enumerate(rows):
    if y is None:
      raise_none_leaf(fn_name, tree_x, i, names[0], names[1])
    out.append(op(x, y))
  return treedef.unflatten(out)


def reduce_leaves(op: Callable, values: Sequence[Any], initial: Any) -> Any:
  """`op(...op(op(initial, v0), v1)..., vn)`, the order `jax.tree.reduce` uses."""
  return functools.reduce(op, values, initial)
