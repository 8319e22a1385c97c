"""Partitioning: a different transformation per group of parameters, and freezing parameters.

`partition` labels every parameter (with a tree of labels or a function of the params) and runs each
label's transformation, through `masked`, on the parameters carrying that label. `freeze` and
`selective_transform` are the two common special cases: zero the updates of the frozen parameters,
optionally while another optimizer trains the rest.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from typing import Any, NamedTuple, Optional, Union

import jax

from gradxform import _base
from gradxform import _combine
from gradxform import _errors
from gradxform import _tree

__all__ = ["MaskOrFn", "MultiTransformState", "PartitionState", "freeze", "multi_transform", "partition",
           "selective_transform"]

# A mask given as a tree of booleans, a function params -> such a tree, or None (no mask).
MaskOrFn = Optional[Union[Any, Callable[[_base.Params], Any]]]


class PartitionState(NamedTuple):
  """State of `partition`: each label's inner state (a MaskedState), keyed by label in `transforms` order."""
  inner_states: Mapping[Hashable, _base.OptState]


# ----------------------------------------------------------------------------------------------
# Checking the labels against the params (init time, where a wrong label is a user's typo).


def _paths_and_labels(labels: Any) -> list[tuple[str, Any]]:
  with_path, _ = jax.tree_util.tree_flatten_with_path(labels, is_leaf=_tree.is_none)
  return [(jax.tree_util.keystr(path) or "the root", label) for path, label in with_path]


def _children(x: Any):
  """(key, child) pairs one level down and the node's type name; (None, 'a leaf') for a leaf."""
  kids, treedef = jax.tree_util.tree_flatten_with_path(x, is_leaf=lambda y: y is not x)
  if jax.tree_util.treedef_is_leaf(treedef):
    return None, "a leaf"
  node_type = treedef.node_data()[0] if treedef.node_data() else type(x)
  return [(path[0], kid) for path, kid in kids], node_type.__name__


def _prefix_difference(prefix: Any, tree: Any, path: tuple = ()) -> Optional[tuple[str, str]]:
  """Where `prefix` stops being a prefix of `tree`: (readable path, what differs), or None if it is one."""
  if prefix is None:
    return None  # a missing label; reported separately, with its path
  prefix_kids, prefix_kind = _children(prefix)
  if prefix_kids is None:
    return None  # a label covers the whole subtree below it
  where = jax.tree_util.keystr(path) or "the root"
  tree_kids, tree_kind = _children(tree) if tree is not None else (None, "None")
  if tree_kids is None or prefix_kind != tree_kind:
    return where, f"{prefix_kind} in the labels vs {tree_kind} in the params"
  prefix_keys, tree_keys = [k for k, _ in prefix_kids], [k for k, _ in tree_kids]
  if prefix_keys != tree_keys:
    only_labels = [jax.tree_util.keystr((k,)) for k in prefix_keys if k not in tree_keys]
    only_params = [jax.tree_util.keystr((k,)) for k in tree_keys if k not in prefix_keys]
    return where, (f"keys only in the labels: {', '.join(only_labels) or 'none'}; "
                   f"only in the params: {', '.join(only_params) or 'none'}")
  for (key, kid), (_, tree_kid) in zip(prefix_kids, tree_kids):
    found = _prefix_difference(kid, tree_kid, path + (key,))
    if found:
      return found
  return None


def _check_labels(labels: Any, params: Any, keys: list) -> None:
  """Raises a clear error for labels that do not fit the params or name no transformation."""
  found = _prefix_difference(labels, params)
  if found is not None:
    where, what = found
    raise _errors.TreeMismatchError(
        f"param_labels must have the structure of the params (or a prefix of it); they differ at "
        f"{where}: {what}")
  labels_def = jax.tree_util.tree_structure(labels, is_leaf=_tree.is_none)
  covered = labels_def.flatten_up_to(params)
  unknown: dict[Any, list[str]] = {}
  for (path, label), subtree in zip(_paths_and_labels(labels), covered):
    if label is None:
      if jax.tree.leaves(subtree):
        raise _errors.HyperparameterError(
            f"param_labels gives no label (None) to the params at {path}; every parameter needs "
            f"one of the labels {keys}")
    elif label not in keys:
      unknown.setdefault(label, []).append(path)
  if unknown:
    listed = "; ".join(f"label {label!r} at {', '.join(paths)}" for label, paths in unknown.items())
    raise _errors.HyperparameterError(
        f"some parameters have a label with no transformation: {listed}. The labels of "
        f"`transforms` are {keys}")


# ----------------------------------------------------------------------------------------------
# partition.


def _labels_for(param_labels, tree):
  return param_labels(tree) if callable(param_labels) else param_labels


def _group_mask(labels, group):
  return jax.tree.map(lambda label: label == group, labels)


def _group_masked(tx, labels, group, mask_compatible_extra_args):
  return _combine.masked(tx, _group_mask(labels, group), mask_compatible_extra_args=mask_compatible_extra_args)


