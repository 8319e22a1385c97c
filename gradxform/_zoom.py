"""The zoom line search: a step size satisfying the strong Wolfe conditions (Nocedal & Wright, alg. 3.5/3.6).

Phase one grows the step from a guess until it brackets an acceptable one; phase two shrinks the bracket
by cubic, quadratic or bisection steps. Each evaluation computes the value and gradient at the trial
point, so the accepted point's value and gradient are kept for reuse (see `value_and_grad_from_state`).
When no step satisfies both conditions in time, the best step with sufficient decrease is taken, if any.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp

from gradxform import _base
from gradxform import _errors
from gradxform import _linesearch_utils as _ls
from gradxform import _numerics
from gradxform import _tree

__all__ = ["ScaleByZoomLinesearchState", "ZoomLinesearchInfo", "scale_by_zoom_linesearch"]

_NAME = "scale_by_zoom_linesearch"
_INITIAL_GUESSES = ("one", "keep")


class ZoomLinesearchInfo(NamedTuple):
  """Diagnostics of one zoom search: evaluations made, and by how much the returned step misses the
  sufficient-decrease and the curvature conditions (0 when satisfied).

  A positive curvature error is benign (the step cap may be too small); a positive decrease error means
  the objective may not have decreased.
  """
  num_linesearch_steps: jax.typing.ArrayLike
  decrease_error: jax.typing.ArrayLike
  curvature_error: jax.typing.ArrayLike


class ScaleByZoomLinesearchState(NamedTuple):
  """State of `scale_by_zoom_linesearch`: the last step size, the objective's value and gradient at the
  accepted point (reusable with `value_and_grad_from_state`), and diagnostics."""
  learning_rate: jax.typing.ArrayLike
  value: jax.typing.ArrayLike
  grad: _base.Updates
  info: ZoomLinesearchInfo


class _Point(NamedTuple):
  """A trial step size with the value and the slope (directional derivative) of the objective there."""
  stepsize: jax.Array
  value: jax.Array
  slope: jax.Array


class _Zoom(NamedTuple):
  """Loop carry of the search. `low`/`high` bracket an acceptable step with value(low) <= value(high)
  (low may be the larger step); `ref` is the third point of the cubic fit; `safe` the best step seen
  with sufficient decrease (step 0 until there is one)."""
  count: jax.Array
  guess: jax.Array
  current: _Point
  grad: Any
  decrease_error: jax.Array
  curvature_error: jax.Array
  bracketed: jax.Array
  done: jax.Array
  failed: jax.Array
  low: _Point
  high: _Point
  ref_stepsize: jax.Array
  ref_value: jax.Array
  safe_stepsize: jax.Array
  safe_value: jax.Array
  safe_grad: Any


class _Problem(NamedTuple):
  """What stays fixed during one search."""
  params: Any
  updates: Any
  value: Any
  slope: Any
  value_and_grad: Any


# ----------------------------------------------------------------------------------------------
# Criteria and interpolation (scalars).


def _decrease_error(stepsize, value, slope, problem, *, slope_rtol, approx_dec_rtol):
  """How much the Armijo condition is violated (0 if not); NaN counts as +inf.

  With `approx_dec_rtol`, Hager & Zhang's approximate condition (2006, eq. 23) may stand in for it:
  slope <= (2 c1 - 1) slope_0, accepted only once f is within approx_dec_rtol |f_0| of f_0, since near
  a minimum the exact test cannot resolve decreases below sqrt(machine epsilon).
  """
  armijo = _numerics.sub(_numerics.sub(value, problem.value),
                         _numerics.mul(_numerics.mul(slope_rtol, stepsize), problem.slope))
  if approx_dec_rtol is not None:
    approx = _numerics.sub(slope, _numerics.mul(2 * slope_rtol - 1.0, problem.slope))
    near = _numerics.sub(_numerics.sub(value, problem.value),
                         _numerics.mul(approx_dec_rtol, jnp.abs(problem.value)))
    armijo = _ls.minimum(_numerics.maximum(approx, near), armijo)
  return _ls.infinite_if_nan(_numerics.maximum(armijo, 0.0))


def _curvature_error(slope, slope_init, *, curv_rtol):
  """How much |slope| <= curv_rtol |slope_0| is violated (0 if not); NaN counts as +inf."""
  excess = _numerics.sub(jnp.abs(slope), _numerics.mul(curv_rtol, jnp.abs(slope_init)))
  return _ls.infinite_if_nan(_numerics.maximum(excess, 0.0))


def _cubic_minimizer(a, fa, slope_a, b, fb, c, fc):
  """Critical point of the cubic through (a, fa), (b, fb), (c, fc) with slope `slope_a` at a (NaN if none)."""
  a, fa, slope_a, b, fb, c, fc = _numerics.promote(a, fa, slope_a, b, fb, c, fc)
  db, dc = b - a, c - a
  # p(x) = k3 (x - a)^3 + k2 (x - a)^2 + slope_a (x - a) + fa; solve the 2x2 system for k3, k2.
  system = jnp.array([[dc ** 2, -(db ** 2)], [-(dc ** 3), db ** 3]])
  rhs = jnp.array([fb - fa - slope_a * db, fc - fa - slope_a * dc])
  k3, k2 = jnp.dot(system, rhs, precision=jax.lax.Precision.HIGHEST) / ((db * dc) ** 2 * (db - dc))
  return a + (-k2 + jnp.sqrt(k2 * k2 - 3.0 * k3 * slope_a)) / (3.0 * k3)


def _quadratic_minimizer(a, fa, slope_a, b, fb):
  """Critical point of the parabola through (a, fa), (b, fb) with slope `slope_a` at a."""
  a, fa, slope_a, b, fb = _numerics.promote(a, fa, slope_a, b, fb)
  db = b - a
  curvature = (fb - fa - slope_a * db) / (db ** 2)
  return a - slope_a / (2.0 * curvature)


# ----------------------------------------------------------------------------------------------
# The two phases.


def _evaluate(problem, stepsize, fn_kwargs):
  """Value, gradient and slope of the objective at params + stepsize * updates."""
  value, grad = problem.value_and_grad(_ls.add_scale(problem.params, stepsize, problem.updates), **fn_kwargs)
  slope = jnp.real(_ls.vdot(jax.tree.map(jnp.conj, grad), problem.updates))
  return value, grad, slope


def _cond_print(condition, message, **values):
  jax.lax.cond(condition, lambda: jax.debug.print(message, **values, ordered=True), lambda: None)


def _report(headline):
  """A diagnostic message with the search's numbers as jax.debug.print fields."""
  return (f"gradxform.scale_by_zoom_linesearch: {headline}\n"
          "value at params: {value_init}, slope along the update: {slope_init}, step size reached: "
          "{stepsize}, decrease error: {decrease_error}, curvature error: {curvature_error}")


