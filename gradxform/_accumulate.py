"""Gradient accumulation: MultiSteps (k mini-steps per optimizer step, with skip rules) and apply_every."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple, Optional, Protocol, Union

import jax
import jax.numpy as jnp
import numpy as np

from gradxform import _base
from gradxform import _combine
from gradxform import _conditional
from gradxform import _errors
from gradxform import _numerics
from gradxform import _tree

__all__ = ["ApplyEvery", "MultiSteps", "MultiStepsState", "ShouldSkipUpdateFunction", "apply_every",
           "skip_large_updates", "skip_not_finite"]


def _mod(a, b):
  """a % b with the dtype standard promotion gives (a float period makes a float counter, as in optax)."""
  a, b = _numerics.promote(a, b)
  return a % b


def _equal(a, b):
  a, b = _numerics.promote(a, b)
  return a == b


def _as(flag: jax.Array, x: jax.Array) -> jax.Array:
  """A bool flag as 0/1 in x's dtype: `flag * x` with the dtype standard promotion gives (NaN * 0 stays NaN)."""
  return flag.astype(x.dtype)


# ----------------------------------------------------------------------------------------------
# Skip rules.


class ShouldSkipUpdateFunction(Protocol):
  """`f(updates, gradient_step, params) -> (should_skip, skip_state)` for `MultiSteps`."""

  def __call__(self, updates: _base.Updates, gradient_step: jax.typing.ArrayLike,
               params: Optional[_base.Params]) -> tuple[jax.typing.ArrayLike, _base.ArrayTree]:
    """Returns a bool scalar (True: drop this mini-step as if it never happened) and a tree stored in
    `MultiStepsState.skip_state` (for monitoring)."""


def skip_not_finite(updates: _base.Updates, gradient_step: jax.typing.ArrayLike,
                    params: Optional[_base.Params]) -> tuple[jax.Array, _base.ArrayTree]:
  """A ShouldSkipUpdateFunction: skip the mini-step when any update element is inf or NaN.

  Args:
    updates: the proposed updates.
    gradient_step: unused.
    params: unused.

  Returns:
    (should_skip, {"should_skip": should_skip, "num_not_finite": number of inf/NaN elements}).
  """
  del gradient_step, params
  counts = [jnp.sum(jnp.logical_not(jnp.isfinite(x))) for x in jax.tree.leaves(updates)]
  num_not_finite = jnp.sum(jnp.array(counts))
  should_skip = num_not_finite > 0
  return should_skip, {"should_skip": should_skip, "num_not_finite": num_not_finite}


def skip_large_updates(updates: _base.Updates, gradient_step: jax.typing.ArrayLike,
                       params: Optional[_base.Params],
                       max_squared_norm: jax.typing.ArrayLike) -> tuple[jax.Array, _base.ArrayTree]:
  """A ShouldSkipUpdateFunction (once `max_squared_norm` is bound): skip when ||updates||^2 >= the limit.

  Args:
    updates: the proposed updates.
    gradient_step: unused.
    params: unused.
    max_squared_norm: the largest squared global norm accepted (exclusive); NaN norms are skipped too.

  Returns:
    (should_skip, {"should_skip": should_skip, "norm_squared": the squared global norm}).
  """
  del gradient_step, params
  # Per-leaf sums in each leaf's dtype, then summed together in their promoted dtype, as optax does.
  sums = [jnp.sum(x**2) for x in jax.tree.leaves(updates)]
  norm_sq = jnp.sum(jnp.array(_numerics.promote(*sums) if sums else sums))
  norm_sq_p, limit = _numerics.promote(norm_sq, max_squared_norm)
  should_skip = jnp.logical_not(norm_sq_p < limit)
  return should_skip, {"should_skip": should_skip, "norm_squared": norm_sq}


def _never_skip(*args, **kwargs):
  del args, kwargs
  return jnp.array(False, dtype=jnp.bool_), ()


