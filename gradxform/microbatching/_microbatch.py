"""Microbatching: run a function on slices of a batch in a sequential loop and combine the results.

This bounds peak memory by the size of one microbatch. A batch of size B = n * m is split column-major
into n microbatches of m rows (microbatch j holds rows j, j + n, j + 2n, ...), so a sharded batch axis
stays sharded along the rows of each microbatch.
"""

from __future__ import annotations

import collections
import functools
from typing import Any, Callable, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from gradxform import _base
from gradxform import _errors
from gradxform.microbatching import _accumulator
from gradxform.microbatching._accumulator import AccumulationType, Accumulator

Function = Callable[..., Any]
VmapFn = Callable[[Function, Union[int, Sequence[int]], int], Function]
IndividualOutputs = collections.namedtuple("Aux", ["values", "metrics", "aux"])
ValueAndGradFn = Callable[..., tuple[Any, IndividualOutputs]]


def _is_int(x) -> bool:
  return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def _check_microbatch_size(fn: str, microbatch_size) -> None:
  if microbatch_size is None:
    return
  if not _is_int(microbatch_size):
    raise _errors.HyperparameterTypeError(
        f"{fn}: argument `microbatch_size` must be a positive int or None, got "
        f"{type(microbatch_size).__name__} {microbatch_size!r}")
  if microbatch_size <= 0:
    raise _errors.HyperparameterError(
        f"{fn}: argument `microbatch_size` must be a positive int or None, got {microbatch_size}")


def _check_num_real_microbatches(fn: str, num_real_microbatches) -> None:
  if num_real_microbatches is not None:
    _errors.check_nonnegative(fn, "num_real_microbatches", num_real_microbatches)


def _split_leaf(x, microbatch_size: int, axis: int):
  new_shape = x.shape[:axis] + (-1, microbatch_size) + x.shape[axis + 1:]
  sharding = jax.typeof(x).sharding
  if not sharding.mesh.are_all_axes_explicit:
    return x.reshape(new_shape, order="F")
  # Explicit sharding: the batch axis' sharding moves to the row axis; the microbatch axis is replicated.
  spec = sharding.spec
  if len(spec) < axis:
    new_spec = spec
  else:
    new_spec = jax.P(*spec[:axis], None, spec[axis], *spec[axis + 1:])
  num_shards = x.shape[axis] // sharding.shard_shape(x.shape)[axis]
  if microbatch_size % num_shards != 0:
    raise _errors.HyperparameterError(
        f"reshape_batch_axis: the batch axis is split in {num_shards} shards, which must divide "
        f"microbatch_size={microbatch_size}")
  return x.reshape(new_shape, order="F", out_sharding=jax.sharding.NamedSharding(sharding.mesh, new_spec))


def reshape_batch_axis(tree: Any, microbatch_size: int, axis: int = 0) -> Any:
  """Splits the batch axis of every leaf into (num_microbatches, microbatch_size), in place of that axis.

  The split is column-major: microbatch j holds rows j, j + n, j + 2n, ... (n microbatches), so sharding
  of the batch axis carries over to the new `microbatch_size` axis, and the microbatch axis is replicated.

  Args:
    tree: a pytree of arrays, each with a batch axis at `axis`.
    microbatch_size: the rows per microbatch; must divide the batch size.
    axis: the batch axis.

  Returns:
    The tree with each leaf reshaped.
  """
  _check_microbatch_size("reshape_batch_axis", microbatch_size)
  if microbatch_size is None:
    raise _errors.HyperparameterTypeError("reshape_batch_axis: argument `microbatch_size` must be an int")
  return jax.tree.map(lambda x: _split_leaf(x, microbatch_size, axis), tree)


def _split_batch_args(microbatch_size, argnums, argnames, in_axes, args, kwargs):
  """Args and kwargs with their batch arguments split into microbatches; and the batch size."""
  batch_args = tuple([args[i] for i in argnums] + [kwargs[name] for name in argnames])
  sizes = jax.tree.leaves(jax.tree.map(
      lambda ax, subtree: jax.tree.map(lambda x: x.shape[ax], subtree), tuple(in_axes), batch_args))
  if not sizes:
    raise _errors.TreeMismatchError("microbatch: the batch arguments hold no arrays to take a batch size from")
  if len(set(sizes)) > 1:
    raise _errors.TreeMismatchError(
        f"microbatch: all batch arguments must have batch axes of the same size, found sizes {sizes}")
  batch_size = sizes[0]
  if batch_size % microbatch_size != 0:
    raise _errors.HyperparameterError(
        f"microbatch: the batch size {batch_size} must be divisible by microbatch_size={microbatch_size}")
  new_args, new_kwargs = list(args), dict(kwargs)
  for i, ax in zip(argnums, in_axes):
    new_args[i] = reshape_batch_axis(args[i], microbatch_size, ax)
  for name, ax in zip(argnames, in_axes[len(argnums):]):
    new_kwargs[name] = reshape_batch_axis(kwargs[name], microbatch_size, ax)
  return tuple(new_args), new_kwargs, batch_size