def _expand(state, problem, fn_kwargs, hp):
  """Phase one: try a larger step until an interval containing an acceptable step is bracketed."""
  step = _ls.select(state.count == 0, state.guess, _numerics.mul(hp.increase_factor, state.current.stepsize))
  if hp.max_learning_rate is None:
    at_cap = jnp.asarray(False)
  else:
    at_cap = _ls.greater_equal(step, hp.max_learning_rate)
    step = _ls.minimum(step, hp.max_learning_rate)
  value, grad, slope = _evaluate(problem, step, fn_kwargs)
  dec_err = _decrease_error(step, value, slope, problem, slope_rtol=hp.slope_rtol,
                            approx_dec_rtol=hp.approx_dec_rtol)
  curv_err = _curvature_error(slope, problem.slope, curv_rtol=hp.curv_rtol)
  error = _numerics.maximum(dec_err, curv_err)

  sufficient = dec_err <= hp.tol
  safe_stepsize, safe_value, safe_grad = _ls.where(
      sufficient, [step, value, grad], [state.safe_stepsize, state.safe_value, state.safe_grad])

  new, previous = _Point(step, value, slope), state.current
  # Too far (no decrease, or worse than the previous trial): the acceptable step lies between the two.
  overshot = (dec_err > 0.0) | (_ls.greater_equal(value, previous.value) & (state.count > 0))
  # Good value but a non-negative slope: a minimizer lies before this trial, which becomes `low`.
  passed_minimum = (slope >= 0.0) & ~overshot
  low, high = _ls.where(passed_minimum, [new, previous], [previous, new])
  bracketed = overshot | passed_minimum | (error <= hp.tol)
  # At the cap with nothing bracketed, larger steps are out of reach: take the cap (curvature unmet).
  done = (error <= hp.tol) | (at_cap & ~bracketed)
  if hp.verbose:
    _cond_print(at_cap & ~bracketed,
                _report("no interval satisfying the curvature condition below max_learning_rate (consider "
                        "raising it); returning a step with sufficient decrease but not small curvature."),
                value_init=problem.value, slope_init=problem.slope, stepsize=step, decrease_error=dec_err,
                curvature_error=curv_err)
  failed = (state.count + 1 >= hp.max_linesearch_steps) & ~done
  return state._replace(
      count=_numerics.safe_increment(state.count), current=new, grad=grad, decrease_error=dec_err,
      curvature_error=curv_err, bracketed=jnp.asarray(bracketed), done=jnp.asarray(done),
      failed=jnp.asarray(failed), low=low, high=high, ref_stepsize=low.stepsize, ref_value=low.value,
      safe_stepsize=safe_stepsize, safe_value=safe_value, safe_grad=safe_grad)