# ----------------------------------------------------------------------------------------------
# MultiSteps.


class MultiStepsState(NamedTuple):
  """State of `MultiSteps`.

  Attributes:
    mini_step: mini-steps accumulated since the last optimizer step (reset to 0 when it emits).
    gradient_step: optimizer steps taken so far.
    inner_opt_state: the wrapped optimizer's state.
    acc_grads: the accumulated gradients (mean or sum) of the current mini-steps.
    skip_state: what `should_skip_update_fn` last returned for monitoring (() without one).
  """
  mini_step: jax.typing.ArrayLike
  gradient_step: jax.typing.ArrayLike
  inner_opt_state: Any
  acc_grads: Any
  skip_state: _base.ArrayTree = ()


def _multi_steps_init(params, *, opt, should_skip, accumulator_dtype, **_):
  gradient_step = jnp.zeros([], dtype=jnp.int32)
  _, skip_state = should_skip(_tree.zeros_like(params), gradient_step, params)
  return MultiStepsState(mini_step=jnp.zeros([], dtype=jnp.int32), gradient_step=gradient_step,
                         inner_opt_state=opt.init(params),
                         acc_grads=_tree.zeros_like(params, dtype=accumulator_dtype), skip_state=skip_state)


def _check_skip_flag(flag: Any) -> None:
  dtype, shape = getattr(flag, "dtype", type(flag).__name__), np.shape(flag)
  if dtype != jnp.bool_ or shape != ():
    raise _errors.HyperparameterError(
        f"MultiSteps: `should_skip_update_fn` must return a bool scalar array first, got {dtype} of shape "
        f"{shape}")


def _where_tree(flag, new, old):
  """`new` where flag else `old`, leaf by leaf, in old's dtypes."""
  def leaf(o, n):
    dtype = o.dtype if hasattr(o, "dtype") else jnp.asarray(o).dtype
    n, o_p = _numerics.promote(n, o)
    return jnp.where(flag, n, o_p).astype(dtype)
  return jax.tree.map(leaf, old, new)


def _accumulate_branch(operands, *, opt, use_grad_mean, accumulator_dtype, static_args, k_static):
  """One mini-step taken: add the gradients in; on the k-th, step the inner optimizer and reset."""
  updates, state, params, dynamic_args, skip_state, k_dynamic = operands
  k_steps = k_dynamic if k_static is None else k_static
  n_acc = state.mini_step + 1

  def leaf(g, acc):
    if use_grad_mean:  # running mean: acc + (g - acc) / n
      new_acc = _numerics.add(acc, _numerics.div(_numerics.sub(g, acc), n_acc))
    else:
      new_acc = _numerics.add(g, acc)
    return new_acc.astype(g.dtype), new_acc

  inner_grads, (acc_grads,) = _tree.leafwise(leaf, updates, (state.acc_grads,), state_names=("state.acc_grads",))
  final_updates, new_inner_state = opt.update(inner_grads, state.inner_opt_state, params=params, **static_args,
                                              **dynamic_args)
  emit = _equal(state.mini_step, k_steps - 1)
  keep = jnp.logical_not(emit)
  # accumulator_dtype=None keeps each accumulator in its own dtype (optax casts to float32 there).
  acc_grads = jax.tree.map(
      lambda old, ga: (_as(keep, ga) * ga).astype(accumulator_dtype or _numerics.dtype_of(old)),
      state.acc_grads, acc_grads)
  new_state = MultiStepsState(
      mini_step=_mod(_numerics.safe_increment(state.mini_step), k_steps),
      gradient_step=jnp.where(emit, _numerics.safe_increment(state.gradient_step), state.gradient_step),
      inner_opt_state=_where_tree(emit, new_inner_state, state.inner_opt_state),
      acc_grads=acc_grads, skip_state=skip_state)
  return _tree.map_updates(lambda u: _as(emit, u) * u, final_updates), new_state


