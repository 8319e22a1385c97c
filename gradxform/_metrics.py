"""Per-step metrics: `with_metrics(tx)` records norms, learning rate and skips in the state; `metrics` reads them.

The metrics are computed inside `update` (so inside a jitted step) as float32 scalars. The set of keys is
fixed when `init` runs, from what the inner state contains, so the state's structure never changes and a
jitted step never retraces. The wrapped transformation's updates and state are passed through untouched.
"""

from __future__ import annotations

import inspect
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradxform import _base
from gradxform import _combine
from gradxform import _errors
from gradxform import _hyperparams
from gradxform import _numerics
from gradxform import _tree

__all__ = ["MetricsState", "metrics", "with_metrics"]

_LEARNING_RATE = "learning_rate"
# Wrappers that can hold back an update, by class name (optax's states have the same names and fields),
# and the field holding the state of what they wrap.
_SKIPPING_STATES = {"ApplyIfFiniteState": "inner_state", "MultiStepsState": "inner_opt_state"}
# Component added to the paths of a MetricsState nested in another one, so the two sets of keys differ.
_NESTED = "inner"


class MetricsState(NamedTuple):
  """State of `with_metrics`.

  Attributes:
    inner_state: the wrapped transformation's state.
    metrics: a dict of float32 scalars describing the last update (keys fixed at init):
      `grad_norm`, `update_norm`, `param_norm`, and, when the inner state has them, `learning_rate`
      (or one `<path>/learning_rate` per inject_hyperparams learning rate when there are several) and
      `skipped`.
  """
  inner_state: Any
  metrics: dict[str, jax.Array]


def _f32_scalar(value: Any) -> jax.Array:
  return jnp.asarray(value).astype(jnp.float32)


def _norm(tree: Any) -> jax.Array:
  """Global L2 norm as a float32 scalar: inexact leaves only, narrow floats (bf16, f16) summed in float32."""
  leaves = [jnp.asarray(x) for x in jax.tree.leaves(tree) if jnp.issubdtype(_numerics.dtype_of(x), jnp.inexact)]
  # The barrier (an identity) keeps XLA from merging the norm with the inner step. Merged, `g * g` is shared
  # with adam's second moment, which materializes the squares and splits the step's fused loops (~10% of
  # a CPU adam step, benchmarks/bench_metrics.py), and a bf16 update is read before its rounding to bf16
  # (excess precision), so its norm is not that of the values returned.
  leaves = jax.lax.optimization_barrier(leaves)
  # A bf16 sum of squares loses most of its digits over a large leaf; the cast fuses into the reduction.
  return _f32_scalar(_tree.global_norm([_upcast(x) for x in leaves]))


def _upcast(x: jax.Array) -> jax.Array:
  narrow = jnp.issubdtype(x.dtype, jnp.floating) and jnp.finfo(x.dtype).bits < 32
  return x.astype(jnp.float32) if narrow else x


def _learning_rates(inner_state: Any) -> dict[str, jax.Array]:
  """The scalar `learning_rate` hyperparameters of inject_hyperparams states, by shortest unique path."""
  found = _hyperparams.hyperparams(inner_state)
  return {name: value for name, value in found.items()
          if name.split("/")[-1] == _LEARNING_RATE and jnp.shape(value) == ()}


def _is_skipping_state(x: Any) -> bool:
  field = _SKIPPING_STATES.get(type(x).__name__)
  return field is not None and field in getattr(x, "_fields", ())


def _skipping_states(state: Any) -> list:
  """Every apply_if_finite / MultiSteps state in `state`, nested ones included, in a fixed order."""
  found = []
  for leaf in jax.tree.leaves(state, is_leaf=_is_skipping_state):
    if _is_skipping_state(leaf):
      found.append(leaf)
      found.extend(_skipping_states(getattr(leaf, _SKIPPING_STATES[type(leaf).__name__])))
  return found


def _held_back(old: Any, new: Any) -> jax.Array:
  """Whether one wrapper held back this step's update, read from its state before and after."""
  if type(new).__name__ == "MultiStepsState":
    # The optimizer-step counter moves only when MultiSteps emits an update: an unchanged one means it
    # accumulated, or dropped the mini-step through should_skip_update_fn.
    return new.gradient_step == old.gradient_step
  # The running total of non-finite updates moves only on a step that had one; `last_finite` alone
  # would be stale for an apply_if_finite that did not run this step (inside an accumulating MultiSteps).
  return new.total_notfinite != old.total_notfinite


def _initial_metrics(inner_state: Any) -> dict[str, jax.Array]:
  zero = jnp.zeros([], jnp.float32)
  result = {"grad_norm": zero, "update_norm": zero, "param_norm": zero}
  for name, value in _learning_rates(inner_state).items():
    result[name] = _f32_scalar(value)  # the value the first update will use
  if _skipping_states(inner_state):
    result["skipped"] = zero
  return result


def _with_metrics_init(params, *, inner, **_):
  inner_state = inner.init(params)
  return MetricsState(inner_state=inner_state, metrics=_initial_metrics(inner_state))