def _shrink(state, problem, fn_kwargs, hp):
  """Phase two: pick a trial step inside the bracket and shrink the bracket around an acceptable step."""
  low, high = state.low, state.high
  width = jnp.abs(_numerics.sub(high.stepsize, low.stepsize))
  left, right = _ls.minimum(high.stepsize, low.stepsize), _numerics.maximum(high.stepsize, low.stepsize)

  # Interpolate, falling back to the quadratic, then to bisection, when the point is too near an end.
  cubic = _cubic_minimizer(low.stepsize, low.value, low.slope, high.stepsize, high.value, state.ref_stepsize,
                           state.ref_value)
  quadratic = _quadratic_minimizer(low.stepsize, low.value, low.slope, high.stepsize, high.value)
  use_cubic = (cubic > left + 0.2 * width) & (cubic < right - 0.2 * width)
  use_quadratic = ~use_cubic & (quadratic > left + 0.1 * width) & (quadratic < right - 0.1 * width)
  use_bisection = ~use_cubic & ~use_quadratic
  step = _ls.select(use_cubic, cubic, state.ref_stepsize)
  step = _ls.select(use_quadratic, quadratic, step)
  step = _ls.select(use_bisection, _numerics.add(low.stepsize, high.stepsize) / 2.0, step)

  value, grad, slope = _evaluate(problem, step, fn_kwargs)
  dec_err = _decrease_error(step, value, slope, problem, slope_rtol=hp.slope_rtol,
                            approx_dec_rtol=hp.approx_dec_rtol)
  curv_err = _curvature_error(slope, problem.slope, curv_rtol=hp.curv_rtol)
  error = _numerics.maximum(dec_err, curv_err)

  # Keep the lowest point with sufficient decrease, in case curvature cannot be met.
  improves = (dec_err <= hp.tol) & _ls.less(value, state.safe_value)
  safe_stepsize, safe_value, safe_grad = _ls.where(
      improves, [step, value, grad], [state.safe_stepsize, state.safe_value, state.safe_grad])
  done = error <= hp.tol

  middle = _Point(step, value, slope)
  middle_is_high = (dec_err > 0.0) | _ls.greater_equal(value, low.value)
  # The slope at the middle points back towards low: low's side holds no minimizer, so low becomes high.
  low_is_high = (_numerics.mul(slope, _numerics.sub(high.stepsize, low.stepsize)) >= 0.0) & ~middle_is_high
  new_high = _ls.where(middle_is_high, middle, high)
  new_high = _ls.where(low_is_high, low, new_high)
  new_low = _ls.where(~middle_is_high, middle, low)
  # The point just dropped from the bracket becomes the third point of the next cubic fit.
  ref_stepsize, ref_value = _ls.where(middle_is_high | low_is_high, [high.stepsize, high.value],
                                      [low.stepsize, low.value])

  # Stop on an interval below the precision, but only once some step decreases f enough: very steep
  # objectives may need steps far below it.
  too_narrow = width <= hp.stepsize_precision
  out_of_steps = jnp.asarray(state.count + 1 >= hp.max_linesearch_steps)
  failed = (out_of_steps | (too_narrow & (safe_stepsize > 0.0))) & ~done
  return state._replace(
      count=_numerics.safe_increment(state.count), current=middle, grad=grad, decrease_error=dec_err,
      curvature_error=curv_err, done=done, failed=failed, low=new_low, high=new_high,
      ref_stepsize=ref_stepsize, ref_value=ref_value, safe_stepsize=safe_stepsize, safe_value=safe_value,
      safe_grad=safe_grad)


