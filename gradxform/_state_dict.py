"""Optimizer state as a flat dict of numpy arrays with readable keys, and back.

`state_dict(state)` gives `{"0/mu/encoder/w": array, ...}`: the key path of each leaf joined with "/",
so a checkpoint can be read, diffed and saved with `numpy.savez` without pickling tree classes.
`load_state_dict(template, d)` puts the values back into the structure of a template state (a fresh
`tx.init(params)` or its `jax.eval_shape`), checking every key, shape and dtype before building anything.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gradxform import _errors
from gradxform import _tree

__all__ = ["load_state_dict", "state_dict"]


def _keyed_leaves(state: Any, fn: str) -> tuple[list[tuple[str, Any]], Any]:
  """(key, leaf) pairs of `state` in leaf order and its treedef; raises if two leaves share a key."""
  # Flattening with jax's defaults skips None and empty nodes (EmptyState, MaskedNode): they hold no
  # data, so they get no key, and the treedef alone restores them on load.
  with_path, treedef = jax.tree_util.tree_flatten_with_path(state)
  seen: dict[str, Any] = {}
  pairs = []
  for path, leaf in with_path:
    key = _tree.slash_path(path)
    if key in seen:
      raise _errors.StateDictKeyError(
          f"{fn}: the leaves at {jax.tree_util.keystr(seen[key])} and {jax.tree_util.keystr(path)} "
          f"both have the key {key!r}, so a state dict cannot hold both; rename one of them")
    seen[key] = path
    pairs.append((key, leaf))
  return pairs, treedef


def state_dict(state: Any) -> dict[str, np.ndarray]:
  """Flattens an optimizer state into a dict of numpy arrays keyed by slash-joined leaf paths.

  Args:
    state: any optimizer state tree (NamedTuples, tuples, dicts, lists); None leaves and empty nodes
      (`EmptyState()`, `MaskedNode()`) hold no data and produce no key.

  Returns:
    A dict from keys such as `"0/mu/encoder/w"` (chain index, field, dict keys) to numpy copies of the
    leaves, in leaf order, with their dtypes unchanged (bfloat16 stays bfloat16, counts stay int32).
  """
  pairs, _ = _keyed_leaves(state, "state_dict")
  # A copy, not a view of the device buffer: the dict outlives the state and may be written to.
  # A typed PRNG key (add_noise's rng_key) has no numpy form: its raw uint32 key data is stored.
  return {key: np.array(jax.random.key_data(leaf) if _is_key(leaf) else leaf, copy=True) for key, leaf in pairs}


def _is_key(leaf: Any) -> bool:
  """A typed PRNG key array (`jax.random.key`), or the ShapeDtypeStruct of one."""
  return hasattr(leaf, "dtype") and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)


def _expected(leaf: Any) -> tuple[tuple[int, ...], np.dtype]:
  if _is_key(leaf):
    data = jax.eval_shape(jax.random.key_data, leaf)  # the uint32 key data state_dict stores
    return tuple(data.shape), np.dtype(data.dtype)
  if hasattr(leaf, "shape") and hasattr(leaf, "dtype"):
    return tuple(leaf.shape), np.dtype(leaf.dtype)
  as_array = np.asarray(leaf)
  return as_array.shape, as_array.dtype


def _as_template_dtype(value: np.ndarray, dtype: np.dtype) -> np.ndarray:
  """`value` with raw-bytes dtype read as `dtype` when that is what numpy.load lost; else unchanged."""
  # numpy stores ml_dtypes arrays (bfloat16, float8) as plain void bytes ("|V2"), so they load back
  # nameless. Reading the bytes as the template's dtype is safe only when that dtype is itself one
  # numpy cannot name (kind "V"): a float16 or int16 slot must not silently take bfloat16 bits.
  if (value.dtype.type is np.void and value.dtype.names is None and dtype.kind == "V"
      and dtype.type is not np.void and value.dtype.itemsize == dtype.itemsize):
    return value.view(dtype)
  return value


def _weakly_typed(value: np.ndarray) -> Any:
  """`value` as a weakly typed jax array, as the Python-number constants some states hold trace (L-BFGS's
  line-search info); a strongly typed one would make a jitted step retrace on the loaded state."""
  zero = jnp.asarray(value.dtype.type(0).item())  # a Python number: weakly typed, in jax's default dtype
  if not zero.weak_type or zero.dtype != value.dtype:
    return value
  return jnp.broadcast_to(zero, value.shape).at[...].set(value)  # a scatter keeps its operand's weak type


def _place(value: np.ndarray, leaf: Any) -> Any:
  """`value` as a jax array where the template leaf lives (its sharding), or as its Python scalar type."""
  if isinstance(leaf, (bool, int, float, complex)):
    return type(leaf)(value.item())  # a Python scalar in a state is kept one, so jit sees the same tree
  if _is_key(leaf):
    # A ShapeDtypeStruct has no public accessor for its key implementation; its dtype keeps it.
    impl = (jax.random.key_impl(leaf) if isinstance(leaf, jax.Array) and not isinstance(leaf, jax.core.Tracer)
            else getattr(leaf.dtype, "_impl", None))
    value = jax.random.wrap_key_data(jnp.asarray(value), impl=impl)
  elif getattr(leaf, "weak_type", False):
    value = _weakly_typed(value)
  sharding = None
  if isinstance(leaf, jax.ShapeDtypeStruct):
    sharding = getattr(leaf, "sharding", None)
  elif isinstance(leaf, jax.Array) and not isinstance(leaf, jax.core.Tracer):
    sharding = leaf.sharding
  if sharding is not None:
    return jax.device_put(value, sharding)
  return jnp.asarray(value)


def load_state_dict(template_state: Any, d: Mapping[str, Any], strict: bool = True) -> Any:
  """Rebuilds a state with the structure of `template_state` and the values of a state dict.

  Args:
    template_state: a state of the same optimizer and params, e.g. `tx.init(params)` or
      `jax.eval_shape(tx.init, params)` (`jax.ShapeDtypeStruct` leaves); it gives the structure,
      shapes, dtypes and shardings. Its values are not used.
    d: a dict from `state_dict`, or the `numpy.load(...)` of a file written by `numpy.savez(file,
      **state_dict(state))`.
    strict: when True, keys of `d` that the template has no leaf for are an error; when False they
      are ignored. Keys the template needs and `d` lacks are an error either way.

  Returns:
    A new state whose leaves are jax arrays with the template's dtypes, placed on the template leaf's
    sharding where it has one.

  Raises:
    StateMismatchError: listing every missing key, every unexpected key (strict only), every shape
      mismatch and every dtype mismatch at once. Dtypes are never cast: a float32 value for a
      bfloat16 slot is a mismatch.
  """
  pairs, treedef = _keyed_leaves(template_state, "load_state_dict (template_state)")
  given = list(d.keys())
  wanted = {key for key, _ in pairs}
  present = set(given)
  missing = [key for key, _ in pairs if key not in present]
  unexpected = sorted(key for key in given if key not in wanted) if strict else []
  shape_errors, dtype_errors, leaves = [], [], []
  for key, leaf in pairs:
    if key not in present:
      continue
    shape, dtype = _expected(leaf)
    value = _as_template_dtype(np.asarray(d[key]), dtype)
    if value.shape != shape:
      shape_errors.append(f"{key}: expected {shape}, got {value.shape}")
    if value.dtype != dtype:
      dtype_errors.append(f"{key}: expected {dtype}, got {value.dtype}")
    leaves.append((value, leaf))
  problems = [(f"missing keys ({len(missing)})", missing),
              (f"unexpected keys ({len(unexpected)}; pass strict=False to ignore them)", unexpected),
              (f"shape mismatches ({len(shape_errors)})", shape_errors),
              (f"dtype mismatches ({len(dtype_errors)})", dtype_errors)]
  problems = [(title, items) for title, items in problems if items]
  if problems:
    lines = [(f"load_state_dict: the state dict does not fit the template state "
              f"({len(pairs)} keys expected, {len(given)} given):")]
    for title, items in problems:
      lines.append(f"  {title}:")
      lines.extend(f"    {item}" for item in items)
    raise _errors.StateMismatchError("\n".join(lines))
  return treedef.unflatten([_place(value, leaf) for value, leaf in leaves])
