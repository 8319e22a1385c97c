"""The many-small-leaves path: parameters grouped into one flat buffer per dtype.

A model with thousands of small leaves (biases, norms, embeddings split per row…) pays per leaf: XLA
compiles and launches a few loops per leaf and per step, and compile time grows with the leaf count.
Elementwise optimizers do not care where a leaf starts and ends, so they can run on one buffer per dtype.

* `FlatTree.of(tree)` packs a tree into one 1-D buffer per dtype (a pytree whose leaves are those
  buffers; the layout is static metadata). Keep the parameters flat and unpack them inside the loss with
  `flat.unflatten()`: the gradient then arrives flat, and the optimizer step is a few loops in all.
* `flat(tx)` runs `tx` on the buffers: given a `FlatTree` it works on it directly; given an ordinary
  tree it packs updates and params, and unpacks the updates (convenient, but the unpacking costs a slice
  per leaf, so for the full benefit keep the params flat). Its state is `tx`'s state over the buffers;
  `flat_state_to_tree` and `tree_state_to_flat` convert it to and from `tx`'s per-leaf state.
* Only elementwise transformations (and global-norm clipping) may run flat: anything that looks at leaf
  shapes or per-leaf norms (lamb, lars, adafactor, novograd, muon, masks…) would silently change meaning,
  so `flat` rejects it at construction, naming the step.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradxform import _adaptive
from gradxform import _base
from gradxform import _clip
from gradxform import _combine
from gradxform import _errors
from gradxform import _fused
from gradxform import _moments
from gradxform import _rms
from gradxform import _sign

__all__ = ["FlatTree", "flat", "flat_state_to_tree", "tree_state_to_flat"]


class _Layout(NamedTuple):
  """Where each leaf of a tree lives in the flat buffers (hashable: it is a jit cache key)."""
  treedef: Any
  shapes: tuple
  dtypes: tuple
  offsets: tuple  # each leaf's start in its dtype's buffer
  sizes: tuple  # per buffer key, in `keys` order
  keys: tuple  # buffer names (dtype names), sorted


def _layout_of(tree: Any, what: str) -> _Layout:
  paths_and_leaves, treedef = jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: x is None)
  shapes, dtypes, offsets, fill = [], [], [], {}
  for path, leaf in paths_and_leaves:
    if leaf is None or not hasattr(leaf, "dtype"):
      where = jax.tree_util.keystr(path) or "the root"
      raise _errors.LeafTypeError(
          f"flat: {what} at {where} is {type(leaf).__name__}; the flat path packs array leaves only "
          "(use the per-leaf optimizer for trees with None or Python-number leaves)")
    dtype = jnp.dtype(leaf.dtype)
    shapes.append(tuple(jnp.shape(leaf)))
    dtypes.append(dtype)
    offsets.append(fill.get(dtype.name, 0))
    fill[dtype.name] = offsets[-1] + int(np.prod(shapes[-1], dtype=np.int64))
  keys = tuple(sorted(fill))
  return _Layout(treedef, tuple(shapes), tuple(dtypes), tuple(offsets), tuple(fill[k] for k in keys), keys)


@jax.tree_util.register_pytree_with_keys_class
class FlatTree:
  """A tree packed into one 1-D buffer per dtype; a pytree whose leaves are the buffers.

  Build it with `FlatTree.of(tree)`; get the tree back with `.unflatten()` (slices and reshapes, which
  XLA fuses into whatever reads them). `jax.grad` of a loss taking a FlatTree returns a FlatTree.
  """

  def __init__(self, buffers: dict, layout: _Layout):
    self.buffers = buffers
    self.layout = layout

  @classmethod
  def of(cls, tree: Any) -> FlatTree:
    """Packs `tree` (array leaves of any shapes and floating dtypes) into one buffer per dtype."""
    layout = _layout_of(tree, "a leaf")
    return cls._pack(tree, layout)

  @classmethod
  def _pack(cls, tree: Any, layout: _Layout, cast: bool = True) -> FlatTree:
    """Packs `tree` into `layout`'s buffers; `cast=False` keeps the leaves' own dtype (a state tree whose
    moments are stored in another dtype than the params, e.g. adam's mu_dtype)."""
    leaves = layout.treedef.flatten_up_to(tree)
    parts = {key: [] for key in layout.keys}
    for leaf, dtype in zip(leaves, layout.dtypes):
      parts[dtype.name].append(jnp.ravel(jnp.asarray(leaf, dtype if cast else None)))
    buffers = {}
    for key, size in zip(layout.keys, layout.sizes):
      chunks = parts[key]
      buffers[key] = chunks[0] if len(chunks) == 1 else (
          jnp.concatenate(chunks) if chunks else jnp.zeros((size,), key))
    return cls(buffers, layout)

  def unflatten(self) -> Any:
    """The tree this was packed from (same structure, shapes and dtypes)."""
    layout = self.layout
    leaves = []
    for shape, dtype, offset in zip(layout.shapes, layout.dtypes, layout.offsets):
      size = int(np.prod(shape, dtype=np.int64))
      buffer = self.buffers[dtype.name]
      piece = buffer if (offset == 0 and size == buffer.shape[0]) else jax.lax.slice(buffer, (offset,), (offset + size,))
      leaves.append(piece.reshape(shape))
    return layout.treedef.unflatten(leaves)

  def tree_flatten(self):
    return [self.buffers[k] for k in self.layout.keys], self.layout

  def tree_flatten_with_keys(self):  # paths like ['float32'], so state_dict keys read mu/float32
    return [(jax.tree_util.DictKey(k), self.buffers[k]) for k in self.layout.keys], self.layout

  @classmethod
  def tree_unflatten(cls, layout, buffers):
    return cls(dict(zip(layout.keys, buffers)), layout)

  def __repr__(self):
    sizes = ", ".join(f"{k}[{n}]" for k, n in zip(self.layout.keys, self.layout.sizes))
    return f"FlatTree({len(self.layout.shapes)} leaves in {sizes})"


# ----------------------------------------------------------------------------------------------
# Which transformations may run on flat buffers.

# Elementwise (each output element depends on the same element of the inputs, plus scalars) or global
# (a norm over all leaves, which a flat buffer holds too). Everything else sees leaf boundaries.
_FLAT_SAFE = {
    _base._identity_update, _base._set_to_zero_update,  # pylint: disable=protected-access
    _clip._clip_update, _clip._clip_by_global_norm_update,  # pylint: disable=protected-access
    _moments._trace_update, _moments._ema_update, _moments._adam_update,  # pylint: disable=protected-access
    _moments._amsgrad_update, _moments._adamax_update, _moments._radam_update,  # pylint: disable=protected-access
    _rms._rms_update, _rms._stddev_update, _rms._rss_update, _rms._adadelta_update,  # pylint: disable=protected-access
    _adaptive._belief_update, _adaptive._yogi_update, _adaptive._adan_update,  # pylint: disable=protected-access
    _adaptive._lion_update, _adaptive._optimistic_update,  # pylint: disable=protected-access
    _sign._sign_update,  # pylint: disable=protected-access
} | set(_fused._STAGES)  # pylint: disable=protected-access


def _check_flat_safe(tx: Any) -> None:
  for step, _, _, where in _fused._steps_with_paths(tx, None, check=False):  # pylint: disable=protected-access
    update = getattr(step, "update", None)
    if isinstance(update, _base.Bound) and update.func in _FLAT_SAFE:
      continue
    name = update.label if isinstance(update, _base.Bound) and update.label else type(step).__name__
    place = " > ".join(f"{label} ({position})" for label, position in where) or "the transformation"
    raise _errors.HyperparameterTypeError(
        f"flat: {name} at {place} is not elementwise (it sees leaf shapes, per-leaf norms or a mask), so it "
        "would compute something else on one flat buffer; run it per leaf (without flat), or use only "
        "elementwise steps such as adam, adamw without a mask, sgd, rmsprop, lion and clip_by_global_norm")


# ----------------------------------------------------------------------------------------------
# flat(tx).


def _as_flat(tree: Any, layout: _Layout | None, what: str) -> FlatTree:
  if isinstance(tree, FlatTree):
    return tree
  own = _layout_of(tree, what)
  if layout is not None and own != layout:
    raise _errors.TreeMismatchError(f"flat: {what} do not have the layout of the updates (structure, shapes, dtypes)")
  return FlatTree._pack(tree, own)  # pylint: disable=protected-access


def _flat_init(params, *, inner):
  return inner.init(_as_flat(params, None, "params"))


def _flat_update(updates, state, params=None, *, inner, **extra_args):
  was_tree = not isinstance(updates, FlatTree)
  flat_updates = _as_flat(updates, None, "updates")
  flat_params = None if params is None else _as_flat(params, flat_updates.layout, "params")
  new_updates, state = _fused._fused_update_entry(flat_updates, state, flat_params, inner=inner, **extra_args)  # pylint: disable=protected-access
  return (new_updates.unflatten() if was_tree else new_updates), state


def flat(tx: _base.GradientTransformation) -> _base.GradientTransformationExtraArgs:
  """`tx` run on one flat buffer per dtype: far fewer loops and a far smaller program for many small leaves.

  Give it `FlatTree`s (params packed once with `FlatTree.of`, unpacked in the loss) for the full benefit;
  ordinary trees work too and are packed and unpacked on each update. Results equal `tx`'s per leaf
  (elementwise math is unchanged; a global norm sums in another order, a last-bit difference). The state
  holds FlatTrees where `tx`'s holds params-shaped trees; see `flat_state_to_tree`.

  Args:
    tx: a transformation made only of elementwise steps and global-norm clipping (adam, adamw without a
      mask, sgd, rmsprop, adagrad, adadelta, lion, amsgrad, adamax, adabelief, yogi, adan, radam,
      sign_sgd, clip, clip_by_global_norm, schedules); anything else raises here.

  Returns:
    A transformation; its recognised steps also run fused (see `fused`).
  """
  inner = _combine._as_transformation(tx, "flat: argument `tx`")  # pylint: disable=protected-access
  _check_flat_safe(inner)
  return _base.transformation("flat", _flat_init, _flat_update, inner=inner)


def _is_flat(x: Any) -> bool:
  return isinstance(x, FlatTree)


def flat_state_to_tree(state: Any) -> Any:
  """`flat(tx)`'s state as `tx`'s own per-leaf state (every FlatTree inside unpacked to its tree)."""
  return jax.tree.map(lambda x: x.unflatten() if _is_flat(x) else x, state, is_leaf=_is_flat)


def tree_state_to_flat(state: Any, params: Any) -> Any:
  """`tx`'s per-leaf state as `flat(tx)`'s state: every subtree shaped like `params` is packed.

  Args:
    state: a state made by `tx.init(params)` (or updated since).
    params: the params tree (or a tree of the same structure, shapes and dtypes, e.g. from eval_shape).
  """
  layout = _layout_of(params, "a leaf")

  def like_params(x):
    if _is_flat(x):
      return False
    try:
      leaves = layout.treedef.flatten_up_to(x)
    except (ValueError, TypeError):
      return False
    return all(hasattr(l, "shape") and tuple(l.shape) == s for l, s in zip(leaves, layout.shapes))

  def pack(x):
    # The params' layout (buffer names by the params' dtypes), the leaves' own dtypes: what flat(tx).init
    # makes when a moment is stored in another dtype.
    return FlatTree._pack(x, layout, cast=False) if like_params(x) else x  # pylint: disable=protected-access

  return jax.tree.map(pack, state, is_leaf=like_params)
