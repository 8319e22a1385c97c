"""Hyperparameters read and set by name anywhere in an optimizer state, without recompiling.

`inject_hyperparams` keeps its numeric arguments in its state. These functions find every such state in a
state tree (inside chains, `partition`, `masked`, `MultiSteps`, …) and name each hyperparameter by a
readable path: the dict keys (partition labels, parameter groups) and chain positions leading to it, then
its own name. A name may be shortened to any suffix of its path that is unique (`"learning_rate"` when
there is one, `"encoder/learning_rate"` when there are several). `set_hyperparams` returns a state with the
same structure, dtypes, weak types and shardings, so a jitted step sees the same signature and does not
retrace.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np

from gradxform import _errors
from gradxform.schedules._inject import InjectHyperparamsState
from gradxform.schedules._inject import InjectStatefulHyperparamsState

__all__ = ["hyperparams", "set_hyperparams"]

_INJECT_STATES = (InjectHyperparamsState, InjectStatefulHyperparamsState)
# Component a nested inject_hyperparams adds to the paths below it, so they differ from the outer ones.
_NESTED = "inner"


def _is_inject_state(x: Any) -> bool:
  return isinstance(x, _INJECT_STATES)


def group_label(index: int) -> str:
  """The partition label `param_groups` gives its group number `index` (its leftovers are "default")."""
  return f"group{index}"


class _Entry(NamedTuple):
  path: tuple[str, ...]  # readable components, ending with the hyperparameter's name
  value: Any
  scheduled: bool


def _readable(path: tuple) -> tuple[str, ...]:
  """Dict keys and sequence positions of a key path; NamedTuple field names (`inner_state`, …) say
  nothing a user chose, so they are left out."""
  components = []
  for entry in path:
    if isinstance(entry, jax.tree_util.DictKey):
      components.append(str(entry.key))
    elif isinstance(entry, jax.tree_util.SequenceKey):
      components.append(str(entry.idx))
    elif isinstance(entry, jax.tree_util.FlattenedIndexKey):
      components.append(str(entry.key))
  return tuple(components)


def _walk(state: Any, prefix: tuple[str, ...], replace=None) -> tuple[list[_Entry], Any]:
  """Every hyperparameter below `state`, and the state rebuilt with `replace(entry) -> value or None`."""
  with_paths, treedef = jax.tree_util.tree_flatten_with_path(state, is_leaf=_is_inject_state)
  entries, leaves = [], []
  for path, leaf in with_paths:
    if _is_inject_state(leaf):
      where = prefix + _readable(path)
      scheduled = set(getattr(leaf, "hyperparams_states", {}) or {})
      values = dict(leaf.hyperparams)
      for name, value in leaf.hyperparams.items():
        entry = _Entry(where + (name,), value, name in scheduled)
        entries.append(entry)
        if replace is not None:
          new = replace(entry)
          if new is not None:
            values[name] = new
      inner_entries, inner_state = _walk(leaf.inner_state, where + (_NESTED,), replace)
      entries.extend(inner_entries)
      leaf = leaf._replace(hyperparams=values, inner_state=inner_state)
    leaves.append(leaf)
  return entries, jax.tree_util.tree_unflatten(treedef, leaves)


def _shortest_names(entries: list[_Entry]) -> list[str]:
  """For each entry the shortest path suffix no other entry ends with."""
  names = []
  for entry in entries:
    for length in range(1, len(entry.path) + 1):
      suffix = entry.path[-length:]
      if sum(other.path[-length:] == suffix for other in entries) == 1:
        names.append("/".join(suffix))
        break
    else:
      names.append("/".join(entry.path))
  return names


def hyperparams(state: Any) -> dict[str, jax.Array]:
  """Every hyperparameter stored by `inject_hyperparams` in `state`, by its shortest unique readable path.

  Args:
    state: an optimizer state (any tree of states).

  Returns:
    A dict such as `{"learning_rate": Array(0.001)}`, or `{"group0/learning_rate": …,
    "default/learning_rate": …}` when several hyperparameters share a name. Scheduled ones hold the value
    used by the last update (or the first step's value after `init`).
  """
  entries, _ = _walk(state, ())
  return {name: entry.value for name, entry in zip(_shortest_names(entries), entries)}


def hyperparams_by_full_path(state: Any) -> dict[str, jax.Array]:
  """Like `hyperparams`, keyed by the whole readable path (`1/group0/learning_rate`)."""
  entries, _ = _walk(state, ())
  return {"/".join(entry.path): entry.value for entry in entries}


def _matches(entry: _Entry, key: tuple[str, ...]) -> bool:
  return len(key) <= len(entry.path) and entry.path[-len(key):] == key


def _as_stored(entry: _Entry, name: str, value: Any) -> jax.Array:
  """`value` with the dtype, shape, weak type and sharding of the stored one."""
  old = entry.value
  if isinstance(value, (str, bytes)) or value is None or (
      not isinstance(value, (bool, int, float, np.number, np.ndarray, jax.Array))):
    raise _errors.HyperparameterTypeError(
        f"set_hyperparams: `{name}` must be a number or an array, got {type(value).__name__} {value!r}")
  value_shape = np.shape(value)
  if value_shape != np.shape(old):
    raise _errors.HyperparameterError(
        f"set_hyperparams: `{name}` is stored with shape {np.shape(old)}, got a value of shape {value_shape}")
  number = _errors.concrete_number(value) if value_shape == () else None
  if number is not None and np.isnan(number):
    raise _errors.HyperparameterError(f"set_hyperparams: `{name}` must not be NaN")
  # full_like keeps the stored leaf's dtype and weak type; device_put its sharding (outside jit).
  new = jnp.full_like(old, value)
  if isinstance(old, jax.Array) and not isinstance(old, jax.core.Tracer):
    new = jax.device_put(new, old.sharding)
  return new


def set_hyperparams(state: Any, group: Optional[Union[int, str]] = None, **values: Any) -> Any:
  """A copy of `state` with the named hyperparameters set; same structure, dtypes and shardings.

  Because only values change, a jitted step that takes the state does not retrace. Names are readable
  paths as `hyperparams(state)` gives them, or any unique suffix of one (`learning_rate`,
  `encoder/learning_rate`; pass path keys as `**{"encoder/learning_rate": 1e-3}`).

  Args:
    state: an optimizer state containing `inject_hyperparams` states.
    group: restricts the names to one group of `param_groups`: its number, or "default".
    **values: name=value for each hyperparameter to set.

  Returns:
    The new state.

  Raises:
    HyperparameterError: a name matches none or several hyperparameters (the message lists the valid
      names), a value has the wrong shape or is NaN, or the hyperparameter is driven by a schedule (which
      would overwrite it at the next step).
    HyperparameterTypeError: a value is not a number or an array.
  """
  entries, _ = _walk(state, ())
  valid = _shortest_names(entries)
  candidates = entries
  if group is not None:
    label = group_label(group) if isinstance(group, int) and not isinstance(group, bool) else str(group)
    candidates = [entry for entry in entries if label in entry.path]
    if not candidates:
      groups = sorted({c for entry in entries for c in entry.path if c.startswith("group") or c == "default"})
      raise _errors.HyperparameterError(
          f"set_hyperparams: no hyperparameters in group {group!r} (label {label!r}); groups found: {groups}")
  chosen: dict[tuple[str, ...], tuple[str, Any]] = {}
  for name, value in values.items():
    key = tuple(name.split("/"))
    found = [entry for entry in candidates if _matches(entry, key)]
    where = f" in group {group!r}" if group is not None else ""
    if not found:
      raise _errors.HyperparameterError(
          f"set_hyperparams: no hyperparameter named `{name}`{where}; valid names: {valid}")
    if len(found) > 1:
      paths = ["/".join(entry.path) for entry in found]
      raise _errors.HyperparameterError(
          f"set_hyperparams: `{name}`{where} is ambiguous, it matches {paths}; use a longer path "
          f"(valid names: {valid})")
    entry = found[0]
    if entry.scheduled:
      raise _errors.HyperparameterError(
          f"set_hyperparams: `{name}` is driven by a schedule, which sets it again at every step; "
          "build the optimizer with a number for it to set it by hand")
    chosen[entry.path] = (name, _as_stored(entry, name, value))

  def replace(entry: _Entry):
    return chosen[entry.path][1] if entry.path in chosen else None

  return _walk(state, (), replace)[1]