def _drop_branch(operands, *, opt, static_args, **_):
  """One mini-step skipped: zero updates shaped like the inner optimizer's (found without running it)."""
  updates, state, params, dynamic_args, skip_state, _ = operands
  inner_grads, _ = _tree.leafwise(lambda g, acc: (acc.astype(g.dtype), acc), updates, (state.acc_grads,),
                                  state_names=("state.acc_grads",))
  shapes, _ = jax.eval_shape(functools.partial(opt.update, **static_args), inner_grads, state.inner_opt_state,
                             params=params, **dynamic_args)
  return _tree.zeros_like(shapes), state._replace(skip_state=skip_state)


def _multi_steps_update(updates, state, params=None, *, opt, every_k, use_grad_mean, should_skip,
                        accumulator_dtype, **extra_args):
  _errors.expect_state(state, (MultiStepsState,), "MultiSteps")
  k_steps = every_k(state.gradient_step) if callable(every_k) else every_k
  skip, skip_state = should_skip(updates, state.gradient_step, params)
  _check_skip_flag(skip)
  static_args, dynamic_args = _conditional._split_extra_args(extra_args)  # pylint: disable=protected-access
  k_dynamic = isinstance(k_steps, jax.Array)
  operands = (updates, state, params, dynamic_args, skip_state, k_steps if k_dynamic else None)
  return _conditional._cond(  # pylint: disable=protected-access
      skip, _drop_branch, _accumulate_branch, operands, opt=opt, use_grad_mean=use_grad_mean,
      accumulator_dtype=accumulator_dtype, static_args=static_args, k_static=None if k_dynamic else k_steps)


def _check_every_k(every_k_schedule: Any) -> Any:
  if isinstance(every_k_schedule, (int, np.integer)):
    _errors.check_number("MultiSteps", "every_k_schedule", every_k_schedule, low=1)
    return int(every_k_schedule)
  if not callable(every_k_schedule):
    raise _errors.HyperparameterTypeError(
        f"MultiSteps: argument `every_k_schedule` must be an int >= 1 or a schedule (gradient step -> "
        f"number of mini-steps), got {type(every_k_schedule).__name__} {every_k_schedule!r}")
  return every_k_schedule


