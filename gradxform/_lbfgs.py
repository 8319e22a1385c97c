"""L-BFGS: the limited-memory BFGS direction (Nocedal & Wright, 1999, alg. 7.4) and the `lbfgs` optimizer.

The inverse Hessian is approximated from the last `memory_size` differences of parameters (s) and of
updates/gradients (y), kept in ring buffers: every leaf gets a leading axis of length `memory_size`, so
a traced slot index can address them. The product with the update is the classic two-loop recursion,
run with `lax.scan` over the slots, newest first then oldest first.
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np

from gradxform import _base
from gradxform import _errors
from gradxform import _linesearch_utils as _ls
from gradxform import _numerics
from gradxform import _tree
from gradxform._combine import chain
from gradxform._scale import scale, scale_by_learning_rate
from gradxform._zoom import scale_by_zoom_linesearch

__all__ = ["ScaleByLBFGSState", "lbfgs", "scale_by_lbfgs"]


class ScaleByLBFGSState(NamedTuple):
  """State of `scale_by_lbfgs`.

  Attributes:
    count: number of updates so far.
    params: the params of the previous update.
    updates: the (incoming) updates of the previous update.
    diff_params_memory: ring buffer of parameter differences s_k, each leaf of shape (memory_size, *leaf).
    diff_updates_memory: ring buffer of update differences y_k, same layout.
    weights_memory: ring buffer of rho_k = 1 / <y_k, s_k> (0 where that product is 0), shape (memory_size,).
  """
  count: jax.typing.ArrayLike
  params: _base.Params
  updates: _base.Params
  diff_params_memory: _base.ArrayTree
  diff_updates_memory: _base.ArrayTree
  weights_memory: jax.typing.ArrayLike


def _slot(memory, index):
  return jax.tree.map(lambda buffer: buffer[index], memory)


def _two_loop(updates, diff_params_memory, diff_updates_memory, rhos, gamma, newest):
  """H u for the L-BFGS inverse-Hessian approximation H with initial matrix gamma * I (alg. 7.4).

  Slots are visited from `newest` backwards in the first loop and forwards in the second; empty slots
  hold zeros and a zero weight, so they change nothing.
  """
  memory_size = rhos.shape[0]
  order = (newest + jnp.arange(memory_size)) % memory_size

  def first_loop(q, index):
    s, y = _slot(diff_params_memory, index), _slot(diff_updates_memory, index)
    alpha = _numerics.mul(rhos[index], _ls.real_vdot(s, q))
    return _ls.cast_like(_ls.add_scale(q, -alpha, y), q), alpha

  q, alphas = jax.lax.scan(first_loop, updates, order, reverse=True)
  r = _ls.scale(gamma, q)

  def second_loop(r, index_alpha):
    index, alpha = index_alpha
    s, y = _slot(diff_params_memory, index), _slot(diff_updates_memory, index)
    beta = _numerics.mul(rhos[index], _ls.real_vdot(y, r))
    return _ls.cast_like(_ls.add_scale(r, _numerics.sub(alpha, beta), s), r), beta

  r, _ = jax.lax.scan(second_loop, r, (order, alphas))
  return r


def _lbfgs_init(params, *, memory_size, **_):
  stacked = jax.tree.map(lambda p: jnp.zeros((memory_size,) + jnp.shape(p), jnp.asarray(p).dtype), params)
  return ScaleByLBFGSState(count=jnp.asarray(0, jnp.int32), params=_tree.zeros_like(params),
                           updates=_tree.zeros_like(params), diff_params_memory=stacked,
                           diff_updates_memory=stacked, weights_memory=jnp.zeros(memory_size))


def _zero_unless(condition, tree):
  return jax.tree.map(lambda a: jnp.where(condition, a, jnp.zeros_like(a)), tree)


def _write(buffer, index, value):
  return buffer.at[index].set(jnp.asarray(value).astype(buffer.dtype))


def _lbfgs_update(updates, state, params=None, *, memory_size, scale_init_precond, **extra_args):
  del extra_args
  _errors.expect_state(state, (ScaleByLBFGSState,), "scale_by_lbfgs")
  _errors.require_params(params, "scale_by_lbfgs")
  _tree.check_same_structure(updates, params, "updates", "params")
  # Slot `count % m` is the oldest pair; the pair completed by this call goes in slot `(count - 1) % m`.
  newest = state.count % memory_size
  latest = (state.count - 1) % memory_size
  has_pair = state.count > 0  # the first call has no previous point to difference against

  # The memory is refreshed before preconditioning, so that after a line search picked the step, the
  # pair (s, y) it produced is used by the very next direction.
  s = _zero_unless(has_pair, _ls.sub(params, state.params))
  y = _zero_unless(has_pair, _ls.sub(updates, state.updates))
  curvature = _ls.real_vdot(y, s)
  rho = jnp.where(has_pair, jnp.where(curvature == 0.0, 0.0, 1.0 / curvature), 0.0)
  diff_params_memory = jax.tree.map(lambda m, v: _write(m, latest, v), state.diff_params_memory, s)
  diff_updates_memory = jax.tree.map(lambda m, v: _write(m, latest, v), state.diff_updates_memory, y)
  weights_memory = _write(state.weights_memory, latest, rho)

  if scale_init_precond:
    # gamma = <s, y> / <y, y> (Nocedal & Wright, eq. 7.20); before any pair, min(1, 1 / |u|), so that
    # the first step has length at most 1.
    y_squared = _tree.squared_norm(y)
    gamma = _ls.select(y_squared > 0.0, _numerics.div(curvature, y_squared), 1.0)
    first_gamma = _ls.minimum(1.0, 1.0 / _tree.global_norm(jax.lax.stop_gradient(updates)))
    gamma = _ls.select(has_pair, gamma, first_gamma)
  else:
    gamma = 1.0

  direction = _two_loop(updates, diff_params_memory, diff_updates_memory, weights_memory, gamma, newest)
  return direction, ScaleByLBFGSState(
      count=_numerics.safe_increment(state.count), params=params, updates=updates,
      diff_params_memory=diff_params_memory, diff_updates_memory=diff_updates_memory,
      weights_memory=weights_memory)


def _check_memory_size(fn, memory_size):
  """memory_size fixes the buffers' shapes: it must be a concrete integer >= 1."""
  is_integer = isinstance(memory_size, (int, np.integer)) and not isinstance(memory_size, bool)
  if not is_integer:
    raise _errors.HyperparameterTypeError(
        f"{fn}: argument `memory_size` must be an integer (the number of stored pairs), "
        f"got {type(memory_size).__name__} {memory_size!r}")
  if memory_size < 1:
    raise _errors.HyperparameterError(f"{fn}: argument `memory_size` must be >= 1, got {memory_size!r}")


