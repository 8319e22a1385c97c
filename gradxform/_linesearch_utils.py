"""Private helpers shared by L-BFGS and the line searches: tree algebra, scalar algebra, argument plumbing.

The tree helpers work leaf by leaf (a dot product is a per-leaf product summed over leaves, never a
concatenation of the whole tree) and give the dtypes standard promotion would give, written explicitly so that
strict promotion stays clean. Leaves are visited as `jax.tree.map` visits them: a None leaf is an empty
subtree and must be None in every tree at once.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

import jax
import jax.numpy as jnp

from gradxform import _errors
from gradxform import _numerics


# ----------------------------------------------------------------------------------------------
# Scalars (and same-shaped arrays) under explicit standard promotion.


def minimum(a, b):
  a, b = _numerics.promote(a, b)
  return jnp.minimum(a, b)


def select(condition, a, b):
  """jnp.where(condition, a, b) in the dtype standard promotion gives."""
  a, b = _numerics.promote(a, b)
  return jnp.where(condition, a, b)


def less(a, b):
  a, b = _numerics.promote(a, b)
  return a < b


def greater_equal(a, b):
  a, b = _numerics.promote(a, b)
  return a >= b


def infinite_if_nan(x):
  """+inf where x is NaN: a criterion that cannot be evaluated counts as violated."""
  return jnp.where(jnp.isnan(x), jnp.inf, x)


# ----------------------------------------------------------------------------------------------
# Trees.


def _leaf_vdot(a, b):
  # jnp.vdot (conj(a) . b, reshaping each leaf to a vector) rounds exactly as optax 0.2.8 does under
  # jax 0.10; a multi-axis tensordot sums in another order once compiled.
  a, b = _numerics.promote(jnp.asarray(a), jnp.asarray(b))
  return jnp.vdot(a, b, precision=jax.lax.Precision.HIGHEST)


def vdot(x: Any, y: Any) -> jax.Array:
  """sum over leaves of <conj(x_leaf), y_leaf>, accumulated left to right from 0."""
  total = 0
  for part in jax.tree.leaves(jax.tree.map(_leaf_vdot, x, y)):
    total = _numerics.add(total, part)
  return total


def real_vdot(x: Any, y: Any) -> jax.Array:
  """The real part of `vdot(x, y)`."""
  return jnp.real(vdot(x, y))


def add_scale(x: Any, scalar: Any, y: Any) -> Any:
  """x + scalar * y, leaf by leaf."""
  scalar = jnp.asarray(scalar)
  return jax.tree.map(lambda a, b: _numerics.add(a, _numerics.mul(scalar, b)), x, y)


def scale(scalar: Any, x: Any) -> Any:
  """scalar * x, leaf by leaf."""
  return jax.tree.map(lambda a: _numerics.mul(scalar, a), x)


def sub(x: Any, y: Any) -> Any:
  """x - y, leaf by leaf."""
  return jax.tree.map(_numerics.sub, x, y)


def where(condition: Any, x: Any, y: Any) -> Any:
  """Leaf by leaf, x where `condition` (a scalar) holds, else y."""
  return jax.tree.map(lambda a, b: select(condition, a, b), x, y)


def cast_like(x: Any, like: Any) -> Any:
  """Every leaf of `x` cast to the dtype of the matching leaf of `like` (leaves without a dtype: as is)."""
  return jax.tree.map(lambda a, b: jnp.asarray(a).astype(b.dtype) if hasattr(b, "dtype") else a, x, like)


def value_dtype(params: Any) -> Any:
  """The real dtype of the first leaf of `params`: the dtype of a line search's scalars."""
  leaves = jax.tree.leaves(params)
  if not leaves:
    raise _errors.TreeMismatchError("the params tree has no leaves: a line search needs at least one array")
  return jnp.real(jnp.empty((), jnp.asarray(leaves[0]).dtype)).dtype


# ----------------------------------------------------------------------------------------------
# Extra keyword arguments.


def require_extra_args(fn: str, **args: Any) -> None:
  """Raises MissingArgumentError naming the first of `args` (value, grad, value_fn…) that is None."""
  for name, value in args.items():
    if value is None:
      raise _errors.MissingArgumentError(
          f"{fn} needs the keyword argument `{name}`: call `update(updates, state, params, value=..., "
          "grad=..., value_fn=...)` with the objective's value and gradient at params and the objective "
          "itself (in a chain, pass them to the chain's update; inside an optax combinator such as "
          "optax.chain, pass the transformation as optax.GradientTransformationExtraArgs(*tx), since "
          "optax forwards keyword arguments only to its own class)")


def value_fn_kwargs(value_fn: Callable[..., Any], extra_args: dict) -> dict:
  """The extra keyword arguments whose names are parameters of `value_fn` (its data, say); others are dropped."""
  try:
    names = inspect.signature(value_fn).parameters
  except (TypeError, ValueError):  # a builtin or C function without a readable signature
    return {}
  return {k: v for k, v in extra_args.items() if k in names}


# ----------------------------------------------------------------------------------------------
# Looking up a field anywhere in an optimizer state.


def _is_named_tuple(x: Any) -> bool:
  return isinstance(x, tuple) and hasattr(x, "_fields")


def _children(node: Any) -> list:
  kids, treedef = jax.tree_util.tree_flatten(node, is_leaf=lambda x: x is not node)
  return [] if jax.tree_util.treedef_is_leaf(treedef) else kids


def find_all(tree: Any, key: str) -> list:
  """Every value stored under `key` in `tree`: a NamedTuple field or a dict key (a NamedTuple *named* `key`
  counts as the value itself); matches nested inside a match are found too."""
  found = []

  def visit(node):
    if node is None:
      return
    if _is_named_tuple(node):
      if type(node).__name__ == key:
        found.append(node)
      elif key in node._fields:
        found.append(getattr(node, key))
      for field in node._fields:
        visit(getattr(node, field))
    elif isinstance(node, dict):
      if key in node:
        found.append(node[key])
      for child in node.values():
        visit(child)
    else:
      for child in _children(node):
        visit(child)

  visit(tree)
  return found