def _diagnose_failure(state, problem):
  """Prints why no step satisfied the conditions (verbose only)."""
  jax.debug.print("gradxform.scale_by_zoom_linesearch: no step size with sufficient decrease was found.")
  descent = problem.slope < 0.0
  _cond_print(~descent, "The update is not a descent direction: the slope at step 0 is {slope}, it should be "
              "negative.", slope=problem.slope)
  _cond_print(descent, "Consider allowing more line search steps (max_linesearch_steps).")
  eps = float(jnp.finfo(jnp.float32).eps)
  _cond_print((state.current.stepsize < eps) & descent,
              "The step size reached ({stepsize}) is below float32 precision ({eps}); consider float64 "
              "(jax.config.update('jax_enable_x64', True)).", stepsize=state.current.stepsize, eps=eps)
  _cond_print((jnp.abs(problem.slope) > 1e16) & descent,
              "The slope at step 0 is huge (|slope| = {slope}): the objective is badly conditioned; consider "
              "rescaling the parameters or starting elsewhere.", slope=jnp.abs(problem.slope))
  outside = jnp.isinf(state.decrease_error)
  _cond_print(outside, "Every step tried gave inf or NaN: the step will be 0 and the optimizer is stuck.")
  _cond_print(~outside, "Taking a step without sufficient decrease: the objective may not decrease.")


def _fall_back(state, problem, hp):
  """On failure, take the safe step if there is one (or stand still if all values were inf or NaN)."""
  outside = jnp.isinf(state.decrease_error)
  stepsize, value, grad = _ls.where((state.safe_stepsize > 0.0) | outside,
                                    [state.safe_stepsize, state.safe_value, state.safe_grad],
                                    [state.current.stepsize, state.current.value, state.grad])
  if hp.verbose:
    jax.debug.print(_report("the line search stopped early."),
                    value_init=problem.value, slope_init=problem.slope, stepsize=state.current.stepsize,
                    decrease_error=state.decrease_error, curvature_error=state.curvature_error, ordered=True)
    width = jnp.abs(_numerics.sub(state.low.stepsize, state.high.stepsize))
    _cond_print(width <= hp.stepsize_precision,
                "The bracketing interval is narrower than stepsize_precision ({width}).", width=width)
    jax.lax.cond(state.safe_stepsize > 0.0,
                 lambda: jax.debug.print("Returning the step {safe} with sufficient decrease; the curvature "
                                         "condition is not met.", safe=state.safe_stepsize),
                 lambda: _diagnose_failure(state, problem))
  return state._replace(current=state.current._replace(stepsize=stepsize, value=value), grad=grad)


