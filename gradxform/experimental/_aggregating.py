"""Per-example gradient aggregation: process per-example updates, aggregate them, then post-process.

An `Aggregator` is a transformation whose `update` receives per-example updates (a leading batch axis, or
several) and returns one aggregated update. `process(pre, aggregator, post)` chains the three stages; the
post-processor runs only on steps where the aggregator's state says `ready` (after accumulating micro-batches),
otherwise the step's updates are zeros. The mean-and-variance tools keep running estimates of the gradient
noise (per-coordinate variance across examples), e.g. for adaptive batch sizes.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple, Protocol, Sequence

import jax
import jax.numpy as jnp

from gradxform import _base
from gradxform import _combine
from gradxform import _errors
from gradxform import _numerics
from gradxform import tree_utils

PerElementUpdates = _base.ArrayTree
AggregatedUpdates = _base.ArrayTree
MaybeAxis = int | Sequence[int] | None


class AggregatorUpdateFn(Protocol):
  """`update(per_elt_updates, state, params=None, **extra_args) -> (aggregated_updates, state)`."""

  def __call__(self, per_elt_updates: PerElementUpdates, state: _base.OptState,
               params: _base.Params | None = None, **extra_args: Any
               ) -> tuple[AggregatedUpdates, _base.OptState]:
    pass


class Aggregator(_base.GradientTransformationExtraArgs):
  """A transformation from per-example updates to one aggregated update."""

  init: _base.TransformInitFn
  update: AggregatorUpdateFn


def _aggregator(label: str, init, update, **hyperparams) -> Aggregator:
  return Aggregator(*_base.transformation(label, init, update, **hyperparams))


# ----------------------------------------------------------------------------------------------
# process: pre-process, aggregate, post-process.


def _process_init(params, *, preprocessor, aggregator, postprocessor, **_):
  return preprocessor.init(params), aggregator.init(params), postprocessor.init(params)


def _process_update(per_elt_updates, state, params=None, *, preprocessor, aggregator, postprocessor,
                    aggregator_has_aux, **extra_args):
  pre_state, aggregate_state, post_state = state
  per_elt_updates, pre_state = preprocessor.update(per_elt_updates, pre_state, params, **extra_args)
  aggregated, aggregate_state = aggregator.update(per_elt_updates, aggregate_state, params, **extra_args)
  if aggregator_has_aux:
    aggregated, aux = aggregated
    extra_args = extra_args | aux
  ready = tree_utils.tree_get(aggregate_state, "ready", True)

  def post(updates, post_state, params, extra_args):
    return postprocessor.update(updates, post_state, params, **extra_args)

  def skip(updates, post_state, params, extra_args):
    del params, extra_args
    return tree_utils.tree_zeros_like(updates), post_state

  updates, post_state = jax.lax.cond(ready, post, skip, aggregated, post_state, params, extra_args)
  return updates, (pre_state, aggregate_state, post_state)


def process(preprocessor: _base.GradientTransformation,
            aggregator: _base.GradientTransformation | Aggregator,
            postprocessor: _base.GradientTransformation,
            aggregator_has_aux: bool = False) -> _base.GradientTransformation | Aggregator:
  """Chains a per-example pre-processor, an aggregator and a post-processor (run only when ready).

  Args:
    preprocessor: applied to the per-example updates (e.g. per-example clipping).
    aggregator: turns per-example updates into one update; its state may carry a `ready` flag.
    postprocessor: applied to the aggregated update (e.g. an optimizer) on ready steps; zeros otherwise.
    aggregator_has_aux: the aggregator returns `(updates, aux_dict)`; aux is passed to the post-processor as
      extra keyword arguments.

  Returns:
    An Aggregator if `aggregator` is one, else a GradientTransformationExtraArgs. State: a 3-tuple.
  """
  build = _aggregator if isinstance(aggregator, Aggregator) else _base.transformation
  return build("process", _process_init, _process_update, preprocessor=preprocessor, aggregator=aggregator,
               postprocessor=postprocessor, aggregator_has_aux=aggregator_has_aux)


# ----------------------------------------------------------------------------------------------
# Averaging.


def _average_update(per_elt_updates, state, params=None, *, per_elt_axis, **extra_args):
  del params, extra_args
  return jax.tree.map(lambda x: jnp.mean(x, axis=per_elt_axis), per_elt_updates), state


def average_per_element_updates(per_elt_axis: int | Sequence[int] = 0) -> Aggregator:
  """Averages per-example updates over `per_elt_axis` (an axis or a tuple of axes)."""
  return _aggregator("average_per_element_updates", _base.init_empty_state, _average_update,
                     per_elt_axis=_hashable_axis(per_elt_axis))


class AccumulateAvgUpdatesState(NamedTuple):
  """State of `accumulate_avg_updates`: micro-step, whether the average is complete, the running average."""
  micro_step: jax.Array
  ready: jax.Array
  avg_grad: _base.Updates


def _incremental_mean(mean, new, count):
  """mean + (new - mean) / count, in the dtypes standard promotion gives."""
  delta = _numerics.sub(new, mean)
  return _numerics.add(mean, delta / count.astype(delta.dtype))


def _accumulate_init(params, **_):
  return AccumulateAvgUpdatesState(micro_step=jnp.asarray(0), ready=jnp.asarray(False),
                                   avg_grad=tree_utils.tree_zeros_like(params))


def _accumulate_update(updates, state, params=None, *, accumulation_steps, **extra_args):
  del params, extra_args
  micro_step = state.micro_step + 1
  average = jax.tree.map(lambda u, a: _incremental_mean(a, u, micro_step), updates, state.avg_grad)
  zeros = tree_utils.tree_zeros_like(average)
  complete = AccumulateAvgUpdatesState(micro_step=jnp.asarray(0), ready=jnp.asarray(True), avg_grad=zeros)
  partial = AccumulateAvgUpdatesState(micro_step=micro_step, ready=jnp.asarray(False), avg_grad=average)
  return tree_utils.tree_where(micro_step == accumulation_steps, (average, complete), (zeros, partial))


def accumulate_avg_updates(accumulation_steps: int) -> _base.GradientTransformation:
  """Averages updates over `accumulation_steps` calls; emits the average (and `ready`) every k-th call.

  Between those calls the emitted updates are zeros. With accumulation_steps == 1 this is the identity.
  """
  if accumulation_steps < 1:
    raise _errors.HyperparameterError(
        f"accumulate_avg_updates: argument `accumulation_steps` must be >= 1, got {accumulation_steps!r}")
  if accumulation_steps == 1:
    return _base.identity()
  return _base.transformation("accumulate_avg_updates", _accumulate_init, _accumulate_update,
                              accumulation_steps=accumulation_steps)


def average_incrementally_updates(per_elt_axis: MaybeAxis, accumulation_steps: int
                                  ) -> Aggregator | _base.GradientTransformation:
  """Averages over examples (unless `per_elt_axis` is None), then over `accumulation_steps` micro-batches."""
  if per_elt_axis is None:
    return accumulate_avg_updates(accumulation_steps)
  chained = _combine.chain(average_per_element_updates(per_elt_axis), accumulate_avg_updates(accumulation_steps))
  return Aggregator(chained.init, chained.update)


# ----------------------------------------------------------------------------------------------
# Mean and variance across examples.


def _hashable_axis(axis):
  return tuple(axis) if isinstance(axis, list) else axis


def get_batch_size_from_per_elt_updates(per_elt_updates: _base.Updates, per_elt_axis: int | list[int]) -> int:
  """The number of examples: the size of `per_elt_axis` (or the product over several), equal in every leaf."""
  def size(leaf):
    if isinstance(per_elt_axis, int):
      return leaf.shape[per_elt_axis]
    return math.prod(leaf.shape[i] for i in per_elt_axis)
  sizes = [size(leaf) for leaf in jax.tree.leaves(per_elt_updates)]
  if any(s != sizes[0] for s in sizes):
    raise _errors.TreeMismatchError(
        f"get_batch_size_from_per_elt_updates: per-example updates must share one batch size along axis "
        f"{per_elt_axis}, got {sizes}")
  return sizes[0]


class PerElementMeanAndSumSqDiffGradsState(NamedTuple):
  """State of `get_per_element_mean_and_sum_sq_diff_grads` when accumulating micro-batches."""
  micro_step: jax.Array
  ready: jax.Array
  mean_grads: _base.Updates
  sum_sq_diff_grads: _base.Updates


def _batch_moments(per_elt_updates, per_elt_axis):
  """Per-leaf mean over the examples and the sum of squared deviations from it."""
  means = jax.tree.map(lambda x: jnp.mean(x, axis=per_elt_axis, keepdims=True), per_elt_updates)
  squares = jax.tree.map(lambda x, m: jnp.sum(jnp.square(x - m), axis=per_elt_axis), per_elt_updates, means)
  return jax.tree.map(lambda m: m.squeeze(axis=per_elt_axis), means), squares


def _moments_update(per_elt_updates, state, params=None, *, per_elt_axis, **extra_args):
  del params, extra_args
  batch_size = get_batch_size_from_per_elt_updates(per_elt_updates, per_elt_axis)
  means, squares = _batch_moments(per_elt_updates, per_elt_axis)
  return (means, {"sum_sq_diff_grads": squares, "sample_size": batch_size}), state


def _moments_init(params, **_):
  return PerElementMeanAndSumSqDiffGradsState(
      micro_step=jnp.asarray(0, dtype=jnp.int32), ready=jnp.asarray(False),
      mean_grads=tree_utils.tree_zeros_like(params), sum_sq_diff_grads=tree_utils.tree_zeros_like(params))


def _accumulated_moments_update(per_elt_updates, state, params=None, *, per_elt_axis, accumulation_steps,
                                **extra_args):
  del params, extra_args
  batch_size = get_batch_size_from_per_elt_updates(per_elt_updates, per_elt_axis)
  micro_step = state.micro_step + 1
  batch_means, batch_squares = _batch_moments(per_elt_updates, per_elt_axis)
  # Chan et al.'s parallel update of a mean and a sum of squared deviations from two groups.
  deltas = jax.tree.map(_numerics.sub, batch_means, state.mean_grads)
  means = jax.tree.map(lambda m, d: _numerics.add(m, d / micro_step.astype(d.dtype)), state.mean_grads, deltas)
  weight = state.micro_step * batch_size / micro_step
  # Kept in the state's dtypes: the float32 weight would widen bfloat16 sums and change the state's signature.
  squares = jax.tree.map(
      lambda s, b, d: _numerics.add(_numerics.add(s, b), _numerics.mul(jnp.square(d), weight)).astype(s.dtype),
      state.sum_sq_diff_grads, batch_squares, deltas)
  outputs = (means, {"sum_sq_diff_grads": squares, "sample_size": batch_size * micro_step})
  complete = PerElementMeanAndSumSqDiffGradsState(
      micro_step=jnp.asarray(0, dtype=jnp.int32), ready=jnp.asarray(True),
      mean_grads=tree_utils.tree_zeros_like(means), sum_sq_diff_grads=tree_utils.tree_zeros_like(squares))
  partial = PerElementMeanAndSumSqDiffGradsState(micro_step=micro_step, ready=jnp.asarray(False),
                                                 mean_grads=means, sum_sq_diff_grads=squares)
  return tree_utils.tree_where(micro_step == accumulation_steps, (outputs, complete),
                               (tree_utils.tree_zeros_like(outputs), partial))


def get_per_element_mean_and_sum_sq_diff_grads(per_elt_axis: int | Sequence[int] = 0,
                                               accumulation_steps: int = 1) -> Aggregator:
  """Aggregates per-example updates into their mean, with the sum of squared deviations as aux.

  Returns an Aggregator whose update gives `(mean, {"sum_sq_diff_grads": ..., "sample_size": n})`; with
  accumulation_steps > 1 the statistics are merged over micro-batches and emitted every k-th call.
  """
  axis = _hashable_axis(per_elt_axis)
  if accumulation_steps == 1:
    return _aggregator("get_per_element_mean_and_sum_sq_diff_grads", _base.init_empty_state, _moments_update,
                       per_elt_axis=axis)
  return _aggregator("get_per_element_mean_and_sum_sq_diff_grads", _moments_init, _accumulated_moments_update,
                     per_elt_axis=axis, accumulation_steps=accumulation_steps)


class PerElementMeanAndVarianceEMAState(NamedTuple):
  """State of `track_per_element_mean_and_variance_with_ema`: EMAs of the gradient mean and variance."""
  count: jax.Array
  ema_decay: jax.Array
  mean_grads_ema: _base.Updates
  variance_grads_ema: _base.Updates


def _track_init(params, *, ema_decay, **_):
  return PerElementMeanAndVarianceEMAState(
      count=jnp.zeros([], jnp.int32), ema_decay=jnp.asarray(ema_decay),
      mean_grads_ema=tree_utils.tree_zeros_like(params), variance_grads_ema=tree_utils.tree_zeros_like(params))


def _ema_step(new, old, decay):
  return _numerics.add(_numerics.mul(1.0 - decay, new), _numerics.mul(decay, old))


def _track_update(updates, state, params=None, *, ema_decay, **extra_args):
  del params
  _errors.require_extra_args("track_per_element_mean_and_variance_with_ema", extra_args,
                             ("sum_sq_diff_grads", "sample_size"))
  sum_sq_diff_grads, sample_size = extra_args["sum_sq_diff_grads"], extra_args["sample_size"]
  # The EMAs keep their dtypes (a traced sample_size would otherwise widen bfloat16 ones to float32, and the
  # state's signature must not change across updates; optax's lax.cond in `process` fails there).
  means = jax.tree.map(lambda x, y: _ema_step(x, y, ema_decay).astype(y.dtype), updates, state.mean_grads_ema)
  variances = tree_utils.tree_scale(1 / (sample_size - 1), sum_sq_diff_grads)
  variances = jax.tree.map(lambda x, y: _ema_step(x, y, ema_decay).astype(y.dtype), variances,
                           state.variance_grads_ema)
  return updates, state._replace(count=_numerics.safe_int32_increment(state.count), mean_grads_ema=means,
                                 variance_grads_ema=variances)


def track_per_element_mean_and_variance_with_ema(ema_decay: jax.typing.ArrayLike = 0.9
                                                 ) -> _base.GradientTransformation:
  """Tracks EMAs of the gradient mean and of the per-coordinate variance across examples; updates pass through.

  Its update needs the keyword arguments `sum_sq_diff_grads` and `sample_size` (as given by
  `get_per_element_mean_and_sum_sq_diff_grads` through `process(..., aggregator_has_aux=True)`);
  variance = sum_sq_diff_grads / (sample_size - 1).
  """
  _errors.check_decay("track_per_element_mean_and_variance_with_ema", "ema_decay", ema_decay)
  return _base.transformation("track_per_element_mean_and_variance_with_ema", _track_init, _track_update,
                              ema_decay=ema_decay)


def get_unbiased_mean_and_variance_ema(state: _base.OptState) -> tuple[_base.Updates, _base.Updates]:
  """The bias-corrected EMAs (divided by 1 - decay**count) found anywhere in `state`.

  Raises:
    ValueError: `state` holds no PerElementMeanAndVarianceEMAState.
  """
  tracked = tree_utils.tree_get(state, "PerElementMeanAndVarianceEMAState", None)
  if tracked is None:
    raise _errors.StateMismatchError(
        "get_unbiased_mean_and_variance_ema: the state holds no PerElementMeanAndVarianceEMAState; build the "
        "optimizer with add_mean_variance_to_opt or track_per_element_mean_and_variance_with_ema")
  correction = 1 - _numerics.decay_power(tracked.ema_decay, tracked.count)
  return (jax.tree.map(lambda x: _numerics.div(x, correction), tracked.mean_grads_ema),
          jax.tree.map(lambda x: _numerics.div(x, correction), tracked.variance_grads_ema))


def add_mean_variance_to_opt(opt: _base.GradientTransformation, ema_decay: jax.typing.ArrayLike = 0.9,
                             per_elt_axis: int | list[int] = 0, accumulation_steps: int = 1):
  """Wraps `opt` to take per-example gradients and track the EMAs of their mean and variance.

  Args:
    opt: the optimizer applied to the mean gradient.
    ema_decay: decay of the mean and variance EMAs.
    per_elt_axis: the example axis (or axes) of the incoming per-example gradients.
    accumulation_steps: micro-batches merged before each optimizer step.

  Returns:
    An Aggregator; read the estimates with `get_unbiased_mean_and_variance_ema(state)`.
  """
  return process(preprocessor=_base.identity(),
                 aggregator=get_per_element_mean_and_sum_sq_diff_grads(per_elt_axis, accumulation_steps),
                 postprocessor=_combine.chain(track_per_element_mean_and_variance_with_ema(ema_decay), opt),
                 aggregator_has_aux=True)
