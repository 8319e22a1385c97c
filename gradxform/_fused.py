"""fused(tx): the elementwise steps of a chain run as one pass per leaf, with the same results and state.

XLA on CPU fuses each elementwise expression into a loop, but a value read by two loops is written to
memory and read back, and a value containing a division (clip_by_global_norm's g / norm) is never
recomputed in each reader. `optax.chain(clip_by_global_norm(1), adamw(...))` therefore writes the clipped
gradient, reads it twice, and moves about 60 bytes per float32 parameter where about 30 suffice.

`fused(tx)` walks `tx` (chains, aliases and nested chains), and runs each run of consecutive recognised
steps (clip_by_global_norm, scale, scale_by_schedule, scale_by_learning_rate, add_decayed_weights without
a mask, identity, scale_by_adam, trace) as one per-leaf program:

* every step's scalars (counts, bias corrections, schedule values, the global norm) are computed once,
  before the per-leaf pass;
* each leaf's update flows through the steps without being materialised between them; where a stateful
  step reads its input more than once (Adam reads g for both moments), the cheap stateless steps before
  it are recomputed for each read, from scalar copies XLA cannot merge (an optimization barrier), so the
  clipped gradient is never written to memory;
* the per-leaf arithmetic is the very functions the unfused transformations use, in the same order, so
  updates and state are bit-identical to `tx`'s, except where a float32/float64 step is recomputed: XLA
  may round a recomputed division differently (g * (1 / norm) for g / norm), a last-bit difference
  (below 1e-6 relative). bfloat16 and float16 leaves are never recomputed, so they stay bit-identical.

Inside `inject_hyperparams`, the transformation it builds each step is fused the same way. Steps it
does not recognise (masked weight decay, partition, any other transformation) run through their own
`update`, unfused, between fused runs. Called eagerly (outside `jax.jit`), the whole
update runs as one cached compiled program instead of one dispatch per operation per leaf.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradxform import _base
from gradxform import _clip
from gradxform import _combine
from gradxform import _decay
from gradxform import _errors
from gradxform import _moments
from gradxform import _numerics
from gradxform import _scale
from gradxform import _tree
from gradxform.schedules import _inject

__all__ = ["fused"]


class _Prepared(NamedTuple):
  """A step's scalar work for this update: its scalars, its per-leaf state trees, and how to rebuild its state."""
  scalars: Any
  trees: tuple
  rebuild: Callable[[tuple], Any]


class _Stage(NamedTuple):
  """How one recognised transformation runs inside a fused pass.

  prepare(state, inputs, params) -> _Prepared; `inputs` (the update tree) is given only to a stage that
    starts a pass (one that needs a reduction over its input, such as a global norm).
  leaf: stateless `(u, p, scalars) -> u`; stateful `(read, p, state_leaves, scalars) -> (u, new_leaves)`,
    where `read(k)` returns the k-th separately computed copy of the step's input.
  """
  label: str
  prepare: Callable
  leaf: Callable
  stateful: bool = False
  needs_params: bool = False
  starts_pass: bool = False


def _unchanged(state):
  return lambda new_trees: state


# ----------------------------------------------------------------------------------------------
# The recognised steps.


def _clip_stage(*, max_norm):
  def prepare(state, inputs, params):
    norm = _tree.global_norm(inputs)
    return _Prepared((norm, norm < max_norm), (), _unchanged(state))

  def leaf(u, p, scalars):
    norm, keep = scalars
    return _clip.clip_by_global_norm_leaf(u, norm, keep, max_norm)

  return _Stage("clip_by_global_norm", prepare, leaf, starts_pass=True)


def _scale_stage(*, step_size):
  return _Stage("scale", lambda state, inputs, params: _Prepared(step_size, (), _unchanged(state)),
                lambda u, p, step: _scale.scaled_leaf(u, step))


def _schedule_stage(*, step_size_fn):
  def prepare(state, inputs, params):
    _errors.expect_state(state, (_scale.ScaleByScheduleState,), "scale_by_schedule")
    new_state = _scale.ScaleByScheduleState(count=_numerics.safe_increment(state.count))
    return _Prepared(step_size_fn(state.count), (), lambda new_trees: new_state)

  return _Stage("scale_by_schedule", prepare, lambda u, p, step: _scale.scheduled_leaf(u, step))