def _step(state, problem, fn_kwargs, hp):
  searched = jax.lax.cond(state.bracketed,
                          lambda s: _ls.cast_like(_shrink(s, problem, fn_kwargs, hp), s),
                          lambda s: _ls.cast_like(_expand(s, problem, fn_kwargs, hp), s), state)
  searched = jax.lax.cond(searched.failed, lambda s: _ls.cast_like(_fall_back(s, problem, hp), s),
                          lambda s: s, searched)
  return _ls.cast_like(searched, state)


def _start(updates, params, value, grad, guess):
  dtype = _ls.value_dtype(params)
  slope = jnp.real(_ls.vdot(updates, grad))
  origin = _Point(jnp.asarray(0.0), value, slope)
  inf = jnp.asarray(jnp.inf)
  return _Zoom(
      count=jnp.asarray(0), guess=guess, current=_Point(jnp.asarray(0.0, dtype), jnp.array(value, dtype), slope),
      grad=grad, decrease_error=inf, curvature_error=inf, bracketed=jnp.asarray(False), done=jnp.asarray(False),
      failed=jnp.asarray(False), low=origin, high=origin, ref_stepsize=jnp.asarray(0.0), ref_value=value,
      safe_stepsize=jnp.asarray(0.0), safe_value=value, safe_grad=grad), slope


# ----------------------------------------------------------------------------------------------
# The transformation.


def _zoom_init(params, **_):
  dtype = _ls.value_dtype(params)
  return ScaleByZoomLinesearchState(
      learning_rate=jnp.asarray(1.0, dtype), value=jnp.asarray(jnp.inf, dtype), grad=_tree.zeros_like(params),
      # Strongly typed (optax's Python-number constants are weak): the state update() returns is strongly
      # typed, so weak ones here would make a jitted step trace twice. Same dtypes, same values.
      info=ZoomLinesearchInfo(num_linesearch_steps=jnp.asarray(0, dtype=int),
                              decrease_error=jnp.asarray(jnp.inf, dtype=float),
                              curvature_error=jnp.asarray(jnp.inf, dtype=float)))


class _Settings(NamedTuple):
  max_linesearch_steps: Any
  max_learning_rate: Any
  tol: Any
  increase_factor: Any
  slope_rtol: Any
  curv_rtol: Any
  approx_dec_rtol: Any
  stepsize_precision: Any
  verbose: bool


def _zoom_update(updates, state, params=None, *, value=None, grad=None, value_fn=None, max_linesearch_steps,
                 max_learning_rate, tol, increase_factor, slope_rtol, curv_rtol, approx_dec_rtol, stepsize_precision,
                 initial_guess_strategy, verbose, **extra_args):
  _errors.expect_state(state, (ScaleByZoomLinesearchState,), _NAME)
  _errors.require_params(params, _NAME)
  _ls.require_extra_args(_NAME, value=value, grad=grad, value_fn=value_fn)
  hp = _Settings(max_linesearch_steps, max_learning_rate, tol, increase_factor, slope_rtol, curv_rtol,
                 approx_dec_rtol, stepsize_precision, verbose)
  fn_kwargs = _ls.value_fn_kwargs(value_fn, extra_args)
  guess = jnp.asarray(1.0) if initial_guess_strategy == "one" else state.learning_rate
  start, slope = _start(updates, params, value, grad, guess)
  problem = _Problem(params=params, updates=updates, value=value, slope=slope,
                     value_and_grad=jax.value_and_grad(value_fn))
  final = jax.lax.while_loop(lambda s: ~(s.done | s.failed),
                             functools.partial(_step, problem=problem, fn_kwargs=fn_kwargs, hp=hp), start)
  learning_rate = final.current.stepsize
  new_state = ScaleByZoomLinesearchState(
      learning_rate=learning_rate, value=final.current.value, grad=final.grad,
      info=ZoomLinesearchInfo(num_linesearch_steps=final.count, decrease_error=final.decrease_error,
                              curvature_error=final.curvature_error))
  return _ls.scale(learning_rate, updates), _ls.cast_like(new_state, state)


