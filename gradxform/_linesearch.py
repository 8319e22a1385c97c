"""Line searches that pick the step size along an update direction, and reuse of their last evaluation.

`scale_by_backtracking_linesearch` shrinks a guess until the Armijo sufficient-decrease test passes;
`scale_by_zoom_linesearch` (in `_zoom`) also asks for small curvature (the strong Wolfe conditions).
Both evaluate the objective, so their `update` needs `value`, `grad` and `value_fn`; further keyword
arguments named like parameters of `value_fn` (its data) are passed on to it, the others are ignored.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

from gradxform import _base
from gradxform import _errors
from gradxform import _linesearch_utils as _ls
from gradxform import _numerics
from gradxform import _tree
from gradxform._zoom import ScaleByZoomLinesearchState, ZoomLinesearchInfo, scale_by_zoom_linesearch

__all__ = ["ScaleByBacktrackingLinesearchState", "ScaleByZoomLinesearchState", "ZoomLinesearchInfo",
           "scale_by_backtracking_linesearch", "scale_by_zoom_linesearch", "value_and_grad_from_state"]


class BacktrackingLinesearchInfo(NamedTuple):
  """Diagnostics of one backtracking search: evaluations made, and how far the accepted step misses the
  sufficient-decrease test (0 when it passes)."""
  num_linesearch_steps: jax.typing.ArrayLike
  decrease_error: jax.typing.ArrayLike


class ScaleByBacktrackingLinesearchState(NamedTuple):
  """State of `scale_by_backtracking_linesearch`: the last step size, the objective's value there, its
  gradient (only with `store_grad=True`, else None) and diagnostics."""
  learning_rate: jax.typing.ArrayLike
  value: jax.typing.ArrayLike
  grad: Optional[_base.Updates]
  info: BacktrackingLinesearchInfo


class _Search(NamedTuple):
  """Loop carry of the backtracking search."""
  learning_rate: jax.Array
  value: jax.Array
  grad: Any  # the gradient at the accepted point with store_grad, else ()
  decrease_error: jax.Array
  count: jax.Array


def _backtracking_init(params, *, store_grad, **_):
  dtype = _ls.value_dtype(params)
  return ScaleByBacktrackingLinesearchState(
      learning_rate=jnp.array(1.0, dtype), value=jnp.array(jnp.inf, dtype),
      grad=_tree.zeros_like(params) if store_grad else None,
      info=BacktrackingLinesearchInfo(num_linesearch_steps=jnp.asarray(0, dtype=int),  # strong, as update's
                                      decrease_error=jnp.array(jnp.inf, dtype)))


def _armijo_error(stepsize, slope, value, new_value, *, slope_rtol, rtol):
  """max(0, f(w + eta u) - (1 + rtol) f(w) - eta c <u, grad f(w)>); NaN counts as +inf."""
  excess = _numerics.sub(_numerics.sub(new_value, _numerics.mul(1.0 + rtol, value)),
                         _numerics.mul(_numerics.mul(stepsize, slope_rtol), slope))
  return _numerics.maximum(_ls.infinite_if_nan(excess), 0.0)


def _cond_print(condition, message, **values):
  """jax.debug.print(message) when `condition` holds at run time (works under jit)."""
  jax.lax.cond(condition, lambda: jax.debug.print(message, **values, ordered=True), lambda: None)


def _backtracking_update(updates, state, params=None, *, value=None, grad=None, value_fn=None,
                         max_backtracking_steps, slope_rtol, decrease_factor, increase_factor,
                         max_learning_rate, atol, rtol, store_grad, verbose, **extra_args):
  name = "scale_by_backtracking_linesearch"
  _errors.expect_state(state, (ScaleByBacktrackingLinesearchState,), name)
  _errors.require_params(params, name)
  _ls.require_extra_args(name, value=value, grad=grad, value_fn=value_fn)
  objective = functools.partial(value_fn, **_ls.value_fn_kwargs(value_fn, extra_args))
  # Derivative of eta -> f(params + eta * updates) at 0; the search can only succeed if it is negative.
  slope = jnp.real(_ls.vdot(updates, jax.tree.map(jnp.conj, grad)))
  criterion = functools.partial(_armijo_error, slope_rtol=slope_rtol, rtol=rtol)

  def keep_searching(search):
    return (~(search.decrease_error <= atol)) & (search.count <= max_backtracking_steps)

  def evaluate(search):
    # The first evaluation tries the guess itself; each later one shrinks it.
    learning_rate = _ls.select(search.count > 0, _numerics.mul(decrease_factor, search.learning_rate),
                               search.learning_rate)
    candidate = _ls.add_scale(params, learning_rate, updates)
    if store_grad:
      new_value, pullback = jax.vjp(objective, candidate)
      error = criterion(learning_rate, slope, value, new_value)
      # The gradient is only needed where the search stops.
      new_grad = jax.lax.cond(
          (error <= atol) | (search.count == max_backtracking_steps),
          lambda: _ls.cast_like(pullback(jnp.ones_like(new_value))[0], search.grad),
          lambda: search.grad)
    else:
      new_value = objective(candidate)
      error = criterion(learning_rate, slope, value, new_value)
      new_grad = search.grad
    found = _Search(learning_rate=learning_rate, value=new_value, grad=new_grad, decrease_error=error,
                    count=search.count + 1)
    return _ls.cast_like(found, search)

  guess = _ls.minimum(_numerics.mul(increase_factor, state.learning_rate), max_learning_rate)
  search = _Search(learning_rate=guess, value=value, grad=_tree.zeros_like(params) if store_grad else (),
                   decrease_error=jnp.array(jnp.inf), count=0)
  search = jax.lax.while_loop(keep_searching, evaluate, search)

  # With no finite value anywhere on the path, stand still rather than step into inf or NaN.
  learning_rate = _ls.select(jnp.isinf(search.decrease_error), 0.0, search.learning_rate)
  if verbose:
    _cond_print(search.decrease_error > atol,
                "gradxform.scale_by_backtracking_linesearch: no step size gave a sufficient decrease.\n"
                "value at params: {value}, slope along the update: {slope}, last step size tried: {stepsize}, "
                "decrease error: {decrease_error}",
                value=value, slope=slope, stepsize=search.learning_rate, decrease_error=search.decrease_error)
    _cond_print(jnp.isinf(search.decrease_error),
                "gradxform.scale_by_backtracking_linesearch: every value was inf or NaN; taking a step of 0.")
  new_state = ScaleByBacktrackingLinesearchState(
      learning_rate=learning_rate, value=search.value, grad=search.grad if store_grad else None,
      info=BacktrackingLinesearchInfo(num_linesearch_steps=search.count, decrease_error=search.decrease_error))
  return _ls.scale(learning_rate, updates), _ls.cast_like(new_state, state)


def scale_by_backtracking_linesearch(
    max_backtracking_steps: jax.typing.ArrayLike,
    slope_rtol: jax.typing.ArrayLike = 1e-4,
    decrease_factor: jax.typing.ArrayLike = 0.8,
    increase_factor: jax.typing.ArrayLike = 1.5,
    max_learning_rate: jax.typing.ArrayLike = 1.0,
    atol: jax.typing.ArrayLike = 0.0,
    rtol: jax.typing.ArrayLike = 0.0,
    store_grad: bool = False,
    verbose: bool = False,
) -> _base.GradientTransformationExtraArgs:
  """Scales the updates by a step size found by backtracking until the Armijo condition holds.

  Starting from min(increase_factor * previous step, max_learning_rate), the step eta is multiplied by
  `decrease_factor` until f(w + eta u) <= (1 + rtol) f(w) + eta * slope_rtol * <u, grad f(w)> + atol
  (Armijo, 1966; Vaswani et al., 2019), or `max_backtracking_steps` shrinks were tried. If every value
  tried was inf or NaN the step is 0. `u` must be a descent direction (<u, grad f(w)> < 0), as a
  plain gradient step's is.

  The update takes keyword arguments `value` (f(params)), `grad` (its gradient) and `value_fn` (f);
  others named like parameters of `value_fn` are passed to it.

  Args:
    max_backtracking_steps: how many times the step may be shrunk.
    slope_rtol: the Armijo constant c in (0, 1).
    decrease_factor: the shrink factor, in (0, 1].
    increase_factor: the first guess is the previous step times this (inf: always max_learning_rate).
    max_learning_rate: cap on the step size.
    atol: absolute slack in the test.
    rtol: relative slack in the test (on f(w)).
    store_grad: also compute the gradient at the accepted point and keep it in the state, to be reused
      by `value_and_grad_from_state`.
    verbose: print a diagnostic (with jax.debug.print) when no step passes the test.

  Returns:
    A transformation whose update needs `value`, `grad` and `value_fn`.
  """
  name = "scale_by_backtracking_linesearch"
  _errors.check_number(name, "max_backtracking_steps", max_backtracking_steps, low=0.0)
  _errors.check_nonnegative(name, "slope_rtol", slope_rtol)
  _errors.check_number(name, "decrease_factor", decrease_factor, low=0.0, high=1.0, low_open=True)
  _errors.check_number(name, "increase_factor", increase_factor, low=0.0, low_open=True)
  _errors.check_number(name, "max_learning_rate", max_learning_rate, low=0.0, low_open=True)
  _errors.check_nonnegative(name, "atol", atol)
  _errors.check_nonnegative(name, "rtol", rtol)
  return _base.transformation(
      name, _backtracking_init, _backtracking_update, max_backtracking_steps=max_backtracking_steps,
      slope_rtol=slope_rtol, decrease_factor=decrease_factor, increase_factor=increase_factor,
      max_learning_rate=max_learning_rate, atol=atol, rtol=rtol, store_grad=bool(store_grad),
      verbose=bool(verbose))


# ----------------------------------------------------------------------------------------------
# Reusing the line search's last evaluation.


def _stored(state, key):
  found = _ls.find_all(state, key)
  if len(found) > 1:
    raise _errors.StateMismatchError(
        f"value_and_grad_from_state: the state holds {len(found)} entries named `{key}`; it must hold one "
        "(a single line search, and no params or state fields of that name)")
  return found[0] if found else None


def _value_and_grad_from_state(params, *fn_args, state, value_fn, **fn_kwargs):
  value, grad = _stored(state, "value"), _stored(state, "grad")
  if value is None or grad is None:
    raise _errors.StateMismatchError(
        "value_and_grad_from_state: no stored `value` and `grad` in the state; use an optimizer that keeps "
        "them, such as scale_by_zoom_linesearch, lbfgs, or scale_by_backtracking_linesearch(store_grad=True)")

  def fresh(p, args, kwargs):
    return jax.value_and_grad(value_fn)(p, *args, **kwargs)

  # An infinite or NaN stored value marks the first step (or a failed search): evaluate instead.
  return jax.lax.cond((~jnp.isinf(value)) & (~jnp.isnan(value)), lambda *_: (value, grad), fresh,
                      params, fn_args, fn_kwargs)


def value_and_grad_from_state(
    value_fn: Callable[..., jax.typing.ArrayLike],
) -> Callable[..., tuple[jax.typing.ArrayLike, _base.Updates]]:
  """Like `jax.value_and_grad(value_fn)`, but returns the value and gradient a line search stored in the state.

  Line searches evaluate the objective at the point they accept, which is the next iterate; for a
  deterministic objective that evaluation can be reused instead of recomputed.

  Args:
    value_fn: the objective, returning a scalar; differentiable with jax.value_and_grad.

  Returns:
    `f(params, *args, state, **kwargs) -> (value, grad)`: the `value` and `grad` found in `state` (which
    must hold exactly one of each), or `jax.value_and_grad(value_fn)(params, *args, **kwargs)` when the
    stored value is inf or NaN (as it is before the first step).
  """
  return functools.partial(_value_and_grad_from_state, value_fn=value_fn)