def _take(tree, index, axis):
  return jax.tree.map(functools.partial(jnp.take, indices=index, axis=axis), tree)


def microbatch(
    fun: Function,
    argnums: Union[int, Sequence[int]],
    microbatch_size: int | None,
    accumulator: Accumulator | AccumulationType | Any = AccumulationType.SUM,
    *,
    argnames: Union[str, Sequence[str]] = (),
    in_axes: Union[int, Sequence[int]] = 0,
    num_real_microbatches: int | jax.Array | None = None,
) -> Function:
  """Evaluates `fun` on microbatches of its batch arguments, one after another, and combines the results.

  With SUM, `microbatch(f, 0, m)(x)` is `sum(f(x_j) for x_j in microbatches of x)`, computed in a
  `lax.fori_loop`, so only one microbatch's intermediates are live at a time. The combination must be
  right for `fun`: SUM for sums over the batch, MEAN for means, CONCAT for per-example outputs.

  Args:
    fun: any function.
    argnums: the positions of the arguments that have a batch axis.
    microbatch_size: rows per microbatch; must divide the batch size. None returns `fun` unchanged.
    accumulator: an Accumulator or AccumulationType, or a tree of them that is a prefix of `fun`'s output.
    argnames: the names of keyword arguments that have a batch axis.
    in_axes: the batch axis of each argument in `argnums + argnames` (one int for all).
    num_real_microbatches: run only this many microbatches (may be traced, e.g. for a variable batch
      size without recompiling); None runs all.

  Returns:
    A function taking the same arguments as `fun`.
  """
  _check_microbatch_size("microbatch", microbatch_size)
  _check_num_real_microbatches("microbatch", num_real_microbatches)
  _accumulator.check_accumulator("microbatch", accumulator)
  if microbatch_size is None:
    return fun
  argnums = (argnums,) if _is_int(argnums) else tuple(argnums)
  argnames = (argnames,) if isinstance(argnames, str) else tuple(argnames)
  in_axes = (in_axes,) * (len(argnums) + len(argnames)) if _is_int(in_axes) else tuple(in_axes)
  if len(in_axes) != len(argnums) + len(argnames):
    raise _errors.HyperparameterError(
        f"microbatch: argument `in_axes` needs one axis per batch argument ({len(argnums)} in `argnums` + "
        f"{len(argnames)} in `argnames`), got {len(in_axes)}")
  positional_axes = in_axes[:len(argnums)]
  keyword_axes = in_axes[len(argnums):]

  def microbatched(*args, **kwargs):
    split_args, split_kwargs, batch_size = _split_batch_args(
        microbatch_size, argnums, argnames, in_axes, args, kwargs)
    acc = _accumulator.resolve(accumulator, batch_size // microbatch_size)

    def run_one(index):
      one_args, one_kwargs = list(split_args), dict(split_kwargs)
      for i, ax in zip(argnums, positional_axes):
        one_args[i] = _take(one_args[i], index, ax)
      for name, ax in zip(argnames, keyword_axes):
        one_kwargs[name] = _take(one_kwargs[name], index, ax)
      return fun(*one_args, **one_kwargs)

    def body(index, carry):
      return acc.update(carry, run_one(index), index)

    steps = batch_size // microbatch_size if num_real_microbatches is None else num_real_microbatches
    carry = jax.lax.fori_loop(0, steps, body, acc.init(jax.eval_shape(run_one, 0)))
    return acc.finalize(carry)

  return microbatched


def micro_vmap(
    fun: Function,
    in_axes: Union[int, Sequence[int]] = 0,
    out_axes: Any = 0,
    *,
    microbatch_size: int | None = None,
    vmap_fn: VmapFn = jax.vmap,
    accumulator: Accumulator | AccumulationType | Any = AccumulationType.CONCAT,
    num_real_microbatches: int | jax.Array | None = None,
) -> Function:
  """`jax.vmap` evaluated microbatch by microbatch, optionally reducing over the batch as it goes.

  With the default CONCAT it returns what `jax.vmap(fun, in_axes)` returns, using the memory of one
  microbatch; SUM or MEAN return the reduction over the batch without materialising the batched output.

  Args:
    fun: the function to map.
    in_axes: the mapped axis of each positional argument (None: not mapped); keyword arguments are
      mapped along axis 0, as in `jax.vmap`.
    out_axes: must be 0.
    microbatch_size: rows per microbatch; None vmaps the whole batch at once.
    vmap_fn: a function with `jax.vmap`'s signature (to pass options to vmap).
    accumulator: how to combine the outputs (a tree of them may be a prefix of the output).
    num_real_microbatches: run only this many microbatches; None runs all.

  Returns:
    The mapped function.
  """
  if not (_is_int(out_axes) and out_axes == 0):
    raise NotImplementedError(f"micro_vmap: only out_axes=0 is supported, got {out_axes!r}")
  _check_microbatch_size("micro_vmap", microbatch_size)
  _check_num_real_microbatches("micro_vmap", num_real_microbatches)
  _accumulator.check_accumulator("micro_vmap", accumulator)
  in_axes = (in_axes,) if _is_int(in_axes) else in_axes

  # vmap maps every keyword argument along axis 0, so they travel as one batch keyword `kwargs`.
  def vmapped_and_reduced(*args, kwargs):
    output = vmap_fn(fun, in_axes, out_axes)(*args, **kwargs)
    rows = jax.tree.leaves(output)[0].shape[0]
    return _accumulator.resolve(accumulator, rows).aggregate(output)

  mapped = microbatch(
      vmapped_and_reduced,
      argnums=tuple(i for i, ax in enumerate(in_axes) if ax is not None),
      argnames="kwargs",
      microbatch_size=microbatch_size,
      accumulator=accumulator,
      in_axes=tuple(ax for ax in in_axes if ax is not None) + (0,),
      num_real_microbatches=num_real_microbatches,
  )

  def wrapped(*args, **kwargs):
    return mapped(*args, kwargs=kwargs)

  return wrapped


def _with_aux(fun: Function, has_aux: bool) -> Function:
  return fun if has_aux else (lambda *args, **kwargs: (fun(*args, **kwargs), None))


def _with_unit_batch_axis(fun: Function, batch_argnums: Sequence[int]) -> Function:
  """`fun` called with a size-1 batch axis (axis 0) restored on each per-example batch argument."""

  def wrapped(*args, **kwargs):
    args = list(args)
    for i in batch_argnums:
      args[i] = jax.tree.map(lambda x: jnp.expand_dims(x, axis=1), args[i])
    return fun(*args, **kwargs)

  return wrapped


def micro_grad(
    fun: Function,
    has_aux: bool = False,
    argnums: Union[int, Sequence[int]] = 0,
    *,
    batch_argnums: Union[int, Sequence[int]] = 1,
    keep_batch_dim: bool = True,
    microbatch_size: int | None = None,
    accumulator: Accumulator | AccumulationType | Any = AccumulationType.SUM,
    transform_fn: Callable[[_base.ArrayTree], _base.ArrayTree] = lambda x: x,
    metrics_fn: Callable[[_base.ArrayTree], _base.ArrayTree] = lambda x: None,
    num_real_microbatches: int | jax.Array | None = None,
) -> ValueAndGradFn:
  """Per-example gradients, transformed and combined over the batch, microbatch by microbatch.

  For each example e of the batch arguments: (value_e, aux_e), g_e = value_and_grad(fun)(..., e, ...);
  the result is (accumulator over e of transform_fn(g_e), Aux(values, metrics, aux)) where Aux holds
  value_e, metrics_fn(g_e) and aux_e for every example (concatenated along axis 0). transform_fn can clip
  per-example gradients (DP-SGD) or return several statistics (g, g**2).

  Args:
    fun: the loss, `fun(params, batch, ...)` by default.
    has_aux: whether `fun` returns (value, aux).
    argnums: the argument(s) to differentiate.
    batch_argnums: the argument(s) with a batch axis (axis 0).
    keep_batch_dim: call `fun` on examples with a batch axis of size 1 (True) or without it (False).
    microbatch_size: examples per microbatch; None does the whole batch at once.
    accumulator: how to combine the transformed gradients over the batch (SUM by default).
    transform_fn: applied to each example's gradient before combining.
    metrics_fn: applied to each example's gradient; its outputs are returned per example.
    num_real_microbatches: run only this many microbatches; None runs all.

  Returns:
    A function of `fun`'s arguments returning (combined transformed gradients, Aux(values, metrics, aux)).
  """
  _check_microbatch_size("micro_grad", microbatch_size)
  _check_num_real_microbatches("micro_grad", num_real_microbatches)
  _accumulator.check_accumulator("micro_grad", accumulator)
  batch_argnums = (batch_argnums,) if _is_int(batch_argnums) else tuple(batch_argnums)
  value_and_grad = jax.value_and_grad(_with_aux(fun, has_aux), argnums, has_aux=True)

  def per_example(*args, **kwargs):
    (value, aux), grad = value_and_grad(*args, **kwargs)
    return transform_fn(grad), IndividualOutputs(values=value, metrics=metrics_fn(grad), aux=aux)

  in_axes = [None] * (max(batch_argnums) + 1)
  for i in batch_argnums:
    in_axes[i] = 0
  mapped = micro_vmap(per_example, in_axes=in_axes, accumulator=(accumulator, AccumulationType.CONCAT),
                      microbatch_size=microbatch_size, num_real_microbatches=num_real_microbatches)
  return _with_unit_batch_axis(mapped, batch_argnums) if keep_batch_dim else mapped
