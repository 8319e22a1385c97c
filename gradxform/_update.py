"""Applying updates to parameters, and Polyak / periodic target-network updates."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gradxform import _base
from gradxform import _errors
from gradxform import _tree


def _add_keep_dtype(p, u):
  p = jnp.asarray(p)
  u = jnp.asarray(u)
  with jax.numpy_dtype_promotion("standard"):  # p + u in the promoted dtype, then back to p's
    return jnp.asarray(p + u).astype(p.dtype)


def apply_updates(params: _base.Params, updates: _base.Updates) -> _base.Params:
  """Returns params + updates, leaf by leaf, each result in its param's dtype (None params stay None).

  Args:
    params: the parameter tree.
    updates: a tree of the same structure (the output of a transformation's `update`).
  """
  p_leaves, treedef = _tree.flatten(params)
  u_leaves = _tree.leaves_matching(treedef, updates, "params", params, "updates")
  paths = None
  out = []
  for i, (p, u) in enumerate(zip(p_leaves, u_leaves)):
    if p is None or u is None:
      out.append(p)
      continue
    if jnp.shape(p) != jnp.shape(u):
      paths = paths or _tree.leaf_paths(params)
      _errors.raise_shape_mismatch("params", "updates", paths[i], jnp.shape(p), jnp.shape(u))
    out.append(_add_keep_dtype(p, u))
  return treedef.unflatten(out)


def incremental_update(new_tensors: _base.Params, old_tensors: _base.Params,
                       step_size: jax.typing.ArrayLike) -> _base.Params:
  """Polyak averaging: step_size * new + (1 - step_size) * old, leaf by leaf.

  Args:
    new_tensors: the latest values (e.g. online network params).
    old_tensors: the running values (e.g. target network params).
    step_size: weight of the new values, in [0, 1].
  """
  _tree.check_same_structure(new_tensors, old_tensors, "new_tensors", "old_tensors")
  return jax.tree.map(lambda new, old: None if new is None else step_size * new + (1.0 - step_size) * old,
                      new_tensors, old_tensors, is_leaf=_tree.is_none)


def periodic_update(new_tensors: _base.Params, old_tensors: _base.Params, steps: jax.typing.ArrayLike,
                    update_period: jax.typing.ArrayLike) -> _base.Params:
  """Returns new_tensors every `update_period` steps (when steps % update_period == 0), else old_tensors.

  Args:
    new_tensors, old_tensors: trees of the same structure.
    steps: the current step (an int or int array).
    update_period: the period in steps.
  """
  _tree.check_same_structure(new_tensors, old_tensors, "new_tensors", "old_tensors")
  return jax.lax.cond(jnp.mod(steps, update_period) == 0, lambda _: new_tensors, lambda _: old_tensors, None)