def _partition_init(params, *, transforms, param_labels, mask_compatible_extra_args, **_):
  labels = _labels_for(param_labels, params)
  _check_labels(labels, params, [group for group, _ in transforms])
  return PartitionState({
      group: _group_masked(tx, labels, group, mask_compatible_extra_args).init(params)
      for group, tx in transforms})


def _partition_update(updates, state, params=None, *, transforms, param_labels, mask_compatible_extra_args,
                      **extra_args):
  _errors.expect_state(state, (PartitionState,), "partition")
  groups = [group for group, _ in transforms]
  # A jitted state comes back with its dict keys sorted, so compare the label sets.
  if not isinstance(state.inner_states, Mapping) or set(state.inner_states) != set(groups):
    got = list(state.inner_states) if isinstance(state.inner_states, Mapping) else type(state.inner_states)
    raise _errors.StateMismatchError(f"needs a state with one inner state per label {groups}, got {got}")
  # Labels come from the updates, as in optax; a label no group claims leaves its update untouched.
  labels = _labels_for(param_labels, updates)
  new_states = {}
  for group, tx in transforms:
    try:
      updates, new_states[group] = _group_masked(tx, labels, group, mask_compatible_extra_args).update(
          updates, state.inner_states[group], params, **extra_args)
    except _errors.GradxformError as err:
      err.at_position(f"label {group!r}")
      raise
  return updates, PartitionState(new_states)


def partition(transforms: Mapping[Hashable, _base.GradientTransformation],
              param_labels: Union[_base.PyTree, Callable[[_base.PyTree], _base.PyTree]], *,
              mask_compatible_extra_args: bool = False) -> _base.GradientTransformationExtraArgs:
  """Applies a different transformation to each group of parameters, the groups given by labels.

  Each label's transformation sees only the parameters with that label (the others are masked out, as
  in `masked`), so its state holds only those; the state is a PartitionState keyed by label.

  Args:
    transforms: a mapping label -> transformation (gradxform's or optax's).
    param_labels: a tree of labels with the params' structure (or a prefix of it), or a function
      params -> such a tree. Every label must be a key of `transforms` (checked at init).
    mask_compatible_extra_args: also mask extra keyword arguments shaped like the updates, so each
      transformation sees only its own part of them.

  Returns:
    A transformation whose `update` passes extra keyword arguments on to every inner transformation.
  """
  if not isinstance(transforms, Mapping):
    raise _errors.HyperparameterTypeError(
        f"partition: argument `transforms` must be a mapping label -> transformation, "
        f"got {type(transforms).__name__}")
  as_transformation = _combine._as_transformation  # pylint: disable=protected-access
  steps = tuple((group, as_transformation(tx, f"partition: transforms[{group!r}]"))
                for group, tx in transforms.items())
  return _base.transformation("partition", _partition_init, _partition_update, transforms=steps,
                              param_labels=param_labels, mask_compatible_extra_args=mask_compatible_extra_args)


multi_transform = partition  # optax's older name, kept for compatibility
MultiTransformState = PartitionState


# ----------------------------------------------------------------------------------------------
# freeze and selective_transform.


def freeze(mask: Union[bool, _base.ArrayTree]) -> _base.GradientTransformationExtraArgs:
  """Sets the updates of the frozen parameters (where `mask` is True) to zero; the others pass unchanged.

  Args:
    mask: a static boolean (True freezes everything), or a tree of booleans with the params' structure
      (or a prefix of it) marking the leaves to freeze.

  Returns:
    `masked(set_to_zero(), mask)`: stateless, as the frozen leaves carry no state.
  """
  return _base.rename(_combine.masked(_base.set_to_zero(), mask), "freeze")


def _freeze_labels(params, *, freeze_mask):
  del params  # the labels depend on the mask only
  return jax.tree.map(lambda frozen: "freeze" if frozen else "train", freeze_mask)


def selective_transform(optimizer: _base.GradientTransformation, *,
                        freeze_mask: Union[bool, _base.ArrayTree]) -> _base.GradientTransformationExtraArgs:
  """Trains the parameters not frozen by `freeze_mask` with `optimizer`; the frozen ones get zero updates.

  Unlike `chain(freeze(mask), optimizer)`, the optimizer keeps no state for the frozen parameters.

  Args:
    optimizer: the transformation for the trainable parameters.
    freeze_mask: a static boolean (True freezes everything) or a tree of booleans with the params'
      structure (or a prefix of it); True marks a frozen leaf.

  Returns:
    `partition({"train": optimizer, "freeze": set_to_zero()}, labels from freeze_mask)`.
  """
  labels = _base.Bound(_freeze_labels, None, freeze_mask=freeze_mask)
  return _base.rename(partition({"train": optimizer, "freeze": _base.set_to_zero()}, param_labels=labels),
                      "selective_transform")
