"""Combinators: chain, named_chain, and masked (apply a transformation to a subset of the leaves)."""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any, NamedTuple, Union

import jax

from gradxform import _base
from gradxform import _errors
from gradxform import _tree


# ----------------------------------------------------------------------------------------------
# chain and named_chain.


def _chain_init(params, *, steps, **_):
  states = []
  for i, tx in enumerate(steps):
    try:
      states.append(tx.init(params))
    except _errors.GradxformError as err:  # a mask or label tree that does not fit params fails here
      err.at_position(f"chain step {i + 1} of {len(steps)}")
      raise
  return tuple(states)


def check_chain_state(state: Any, n_steps: int) -> None:
  """Raises StateMismatchError unless `state` is the tuple of `n_steps` states a chain's init makes."""
  if type(state) is not tuple or len(state) != n_steps:  # pylint: disable=unidiomatic-typecheck
    got = f"a tuple of {len(state)}" if type(state) is tuple else type(state).__name__  # pylint: disable=unidiomatic-typecheck
    raise _errors.StateMismatchError(
        f"a chain of {n_steps} transformations needs the tuple of {n_steps} states its init made, got {got}")


def _chain_update(updates, state, params=None, *, steps, **extra_args):
  check_chain_state(state, len(steps))
  new_state = []
  for i, (tx, inner_state) in enumerate(zip(steps, state)):
    try:
      updates, inner_state = tx.update(updates, inner_state, params, **extra_args)
    except _errors.GradxformError as err:
      err.at_position(f"chain step {i + 1} of {len(steps)}")
      raise
    new_state.append(inner_state)
  return updates, tuple(new_state)


def _as_transformation(tx: Any, where: str) -> _base.GradientTransformationExtraArgs:
  if not (hasattr(tx, "init") and hasattr(tx, "update")):
    raise _errors.HyperparameterTypeError(
        f"{where} is not a gradient transformation (it has no init/update): got {type(tx).__name__} {tx!r}")
  if not isinstance(tx, tuple):
    # An object with init/update methods (MultiSteps, a user's class): optax's chain fails to unpack it.
    tx = _base.GradientTransformationExtraArgs(tx.init, tx.update)
  return _base.with_extra_args_support(tx)


def chain(*args: _base.GradientTransformation) -> _base.GradientTransformationExtraArgs:
  """Applies transformations in sequence: the updates of each feed the next. Its state is the tuple of theirs.

  Args:
    *args: transformations (gradxform's, optax's, or any (init, update) pair); none gives the identity.

  Returns:
    A transformation whose `update` passes extra keyword arguments on to every step that accepts them.
  """
  steps = tuple(_as_transformation(tx, f"chain: argument {i + 1}") for i, tx in enumerate(args))
  return _base.transformation("chain", _chain_init, _chain_update, steps=steps)


def _named_chain_init(params, *, steps, **_):
  states = collections.OrderedDict()
  for name, tx in steps:
    try:
      states[name] = tx.init(params)
    except _errors.GradxformError as err:
      err.at_position(f"named_chain step {name!r}")
      raise
  return states


def _named_chain_update(updates, state, params=None, *, steps, **extra_args):
  names = [name for name, _ in steps]
  if not isinstance(state, dict) or list(state.keys()) != names:
    got = list(state.keys()) if isinstance(state, dict) else type(state).__name__
    raise _errors.StateMismatchError(f"named_chain needs a state with keys {names}, got {got}")
  new_state = collections.OrderedDict()
  for name, tx in steps:
    try:
      updates, new_state[name] = tx.update(updates, state[name], params, **extra_args)
    except _errors.GradxformError as err:
      err.at_position(f"named_chain step {name!r}")
      raise
  return updates, new_state


def named_chain(*args: tuple[str, _base.GradientTransformation]) -> _base.GradientTransformationExtraArgs:
  """Like `chain`, but each step has a name and the state is an ordered dict keyed by those names.

  Args:
    *args: (name, transformation) pairs with unique names.
  """
  names = [name for name, _ in args]
  if len(set(names)) != len(names):
    duplicates = sorted({n for n in names if names.count(n) > 1})
    raise _errors.HyperparameterError(f"named_chain: step names must be unique, repeated: {duplicates}")
  steps = tuple((name, _as_transformation(tx, f"named_chain: step {name!r}")) for name, tx in args)
  return _base.transformation("named_chain", _named_chain_init, _named_chain_update, steps=steps)


# ----------------------------------------------------------------------------------------------
# masked.


class MaskedState(NamedTuple):
  """State of `masked`: the inner transformation's state (built on the masked params)."""
  inner_state: Any


class MaskedNode(NamedTuple):
  """Stands in for a masked-out leaf or subtree: an empty node, so it has no leaves and no state."""


def _mask_tree(mask, tree):
  return mask(tree) if callable(mask) else mask


def _apply_mask(tree, mask_tree, what):
  """Replaces the masked-out subtrees of `tree` with MaskedNode (mask_tree may be a prefix of tree)."""
  try:
    # A None in the mask (a mask function applied to updates with None leaves) selects nothing.
    return jax.tree.map(lambda m, x: x if m else MaskedNode(), mask_tree, tree, is_leaf=_tree.is_none)
  except (ValueError, TypeError):
    _errors.raise_tree_mismatch("mask", mask_tree, what, tree)
    raise


def _masked_init(params, *, inner, mask, **_):
  return MaskedState(inner_state=inner.init(_apply_mask(params, _mask_tree(mask, params), "params")))


def _masked_update(updates, state, params=None, *, inner, mask, mask_compatible_extra_args, **extra_args):
  _errors.expect_state(state, (MaskedState,), "masked")
  mask_tree = _mask_tree(mask, updates)
  if mask_compatible_extra_args:
    structure = jax.tree.structure(updates)
    extra_args = {k: _apply_mask(v, mask_tree, k) if jax.tree.structure(v) == structure else v
                  for k, v in extra_args.items()}
  masked_updates = _apply_mask(updates, mask_tree, "updates")
  masked_params = None if params is None else _apply_mask(params, mask_tree, "params")
  new_masked, inner_state = inner.update(masked_updates, state.inner_state, masked_params, **extra_args)
  new_updates = jax.tree.map(lambda m, new, old: new if m else old, mask_tree, new_masked, updates,
                             is_leaf=_tree.is_none)
  return new_updates, MaskedState(inner_state=inner_state)


def masked(inner: _base.GradientTransformation,
           mask: Union[_base.PyTree, Callable[[_base.Params], _base.PyTree]], *,
           mask_compatible_extra_args: bool = False) -> _base.GradientTransformationExtraArgs:
  """Applies `inner` only where `mask` is True; other updates pass through untouched and get no state.

  Args:
    inner: the transformation to apply to the selected leaves.
    mask: a tree of booleans with the structure of the params (or a prefix of it), or a function
      params -> such a tree.
    mask_compatible_extra_args: also mask extra keyword arguments shaped like the updates.
  """
  inner = _as_transformation(inner, "masked: argument `inner`")
  return _base.transformation("masked", _masked_init, _masked_update, inner=inner, mask=mask,
                              mask_compatible_extra_args=mask_compatible_extra_args)