class MultiSteps:
  """Accumulates gradients over k mini-steps, then takes one step of the wrapped optimizer.

  Between optimizer steps `update` returns zeros and stores the mean (or sum) of the gradients; on the
  k-th mini-step it feeds that to `opt` and returns its update. k comes from `every_k_schedule`, a
  constant or a function of the number of optimizer steps taken (a growing batch size).
  """

  def __init__(self, opt: _base.GradientTransformation,
               every_k_schedule: Union[int, Callable[[jax.typing.ArrayLike], jax.typing.ArrayLike]],
               use_grad_mean: bool = True, should_skip_update_fn: Optional[ShouldSkipUpdateFunction] = None,
               accumulator_dtype: jax.typing.DTypeLike = jnp.float32):
    """Wraps `opt`.

    Args:
      opt: the optimizer to feed accumulated gradients.
      every_k_schedule: mini-steps per optimizer step: an int >= 1, or a function of the optimizer
        step count returning an int.
      use_grad_mean: average the accumulated gradients (True) or sum them (False).
      should_skip_update_fn: a ShouldSkipUpdateFunction (e.g. `skip_not_finite`); a skipped mini-step
        leaves the state as it was, except `skip_state`.
      accumulator_dtype: dtype of the accumulated gradients; None keeps the params' dtypes.
    """
    if should_skip_update_fn is not None and not callable(should_skip_update_fn):
      raise _errors.HyperparameterTypeError(
          f"MultiSteps: argument `should_skip_update_fn` must be a function or None, got "
          f"{type(should_skip_update_fn).__name__}")
    self._opt = _combine._as_transformation(opt, "MultiSteps: argument `opt`")  # pylint: disable=protected-access
    self._every_k_schedule = _check_every_k(every_k_schedule)
    self._use_grad_mean = use_grad_mean
    self._accumulator_dtype = _tree.canonical_dtype(accumulator_dtype)
    self._should_skip_update_fn = _never_skip if should_skip_update_fn is None else should_skip_update_fn
    tx = _base.transformation("MultiSteps", _multi_steps_init, _multi_steps_update, opt=self._opt,
                              every_k=self._every_k_schedule, use_grad_mean=use_grad_mean,
                              should_skip=self._should_skip_update_fn, accumulator_dtype=self._accumulator_dtype)
    self._tx = _base.GradientTransformation(*tx)

  @property
  def inner_opt(self) -> _base.GradientTransformationExtraArgs:
    """The wrapped optimizer."""
    return self._opt

  def init(self, params: Any) -> MultiStepsState:
    """The initial MultiStepsState: zero counters and accumulators, the inner optimizer's init."""
    return self._tx.init(params)

  def update(self, updates: _base.Updates, state: MultiStepsState, params: Optional[_base.Params] = None,
             **extra_args: Any) -> tuple[_base.Updates, MultiStepsState]:
    """Accumulates `updates`; returns the inner optimizer's update on every k-th mini-step, else zeros."""
    return self._tx.update(updates, state, params, **extra_args)

  def has_updated(self, state: Union[MultiStepsState, _base.ArrayTree]) -> jax.typing.ArrayLike:
    """Whether the last `update` was an optimizer step (its output non-zero by construction)."""
    return jnp.logical_and(getattr(state, "mini_step") == 0, getattr(state, "gradient_step") > 0)

  def gradient_transformation(self) -> _base.GradientTransformation:
    """This accumulator as an (init, update) GradientTransformation."""
    return self._tx

  def __eq__(self, other):
    return isinstance(other, MultiSteps) and self._tx == other._tx

  def __hash__(self):
    return hash(self._tx)

  def __repr__(self):
    return f"MultiSteps({self._opt.update!r}, every_k_schedule={self._every_k_schedule!r})"


# ----------------------------------------------------------------------------------------------
# apply_every.


class ApplyEvery(NamedTuple):
  """State of `apply_every`: the position in the cycle of k and the sum of the cycle's updates."""
  count: jax.typing.ArrayLike
  grad_acc: _base.Updates


def _apply_every_init(params, **_):
  return ApplyEvery(count=jnp.zeros([], jnp.int32), grad_acc=_tree.zeros_like(params))


def _apply_every_update(updates, state, params=None, *, k, **extra_args):
  del params, extra_args
  _errors.expect_state(state, (ApplyEvery,), "apply_every")
  position = _mod(state.count, k)
  continuing = jnp.logical_not(_equal(position, 0))  # a new cycle starts from a zero sum
  emit = _equal(position, k - 1)

  def leaf(g, acc):
    new_acc = _numerics.add(_as(continuing, acc) * acc, g)
    return _as(emit, new_acc) * new_acc, new_acc

  updates, (grad_acc,) = _tree.leafwise(leaf, updates, (state.grad_acc,), state_names=("state.grad_acc",))
  return updates, ApplyEvery(count=_mod(_numerics.safe_increment(state.count), k), grad_acc=grad_acc)


def apply_every(k: jax.typing.ArrayLike = 1) -> _base.GradientTransformation:
  """Sums the updates over k steps and emits the sum on every k-th step (zeros in between).

  Unlike `MultiSteps`, transformations chained before or after it still update their state every
  step, so this is not the same as a k times larger batch.

  Args:
    k: the period, >= 1.

  Returns:
    A GradientTransformationExtraArgs with an ApplyEvery state.
  """
  _errors.check_number("apply_every", "k", k, low=1)
  return _base.transformation("apply_every", _apply_every_init, _apply_every_update, k=k)
