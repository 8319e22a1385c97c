"""Wrappers around other transformations: flatten, lookahead, monitoring, and non-negative parameters.

`flatten` runs an inner transformation on one concatenated vector; `lookahead` keeps slow and fast
copies of the params (Zhang et al., 2019); `snapshot`, `monitor` and `measure_with_ema` record
measurements of the updates in the state without changing them; `keep_params_nonnegative` clips
updates so the parameters never go below zero.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from gradxform import _base
from gradxform import _combine
from gradxform import _errors
from gradxform import _moments
from gradxform import _numerics
from gradxform import _tree

__all__ = ["LookaheadParams", "LookaheadState", "MonitorState", "NonNegativeParamsState", "SnapshotState",
           "flatten", "keep_params_nonnegative", "lookahead", "measure_with_ema", "monitor", "snapshot"]


def _as_transformation(tx: Any, where: str) -> _base.GradientTransformationExtraArgs:
  return _combine._as_transformation(tx, where)  # pylint: disable=protected-access


def _check_callable(fn: str, name: str, value: Any) -> None:
  if not callable(value):
    raise _errors.HyperparameterTypeError(
        f"{fn}: argument `{name}` must be a function of the updates, got {type(value).__name__} {value!r}")


# ----------------------------------------------------------------------------------------------
# flatten.


def _concatenated(tree):
  """All non-None leaves of `tree`, raveled and joined into one vector in their common (promoted) dtype."""
  leaves = jax.tree.leaves(tree)
  if not leaves:
    raise _errors.TreeMismatchError("flatten: the tree has no array leaves to flatten")
  with jax.numpy_dtype_promotion("standard"):  # the dtype optax's implicit concatenation gives
    dtype = jnp.result_type(*leaves)
  return jnp.concatenate([jnp.ravel(jnp.asarray(x).astype(dtype)) for x in leaves])


def _split_like(tree, flat):
  """Cuts `flat` into pieces shaped like the non-None leaves of `tree` (keeping flat's dtype)."""
  leaves, treedef = jax.tree.flatten(tree)
  pieces, start = [], 0
  for leaf in leaves:
    size = int(np.size(leaf))
    pieces.append(jnp.reshape(flat[start:start + size], np.shape(leaf)))
    start += size
  return jax.tree.unflatten(treedef, pieces)


def _flatten_init(params, *, inner, **_):
  return inner.init(_concatenated(params))


def _flatten_update(updates, state, params=None, *, inner, **extra_args):
  flat_params = None if params is None else _concatenated(params)
  flat_updates, state = inner.update(_concatenated(updates), state, flat_params, **extra_args)
  return _split_like(updates, flat_updates), state


def flatten(inner: _base.GradientTransformation) -> _base.GradientTransformationExtraArgs:
  """Runs `inner` on all leaves raveled and concatenated into one vector, then cuts the result back.

  One large array instead of many small ones cuts per-leaf overhead, at the cost of a copy. The
  vector (and so the inner state and the returned updates) has the promoted dtype of all leaves: a
  tree mixing float32 and bfloat16 gets float32 updates everywhere, as in optax.

  Args:
    inner: the transformation to run on the flat vector.

  Returns:
    A transformation whose state is `inner`'s state for the flat vector.
  """
  inner = _as_transformation(inner, "flatten: argument `inner`")
  return _base.transformation("flatten", _flatten_init, _flatten_update, inner=inner)


# ----------------------------------------------------------------------------------------------
# lookahead.


class LookaheadState(NamedTuple):
  """State of `lookahead`: the fast optimizer's state and the fast steps taken since the last sync."""
  fast_state: _base.OptState
  steps_since_sync: jax.Array


class LookaheadParams(NamedTuple):
  """The fast parameters (take gradients at these) and the slow ones (evaluate these) of `lookahead`."""
  fast: _base.Params
  slow: _base.Params

  @classmethod
  def init_synced(cls, params: _base.Params) -> "LookaheadParams":
    """Fast and slow parameters both equal to `params`."""
    return cls(slow=params, fast=params)


class _LookaheadParamsError(_errors.GradxformError, AttributeError):
  """lookahead got params without `fast` and `slow` (optax fails there with an AttributeError)."""


def _lookahead_init(params, *, fast_optimizer, **_):
  fast = getattr(params, "fast", None)
  if fast is None:
    logging.warning("lookahead: params have no `fast` attribute; treating them as the fast parameters. "
                    "Pass LookaheadParams.init_synced(params) to keep slow parameters too.")
    fast = params
  return LookaheadState(fast_state=fast_optimizer.init(fast), steps_since_sync=jnp.zeros([], jnp.int32))


class _Pair:
  """A (fast, slow) pair of update leaves: an opaque pytree leaf, so one tree walk yields both."""
  __slots__ = ("fast", "slow")

  def __init__(self, fast, slow):
    self.fast, self.slow = fast, slow


def _lookahead_leaf(u, fast, slow, *, keep_fast, slow_step):
  """The fast and slow updates of one leaf; `slow_step`, `keep_fast` are 0 except on a sync step.

  With d = fast + u - slow (the distance travelled since the last sync), slow moves by alpha * d and
  fast by u - (1 - alpha) * d, which lands both on slow + alpha * d (Zhang et al., 2019, alg. 1).
  """
  diff = _numerics.sub(_numerics.add(fast, u), slow)
  return (_Pair(_numerics.sub(u, _numerics.mul(keep_fast, diff)), _numerics.mul(slow_step, diff)),)


def _reset_leaf(current, initial, keep, take):
  return _numerics.add(_numerics.mul(keep, current), _numerics.mul(take, initial))


def _lookahead_update(updates, state, params=None, *, fast_optimizer, sync_period, slow_step_size, reset_state,
                      **extra_args):
  _errors.expect_state(state, (LookaheadState,), "lookahead")
  if not (hasattr(params, "fast") and hasattr(params, "slow")):
    raise _LookaheadParamsError(
        f"needs params as LookaheadParams(fast=..., slow=...), got {type(params).__name__}: "
        "start from LookaheadParams.init_synced(params) and take gradients at params.fast")
  updates, fast_state = fast_optimizer.update(updates, state.fast_state, params.fast, **extra_args)
  sync_next = state.steps_since_sync == (sync_period - 1)
  # Weakly typed 0-d scalars (alpha * sync, (1 - alpha) * sync), so bfloat16 leaves stay bfloat16.
  slow_step = jnp.where(sync_next, slow_step_size, 0.0)
  keep_fast = jnp.where(sync_next, 1 - slow_step_size, 0.0)
  pairs, _ = _tree.leafwise(
      lambda u, f, s: _lookahead_leaf(u, f, s, keep_fast=keep_fast, slow_step=slow_step),
      updates, (), (params.fast, params.slow), extra_names=("params.fast", "params.slow"))
  is_pair = lambda x: isinstance(x, _Pair)  # noqa: E731
  new_updates = LookaheadParams(fast=jax.tree.map(lambda p: p.fast, pairs, is_leaf=is_pair),
                                slow=jax.tree.map(lambda p: p.slow, pairs, is_leaf=is_pair))
  if reset_state:
    initial = fast_optimizer.init(params.fast)
    keep, take = jnp.where(sync_next, 0, 1), jnp.where(sync_next, 1, 0)
    fast_state = jax.tree.map(lambda c, i: _reset_leaf(c, i, keep, take), fast_state, initial)
  with jax.numpy_dtype_promotion("standard"):  # a float sync_period makes a float counter, as in optax
    steps_since_sync = (state.steps_since_sync + 1) % sync_period
  return new_updates, LookaheadState(fast_state=fast_state, steps_since_sync=steps_since_sync)


def lookahead(fast_optimizer: _base.GradientTransformation, sync_period: jax.typing.ArrayLike,
              slow_step_size: jax.typing.ArrayLike, reset_state: bool = False) -> _base.GradientTransformationExtraArgs:
  """Lookahead: k fast steps forward, then the slow params step toward the fast ones (Zhang et al., 2019).

  The params are LookaheadParams(fast, slow) and the returned updates are LookaheadParams too; apply
  them unmodified. Every `sync_period` steps, slow <- slow + alpha * (fast - slow) and fast <- slow.

  Args:
    fast_optimizer: the inner optimizer, run on the fast parameters.
    sync_period: k, the number of fast steps between synchronizations (>= 1).
    slow_step_size: alpha, the fraction of the way the slow params move toward the fast ones.
    reset_state: re-initialize the fast optimizer's state at every synchronization.

  Returns:
    A transformation with state LookaheadState; take gradients at `params.fast`.
  """
  _errors.check_number("lookahead", "sync_period", sync_period, low=1.0)
  _errors.check_number("lookahead", "slow_step_size", slow_step_size)
  fast_optimizer = _as_transformation(fast_optimizer, "lookahead: argument `fast_optimizer`")
  return _base.transformation("lookahead", _lookahead_init, _lookahead_update, fast_optimizer=fast_optimizer,
                              sync_period=sync_period, slow_step_size=slow_step_size, reset_state=reset_state)


# ----------------------------------------------------------------------------------------------
# snapshot, monitor, measure_with_ema.


class SnapshotState(NamedTuple):
  """State of `snapshot`: {measure_name: the measurement of the last updates (of the params at init)}."""
  measurement: dict[str, Any]


def _snapshot_init(params, *, measure_name, measure, **_):
  return SnapshotState({measure_name: measure(params)})


def _snapshot_update(updates, state, params=None, *, measure_name, measure, **extra_args):
  del state, params, extra_args
  return updates, SnapshotState({measure_name: measure(updates)})


def snapshot(measure_name: str, measure: Callable[[_base.Updates], _base.ArrayTree]
             ) -> _base.GradientTransformationExtraArgs:
  """Records `measure(updates)` in the state under `measure_name`; the updates pass unchanged.

  Placed inside a chain it shows the updates at that point (e.g. their norm before clipping).

  Args:
    measure_name: the key of the measurement in the state (find it with `tree.get(state, name)`).
    measure: a function of the updates returning a tree of arrays; at init it is applied to the params.

  Returns:
    A transformation with state SnapshotState.
  """
  _check_callable("snapshot", "measure", measure)
  return _base.transformation("snapshot", _snapshot_init, _snapshot_update, measure_name=measure_name,
                              measure=measure)


class MonitorState(NamedTuple):
  """State of `monitor`: the latest measurement per name (empty at init) and each measure's own state."""
  measurements: dict[str, _base.ArrayTree]
  measure_states: tuple[_base.OptState, ...]


def _measure_updates(updates, params, *, measure):
  del params
  return measure(updates)


def _as_measure(name: str, measure: Any) -> _base.GradientTransformationExtraArgs:
  if callable(measure):  # a plain function of the updates: a measurement without state
    return _base.stateless(_base.Bound(_measure_updates, None, measure=measure))
  return _as_transformation(measure, f"monitor: measures[{name!r}] is not a function and")


def _monitor_init(params, *, measures, **_):
  return MonitorState({}, tuple(tx.init(params) for _, tx in measures))


def _monitor_update(updates, state, params=None, *, measures, **extra_args):
  _errors.expect_state(state, (MonitorState,), "monitor")
  if len(state.measure_states) != len(measures):
    raise _errors.StateMismatchError(
        f"{len(measures)} measures but its state holds {len(state.measure_states)} measure states")
  measurements, new_states = {}, []
  for (name, tx), inner_state in zip(measures, state.measure_states):
    try:
      measurements[name], inner_state = tx.update(updates, inner_state, params, **extra_args)
    except _errors.GradxformError as err:
      err.at_position(f"measure {name!r}")
      raise
    new_states.append(inner_state)
  return updates, MonitorState(measurements, tuple(new_states))


def monitor(measures: dict[str, _base.GradientTransformationExtraArgs | Callable[[_base.Updates], _base.ArrayTree]]):
  """Records several measurements of the updates, some with state (e.g. moving averages); updates pass unchanged.

  Args:
    measures: name -> a function of the updates, or a transformation whose output "updates" are the
      measurement (such as `measure_with_ema(...)`); extra keyword arguments reach the transformations.

  Returns:
    A transformation with state MonitorState; `measurements` is empty until the first update.
  """
  if not isinstance(measures, dict):
    raise _errors.HyperparameterTypeError(
        f"monitor: argument `measures` must be a dict name -> measure, got {type(measures).__name__}")
  steps = tuple((name, _as_measure(name, measure)) for name, measure in measures.items())
  return _base.transformation("monitor", _monitor_init, _monitor_update, measures=steps)


def _as_float(x):
  """A bool or integer measurement as the default float dtype (what optax's implicit promotion gives)."""
  x = jnp.asarray(x)
  return x if jnp.issubdtype(x.dtype, jnp.inexact) else x.astype(jnp.result_type(float))


def _ema_measure_leaf(m, e, decay):
  return _numerics.add(_numerics.mul(1 - decay, _as_float(m)), _numerics.mul(decay, _as_float(e)))


def _ema_measure_init(params, *, measure, accumulator_dtype, **_):
  return _moments.EmaState(count=jnp.zeros([], jnp.int32),
                           ema=_tree.zeros_like(measure(params), dtype=accumulator_dtype))


def _ema_measure_update(updates, state, params=None, *, measure, decay, debias, accumulator_dtype,
                        **extra_args):
  del params, measure, extra_args  # the chain's first step has already measured the updates
  _errors.expect_state(state, (_moments.EmaState,), "measure_with_ema")
  # The measurement may be a bool or an integer (optax promotes it); so no leafwise dtype check here.
  _tree.check_same_structure(updates, state.ema, "measurement", "state.ema")
  new_ema = jax.tree.map(lambda m, e: None if m is None else _ema_measure_leaf(m, e, decay),
                         updates, state.ema, is_leaf=_tree.is_none)
  count = _numerics.safe_increment(state.count)
  out = _moments.bias_correction(new_ema, decay, count) if debias else new_ema
  # Unlike `ema`, the stored average keeps the dtype of the new average unless one is given.
  return out, _moments.EmaState(count=count, ema=_tree.cast(new_ema, accumulator_dtype))


def measure_with_ema(measure: Callable[[_base.Updates], _base.ArrayTree], decay: jax.typing.ArrayLike,
                     debias: bool = True, accumulator_dtype: Optional[Any] = None
                     ) -> _base.GradientTransformationExtraArgs:
  """Outputs the exponential moving average of `measure(updates)`, for use inside `monitor`.

  e <- (1 - decay) * measure(updates) + decay * e, divided by 1 - decay**t when debiased. Bool and
  integer measurements (e.g. "was the update clipped?") are averaged as floats.

  Args:
    measure: a function of the updates returning a tree of arrays.
    decay: the averaging coefficient, in [0, 1).
    debias: divide by 1 - decay**t so early averages are not biased toward zero.
    accumulator_dtype: dtype of the stored average; None keeps the average's own dtype.

  Returns:
    `chain(stateless(measure), ema of the measurement)`: its "updates" are the averaged measurement.
  """
  _check_callable("measure_with_ema", "measure", measure)
  _errors.check_decay("measure_with_ema", "decay", decay)
  averaged = _base.transformation(
      "measure_with_ema", _ema_measure_init, _ema_measure_update, measure=measure, decay=decay, debias=debias,
      accumulator_dtype=_tree.canonical_dtype(accumulator_dtype))
  return _base.rename(
      _combine.chain(_base.stateless(_base.Bound(_measure_updates, None, measure=measure)), averaged),
      "measure_with_ema")


# ----------------------------------------------------------------------------------------------
# keep_params_nonnegative.


NonNegativeParamsState = _base.EmptyState


def _nonnegative_leaf(u, p):
  if p is None:
    return (None,)  # optax drops the update of a None param
  u, p = _numerics.promote(u, p)
  return (jnp.where(p + u < 0.0, -p, u),)


def _nonnegative_update(updates, state, params=None, **extra_args):
  del extra_args
  _errors.require_params(params, "keep_params_nonnegative")
  updates, _ = _tree.leafwise(_nonnegative_leaf, updates, (), (params,), extra_names=("params",))
  return updates, state


def keep_params_nonnegative() -> _base.GradientTransformationExtraArgs:
  """Clips the updates so that params + updates >= 0: where a step would go below zero it lands on zero.

  Put it last in a chain. Params that are already negative are moved to zero.

  Returns:
    A stateless transformation (NonNegativeParamsState) that needs `params`.
  """
  return _base.transformation("keep_params_nonnegative", _base.init_empty_state, _nonnegative_update)