def _decay_stage(*, weight_decay):
  def prepare(state, inputs, params):
    _errors.require_params(params, "add_decayed_weights")
    if not callable(weight_decay):
      return _Prepared(weight_decay, (), _unchanged(state))
    _errors.expect_state(state, (_decay.WeightDecaySchedule,), "add_decayed_weights")
    new_state = _decay.WeightDecaySchedule(count=_numerics.safe_increment(state.count))
    return _Prepared(weight_decay(state.count), (), lambda new_trees: new_state)

  def leaf(u, p, rate):
    if isinstance(rate, (int, float)) and rate == 0.0:
      return u  # as the unfused step: a zero python rate adds nothing (not even -0.0 + 0.0 rounding)
    return _decay._decayed_leaf(u, p, rate)[0]  # pylint: disable=protected-access

  return _Stage("add_decayed_weights", prepare, leaf, needs_params=True)


def _identity_stage():
  return _Stage("identity", lambda state, inputs, params: _Prepared(None, (), _unchanged(state)),
                lambda u, p, scalars: u)


def _adam_stage(*, b1, b2, eps, eps_root, nesterov, nu_dtype=None, **_):
  def prepare(state, inputs, params):
    _errors.expect_state(state, (_moments.ScaleByAdamState,), "scale_by_adam")
    count = _numerics.safe_increment(state.count)
    corrections = _moments._adam_corrections(b1, b2, count, nesterov)  # pylint: disable=protected-access
    return _Prepared(corrections, (state.mu, state.nu),
                     lambda new: _moments.ScaleByAdamState(count=count, mu=new[0], nu=new[1]))

  def leaf(read, p, state_leaves, corrections):
    mu, nu = state_leaves
    step, new_mu, new_nu = _moments.adam_leaf(
        read(0), mu, nu, b1=b1, b2=b2, eps=eps, eps_root=eps_root, corrections=corrections, nesterov=nesterov,
        widen=nu_dtype is not None, copies=(read(1), read(2) if nesterov else None))
    return step, (new_mu, new_nu)

  return _Stage("scale_by_adam", prepare, leaf, stateful=True)


def _trace_stage(*, decay, nesterov, **_):
  def prepare(state, inputs, params):
    _errors.expect_state(state, (_moments.TraceState,), "trace")
    return _Prepared(None, (state.trace,), lambda new: _moments.TraceState(trace=new[0]))

  def leaf(read, p, state_leaves, scalars):
    out, new_trace = _moments.trace_leaf(read(0), state_leaves[0], decay=decay, nesterov=nesterov,
                                         copies=(read(1),) if nesterov else None)
    return out, (new_trace,)

  return _Stage("trace", prepare, leaf, stateful=True)


# Keyed by the module-level update function every transformation is built from (see `_base.transformation`).
_STAGES = {
    _clip._clip_by_global_norm_update: _clip_stage,  # pylint: disable=protected-access
    _scale._scale_update: _scale_stage,  # pylint: disable=protected-access
    _scale._schedule_update: _schedule_stage,  # pylint: disable=protected-access
    _decay._add_decayed_weights_update: _decay_stage,  # pylint: disable=protected-access
    _base._identity_update: _identity_stage,  # pylint: disable=protected-access
    _moments._adam_update: _adam_stage,  # pylint: disable=protected-access
    _moments._trace_update: _trace_stage,  # pylint: disable=protected-access
}


def stage_of(tx: Any) -> _Stage | None:
  """The fused form of a single (non-chain) transformation, or None when it has none."""
  update = getattr(tx, "update", None)
  if not isinstance(update, _base.Bound) or update.func not in _STAGES:
    return None
  return _STAGES[update.func](**update.keywords)


# ----------------------------------------------------------------------------------------------
# Walking chains: each step with the path of its state inside the chain's nested tuples.


def _is_chain(tx: Any) -> bool:
  update = getattr(tx, "update", None)
  return isinstance(update, _base.Bound) and update.func is _combine._chain_update  # pylint: disable=protected-access


