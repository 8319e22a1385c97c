"""The one place for tree math and tree walking.

Transformations write their arithmetic for ONE leaf (arrays and scalars in, arrays out) and call
`leafwise` to run it over the tree. `leafwise` checks structures and shapes once, at trace time, and
names the leaf path on a mismatch; `None` update leaves pass through with their state unchanged.
Norms are computed per leaf and summed: never a global ravel or concatenation.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from gradxform import _errors
from gradxform import _numerics


def is_none(x: Any) -> bool:
  return x is None


def flatten(tree: Any):
  """Leaves (None counted as a leaf) and treedef of `tree`."""
  return jax.tree_util.tree_flatten(tree, is_leaf=is_none)


def leaf_paths(tree: Any) -> list[str]:
  """Readable paths (`['encoder']['w']`) of the leaves of `tree`, None leaves included, in leaf order."""
  with_path, _ = jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_none)
  return [jax.tree_util.keystr(path) or "the root" for path, _ in with_path]


def _key_name(entry: Any) -> str:
  for attribute in ("key", "name", "idx"):
    if hasattr(entry, attribute):
      return str(getattr(entry, attribute))
  return str(entry)


def slash_path(path: Sequence[Any]) -> str:
  """A jax key path as a `/`-joined string of plain names: `0/mu/encoder/w` (dict keys, attribute
  names and sequence indices, without brackets or quotes)."""
  return "/".join(_key_name(entry) for entry in path)


def leaves_with_slash_paths(tree: Any, is_leaf: Optional[Callable[[Any], bool]] = None) -> list[tuple[str, Any]]:
  """(slash path, leaf) pairs of `tree` in leaf order; None leaves are skipped (they hold nothing)."""
  with_path, _ = jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_leaf)
  return [(slash_path(path), leaf) for path, leaf in with_path]


def leaves_matching(treedef, tree: Any, ref_name: str, ref_tree: Any, name: str) -> list:
  """The leaves of `tree` flattened up to `treedef`; a clear error naming the first difference if it fails."""
  try:
    return treedef.flatten_up_to(tree)
  except (ValueError, TypeError):
    _errors.raise_tree_mismatch(ref_name, ref_tree, name, tree)
    raise  # unreachable: raise_tree_mismatch always raises


def check_same_structure(a: Any, b: Any, name_a: str, name_b: str) -> None:
  """Raises a TreeMismatchError naming the first differing path if `a` and `b` differ in structure."""
  if jax.tree_util.tree_structure(a, is_leaf=is_none) != jax.tree_util.tree_structure(b, is_leaf=is_none):
    _errors.raise_tree_mismatch(name_a, a, name_b, b)


def _shape(x: Any) -> tuple:
  return tuple(np.shape(x))


def _is_inexact(x: Any) -> bool:
  return isinstance(x, (float, complex)) or jnp.issubdtype(_numerics.dtype_of(x), jnp.inexact)


def check_inexact(updates: Any, g_leaves: list) -> None:
  """Raises LeafTypeError naming the first integer/bool update leaf (a trace-time check on dtypes)."""
  for i, g in enumerate(g_leaves):
    if g is not None and not _is_inexact(g):
      _errors.raise_leaf_dtype(leaf_paths(updates)[i], _numerics.dtype_of(g))


def leafwise(fn: Callable, updates: Any, states: Sequence[Any] = (), extras: Sequence[Any] = (), *,
             state_names: Sequence[str] = (), extra_names: Sequence[str] = (),
             check_shapes: bool = True) -> tuple[Any, tuple]:
  """Runs `fn(g, *state_leaves, *extra_leaves) -> (new_g, *new_state_leaves)` over every leaf.

  Args:
    fn: per-leaf arithmetic; it never sees a None update.
    updates: the update tree; it fixes the structure.
    states: state trees shaped like the updates (moments); one new tree each is returned.
    extras: read-only trees shaped like the updates (params).
    state_names, extra_names: names for error messages (e.g. "state.mu", "params").
    check_shapes: require each state/extra leaf to have the update leaf's shape.

  Returns:
    (new_updates, tuple_of_new_state_trees). Where an update leaf is None, the new update is None and
    the state leaves are returned unchanged.
  """
  g_leaves, treedef = flatten(updates)
  check_inexact(updates, g_leaves)
  names = list(state_names) + list(extra_names)
  names += [f"tree {i}" for i in range(len(names), len(states) + len(extras))]
  columns = [leaves_matching(treedef, tree, "updates", updates, name)
             for tree, name in zip(list(states) + list(extras), names)]
  if check_shapes:
    for column, name in zip(columns, names):
      for i, (g, x) in enumerate(zip(g_leaves, column)):
        if g is not None and x is not None and _shape(g) != _shape(x):
          _errors.raise_shape_mismatch("updates", name, leaf_paths(updates)[i], _shape(g), _shape(x))
  n_states = len(states)
  out_g, out_states = [], [[] for _ in range(n_states)]
  for i, g in enumerate(g_leaves):
    row = [column[i] for column in columns]
    if g is None:
      result = (None, *row[:n_states])
    else:
      result = fn(g, *row)
    out_g.append(result[0])
    for k in range(n_states):
      out_states[k].append(result[1 + k])
  return treedef.unflatten(out_g), tuple(treedef.unflatten(s) for s in out_states)


def map_updates(fn: Callable, updates: Any) -> Any:
  """`fn` over every non-None leaf of `updates` (None leaves stay None); integer leaves are an error."""
  g_leaves, treedef = flatten(updates)
  check_inexact(updates, g_leaves)
  return treedef.unflatten([None if g is None else fn(g) for g in g_leaves])


# ----------------------------------------------------------------------------------------------
# Creating and casting trees.


def _tied_zeros(x: jax.Array, dtype: Any) -> jax.Array:
  """Zeros computed from `x` (so under jit they inherit x's sharding), NaN- and inf-safe.

  Under `jax.jit(tx.init)` a fresh `jnp.zeros` constant is placed on one device and the state loses the
  param's sharding; `0 * x` would keep it but turns an inf param into a NaN state. |x * 0| where x is
  finite, else 0, is zero everywhere and still depends on x.
  """
  scaled = x * 0 if jnp.iscomplexobj(x) else jnp.abs(x * 0)  # abs: no -0.0 from negative params
  zeros = jnp.where(jnp.isfinite(x), scaled, jnp.zeros((), x.dtype))
  return zeros if dtype is None else zeros.astype(dtype)


def _zeros_leaf(x: Any, dtype: Optional[Any]) -> Any:
  if x is None:
    return None
  if isinstance(x, jax.ShapeDtypeStruct):
    return jnp.zeros(x.shape, dtype or x.dtype, device=x.sharding)
  if isinstance(x, jax.core.Tracer) and jnp.issubdtype(x.dtype, jnp.inexact):
    return _tied_zeros(x, dtype)
  return jnp.zeros_like(x, dtype=dtype)  # eager: keeps the sharding of x


def zeros_like(tree: Any, dtype: Optional[Any] = None) -> Any:
  """Zeros shaped like each leaf, with its dtype (unless `dtype` is given) and its sharding, also under jit."""
  return jax.tree.map(lambda x: _zeros_leaf(x, dtype), tree, is_leaf=is_none)


def full_like(tree: Any, fill_value: Any, dtype: Optional[Any] = None) -> Any:
  """`fill_value` shaped like each leaf, with its dtype (unless `dtype` is given) and its sharding."""
  def leaf(x):
    zeros = _zeros_leaf(x, dtype)
    if zeros is None or isinstance(fill_value, (int, float)) and fill_value == 0:
      return zeros
    return _numerics.add(zeros, fill_value)
  return jax.tree.map(leaf, tree, is_leaf=is_none)


def cast(tree: Any, dtype: Optional[Any]) -> Any:
  """Casts every leaf to `dtype` (no-op when dtype is None)."""
  if dtype is None:
    return tree
  return map_updates(lambda x: jnp.asarray(x).astype(dtype), tree)


def canonical_dtype(dtype: Optional[Any]) -> Optional[Any]:
  """The canonical jax dtype for `dtype` (None stays None)."""
  return None if dtype is None else jax.dtypes.canonicalize_dtype(dtype)


# ----------------------------------------------------------------------------------------------
# Reductions: per leaf, then summed.


def _leaf_squared_sum(x: Any) -> jax.Array:
  x = jnp.asarray(x)
  return jnp.sum(jnp.square(x.real) + jnp.square(x.imag)) if jnp.iscomplexobj(x) else jnp.sum(jnp.square(x))


def squared_norm(tree: Any) -> jax.Array:
  """Sum over all leaves of |x|^2 (None leaves skipped); a 0-d array."""
  sums = [_leaf_squared_sum(x) for x in jax.tree.leaves(tree)]
  if not sums:
    return jnp.zeros([], jnp.float32)
  total = sums[0]
  for s in sums[1:]:
    total = _numerics.add(total, s)  # mixed f32/bf16 trees sum in the promoted dtype, as optax does
  return total


def global_norm(updates: Any) -> jax.Array:
  """The L2 norm of all leaves of `updates` together (per-leaf sums, no concatenation)."""
  return jnp.sqrt(squared_norm(updates))
