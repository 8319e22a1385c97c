"""Schedules: functions from a step count to a hyperparameter value (a learning rate, a decay…).

Every constructor validates its arguments and returns a `Bound` (a module-level function with its
hyperparameters), so schedules compare and hash by value. The arithmetic follows optax's operation
order, so values, dtypes and weak types agree with optax to the last bit, eager and under `jax.jit`,
with one deliberate exception: a polynomial schedule whose transition is over returns exactly
`end_value` under jit too (optax can return NaN there, see `_polynomial`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Optional

import jax
import jax.numpy as jnp

from gradxform import _base
from gradxform import _errors
from gradxform.schedules._join import align, as_float, concrete, join_schedules

Schedule = _base.Schedule


def _check_value(fn: str, name: str, value: Any, allow_none: bool = False) -> None:
  _errors.check_number(fn, name, value, allow_none=allow_none)


def _check_steps(fn: str, name: str, value: Any, positive: bool = False) -> None:
  """A step count: a number >= 0 (or > 0 when `positive`)."""
  _errors.check_number(fn, name, value, low=0.0, low_open=positive)


def _check_pct(fn: str, name: str, value: Any) -> None:
  _errors.check_number(fn, name, value, low=0.0, high=1.0)


# ----------------------------------------------------------------------------------------------
# constant, polynomial, linear


def _constant(count, *, value):
  del count
  return value


def constant_schedule(value: jax.typing.ArrayLike) -> Schedule:
  """A schedule that always returns `value`.

  Args:
    value: the value to return at every step.

  Returns:
    A schedule: `f(t) = value`.
  """
  _check_value("constant_schedule", "value", value)
  return _base.Bound(_constant, None, value=value)


def _polynomial(count, *, init_value, end_value, power, transition_steps, transition_begin):
  count, begin = align(count, transition_begin)
  done = count - begin
  done, steps = align(done, transition_steps, for_jnp=True)
  done = jnp.clip(done, 0, steps)
  # Optax's `1 - done / steps`, except exactly 0 once the transition is over: under jit XLA divides by
  # a constant through its reciprocal, so `steps / steps` can land an ulp off 1 (optax then returns
  # NaN for a fractional power, or misses end_value).
  frac = jnp.where(done < steps, 1 - done / steps, 0)
  return (init_value - end_value) * (frac**power) + end_value


def _polynomial_or_constant(init_value, end_value, power, transition_steps, transition_begin):
  steps, begin = concrete(transition_steps), concrete(transition_begin)
  if steps is not None and steps <= 0:
    return _base.Bound(_constant, None, value=init_value)
  if begin is not None and begin < 0:
    transition_begin = 0
  return _base.Bound(_polynomial, None, init_value=init_value, end_value=end_value, power=power,
                     transition_steps=transition_steps, transition_begin=transition_begin)


def polynomial_schedule(
    init_value: jax.typing.ArrayLike,
    end_value: jax.typing.ArrayLike,
    power: jax.typing.ArrayLike,
    transition_steps: int,
    transition_begin: int = 0,
) -> Schedule:
  """A polynomial transition from `init_value` to `end_value` over `transition_steps` steps.

  Args:
    init_value: the value up to step `transition_begin`.
    end_value: the value from step `transition_begin + transition_steps` on.
    power: the power of the polynomial.
    transition_steps: the length of the transition; if <= 0 the schedule is the constant `init_value`.
    transition_begin: the step at which the transition starts (a negative value counts as 0).

  Returns:
    A schedule: with `s = clip(t - transition_begin, 0, transition_steps)`,
    `f(t) = (init_value - end_value) * (1 - s / transition_steps) ** power + end_value`.
  """
  fn = "polynomial_schedule"
  _check_value(fn, "init_value", init_value)
  _check_value(fn, "end_value", end_value)
  _check_value(fn, "power", power)
  _check_value(fn, "transition_steps", transition_steps)
  _check_value(fn, "transition_begin", transition_begin)
  return _polynomial_or_constant(init_value, end_value, power, transition_steps, transition_begin)


def linear_schedule(
    init_value: jax.typing.ArrayLike,
    end_value: jax.typing.ArrayLike,
    transition_steps: int,
    transition_begin: int = 0,
) -> Schedule:
  """A linear transition from `init_value` to `end_value` over `transition_steps` steps.

  Args:
    init_value: the value up to step `transition_begin`.
    end_value: the value from step `transition_begin + transition_steps` on.
    transition_steps: the length of the transition; if <= 0 the schedule is the constant `init_value`.
    transition_begin: the step at which the transition starts (a negative value counts as 0).

  Returns:
    A schedule: with `s = clip(t - transition_begin, 0, transition_steps)`,
    `f(t) = (init_value - end_value) * (1 - s / transition_steps) + end_value`
    (`polynomial_schedule` with `power=1`).
  """
  fn = "linear_schedule"
  _check_value(fn, "init_value", init_value)
  _check_value(fn, "end_value", end_value)
  _check_value(fn, "transition_steps", transition_steps)
  _check_value(fn, "transition_begin", transition_begin)
  return _polynomial_or_constant(init_value, end_value, 1, transition_steps, transition_begin)


# ----------------------------------------------------------------------------------------------
# exponential decay


def _exponential(count, *, init_value, transition_steps, decay_rate, transition_begin, staircase,
                 end_value):
  count, begin = align(count, transition_begin)
  elapsed = count - begin
  elapsed_, steps = align(elapsed, transition_steps)
  p = elapsed_ / steps
  if staircase:
    p = jnp.floor(p)
  value = jnp.where(elapsed <= 0, init_value, init_value * jnp.power(decay_rate, p))
  if end_value is not None:
    value = jnp.maximum(value, end_value) if decay_rate < 1.0 else jnp.minimum(value, end_value)
  return value


def _check_exponential(fn, transition_steps, decay_rate, transition_begin, end_value):
  _check_value(fn, "transition_steps", transition_steps)
  _errors.check_number(fn, "decay_rate", decay_rate, low=0.0)
  _check_value(fn, "transition_begin", transition_begin)
  _check_value(fn, "end_value", end_value, allow_none=True)


def _exponential_or_constant(init_value, transition_steps, decay_rate, transition_begin, staircase,
                             end_value):
  steps, rate, begin = concrete(transition_steps), concrete(decay_rate), concrete(transition_begin)
  if steps is not None and steps <= 0 or rate == 0:
    return _base.Bound(_constant, None, value=init_value)
  if begin is not None and begin < 0:
    transition_begin = 0
  return _base.Bound(_exponential, None, init_value=init_value, transition_steps=transition_steps,
                     decay_rate=decay_rate, transition_begin=transition_begin,
                     staircase=bool(staircase), end_value=end_value)


def exponential_decay(
    init_value: jax.typing.ArrayLike,
    transition_steps: int,
    decay_rate: float,
    transition_begin: int = 0,
    staircase: bool = False,
    end_value: Optional[jax.typing.ArrayLike] = None,
) -> Schedule:
  """Exponential decay of `init_value` by `decay_rate` every `transition_steps` steps.

  Args:
    init_value: the value up to step `transition_begin`.
    transition_steps: the number of steps per factor of `decay_rate`; if <= 0 the schedule is the
      constant `init_value`.
    decay_rate: the factor per `transition_steps` steps, >= 0; 0 gives the constant `init_value`.
    transition_begin: the step at which the decay starts (a negative value counts as 0).
    staircase: decay in whole steps of `transition_steps` (floor the exponent).
    end_value: a bound the value does not pass: a floor when `decay_rate < 1`, else a ceiling.

  Returns:
    A schedule: with `s = t - transition_begin` and `p = s / transition_steps` (floored if
    `staircase`), `f(t) = init_value` for `s <= 0`, else `init_value * decay_rate ** p`, then
    bounded by `end_value`.
  """
  fn = "exponential_decay"
  _check_value(fn, "init_value", init_value)
  _check_exponential(fn, transition_steps, decay_rate, transition_begin, end_value)
  return _exponential_or_constant(init_value, transition_steps, decay_rate, transition_begin, staircase,
                                  end_value)


# ----------------------------------------------------------------------------------------------
# cosine decay


def _cosine(count, *, init_value, decay_steps, alpha, exponent):
  # Python ints become floats first, so a huge count cannot overflow int32 (optax does the same).
  steps = float(decay_steps) if isinstance(decay_steps, int) else decay_steps
  count = float(count) if isinstance(count, int) else count
  count, steps = align(count, steps, for_jnp=True)
  count = as_float(jnp.minimum(count, steps))
  angle, steps = align(jnp.pi * count, steps)
  cosine = 0.5 * (1 + jnp.cos(angle / steps))
  decayed = (1 - alpha) * cosine**exponent + alpha
  return init_value * decayed


def cosine_decay_schedule(
    init_value: jax.typing.ArrayLike,
    decay_steps: int,
    alpha: jax.typing.ArrayLike = 0.0,
    exponent: jax.typing.ArrayLike = 1.0,
) -> Schedule:
  """Cosine decay from `init_value` to `alpha * init_value` over `decay_steps` steps.

  Args:
    init_value: the value at step 0.
    decay_steps: the length of the decay, > 0.
    alpha: the final value as a fraction of `init_value`.
    exponent: the power applied to the cosine factor.

  Returns:
    A schedule: with `s = min(t, decay_steps)`,
    `f(t) = init_value * ((1 - alpha) * (0.5 * (1 + cos(pi * s / decay_steps))) ** exponent + alpha)`.

  Reference: Loshchilov & Hutter, SGDR: Stochastic Gradient Descent with Warm Restarts, 2017.
  """
  fn = "cosine_decay_schedule"
  _check_value(fn, "init_value", init_value)
  _check_steps(fn, "decay_steps", decay_steps, positive=True)
  _check_value(fn, "alpha", alpha)
  _check_value(fn, "exponent", exponent)
  return _base.Bound(_cosine, None, init_value=init_value, decay_steps=decay_steps, alpha=alpha,
                     exponent=exponent)


# ----------------------------------------------------------------------------------------------
# piecewise schedules


def _boundaries_and_scales(fn: str, boundaries_and_scales: Any) -> tuple[tuple, tuple]:
  """Validates `{step: scale}` and returns (boundaries, scales) sorted by step, as tuples."""
  if boundaries_and_scales is None:
    return (), ()
  if not isinstance(boundaries_and_scales, Mapping):
    raise _errors.HyperparameterTypeError(
        f"{fn}: argument `boundaries_and_scales` must be a dict {{step: scale}} or None, "
        f"got {type(boundaries_and_scales).__name__}")
  for step, scale in boundaries_and_scales.items():
    _errors.check_number(fn, f"boundaries_and_scales key {step!r}", step)
    _errors.check_number(fn, f"boundaries_and_scales[{step!r}]", scale, low=0.0)
  items = sorted(boundaries_and_scales.items())
  return tuple(step for step, _ in items), tuple(scale for _, scale in items)


def _piecewise_constant(count, *, init_value, boundaries, scales):
  value = init_value
  for boundary, scale in zip(boundaries, scales):
    boundary_, count_ = align(boundary, count)
    indicator = jnp.maximum(0.0, as_float(jnp.sign(boundary_ - count_)))
    value = value * indicator + (1 - indicator) * scale * value
  return value


def piecewise_constant_schedule(
    init_value: jax.typing.ArrayLike,
    boundaries_and_scales: Optional[dict[int, float]] = None,
) -> Schedule:
  """A constant value multiplied by `scale` at each boundary step reached.

  Args:
    init_value: the value before the first boundary.
    boundaries_and_scales: `{step: scale}`, scales >= 0; from `step` on the value is multiplied by
      `scale`. None or empty gives the constant `init_value`.

  Returns:
    A schedule: `f(t) = init_value * prod(scale_i for boundary_i <= t)`.
  """
  fn = "piecewise_constant_schedule"
  _check_value(fn, "init_value", init_value)
  boundaries, scales = _boundaries_and_scales(fn, boundaries_and_scales)
  return _base.Bound(_piecewise_constant, None, init_value=init_value, boundaries=boundaries,
                     scales=scales)


def _interpolate_linear(start, end, pct):
  return (end - start) * pct + start


def _interpolate_cosine(start, end, pct):
  return end + (start - end) / 2.0 * (jnp.cos(jnp.pi * pct) + 1)


_INTERPOLATE = {"linear": _interpolate_linear, "cosine": _interpolate_cosine}


def _piecewise_interpolate(count, *, interpolate_type, init_value, boundaries, scales):
  interpolate = _INTERPOLATE[interpolate_type]
  bounds = jnp.stack((0,) + boundaries)
  values = as_float(jnp.cumprod(jnp.stack((init_value,) + scales)))
  sizes = jnp.maximum(bounds[1:] - bounds[:-1], 1)
  count, bounds = align(count, bounds)
  starts, ends = bounds[:-1], bounds[1:]
  inside = as_float(jnp.logical_and(starts <= count, count < ends))
  pct = (count - starts) / sizes
  return inside.dot(interpolate(values[:-1], values[1:], pct)) + as_float(bounds[-1] <= count) * values[-1]


def piecewise_interpolate_schedule(
    interpolate_type: str,
    init_value: jax.typing.ArrayLike,
    boundaries_and_scales: Optional[dict[int, float]] = None,
) -> Schedule:
  """Linear or cosine interpolation between values that are multiplied by `scale` at each boundary.

  Args:
    interpolate_type: 'linear' or 'cosine'.
    init_value: the value at step 0.
    boundaries_and_scales: `{step: scale}`, scales >= 0. With steps `b_1 < b_2 < …` and values
      `v_0 = init_value`, `v_i = v_{i-1} * scale_i`, the schedule goes from `v_{i-1}` at `b_{i-1}`
      (`b_0 = 0`) to `v_i` at `b_i`, and stays at the last value after the last step.

  Returns:
    A schedule: for `b_{i-1} <= t < b_i`, with `p = (t - b_{i-1}) / max(b_i - b_{i-1}, 1)`,
    `f(t) = v_{i-1} + (v_i - v_{i-1}) * p` (linear) or
    `f(t) = v_i + (v_{i-1} - v_i) / 2 * (cos(pi * p) + 1)` (cosine); `f(t) = v_last` from the last step.
  """
  fn = "piecewise_interpolate_schedule"
  if interpolate_type not in ("linear", "cosine"):
    raise _errors.HyperparameterError(
        f"{fn}: argument `interpolate_type` must be 'linear' or 'cosine', got {interpolate_type!r}")
  _check_value(fn, "init_value", init_value)
  boundaries, scales = _boundaries_and_scales(fn, boundaries_and_scales)
  return _base.Bound(_piecewise_interpolate, None, interpolate_type=interpolate_type,
                     init_value=init_value, boundaries=boundaries, scales=scales)


def _check_onecycle(fn, transition_steps, peak_value, pct_start, div_factor, final_div_factor):
  _check_steps(fn, "transition_steps", transition_steps, positive=True)
  _check_value(fn, "peak_value", peak_value)
  _check_pct(fn, "pct_start", pct_start)
  _errors.check_number(fn, "div_factor", div_factor, low=0.0, low_open=True)
  _errors.check_number(fn, "final_div_factor", final_div_factor, low=0.0, low_open=True)


def linear_onecycle_schedule(
    transition_steps: int,
    peak_value: jax.typing.ArrayLike,
    pct_start: float = 0.3,
    pct_final: float = 0.85,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
) -> Schedule:
  """The one-cycle policy with three linear phases: warm up, cool down, anneal.

  Args:
    transition_steps: the length of the cycle, > 0.
    peak_value: the value reached at `pct_start * transition_steps`.
    pct_start: the fraction of the cycle spent rising from `peak_value / div_factor` to `peak_value`.
    pct_final: the fraction of the cycle at which the value is back to `peak_value / div_factor`.
    div_factor: the start value is `peak_value / div_factor`, > 0.
    final_div_factor: the end value is `peak_value / div_factor / final_div_factor`, > 0.

  Returns:
    A schedule: `piecewise_interpolate_schedule('linear', peak_value / div_factor,
    {int(pct_start * T): div_factor, int(pct_final * T): 1 / div_factor, T: 1 / final_div_factor})`.

  Reference: Smith & Topin, Super-Convergence: Very Fast Training of Neural Networks Using Large
  Learning Rates, 2017.
  """
  fn = "linear_onecycle_schedule"
  _check_onecycle(fn, transition_steps, peak_value, pct_start, div_factor, final_div_factor)
  _check_pct(fn, "pct_final", pct_final)
  start, final = concrete(pct_start), concrete(pct_final)
  if start is not None and final is not None and final < start:
    raise _errors.HyperparameterError(
        f"{fn}: argument `pct_final` ({pct_final!r}) must be >= `pct_start` ({pct_start!r})")
  return piecewise_interpolate_schedule("linear", peak_value / div_factor, {
      int(pct_start * transition_steps): div_factor,
      int(pct_final * transition_steps): 1.0 / div_factor,
      transition_steps: 1.0 / final_div_factor,
  })


def cosine_onecycle_schedule(
    transition_steps: int,
    peak_value: jax.typing.ArrayLike,
    pct_start: float = 0.3,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
) -> Schedule:
  """The one-cycle policy with cosine phases: rise to `peak_value`, then anneal.

  Args:
    transition_steps: the length of the cycle, > 0.
    peak_value: the value reached at `pct_start * transition_steps`.
    pct_start: the fraction of the cycle spent rising from `peak_value / div_factor` to `peak_value`.
    div_factor: the start value is `peak_value / div_factor`, > 0.
    final_div_factor: the end value is `peak_value / div_factor / final_div_factor`, > 0.

  Returns:
    A schedule: `piecewise_interpolate_schedule('cosine', peak_value / div_factor,
    {int(pct_start * T): div_factor, int(T): 1 / (div_factor * final_div_factor)})`.

  Reference: Smith & Topin, Super-Convergence: Very Fast Training of Neural Networks Using Large
  Learning Rates, 2017.
  """
  fn = "cosine_onecycle_schedule"
  _check_onecycle(fn, transition_steps, peak_value, pct_start, div_factor, final_div_factor)
  return piecewise_interpolate_schedule("cosine", peak_value / div_factor, {
      int(pct_start * transition_steps): div_factor,
      int(transition_steps): 1.0 / (div_factor * final_div_factor),
  })


# ----------------------------------------------------------------------------------------------
# warmup schedules


def warmup_constant_schedule(
    init_value: jax.typing.ArrayLike,
    peak_value: jax.typing.ArrayLike,
    warmup_steps: int,
) -> Schedule:
  """A linear warmup from `init_value` to `peak_value`, then constant.

  Args:
    init_value: the value at step 0.
    peak_value: the value from step `warmup_steps` on.
    warmup_steps: the length of the warmup, >= 0; 0 gives the constant `init_value` (as optax).

  Returns:
    A schedule: `f(t) = init_value + (peak_value - init_value) * min(t, warmup_steps) / warmup_steps`.
  """
  fn = "warmup_constant_schedule"
  _check_value(fn, "init_value", init_value)
  _check_value(fn, "peak_value", peak_value)
  _check_steps(fn, "warmup_steps", warmup_steps)
  return _polynomial_or_constant(init_value, peak_value, 1, warmup_steps, 0)


def _check_warmup_cosine(fn, init_value, peak_value, warmup_steps, decay_steps, end_value, exponent):
  _check_value(fn, "init_value", init_value)
  _check_value(fn, "peak_value", peak_value)
  _check_steps(fn, "warmup_steps", warmup_steps)
  _check_steps(fn, "decay_steps", decay_steps, positive=True)
  _check_value(fn, "end_value", end_value)
  _check_value(fn, "exponent", exponent)
  warmup, decay = concrete(warmup_steps), concrete(decay_steps)
  if warmup is not None and decay is not None and warmup >= decay:
    raise _errors.HyperparameterError(
        f"{fn}: argument `warmup_steps` must be < `decay_steps`, got warmup_steps ({warmup_steps!r}) >= "
        f"decay_steps ({decay_steps!r}); decay_steps is the total length, warmup included, so the "
        "cosine phase needs at least one step")


def warmup_cosine_decay_schedule(
    init_value: jax.typing.ArrayLike,
    peak_value: jax.typing.ArrayLike,
    warmup_steps: int,
    decay_steps: int,
    end_value: jax.typing.ArrayLike = 0.0,
    exponent: jax.typing.ArrayLike = 1.0,
) -> Schedule:
  """A linear warmup from `init_value` to `peak_value`, then a cosine decay to `end_value`.

  Args:
    init_value: the value at step 0.
    peak_value: the value at step `warmup_steps`.
    warmup_steps: the length of the warmup, >= 0.
    decay_steps: the total length, warmup included, > `warmup_steps`.
    end_value: the value from step `decay_steps` on.
    exponent: the power applied to the cosine factor.

  Returns:
    A schedule: `join_schedules([linear_schedule(init_value, peak_value, warmup_steps),
    cosine_decay_schedule(peak_value, decay_steps - warmup_steps, end_value / peak_value, exponent)],
    [warmup_steps])` (alpha is 0 when `peak_value == 0`).
  """
  fn = "warmup_cosine_decay_schedule"
  _check_warmup_cosine(fn, init_value, peak_value, warmup_steps, decay_steps, end_value, exponent)
  if concrete(peak_value) is None:  # traced (inject_hyperparams): choose without a Python branch
    alpha = jnp.where(peak_value == 0.0, 0.0, end_value / peak_value)
  else:
    alpha = 0.0 if peak_value == 0.0 else end_value / peak_value
  return join_schedules(
      (_polynomial_or_constant(init_value, peak_value, 1, warmup_steps, 0),
       _base.Bound(_cosine, None, init_value=peak_value, decay_steps=decay_steps - warmup_steps,
                   alpha=alpha, exponent=exponent)),
      (warmup_steps,))


def warmup_exponential_decay_schedule(
    init_value: jax.typing.ArrayLike,
    peak_value: jax.typing.ArrayLike,
    warmup_steps: int,
    transition_steps: int,
    decay_rate: jax.typing.ArrayLike,
    transition_begin: int = 0,
    staircase: bool = False,
    end_value: Optional[jax.typing.ArrayLike] = None,
) -> Schedule:
  """A linear warmup from `init_value` to `peak_value`, then an exponential decay.

  Args:
    init_value: the value at step 0.
    peak_value: the value at step `warmup_steps`, where the decay starts.
    warmup_steps: the length of the warmup, >= 0.
    transition_steps, decay_rate, transition_begin, staircase, end_value: as in `exponential_decay`,
      counted from the end of the warmup.

  Returns:
    A schedule: `join_schedules([linear_schedule(init_value, peak_value, warmup_steps),
    exponential_decay(peak_value, transition_steps, decay_rate, transition_begin, staircase,
    end_value)], [warmup_steps])`.
  """
  fn = "warmup_exponential_decay_schedule"
  _check_value(fn, "init_value", init_value)
  _check_value(fn, "peak_value", peak_value)
  _check_steps(fn, "warmup_steps", warmup_steps)
  _check_exponential(fn, transition_steps, decay_rate, transition_begin, end_value)
  return join_schedules(
      (_polynomial_or_constant(init_value, peak_value, 1, warmup_steps, 0),
       _exponential_or_constant(peak_value, transition_steps, decay_rate, transition_begin, staircase,
                                end_value)),
      (warmup_steps,))


def sgdr_schedule(cosine_kwargs: Iterable[dict[str, jax.typing.ArrayLike]]) -> Schedule:
  """SGD with warm restarts: warmup-cosine cycles run one after another.

  Args:
    cosine_kwargs: one dict of `warmup_cosine_decay_schedule` arguments per cycle; each cycle lasts
      its `decay_steps`.

  Returns:
    A schedule: `join_schedules([warmup_cosine_decay_schedule(**kw) for kw in cosine_kwargs],
    cumulative sums of decay_steps, last one left out)`.

  Reference: Loshchilov & Hutter, SGDR: Stochastic Gradient Descent with Warm Restarts, 2017.
  """
  fn = "sgdr_schedule"
  if isinstance(cosine_kwargs, (str, bytes, Mapping)) or not isinstance(cosine_kwargs, Iterable):
    raise _errors.HyperparameterTypeError(
        f"{fn}: argument `cosine_kwargs` must be an iterable of dicts, got {type(cosine_kwargs).__name__}")
  cycles = list(cosine_kwargs)
  if not cycles:
    raise _errors.HyperparameterError(f"{fn}: argument `cosine_kwargs` must hold at least one cycle, got none")
  schedules, boundaries, step = [], [], 0
  for i, kwargs in enumerate(cycles):
    where = f"cosine_kwargs[{i}]"
    if not isinstance(kwargs, Mapping):
      raise _errors.HyperparameterTypeError(
          f"{fn}: argument `{where}` must be a dict of warmup_cosine_decay_schedule arguments, "
          f"got {type(kwargs).__name__}")
    try:
      schedules.append(warmup_cosine_decay_schedule(**kwargs))
    except _errors.GradxformError as err:
      err.enter(fn)
      err.at_position(f"argument `{where}`")
      raise
    except TypeError as err:  # missing or unknown keyword
      raise _errors.HyperparameterTypeError(f"{fn}: argument `{where}`: {err}") from None
    step = step + kwargs["decay_steps"]
    boundaries.append(step)
  return join_schedules(tuple(schedules), tuple(boundaries[:-1]))