def scale_by_zoom_linesearch(
    max_linesearch_steps: jax.typing.ArrayLike,
    max_learning_rate: Optional[jax.typing.ArrayLike] = None,
    tol: jax.typing.ArrayLike = 0.0,
    increase_factor: jax.typing.ArrayLike = 2.0,
    slope_rtol: jax.typing.ArrayLike = 1e-4,
    curv_rtol: jax.typing.ArrayLike = 0.9,
    approx_dec_rtol: Optional[jax.typing.ArrayLike] = 1e-6,
    stepsize_precision: jax.typing.ArrayLike = 1e-5,
    initial_guess_strategy: str = "keep",
    verbose: bool = False,
) -> _base.GradientTransformationExtraArgs:
  """Scales the updates by a step size satisfying the strong Wolfe conditions, found by the zoom method.

  The step eta must give sufficient decrease, f(w + eta u) <= f(w) + slope_rtol * eta <u, grad f(w)> + tol,
  and small curvature, |<grad f(w + eta u), u>| <= curv_rtol |<grad f(w), u>| + tol (Nocedal & Wright,
  1999, alg. 3.5 and 3.6). Near a minimum the first test may be replaced by Hager & Zhang's approximate
  one (2006), slope(eta) <= (2 slope_rtol - 1) slope(0), once f(w + eta u) <= f(w) + approx_dec_rtol |f(w)|.
  If the search runs out of steps, the lowest step with sufficient decrease found so far is taken.
  `curv_rtol=inf` drops the curvature test (a backtracking search by interpolation).

  The update takes keyword arguments `value` (f(params)), `grad` (its gradient) and `value_fn` (f);
  others named like parameters of `value_fn` are passed to it.

  Args:
    max_linesearch_steps: most evaluations of f per search.
    max_learning_rate: cap on the step size, or None for none.
    tol: absolute slack in both conditions.
    increase_factor: growth factor of the step while bracketing.
    slope_rtol: sufficient-decrease constant c1.
    curv_rtol: curvature constant c2.
    approx_dec_rtol: relative tolerance (on |f(w)|) for switching to the approximate decrease test, or None
      to use the Armijo test only.
    stepsize_precision: once the bracket is narrower than this and a step with sufficient decrease is
      known, that step is taken.
    initial_guess_strategy: "one" (start every search at 1, for Newton-like directions such as L-BFGS's)
      or "keep" (start at the previous step size, for gradient directions).
    verbose: print diagnostics (with jax.debug.print) when the search fails.

  Returns:
    A transformation whose update needs `value`, `grad` and `value_fn`.
  """
  _errors.check_number(_NAME, "max_linesearch_steps", max_linesearch_steps, low=0.0)
  _errors.check_number(_NAME, "max_learning_rate", max_learning_rate, low=0.0, low_open=True, allow_none=True)
  _errors.check_nonnegative(_NAME, "tol", tol)
  _errors.check_number(_NAME, "increase_factor", increase_factor, low=0.0, low_open=True)
  _errors.check_nonnegative(_NAME, "slope_rtol", slope_rtol)
  _errors.check_nonnegative(_NAME, "curv_rtol", curv_rtol)
  _errors.check_nonnegative(_NAME, "approx_dec_rtol", approx_dec_rtol, allow_none=True)
  _errors.check_nonnegative(_NAME, "stepsize_precision", stepsize_precision)
  if initial_guess_strategy not in _INITIAL_GUESSES:
    raise _errors.HyperparameterError(
        f"{_NAME}: argument `initial_guess_strategy` must be 'one' or 'keep', got {initial_guess_strategy!r}")
  return _base.transformation(
      _NAME, _zoom_init, _zoom_update, max_linesearch_steps=max_linesearch_steps,
      max_learning_rate=max_learning_rate, tol=tol, increase_factor=increase_factor, slope_rtol=slope_rtol,
      curv_rtol=curv_rtol, approx_dec_rtol=approx_dec_rtol, stepsize_precision=stepsize_precision,
      initial_guess_strategy=initial_guess_strategy, verbose=bool(verbose))
