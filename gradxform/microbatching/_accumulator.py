"""How the results of the microbatches are combined: the Accumulator protocol and the built-in kinds."""

from __future__ import annotations

import dataclasses
import enum
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp

from gradxform import _base
from gradxform import _errors
from gradxform import _numerics

AccumulatorTree = Any
PyTreeFn = Callable[[_base.ArrayTree], _base.ArrayTree]
UpdateFn = Callable[[_base.ArrayTree, _base.ArrayTree, int], _base.ArrayTree]


@dataclasses.dataclass(frozen=True)
class Accumulator:
  """A fold over the per-microbatch results x_0, ..., x_{n-1} of a microbatched function.

  It stands for the program
    carry = init(shape_and_dtype_of(x_0)); for i in range(n): carry = update(carry, x_i, i)
    return finalize(carry)
  and, for `micro_vmap`, `aggregate` reduces a result that still has its batch axis (axis 0) at once.

  Attributes:
    init: (shape/dtype structs of one microbatch result) -> initial carry.
    update: (carry, result of microbatch i, i) -> new carry.
    finalize: final carry -> the answer.
    aggregate: a result with a leading batch axis -> that result reduced (or kept) along it.
  """

  init: PyTreeFn
  update: UpdateFn
  finalize: PyTreeFn
  aggregate: PyTreeFn


class AccumulationType(enum.Enum):
  """The built-in ways to combine microbatch results."""

  MEAN = enum.auto()
  """The mean over microbatches (floating-point results only)."""
  SUM = enum.auto()
  """The sum over microbatches."""
  RUNNING_MEAN = enum.auto()
  """The mean over the microbatches actually run (see `num_real_microbatches`), floating-point only."""
  CONCAT = enum.auto()
  """The results concatenated along axis 0, in the order of the original batch."""


def _over_leaves(acc: Accumulator) -> Accumulator:
  """An accumulator written for one array, applied to every leaf of a result tree."""
  return Accumulator(
      init=lambda value: jax.tree.map(acc.init, value),
      update=lambda carry, value, index: jax.tree.map(lambda c, v: acc.update(c, v, index), carry, value),
      finalize=lambda carry: jax.tree.map(acc.finalize, carry),
      aggregate=lambda values: jax.tree.map(acc.aggregate, values),
  )


def _floating_zeros(kind: str, value):
  if not jnp.issubdtype(value.dtype, jnp.floating):
    raise _errors.HyperparameterError(
        f"microbatch: the {kind} accumulator needs floating-point results, got one of dtype {value.dtype}; "
        "use SUM for integer results")
  return jnp.zeros_like(value)


def _add(carry, value, index):
  del index
  return carry + value


def _sum() -> Accumulator:
  return _over_leaves(Accumulator(init=jnp.zeros_like, update=_add, finalize=lambda carry: carry,
                                  aggregate=functools.partial(jnp.sum, axis=0)))


def _check_count(kind: str, num_microbatches: int) -> None:
  if num_microbatches <= 0:
    raise _errors.HyperparameterError(
        f"microbatch: the {kind} accumulator needs a positive number of microbatches, got {num_microbatches}")


def _mean(num_microbatches: int) -> Accumulator:
  _check_count("MEAN", num_microbatches)
  return _over_leaves(Accumulator(init=functools.partial(_floating_zeros, "MEAN"), update=_add,
                                  finalize=lambda carry: carry / num_microbatches,
                                  aggregate=functools.partial(jnp.mean, axis=0)))


def _running_mean_update(carry, value, index):
  # mean_{i+1} = mean_i * i/(i+1) + x_i / (i+1), written with the weight kept by the old mean.
  kept = index / (index + 1)
  return _numerics.add(_numerics.mul(carry, kept), _numerics.mul(value, 1 - kept))


def _running_mean() -> Accumulator:
  return _over_leaves(Accumulator(init=functools.partial(_floating_zeros, "RUNNING_MEAN"),
                                  update=_running_mean_update, finalize=lambda carry: carry,
                                  aggregate=functools.partial(jnp.mean, axis=0)))


def _flat_sharding_kwargs(x) -> dict:
  """`out_sharding` for merging the (microbatch, row) axes of `x` under explicit sharding; else nothing."""
  sharding = jax.typeof(x).sharding
  if not sharding.mesh.are_all_axes_explicit:
    return {}
  spec = jax.sharding.PartitionSpec(*sharding.spec[1:]) if sharding.spec else jax.sharding.PartitionSpec()
  return {"out_sharding": jax.sharding.NamedSharding(sharding.mesh, spec)}


def _concat(num_microbatches: int) -> Accumulator:
  _check_count("CONCAT", num_microbatches)

  def init(value):
    return jnp.broadcast_to(jnp.zeros_like(value), (num_microbatches,) + tuple(value.shape))

  def finalize(carry):
    # Microbatch j holds rows j, j + n, j + 2n, ... of the batch: undo that column-major split.
    return carry.reshape(-1, *carry.shape[2:], order="F", **_flat_sharding_kwargs(carry))

  return _over_leaves(Accumulator(init=init, update=lambda carry, value, index: carry.at[index].set(value),
                                  finalize=finalize, aggregate=lambda values: values))


def _combine(accumulators: AccumulatorTree) -> Accumulator:
  """One accumulator from a tree of accumulators that is a prefix of the result tree."""
  return Accumulator(
      init=lambda values: jax.tree.map(lambda acc, v: acc.init(v), accumulators, values),
      update=lambda carry, values, index: jax.tree.map(
          lambda acc, c, v: acc.update(c, v, index), accumulators, carry, values),
      finalize=lambda carry: jax.tree.map(lambda acc, c: acc.finalize(c), accumulators, carry),
      aggregate=lambda values: jax.tree.map(lambda acc, v: acc.aggregate(v), accumulators, values),
  )


def _is_accumulator_leaf(x) -> bool:
  return isinstance(x, (Accumulator, AccumulationType))


def check_accumulator(fn: str, accumulator: AccumulatorTree) -> None:
  """Raises if some leaf of the accumulator tree is neither an Accumulator nor an AccumulationType.

  None subtrees are allowed: they stand for None parts of the output (an error at call time otherwise).
  """
  for path, leaf in jax.tree_util.tree_flatten_with_path(accumulator)[0]:
    if not _is_accumulator_leaf(leaf):
      where = jax.tree_util.keystr(path) or "the root"
      raise _errors.HyperparameterTypeError(
          f"{fn}: argument `accumulator` must be an Accumulator, an AccumulationType or a tree of them; "
          f"found {leaf!r} at {where}")


def resolve(accumulator: AccumulatorTree, num_microbatches: int) -> Accumulator:
  """The Accumulator for a tree of Accumulators and AccumulationTypes, given the number of microbatches."""

  def build(acc):
    if isinstance(acc, Accumulator):
      return acc
    if acc is AccumulationType.MEAN:
      return _mean(num_microbatches)
    if acc is AccumulationType.SUM:
      return _sum()
    if acc is AccumulationType.RUNNING_MEAN:
      return _running_mean()
    if acc is AccumulationType.CONCAT:
      return _concat(num_microbatches)
    raise _errors.HyperparameterTypeError(f"microbatch: unknown accumulator {acc!r}")

  return _combine(jax.tree.map(build, accumulator))