def _steps_with_paths(tx: Any, state: Any, path: tuple = (), where: tuple = (), *, check: bool = True) -> list:
  """[(tx, state, path, where)] for the non-chain steps of `tx` in order; `where` names chain positions.

  With `check=False` the state is not looked at (pass None): for walking a transformation's structure.
  """
  if not _is_chain(tx):
    return [(tx, state, path, where)]
  steps = tx.update.keywords["steps"]
  if check:
    _combine.check_chain_state(state, len(steps))
  found = []
  for i, step in enumerate(steps):
    position = (tx.update.label or "chain", f"chain step {i + 1} of {len(steps)}")
    found += _steps_with_paths(step, state[i] if check else None, path + (i,), where + (position,), check=check)
  return found


def _is_inject(tx: Any) -> bool:
  update = getattr(tx, "update", None)
  return isinstance(update, _base.Bound) and update.func is _inject._inject_update  # pylint: disable=protected-access


def _replace_at(state: Any, path: tuple, value: Any) -> Any:
  """`state` with the part at `path` replaced; path entries index chain tuples (int) or state fields (str)."""
  if not path:
    return value
  key, rest = path[0], path[1:]
  if isinstance(key, str):
    return state._replace(**{key: _replace_at(getattr(state, key), rest, value)})
  items = list(state)
  items[key] = _replace_at(items[key], rest, value)
  return tuple(items)


def _annotate_outer(err: _errors.GradxformError, where: tuple) -> None:
  for outer_label, position in reversed(where):
    if position is not None:
      err.at_position(position)
    err.enter(outer_label)


def _annotate(err: _errors.GradxformError, label: str, where: tuple) -> None:
  err.enter(label)
  _annotate_outer(err, where)


# ----------------------------------------------------------------------------------------------
# One fused pass over the leaves.


_RECOMPUTED_DTYPES = (jnp.dtype(jnp.float32), jnp.dtype(jnp.float64))


def _barrier_copies(scalars: Any) -> Callable[[int], Any]:
  """copy(k): `scalars` for k == 0, else a copy XLA keeps distinct (so expressions using it are not merged)."""
  cache = {0: scalars}

  def copy(k):
    if k not in cache:
      has_arrays = any(isinstance(x, (jax.Array, jax.core.Tracer)) for x in jax.tree.leaves(scalars))
      cache[k] = jax.lax.optimization_barrier(scalars) if has_arrays else scalars
    return cache[k]

  return copy


def _run_pass(members: list, updates: Any, params: Any) -> tuple[Any, list]:
  """Runs the stages of `members` ([(stage, state, where)]) over the leaves; returns (updates, new states)."""
  prepared = []
  for i, (stage, state, where) in enumerate(members):
    try:
      prepared.append(stage.prepare(state, updates if i == 0 else None, params))
    except _errors.GradxformError as err:
      _annotate(err, stage.label, where)
      raise
  copies = [_barrier_copies(p.scalars) for p in prepared]
  stages = [stage for stage, _, _ in members]
  trees = [tree for p in prepared for tree in p.trees]
  uses_params = any(stage.needs_params for stage in stages)

  def leaf(g, *columns):
    state_leaves, p = columns[:len(trees)], (columns[len(trees)] if uses_params else None)
    base, pending, new_leaves, taken = g, [], [], 0

    # Low-precision leaves read one shared copy: XLA may round a recomputed copy differently (it can turn
    # g / norm into g * (1 / norm)), a last-bit change that is 1e-7 relative in float32 but 4e-3 in bfloat16.
    recompute = jnp.dtype(g.dtype) in _RECOMPUTED_DTYPES

    def through_pending(k, base, pending):
      u = base
      for j in pending:
        u = stages[j].leaf(u, p, copies[j](k if recompute else 0))
      return u

    for j, stage in enumerate(stages):
      if not stage.stateful:
        pending.append(j)
        continue
      n = len(prepared[j].trees)
      read = functools.partial(through_pending, base=base, pending=tuple(pending))
      base, new = stage.leaf(read, p, state_leaves[taken:taken + n], prepared[j].scalars)
      new_leaves += list(new)
      taken += n
      pending = []
    return (through_pending(0, base, pending), *new_leaves)

  names = tuple(f"state of {stage.label}" for stage, p in zip(stages, prepared) for _ in p.trees)
  updates, new_trees = _tree.leafwise(leaf, updates, trees, (params,) if uses_params else (),
                                      state_names=names, extra_names=("params",))
  new_states, taken = [], 0
  for p in prepared:
    new_states.append(p.rebuild(new_trees[taken:taken + len(p.trees)]))
    taken += len(p.trees)
  return updates, new_states