def _with_metrics_update(updates, state, params=None, *, inner, **extra_args):
  _errors.expect_state(state, (MetricsState,), "with_metrics")
  new_updates, inner_state = inner.update(updates, state.inner_state, params, **extra_args)
  result = {"grad_norm": _norm(updates), "update_norm": _norm(new_updates),
            # NaN, not 0, without params: a norm of 0 would read as real all-zero parameters.
            "param_norm": jnp.full([], jnp.nan, jnp.float32) if params is None else _norm(params)}
  for name, value in _learning_rates(inner_state).items():
    result[name] = _f32_scalar(value)
  if "skipped" in state.metrics:
    held_back = jnp.array(False)
    for old, new in zip(_skipping_states(state.inner_state), _skipping_states(inner_state)):
      held_back = jnp.logical_or(held_back, _held_back(old, new))
    result["skipped"] = _f32_scalar(held_back)
  if set(result) != set(state.metrics):
    raise _errors.StateMismatchError(
        f"with_metrics: the state holds metrics {sorted(state.metrics)} but the inner state now gives "
        f"{sorted(result)}; was it made by another optimizer's init?")
  return new_updates, MetricsState(inner_state=inner_state, metrics={k: result[k] for k in state.metrics})


def _takes_extra_args(fn: Any) -> bool:
  try:
    parameters = inspect.signature(fn).parameters.values()
  except (TypeError, ValueError):
    return False
  return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def _as_pair(tx: Any) -> Any:
  """`tx` as an (init, update) pair; an object with init/update methods (MultiSteps) is not one."""
  if isinstance(tx, tuple) or not (hasattr(tx, "init") and hasattr(tx, "update")):
    return tx
  # gradient_transformation() gives functions that compare by value (bound methods compare by object
  # identity), so two equal constructions still give equal wrappers.
  init, update = tx.gradient_transformation() if hasattr(tx, "gradient_transformation") else (tx.init, tx.update)
  if _takes_extra_args(update):
    return _base.GradientTransformationExtraArgs(init, update)
  return _base.GradientTransformation(init, update)


def with_metrics(tx: _base.GradientTransformation) -> _base.GradientTransformationExtraArgs:
  """Wraps `tx` so that every update also records per-step metrics in the state (read them with `metrics`).

  The updates and inner state are exactly those of `tx`; extra keyword arguments of `update` are passed on.
  Recorded, as float32 scalars: `grad_norm` and `update_norm` (global L2 norms of the incoming and outgoing
  updates), `param_norm` (of `params`; NaN when `update` gets no params); `learning_rate` when `tx` has an
  `inject_hyperparams` learning rate (one `<path>/learning_rate` each when there are several, named as
  `gradxform.hyperparams` names them); `skipped` when `tx` contains `apply_if_finite` or `MultiSteps`: 1.0
  on a step where one of them held the update back (a non-finite update reached apply_if_finite, even
  past max_consecutive_errors; MultiSteps accumulated or dropped a mini-step), else 0.0. Before the first
  update the norms and `skipped` are 0 and `learning_rate` is the one the first update will use. Norms
  sum per-leaf squares (bfloat16 leaves in float32), skipping None and non-floating leaves.

  Args:
    tx: the transformation to wrap (gradxform's, optax's, or any (init, update) pair).

  Returns:
    A GradientTransformationExtraArgs whose state is a MetricsState.
  """
  inner = _combine._as_transformation(_as_pair(tx), "with_metrics: argument `tx`")  # pylint: disable=protected-access
  return _base.transformation("with_metrics", _with_metrics_init, _with_metrics_update, inner=inner)


def _is_metrics_state(x: Any) -> bool:
  return isinstance(x, MetricsState) or (type(x).__name__ == "MetricsState"
                                         and getattr(x, "_fields", None) == MetricsState._fields)


def _metrics_states(state: Any, readable: tuple, full: tuple) -> list[tuple[tuple, tuple, dict]]:
  """(readable path, full path, metrics) for every MetricsState below `state`, outer ones first."""
  found = []
  with_paths, _ = jax.tree_util.tree_flatten_with_path(state, is_leaf=_is_metrics_state)
  for path, leaf in with_paths:
    if _is_metrics_state(leaf):
      where = readable + _hyperparams._readable(path)  # pylint: disable=protected-access
      where_full = full + (_tree.slash_path(path),) if path else full
      found.append((where, where_full, leaf.metrics))
      found.extend(_metrics_states(leaf.inner_state, where + (_NESTED,), where_full + ("inner_state",)))
  return found


def metrics(state: Any) -> dict[str, jax.Array]:
  """The metrics recorded by `with_metrics` anywhere in an optimizer state.

  Args:
    state: an optimizer state (any tree of states) containing at least one MetricsState.

  Returns:
    A dict of float32 scalars such as `{"grad_norm": …, "update_norm": …, "param_norm": …}`. With several
    `with_metrics` in the state, each key is prefixed by its position: `"1/grad_norm"` for the second step
    of a chain, `"inner/…"` for one nested in another's inner state.

  Raises:
    StateMismatchError: `state` has no MetricsState.
  """
  found = _metrics_states(state, (), ())
  if not found:
    raise _errors.StateMismatchError(
        f"metrics: the state ({type(state).__name__}) holds no metrics; wrap the optimizer with "
        "`gradxform.with_metrics(tx)` to record them")
  if len(found) == 1:
    return dict(found[0][2])
  readable = {where for where, _, _ in found}
  # Readable paths leave out NamedTuple field names; if that merges two positions, spell them out.
  use_full = len(readable) < len(found)
  result = {}
  for where, where_full, values in found:
    prefix = "/".join(where_full if use_full else where)
    for key, value in values.items():
      result[f"{prefix}/{key}" if prefix else key] = value
  return result
