"""Finding, replacing and mapping over the parts of optimizer states.

States are trees of NamedTuples (`ScaleByAdamState(count, mu, nu)`), tuples (chains), dicts (named
chains, hyperparameters) and params-shaped subtrees. Here a value is found by a key: a dict key, a
NamedTuple field name, or a NamedTuple class name. Paths name the NamedTuple each field belongs to
(`NamedTupleKey("ScaleByAdamState", "mu")`), so equal field names in different states can be told apart.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Optional, Protocol, Tuple, Union, runtime_checkable

import jax

from gradxform import _base
from gradxform import _errors

__all__ = ["NamedTupleKey", "tree_get", "tree_get_all_with_path", "tree_map_params", "tree_set"]


class TreeKeyError(_errors.GradxformError, KeyError):
  """A key looked up in a state is missing, ambiguous or of an unsupported kind."""


@dataclasses.dataclass(frozen=True)
class NamedTupleKey:
  """A path entry for the field `name` of a NamedTuple of class `tuple_name`.

  `tree_get_all_with_path`, `tree_get` and `tree_set` put it in the paths they give to `filtering`, in
  place of jax's `GetAttrKey`, so a filter can check which state a field belongs to.

  Attributes:
    tuple_name: the class name of the NamedTuple.
    name: the field name.
  """

  tuple_name: str
  name: str

  def __str__(self):
    return f"{self.tuple_name}.{self.name}"


KeyEntry = Union[jax.tree_util.DictKey, jax.tree_util.FlattenedIndexKey, jax.tree_util.GetAttrKey,
                 jax.tree_util.SequenceKey, NamedTupleKey]
KeyPath = Tuple[KeyEntry, ...]


# ----------------------------------------------------------------------------------------------
# Walking a tree with NamedTuple-aware paths.


def _is_named_tuple(x: Any) -> bool:
  return isinstance(x, tuple) and hasattr(x, "_fields")


def _holds_any(node: Any, keys: tuple) -> bool:
  """Whether `node` is a NamedTuple with one of `keys` as field or class name, or a dict with one as key."""
  if _is_named_tuple(node):
    return any(key in node._fields for key in keys) or type(node).__name__ in keys
  return isinstance(node, dict) and any(key in node for key in keys)


def _leaves_with_named_path(tree: Any, stop: Callable[[Any], bool]) -> list[tuple[KeyPath, Any]]:
  """(path, leaf) pairs of `tree`, where nodes satisfying `stop` count as leaves.

  As `jax.tree_util.tree_leaves_with_path`, except that NamedTuple fields get NamedTupleKey entries.
  """
  out = []
  for path, node in jax.tree_util.tree_leaves_with_path(tree, is_leaf=lambda x: stop(x) or _is_named_tuple(x)):
    if stop(node) or not _is_named_tuple(node):
      out.append((path, node))
      continue
    for field in node._fields:
      entry = NamedTupleKey(type(node).__name__, field)
      out.extend(((*path, entry, *sub), leaf) for sub, leaf in _leaves_with_named_path(getattr(node, field), stop))
  return out


def _children(path: KeyPath, node: Any) -> list[tuple[KeyPath, Any]]:
  """The direct children of a NamedTuple or dict node, with their paths."""
  if _is_named_tuple(node):
    return [((*path, NamedTupleKey(type(node).__name__, f)), getattr(node, f)) for f in node._fields]
  return [((*path, jax.tree_util.DictKey(k)), v) for k, v in node.items()]


def _select(path: KeyPath, node: Any, key: Any) -> tuple[KeyPath, Any]:
  """The entry of `node` that `key` names: the node itself (its class name), a field, or a dict item."""
  if _is_named_tuple(node):
    if key == type(node).__name__:
      return path, node
    return (*path, NamedTupleKey(type(node).__name__, key)), getattr(node, key)
  return (*path, jax.tree_util.DictKey(key)), node[key]


def _find_all(tree: Any, key: Any) -> list[tuple[KeyPath, Any]]:
  """Every (path, value) that `key` names in `tree`, outer matches first, nested ones after them."""
  def holds(node):
    return _holds_any(node, (key,))

  holders = [(path, node) for path, node in _leaves_with_named_path(tree, holds) if holds(node)]
  found = [_select(path, node, key) for path, node in holders]
  for path, node in holders:  # a matched node may hold further matches below it
    for child_path, child in _children(path, node):
      found.extend(((*child_path, *sub), value) for sub, value in _find_all(child, key))
  return found


# ----------------------------------------------------------------------------------------------
# Public functions.


def tree_get_all_with_path(tree: _base.PyTree, key: Any,
                           filtering: Optional[Callable[[KeyPath, Any], bool]] = None
                           ) -> list[tuple[KeyPath, Any]]:
  """All values in a tree that `key` names, with their paths.

  `key` names a dict item with that key, a NamedTuple field with that name, or a NamedTuple whose class
  has that name (the NamedTuple itself). A key can occur several times (a `count` in each state of a
  chain); all occurrences are returned, nested ones included.

  Args:
    tree: the tree to search (an optimizer state, say).
    key: the key, field name or NamedTuple class name.
    filtering: optional `filtering(path, value) -> bool`; only the values for which it is true are kept.

  Returns:
    A list of `(path, value)`; each path is a tuple of jax key entries, with `NamedTupleKey` for
    NamedTuple fields (`jax.tree_util.keystr(path)` reads as `"ScaleByAdamState.mu['w']"`).
  """
  found = _find_all(tree, key)
  if filtering:
    found = [(path, value) for path, value in found if filtering(path, value)]
  return found


def tree_get(tree: _base.PyTree, key: Any, default: Optional[Any] = None,
             filtering: Optional[Callable[[KeyPath, Any], bool]] = None) -> Any:
  """The one value in a tree that `key` names (see `tree_get_all_with_path`), or `default` if none.

  Args:
    tree: the tree to search.
    key: the key, field name or NamedTuple class name.
    default: returned when nothing matches.
    filtering: optional `filtering(path, value) -> bool` to choose among several matches.

  Returns:
    The matching value, or `default`.

  Raises:
    TreeKeyError (a KeyError): several values match.
  """
  found = tree_get_all_with_path(tree, key, filtering=filtering)
  if len(found) > 1:
    paths = ", ".join(jax.tree_util.keystr(path) or "the root" for path, _ in found)
    raise TreeKeyError(f"tree_get: {len(found)} values match {key!r}, at {paths}; pass `filtering` to pick one")
  return found[0][1] if found else default


def _plain_key(entry: KeyEntry) -> Any:
  """The field name or dict key of a path entry (as used in `_replace` / dict construction)."""
  if isinstance(entry, NamedTupleKey):
    return entry.name
  if isinstance(entry.key, (str, int)):
    return entry.key
  raise TreeKeyError(
      f"tree_set: cannot rebuild a dict with key {entry.key!r} of type {type(entry.key).__name__}; "
      "only str and int dict keys are supported next to a replaced value")


def tree_set(tree: _base.PyTree, filtering: Optional[Callable[[KeyPath, Any], bool]] = None, /,
             **kwargs: Any) -> _base.PyTree:
  """A copy of a tree with the values that the keywords name replaced: `tree_set(state, count=0)`.

  Each keyword names dict items, NamedTuple fields or NamedTuples (by class name), as in
  `tree_get_all_with_path`. Replacement happens in the outermost dicts and NamedTuples that hold a
  keyword, and inside them only along children that themselves hold one: a child that does not (a
  list, or a dict without the key) is kept whole even if the key occurs deeper in it, so `tree_set`
  can replace fewer values than `tree_get_all_with_path` finds (as optax's does). Dicts in which a
  value is replaced are rebuilt as plain dicts.

  Args:
    tree: the tree (an optimizer state, say).
    filtering: optional `filtering(path, value) -> bool`; only the values for which it is true are
      replaced.
    **kwargs: the new values, by key.

  Returns:
    The new tree.

  Raises:
    TreeKeyError (a KeyError): a keyword matches nothing (given `filtering`).
  """
  for key in kwargs:
    if not tree_get_all_with_path(tree, key, filtering):
      given = " given the filtering" if filtering else ""
      raise TreeKeyError(f"tree_set: no value matches {key!r}{given}")
  keys = tuple(kwargs)

  def holds(node):
    return _holds_any(node, keys)

  def wanted(path, value):
    return filtering is None or filtering(path, value)

  def replace(path, node):
    if not holds(node):
      return node
    name = type(node).__name__
    if _is_named_tuple(node) and name in kwargs and wanted(path, node):
      return kwargs[name]
    new = {}
    for child_path, child in _children(path, node):
      key = _plain_key(child_path[-1])
      if key in kwargs and wanted(child_path, child):
        new[key] = kwargs[key]
      elif isinstance(child, (dict, list, tuple)):
        new[key] = replace(child_path, child)
      else:
        new[key] = child
    return node._replace(**new) if _is_named_tuple(node) else new

  treedef = jax.tree.structure(tree, is_leaf=holds)
  return treedef.unflatten([replace(path, node) for path, node in _leaves_with_named_path(tree, holds)])


@jax.tree_util.register_pytree_node_class
class _ParamsSlot:
  """Stands for the params in a state built by `init(_ParamsSlot())`: a node without leaves.

  Whatever `init` builds by mapping over the params (zeros_like, masking…) comes out as a `_ParamsSlot`,
  which marks where the real state holds params-shaped trees.
  """

  def tree_flatten(self):
    return (), None

  @classmethod
  def tree_unflatten(cls, aux, children):
    del aux, children
    return cls()


@runtime_checkable
class Initable(Protocol):
  """An object with an `init(params) -> state` method (a gradient transformation)."""

  def init(self, params: _base.Params) -> _base.OptState:
    """Returns a fresh state for `params`."""


def tree_map_params(
    initable: Union[Callable[[_base.Params], _base.OptState], Initable],
    f: Callable[..., Any],
    state: _base.OptState,
    /,
    *rest: Any,
    transform_non_params: Optional[Callable[..., Any]] = None,
    is_leaf: Optional[Callable[[_base.Params], bool]] = None,
) -> _base.OptState:
  """Maps `f` over every params-shaped tree inside an optimizer state (moments, traces…).

  Which parts of `state` are params-shaped is learned by running `initable`'s init on a stand-in for
  the params: the parts it builds from the params are mapped with `f`, leaf by leaf; the others (step
  counts, keys…) go through `transform_non_params` or stay as they are. The usual use is turning a
  tree of param shardings into the shardings of the whole state.

  Args:
    initable: a gradient transformation (anything with `init`) or an init function, params -> state.
    f: applied as `f(leaf, *rest_leaves)` to the leaves of each params-shaped tree.
    state: the state to map over, made by that init.
    *rest: trees with the structure of the params, whose leaves are passed to `f` too.
    transform_non_params: applied to every other leaf of the state; None leaves them unchanged.
    is_leaf: passed to `jax.tree.map` over each params-shaped tree; use it to stop at markers such as
      `MaskedNode` (left by `masked`) so that `f` sees them instead of a structure mismatch.

  Returns:
    The mapped state.
  """
  init = initable.init if isinstance(initable, Initable) else initable
  layout = init(_ParamsSlot())

  def map_part(marker, value):
    if isinstance(marker, _ParamsSlot):
      return jax.tree.map(f, value, *rest, is_leaf=is_leaf)
    return value if transform_non_params is None else transform_non_params(value)

  return jax.tree.map(map_part, layout, state, is_leaf=lambda x: isinstance(x, _ParamsSlot))