def _fused_init(params, *, inner):
  return inner.init(params)


def fused_update(inner: Any, updates: Any, state: Any, params: Any = None, **extra_args) -> tuple[Any, Any]:
  """`inner.update`, with its recognised elementwise steps fused into per-leaf passes (always traced)."""
  pending = _steps_with_paths(inner, state)
  members, new_state = [], state

  def flush(updates):
    nonlocal new_state, members
    if members:
      updates, states = _run_pass([(stage, s, where) for stage, s, _, where in members], updates, params)
      for (_, _, path, _), s in zip(members, states):
        new_state = _replace_at(new_state, path, s)
      members = []
    return updates

  while pending:
    tx, step_state, path, where = pending.pop(0)
    stage = stage_of(tx)
    if (stage is None and not _is_inject(tx)) or (stage is not None and stage.starts_pass):
      updates = flush(updates)
    if stage is not None:
      members.append((stage, step_state, path, where))
      continue
    try:
      if _is_inject(tx):
        # Build this step's transformation from the injected hyperparameters, then walk into it: its
        # steps join the current pass (its state sits in the `inner_state` field).
        built, step_state = _inject.prepare_inner(step_state, params, **tx.update.keywords, **extra_args)
        new_state = _replace_at(new_state, path, step_state)
        pending[:0] = _steps_with_paths(built, step_state.inner_state, path + ("inner_state",),
                                        where + ((tx.update.label, None),))
        continue
      updates, step_state = _base.with_extra_args_support(tx).update(updates, step_state, params, **extra_args)
    except _errors.GradxformError as err:
      _annotate_outer(err, where)
      raise
    new_state = _replace_at(new_state, path, step_state)
  return flush(updates), new_state


@functools.lru_cache(maxsize=64)
def _compiled_update(inner: Any) -> Callable:
  return jax.jit(functools.partial(fused_update, inner))


def _is_traced(tree: Any) -> bool:
  return any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves(tree))


def _only_arrays(tree: Any) -> bool:
  return all(isinstance(x, (jax.Array, np.ndarray, np.generic, int, float, complex)) for x in jax.tree.leaves(tree))


def _fused_update_entry(updates, state, params=None, *, inner, **extra_args):
  if _is_traced((updates, state, params, extra_args)) or not _only_arrays(extra_args):
    # Traced already, or an extra argument jit cannot take (a `value_fn` callable): run as it stands.
    return fused_update(inner, updates, state, params, **extra_args)
  try:
    hash(inner)
  except TypeError:  # an unhashable hyperparameter somewhere: no cache, trace eagerly
    return fused_update(inner, updates, state, params, **extra_args)
  return _compiled_update(inner)(updates, state, params, **extra_args)


def fused(tx: _base.GradientTransformation) -> _base.GradientTransformationExtraArgs:
  """`tx` with its consecutive elementwise steps run as one pass per leaf: same updates, same state, less memory traffic.

  The state is `tx.init(params)` itself, so states move freely between `tx` and `fused(tx)` (checkpoints,
  `hyperparams`, `state_dict`). Updates and states equal `tx`'s jitted ones: the per-leaf arithmetic is
  the same functions in the same order, and only what XLA writes to memory between steps changes; where a
  cheap step before Adam's moments is recomputed per read (float32/float64 leaves), XLA may round that
  division differently, a last-bit (< 1e-6 relative) difference. Outside `jax.jit` the update runs as
  one cached compiled program.

  Recognised steps: clip_by_global_norm, scale, scale_by_schedule, scale_by_learning_rate,
  add_decayed_weights (no mask), identity, scale_by_adam (adam, adamw, nadam, nadamw without masks),
  trace (sgd with momentum), and the same inside `inject_hyperparams`. Other steps run unfused where
  they stand.

  Args:
    tx: any transformation; typically `chain(clip_by_global_norm(...), adamw(...))` or an optimizer alias.

  Returns:
    A transformation with `tx`'s init and state.
  """
  inner = _combine._as_transformation(tx, "fused: argument `tx`")  # pylint: disable=protected-access
  return _base.transformation("fused", _fused_init, _fused_update_entry, inner=inner)