def scale_by_lbfgs(memory_size: int = 10, scale_init_precond: bool = True) -> _base.GradientTransformation:
  """Multiplies the updates by the L-BFGS approximation of the inverse Hessian (Liu & Nocedal, 1989).

  With s_k = w_{k+1} - w_k and y_k = u_{k+1} - u_k (u: incoming updates, typically gradients), the
  approximation is H = V_{k-1}^T ... (gamma I) ... V_{k-1} + sum of rho_j s_j s_j^T terms, with
  V_j = I - rho_j y_j s_j^T and rho_j = 1 / <y_j, s_j>, over the last `memory_size` pairs (Nocedal &
  Wright, 1999, alg. 7.4). The output is H u, to be scaled by a (negative) step size, usually found by
  a line search (see `lbfgs`).

  Args:
    memory_size: number of (s, y) pairs kept.
    scale_init_precond: gamma = <s, y> / <y, y> of the latest pair (and min(1, 1/|u|) at the first step)
      instead of gamma = 1.

  Returns:
    A transformation; its update needs `params`.
  """
  _check_memory_size("scale_by_lbfgs", memory_size)
  return _base.transformation("scale_by_lbfgs", _lbfgs_init, _lbfgs_update, memory_size=int(memory_size),
                              scale_init_precond=bool(scale_init_precond))


def lbfgs(
    learning_rate: Optional[_base.ScalarOrSchedule] = None,
    memory_size: int = 10,
    scale_init_precond: bool = True,
    linesearch: Optional[Union[_base.GradientTransformationExtraArgs, _base.GradientTransformation]] = (
        scale_by_zoom_linesearch(max_linesearch_steps=20, initial_guess_strategy="one")),
) -> _base.GradientTransformationExtraArgs:
  """L-BFGS: the limited-memory quasi-Newton method, with a line search choosing the step (Liu & Nocedal, 1989).

  A chain of `scale_by_lbfgs`, a scaling by -learning_rate (-1 when learning_rate is None) and the line
  search. With the default zoom line search the update needs `value`, `grad` and `value_fn`; for a
  deterministic objective, get value and grad with `value_and_grad_from_state(value_fn)(params,
  state=state)` to reuse the line search's last evaluation.

  Args:
    learning_rate: a fixed or scheduled global scale; None leaves the step to the line search.
    memory_size: number of (s, y) pairs kept to approximate the inverse Hessian.
    scale_init_precond: scale the initial inverse Hessian as in `scale_by_lbfgs`.
    linesearch: the line search transformation (default: zoom with at most 20 steps and a first guess of
      1), or None for none.

  Returns:
    A transformation; suited to small and medium deterministic problems (it stores 2 * memory_size
    copies of the params).
  """
  _errors.check_learning_rate("lbfgs", learning_rate, allow_none=True)
  _check_memory_size("lbfgs", memory_size)
  if linesearch is not None and not (hasattr(linesearch, "init") and hasattr(linesearch, "update")):
    raise _errors.HyperparameterTypeError(
        f"lbfgs: argument `linesearch` must be a gradient transformation or None, got "
        f"{type(linesearch).__name__} {linesearch!r}")
  step = scale(-1.0) if learning_rate is None else scale_by_learning_rate(learning_rate)
  return _base.rename(chain(scale_by_lbfgs(memory_size, scale_init_precond), step,
                            _base.identity() if linesearch is None else linesearch), "lbfgs")
