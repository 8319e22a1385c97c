"""gradxform.schedules against optax.schedules: values, dtypes, validation, hashing, signatures."""

from __future__ import annotations

import functools
import inspect
import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradxform.schedules as gs
from gradxform import _base
from gradxform import _errors

NAMES = [
    "constant_schedule", "linear_schedule", "polynomial_schedule", "exponential_decay",
    "cosine_decay_schedule", "warmup_cosine_decay_schedule", "warmup_constant_schedule",
    "warmup_exponential_decay_schedule", "piecewise_constant_schedule", "join_schedules",
    "piecewise_interpolate_schedule", "linear_onecycle_schedule", "cosine_onecycle_schedule",
    "sgdr_schedule",
]

# One count array for every case: every step in [0, 130), steps before 0, and large counts up to the
# int32 maximum a saturating step counter reaches.
_DENSE_END = 130
_FAR = [-7, -1, 1_000, 10**6, 2**24 + 1, 2**31 - 2, 2**31 - 1]
COUNTS = np.array(sorted(set(range(_DENSE_END)) | set(_FAR)), dtype=np.int32)
SCALAR_KINDS = {"int": int, "np.int32": np.int32, "np.int64": np.int64, "jnp.int32": jnp.int32}


class _Sub:
  """A sub-schedule argument (of join_schedules), built with the library under test."""

  def __init__(self, name, *args):
    self.name, self.args = name, args

  def build(self, lib):
    return getattr(lib, self.name)(*self.args)

  def __repr__(self):
    return f"{self.name}{self.args}"


def _resolve(value, lib):
  if isinstance(value, list):
    return [_resolve(v, lib) for v in value]
  return value.build(lib) if isinstance(value, _Sub) else value


def _build(lib, name, kwargs):
  kwargs = {k: _resolve(v, lib) for k, v in kwargs.items()}
  if lib is optax:
    with jax.numpy_dtype_promotion("standard"):
      return getattr(optax, name)(**kwargs)
  return getattr(gs, name)(**kwargs)


def _case(name, edges, **kwargs):
  """A table row: the schedule, its boundary steps (checked to lie in the dense range), its arguments."""
  return pytest.param(name, kwargs, edges, id=f"{name}-{'-'.join(f'{k}={v}' for k, v in kwargs.items())}"[:120])


_F32 = jnp.float32
CASES = [
    _case("constant_schedule", [], value=0.5),
    _case("constant_schedule", [], value=_F32(0.25)),
    # linear / polynomial: transition_begin, degenerate transition_steps (constant), negative begin (clamped).
    _case("linear_schedule", [0, 100], init_value=1.0, end_value=0.01, transition_steps=100),
    _case("linear_schedule", [5, 12], init_value=0.1, end_value=0.3, transition_steps=7, transition_begin=5),
    _case("linear_schedule", [0, 7], init_value=0.1, end_value=0.3, transition_steps=7.0, transition_begin=-3),
    _case("linear_schedule", [0], init_value=0.1, end_value=0.3, transition_steps=0),
    _case("linear_schedule", [0], init_value=0.1, end_value=0.3, transition_steps=-4, transition_begin=2),
    _case("linear_schedule", [0, 64], init_value=_F32(1.0), end_value=0.0, transition_steps=64),
    _case("polynomial_schedule", [5, 105], init_value=1.0, end_value=0.01, power=2, transition_steps=100,
          transition_begin=5),
    _case("polynomial_schedule", [0, 33], init_value=1.0, end_value=0.0, power=0.5, transition_steps=33),
    _case("polynomial_schedule", [10, 50], init_value=_F32(2.0), end_value=_F32(0.5), power=3.0,
          transition_steps=40, transition_begin=10),
    # exponential decay: staircase, end_value as floor and as ceiling, float steps, decay_rate 0.
    _case("exponential_decay", [0, 10, 20], init_value=1.0, transition_steps=10, decay_rate=0.9),
    _case("exponential_decay", [5, 12, 19], init_value=0.3, transition_steps=7, decay_rate=0.5,
          transition_begin=5, staircase=True),
    _case("exponential_decay", [0, 7, 19], init_value=0.3, transition_steps=7, decay_rate=0.5, end_value=0.05),
    _case("exponential_decay", [0, 7, 14], init_value=0.3, transition_steps=7, decay_rate=1.5, end_value=1.0,
          transition_begin=-2),
    _case("exponential_decay", [2, 10], init_value=0.3, transition_steps=7.5, decay_rate=0.8,
          transition_begin=2.5),
    _case("exponential_decay", [0], init_value=0.3, transition_steps=7, decay_rate=0.0),
    _case("exponential_decay", [0], init_value=0.3, transition_steps=0, decay_rate=0.5),
    # cosine decay: alpha, exponent, float decay_steps, array init_value.
    _case("cosine_decay_schedule", [0, 50], init_value=0.1, decay_steps=50),
    _case("cosine_decay_schedule", [0, 50], init_value=0.1, decay_steps=50, alpha=0.1, exponent=2.0),
    _case("cosine_decay_schedule", [0, 7, 8], init_value=1.0, decay_steps=7.5, alpha=0.2),
    _case("cosine_decay_schedule", [0, 20], init_value=_F32(0.5), decay_steps=20, alpha=0.5, exponent=0.5),
    # warmups.
    _case("warmup_cosine_decay_schedule", [0, 10, 50], init_value=0.0, peak_value=1.0, warmup_steps=10,
          decay_steps=50),
    _case("warmup_cosine_decay_schedule", [0, 30], init_value=0.01, peak_value=0.5, warmup_steps=0,
          decay_steps=30, end_value=0.05, exponent=1.5),
    _case("warmup_cosine_decay_schedule", [3, 30], init_value=0.01, peak_value=0.0, warmup_steps=3,
          decay_steps=30),
    _case("warmup_constant_schedule", [0, 10], init_value=0.0, peak_value=1.0, warmup_steps=10),
    _case("warmup_constant_schedule", [0], init_value=0.2, peak_value=1.0, warmup_steps=0),
    _case("warmup_exponential_decay_schedule", [10, 13, 18, 23], init_value=0.0, peak_value=1.0,
          warmup_steps=10, transition_steps=5, decay_rate=0.5, transition_begin=3, staircase=True,
          end_value=0.1),
    _case("warmup_exponential_decay_schedule", [10, 15], init_value=0.0, peak_value=1.0, warmup_steps=10,
          transition_steps=5, decay_rate=0.9),
    # piecewise: unsorted dict, no boundaries, a float boundary, integer scales, a boundary at 0.
    _case("piecewise_constant_schedule", [10, 15, 20], init_value=1.0,
          boundaries_and_scales={10: 0.1, 20: 0.5, 15: 2.0}),
    _case("piecewise_constant_schedule", [0], init_value=1.0),
    _case("piecewise_constant_schedule", [0], init_value=1.0, boundaries_and_scales={}),
    _case("piecewise_constant_schedule", [10, 11], init_value=1.0, boundaries_and_scales={10.5: 0.1}),
    _case("piecewise_constant_schedule", [0, 40], init_value=_F32(3.0), boundaries_and_scales={0: 0.5, 40: 0.0}),
    _case("piecewise_interpolate_schedule", [4, 8], interpolate_type="linear", init_value=1.0,
          boundaries_and_scales={4: 0.1, 8: 0.01}),
    _case("piecewise_interpolate_schedule", [0, 10, 25], interpolate_type="cosine", init_value=2.0,
          boundaries_and_scales={0: 0.5, 10: 3.0, 25: 0.1}),
    _case("piecewise_interpolate_schedule", [0], interpolate_type="linear", init_value=2.0),
    _case("piecewise_interpolate_schedule", [5, 9], interpolate_type="linear", init_value=2.0,
          boundaries_and_scales={5: 2, 9: 3}),
    _case("piecewise_interpolate_schedule", [0, 10, 30], interpolate_type="cosine", init_value=_F32(1.0),
          boundaries_and_scales={30: 2.0, 10: 0.5}),
    # one-cycle.
    _case("linear_onecycle_schedule", [30, 85, 100], transition_steps=100, peak_value=1.0),
    _case("linear_onecycle_schedule", [0, 1], transition_steps=1, peak_value=1.0),
    _case("linear_onecycle_schedule", [7, 22, 37], transition_steps=37, peak_value=0.5, pct_start=0.2,
          pct_final=0.6, div_factor=10.0, final_div_factor=100.0),
    _case("cosine_onecycle_schedule", [30, 100], transition_steps=100, peak_value=1.0),
    _case("cosine_onecycle_schedule", [20, 41], transition_steps=41, peak_value=0.3, pct_start=0.5,
          div_factor=5.0, final_div_factor=50.0),
    # join and sgdr.
    _case("join_schedules", [5, 15], schedules=[_Sub("constant_schedule", 1.0),
                                                _Sub("linear_schedule", 1.0, 0.0, 10),
                                                _Sub("cosine_decay_schedule", 0.5, 20)], boundaries=[5, 15]),
    _case("join_schedules", [5, 6], schedules=[_Sub("constant_schedule", 1.0),
                                               _Sub("linear_schedule", 1.0, 0.0, 10)], boundaries=[5.5]),
    _case("join_schedules", [0], schedules=[_Sub("exponential_decay", 1.0, 3, 0.7)], boundaries=[]),
    _case("sgdr_schedule", [5, 20, 23, 35], cosine_kwargs=[
        dict(init_value=0.0, peak_value=1.0, warmup_steps=5, decay_steps=20),
        dict(init_value=0.1, peak_value=0.5, warmup_steps=3, decay_steps=15, end_value=0.01)]),
    _case("sgdr_schedule", [0, 10, 20, 30], cosine_kwargs=[
        dict(init_value=1.0, peak_value=1.0, warmup_steps=0, decay_steps=10, exponent=2.0)] * 3),
]


def _assert_same(ours, ref, where):
  """Bit-exact values, and the same Python type or the same dtype and weak type."""
  if not isinstance(ref, jax.Array):
    assert type(ours) is type(ref), f"{where}: {type(ours)} vs {type(ref)}"
  else:
    assert isinstance(ours, jax.Array), f"{where}: got {type(ours)}"
    assert (ours.dtype, ours.weak_type) == (ref.dtype, ref.weak_type), (
        f"{where}: dtype {ours.dtype} (weak={ours.weak_type}) vs {ref.dtype} (weak={ref.weak_type})")
  chex.assert_trees_all_equal(ours, ref, custom_message=where)


def _eager_ref(ref, count):
  with jax.numpy_dtype_promotion("standard"):
    return ref(count)


def _assert_same_jitted(ours, expected, counts, ref, where):
  """Jitted values equal optax's jitted values bit for bit, with one deliberate exception.

  Once a polynomial transition is over, XLA's divide-by-reciprocal can put optax's `1 - steps/steps`
  an ulp off 0 under jit (NaN for a fractional power, end_value missed by an ulp); gradxform returns
  exactly what optax returns eagerly there. Every other count must match exactly.
  """
  assert (ours.dtype, ours.weak_type) == (expected.dtype, expected.weak_type), where
  ours_np, expected_np = np.asarray(ours), np.asarray(expected)
  same = (ours_np == expected_np) | (np.isnan(ours_np) & np.isnan(expected_np))
  for i in np.flatnonzero(~same):
    count = counts[i].item()
    eager = np.asarray(_eager_ref(ref, count))
    assert ours_np[i] == eager, f"{where}: count {count}: {ours_np[i]} vs optax {expected_np[i]} (eager {eager})"
    scale = np.nanmax(np.abs(expected_np))  # optax is off by rounding the schedule's full range
    assert np.isnan(expected_np[i]) or abs(expected_np[i] - eager) <= 1e-6 * scale, where


def _case_index(name, kwargs):
  return next(i for i, c in enumerate(CASES) if c.values[0] == name and c.values[1] is kwargs)


@functools.lru_cache(maxsize=None)
def _jitted_over_counts():
  """Every case evaluated at every count, in one jitted program per library (two compiles in all,
  instead of two per case; the values are the same as with one program per case)."""
  ours = [_build(gs, c.values[0], c.values[1]) for c in CASES]
  refs = [_build(optax, c.values[0], c.values[1]) for c in CASES]
  counts = jnp.asarray(COUNTS)
  values = jax.jit(lambda n: [jax.vmap(s)(n) for s in ours])(counts)
  with jax.numpy_dtype_promotion("standard"):
    expected = jax.jit(lambda n: [jax.vmap(s)(n) for s in refs])(counts)
  return values, expected, refs


@pytest.mark.parametrize("name, kwargs, edges", CASES)
def test_matches_optax_jitted_over_counts(name, kwargs, edges):
  for edge in edges:  # the table's boundaries are all probed before, at and after
    assert {edge - 1, edge, edge + 1} <= set(COUNTS.tolist()), edge
  i = _case_index(name, kwargs)
  values, expected, refs = _jitted_over_counts()
  assert values[i].shape == COUNTS.shape
  _assert_same_jitted(values[i], expected[i], COUNTS, refs[i], "jit(vmap)")


_FIRST_CASE_OF_EACH = [next(c for c in CASES if c.values[0] == n) for n in NAMES]


@pytest.mark.parametrize("name, kwargs, edges", CASES)
def test_matches_optax_eagerly_on_scalar_counts(name, kwargs, edges):
  ref, ours = _build(optax, name, kwargs), _build(gs, name, kwargs)
  # Values at every count are covered under jit above. Eagerly, a Python int count (the path with
  # Python arithmetic and weak types) is checked at a few points for every case: start, inside, just
  # past the last boundary, the int32 maximum. The other kinds (int32 scalars, NumPy ints) are checked
  # on the first case of each schedule; each kind costs a fresh compile of every eager op.
  last = max(edges, default=0)
  points = sorted({0, (last + 1) // 2, last + 1, 2**31 - 1})
  first = any(c.values[1] is kwargs for c in _FIRST_CASE_OF_EACH)
  for kind, make in SCALAR_KINDS.items():
    for point in points if kind == "int" else points[1::2] if first else ():
      _assert_same(ours(make(point)), _eager_ref(ref, make(point)), f"count={point} as {kind}")


_TRACED_POINTS = np.array(sorted({0, 2**31 - 1, *(e for c in _FIRST_CASE_OF_EACH for e in c.values[2])}),
                          dtype=np.int32)


@functools.lru_cache(maxsize=None)
def _jitted_on_scalars():
  """The first case of each schedule, jitted on an unbatched int32 count (one program per library)."""
  ours = [_build(gs, c.values[0], c.values[1]) for c in _FIRST_CASE_OF_EACH]
  refs = [_build(optax, c.values[0], c.values[1]) for c in _FIRST_CASE_OF_EACH]
  run = jax.jit(lambda n: [jnp.asarray(s(n)) for s in ours])
  values = [run(n) for n in _TRACED_POINTS]
  with jax.numpy_dtype_promotion("standard"):
    run_ref = jax.jit(lambda n: [jnp.asarray(s(n)) for s in refs])
    expected = [run_ref(n) for n in _TRACED_POINTS]
  stack = lambda per_point: [jnp.stack(column) for column in zip(*per_point)]
  return stack(values), stack(expected), refs


@pytest.mark.parametrize("name, kwargs, edges", _FIRST_CASE_OF_EACH)
def test_matches_optax_on_a_traced_scalar_count(name, kwargs, edges):
  del edges
  i = next(j for j, c in enumerate(_FIRST_CASE_OF_EACH) if c.values[1] is kwargs)
  values, expected, refs = _jitted_on_scalars()
  _assert_same_jitted(values[i], expected[i], _TRACED_POINTS, refs[i], f"jit(scalar) {name}")


@pytest.mark.parametrize("name, kwargs", [
    ("linear_schedule", dict(init_value=1.0, end_value=0.0, transition_steps=40)),
    ("cosine_decay_schedule", dict(init_value=1.0, decay_steps=40, alpha=0.1)),
    ("exponential_decay", dict(init_value=1.0, transition_steps=4, decay_rate=0.5, staircase=True)),
    ("piecewise_interpolate_schedule", dict(interpolate_type="cosine", init_value=1.0,
                                            boundaries_and_scales={10: 0.1, 30: 2.0})),
])
def test_float_counts_match_optax(name, kwargs):
  counts = np.arange(-2, 60, dtype=np.float32) * 0.75
  ref, ours = _build(optax, name, kwargs), _build(gs, name, kwargs)
  with jax.numpy_dtype_promotion("standard"):
    expected = jax.jit(jax.vmap(ref))(counts)
  _assert_same_jitted(jax.jit(jax.vmap(ours))(counts), expected, counts, ref, name)
  _assert_same(ours(2.25), _eager_ref(ref, 2.25), "python float count")


@pytest.mark.parametrize("transition_steps", [3, 7, 33, 100, 1000])
def test_polynomial_ends_exactly_at_end_value_under_jit(transition_steps):
  # optax 0.2.8 returns NaN here for most transition_steps (`1 - steps/steps` is -1 ulp under jit).
  counts = jnp.asarray([transition_steps - 1, transition_steps, transition_steps + 5], dtype=jnp.int32)
  sqrt_decay = jax.jit(jax.vmap(gs.polynomial_schedule(1.0, 0.0, 0.5, transition_steps)))(counts)
  linear = jax.jit(jax.vmap(gs.linear_schedule(1.0, 0.01, transition_steps)))(counts)
  assert np.all(np.isfinite(sqrt_decay)) and float(sqrt_decay[0]) > 0.0
  assert sqrt_decay[1:].tolist() == [0.0, 0.0]
  assert linear[1:].tolist() == [np.float32(0.01)] * 2


# ----------------------------------------------------------------------------------------------
# Validation.

_HE, _HT = _errors.HyperparameterError, _errors.HyperparameterTypeError
_OK_KW = [dict(init_value=0.0, peak_value=1.0, warmup_steps=5, decay_steps=10)]
ERRORS = [
    ("constant_schedule", dict(value="0.1"), _HT, "value"),
    ("linear_schedule", dict(init_value="a", end_value=0.0, transition_steps=5), _HT, "init_value"),
    ("linear_schedule", dict(init_value=1.0, end_value=0.0, transition_steps="ten"), _HT, "transition_steps"),
    ("linear_schedule", dict(init_value=1.0, end_value=None, transition_steps=10), _HT, "end_value"),
    ("linear_schedule", dict(init_value=float("nan"), end_value=0.0, transition_steps=10), _HE, "init_value"),
    ("polynomial_schedule", dict(init_value=1.0, end_value=0.0, power="2", transition_steps=10), _HT, "power"),
    ("polynomial_schedule", dict(init_value=1.0, end_value=0.0, power=2, transition_steps=10,
                                 transition_begin="5"), _HT, "transition_begin"),
    ("exponential_decay", dict(init_value=1.0, transition_steps=10, decay_rate=-0.5), _HE, "decay_rate"),
    ("exponential_decay", dict(init_value=1.0, transition_steps=10, decay_rate="fast"), _HT, "decay_rate"),
    ("exponential_decay", dict(init_value=1.0, transition_steps=10, decay_rate=0.5, end_value="x"), _HT,
     "end_value"),
    ("cosine_decay_schedule", dict(init_value=1.0, decay_steps=0), _HE, "decay_steps"),
    ("cosine_decay_schedule", dict(init_value=1.0, decay_steps=-10), _HE, "decay_steps"),
    ("cosine_decay_schedule", dict(init_value=1.0, decay_steps=10, alpha="a"), _HT, "alpha"),
    ("warmup_cosine_decay_schedule", dict(init_value=0.0, peak_value=1.0, warmup_steps=60, decay_steps=50),
     _HE, "warmup_steps (60) >= decay_steps (50)"),
    ("warmup_cosine_decay_schedule", dict(init_value=0.0, peak_value=1.0, warmup_steps=50, decay_steps=50),
     _HE, "warmup_steps (50) >= decay_steps (50)"),
    ("warmup_cosine_decay_schedule", dict(init_value=0.0, peak_value=1.0, warmup_steps=-1, decay_steps=50),
     _HE, "warmup_steps"),
    ("warmup_cosine_decay_schedule", dict(init_value=0.0, peak_value=1.0, warmup_steps=0, decay_steps=0),
     _HE, "decay_steps"),
    ("warmup_cosine_decay_schedule", dict(init_value=0.0, peak_value="1", warmup_steps=0, decay_steps=5),
     _HT, "peak_value"),
    ("warmup_constant_schedule", dict(init_value=0.0, peak_value=1.0, warmup_steps=-5), _HE, "warmup_steps"),
    ("warmup_exponential_decay_schedule", dict(init_value=0.0, peak_value=1.0, warmup_steps=-5,
                                               transition_steps=5, decay_rate=0.5), _HE, "warmup_steps"),
    ("warmup_exponential_decay_schedule", dict(init_value=0.0, peak_value=1.0, warmup_steps=5,
                                               transition_steps=5, decay_rate=-1.0), _HE, "decay_rate"),
    ("piecewise_constant_schedule", dict(init_value=1.0, boundaries_and_scales={5: -1.0}), _HE,
     "boundaries_and_scales[5]"),
    ("piecewise_constant_schedule", dict(init_value=1.0, boundaries_and_scales={5: "x"}), _HT,
     "boundaries_and_scales[5]"),
    ("piecewise_constant_schedule", dict(init_value=1.0, boundaries_and_scales=[(5, 0.1)]), _HT,
     "boundaries_and_scales"),
    ("piecewise_constant_schedule", dict(init_value=1.0, boundaries_and_scales={"5": 0.1}), _HT,
     "boundaries_and_scales key '5'"),
    ("piecewise_interpolate_schedule", dict(interpolate_type="quadratic", init_value=1.0), _HE,
     "interpolate_type"),
    ("piecewise_interpolate_schedule", dict(interpolate_type="linear", init_value=1.0,
                                            boundaries_and_scales={4: 0.1, 8: -0.01}), _HE,
     "boundaries_and_scales[8]"),
    ("linear_onecycle_schedule", dict(transition_steps=0, peak_value=1.0), _HE, "transition_steps"),
    ("linear_onecycle_schedule", dict(transition_steps=-10, peak_value=1.0), _HE, "transition_steps"),
    ("linear_onecycle_schedule", dict(transition_steps=10, peak_value=1.0, pct_start=1.5), _HE, "pct_start"),
    ("linear_onecycle_schedule", dict(transition_steps=10, peak_value=1.0, pct_start=0.6, pct_final=0.5),
     _HE, "pct_final"),
    ("linear_onecycle_schedule", dict(transition_steps=10, peak_value=1.0, div_factor=0.0), _HE, "div_factor"),
    ("linear_onecycle_schedule", dict(transition_steps=10, peak_value=1.0, final_div_factor=-1.0), _HE,
     "final_div_factor"),
    ("cosine_onecycle_schedule", dict(transition_steps=0, peak_value=1.0), _HE, "transition_steps"),
    ("cosine_onecycle_schedule", dict(transition_steps=10, peak_value=1.0, pct_start=-0.1), _HE, "pct_start"),
    ("cosine_onecycle_schedule", dict(transition_steps=10, peak_value="1"), _HT, "peak_value"),
    ("join_schedules", dict(schedules=[], boundaries=[]), _HE, "schedules"),
    ("join_schedules", dict(schedules=[gs.constant_schedule(1.0)], boundaries=[3]), _HE, "boundaries"),
    ("join_schedules", dict(schedules=[gs.constant_schedule(1.0), 0.5], boundaries=[3]), _HT, "schedules[1]"),
    ("join_schedules", dict(schedules=[gs.constant_schedule(1.0)] * 3, boundaries=[5, 3]), _HE, "boundaries"),
    ("join_schedules", dict(schedules=[gs.constant_schedule(1.0)] * 2, boundaries=["5"]), _HT, "boundaries[0]"),
    ("join_schedules", dict(schedules=gs.constant_schedule(1.0), boundaries=[]), _HT, "schedules"),
    ("sgdr_schedule", dict(cosine_kwargs=[]), _HE, "cosine_kwargs"),
    ("sgdr_schedule", dict(cosine_kwargs=[_OK_KW[0], 3]), _HT, "cosine_kwargs[1]"),
    ("sgdr_schedule", dict(cosine_kwargs=_OK_KW + [dict(_OK_KW[0], warmup_steps=10)]), _HE, "cosine_kwargs[1]"),
    ("sgdr_schedule", dict(cosine_kwargs=[dict(init_value=0.0, peak_value=1.0, decay_steps=5)]), _HT,
     "cosine_kwargs[0]"),
]


@pytest.mark.parametrize("name, kwargs, error, argument", ERRORS,
                         ids=[f"{e[0]}-{e[3]}" for e in ERRORS])
def test_invalid_arguments_raise_named_errors(name, kwargs, error, argument):
  base = ValueError if issubclass(error, _errors.HyperparameterError) else TypeError
  with pytest.raises(error) as info:
    getattr(gs, name)(**kwargs)
  assert isinstance(info.value, base) and isinstance(info.value, _errors.GradxformError)
  message = str(info.value)
  assert message.startswith(name), message
  assert argument in message, message


def test_sgdr_error_names_the_inner_function_and_cycle():
  with pytest.raises(_HE, match=re.escape("sgdr_schedule (argument `cosine_kwargs[1]`): "
                                          "warmup_cosine_decay_schedule: argument `warmup_steps`")):
    gs.sgdr_schedule(_OK_KW + [dict(_OK_KW[0], warmup_steps=10)])


def test_message_format_names_function_and_argument():
  with pytest.raises(_HE, match=re.escape(
      "cosine_decay_schedule: argument `decay_steps` must be in (0.0, inf], got 0")):
    gs.cosine_decay_schedule(1.0, 0)


@pytest.mark.parametrize("name, kwargs", [
    ("cosine_decay_schedule", dict(init_value=1.0, decay_steps=0)),
    ("piecewise_constant_schedule", dict(init_value=1.0, boundaries_and_scales={5: -1.0})),
    ("linear_onecycle_schedule", dict(transition_steps=0, peak_value=1.0)),
    ("warmup_cosine_decay_schedule", dict(init_value=0.0, peak_value=1.0, warmup_steps=50, decay_steps=50)),
])
def test_where_optax_raises_we_raise_too(name, kwargs):
  with jax.numpy_dtype_promotion("standard"), pytest.raises(ValueError):
    getattr(optax, name)(**kwargs)
  with pytest.raises(_HE):
    getattr(gs, name)(**kwargs)


# ----------------------------------------------------------------------------------------------
# Hashing, equality, structure, signatures.


@pytest.mark.parametrize("name, kwargs, edges", CASES)
def test_equal_constructions_are_equal_and_hash_equal(name, kwargs, edges):
  del edges
  a, b = _build(gs, name, kwargs), _build(gs, name, kwargs)
  assert isinstance(a, _base.Bound)
  assert a == b and hash(a) == hash(b)
  assert len({a, b}) == 1


def test_different_arguments_are_not_equal():
  base = gs.linear_schedule(0.1, 0.0, 100)
  assert base == gs.linear_schedule(0.1, 0.0, 100)
  for other in (gs.linear_schedule(0.1, 0.0, 101), gs.linear_schedule(0.2, 0.0, 100),
                gs.linear_schedule(0.1, 0.0, 100, transition_begin=5),
                gs.polynomial_schedule(0.1, 0.0, 2, 100), gs.cosine_decay_schedule(0.1, 100)):
    assert base != other
  w1 = gs.warmup_cosine_decay_schedule(0.0, 1.0, 10, 100)
  assert w1 == gs.warmup_cosine_decay_schedule(0.0, 1.0, 10, 100)
  assert w1 != gs.warmup_cosine_decay_schedule(0.0, 1.0, 10, 101)
  assert gs.piecewise_constant_schedule(1.0, {10: 0.1, 20: 0.5}) == gs.piecewise_constant_schedule(
      1.0, {20: 0.5, 10: 0.1})


def test_composites_hold_sub_schedules_in_tuples():
  sched = gs.warmup_cosine_decay_schedule(0.0, 1.0, 10, 100, end_value=0.1)
  subs = sched.keywords["schedules"]
  assert isinstance(subs, tuple) and len(subs) == 2
  assert all(isinstance(s, _base.Bound) for s in subs)
  assert subs[0] == gs.linear_schedule(0.0, 1.0, 10)
  assert subs[1] == gs.cosine_decay_schedule(1.0, 90, alpha=0.1)
  assert sched.keywords["boundaries"] == (10,)
  sgdr = gs.sgdr_schedule(_OK_KW * 3)
  assert sgdr.keywords["boundaries"] == (10, 20)
  assert sgdr.keywords["schedules"] == (gs.warmup_cosine_decay_schedule(**_OK_KW[0]),) * 3
  joined = gs.join_schedules([gs.constant_schedule(1.0), gs.constant_schedule(2.0)], [3])
  assert isinstance(joined.keywords["schedules"], tuple) and joined.keywords["boundaries"] == (3,)


def test_rebuilt_schedule_as_static_argument_does_not_retrace():
  traces = []

  def step(count, schedule):
    traces.append(None)
    return schedule(count)

  step = jax.jit(step, static_argnums=1)
  for _ in range(3):
    value = step(jnp.int32(5), gs.warmup_cosine_decay_schedule(0.0, 1.0, 10, 100))
  assert len(traces) == 1
  chex.assert_trees_all_close(value, 0.5, rtol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_signature_matches_optax(name):
  ours = inspect.signature(getattr(gs, name)).parameters.values()
  ref = inspect.signature(getattr(optax, name)).parameters.values()
  assert [(p.name, p.kind, p.default) for p in ours] == [(p.name, p.kind, p.default) for p in ref]
  assert getattr(gs, name).__doc__.strip()


def test_schedule_call_signature_is_count_only():
  assert list(inspect.signature(gs.linear_schedule(1.0, 0.0, 10)).parameters) == ["count"]
  assert list(inspect.signature(gs.join_schedules([gs.constant_schedule(1.0)], [])).parameters) == ["step"]


def test_traced_hyperparameters_are_accepted():
  # inject_hyperparams-style use: values arrive as tracers; validation lets them through unchecked.
  def run(lib, init, end, count):
    return lib.linear_schedule(init, end, 10)(count), lib.cosine_decay_schedule(init, 10, alpha=end)(count)

  args = (jnp.float32(0.5), jnp.float32(0.1), jnp.int32(4))
  with jax.numpy_dtype_promotion("standard"):
    expected = jax.jit(lambda *a: run(optax, *a))(*args)
  values = jax.jit(lambda *a: run(gs, *a))(*args)
  chex.assert_trees_all_equal(values, expected)
  chex.assert_trees_all_equal_dtypes(values, expected)


def test_warmup_cosine_accepts_a_traced_peak_value():
  # optax 0.2.8 fails here (`peak_value == 0.0` on a tracer); gradxform picks alpha without branching.
  counts = jnp.arange(0, 12, dtype=jnp.int32)
  traced = jax.jit(lambda p, c: jax.vmap(gs.warmup_cosine_decay_schedule(0.1, p, 2, 10, end_value=0.5))(c))
  for peak in (0.0, 2.0):
    with jax.numpy_dtype_promotion("standard"):
      expected = jax.jit(jax.vmap(optax.warmup_cosine_decay_schedule(0.1, peak, 2, 10, end_value=0.5)))(counts)
    chex.assert_trees_all_close(traced(jnp.float32(peak), counts), expected, rtol=1e-6, atol=1e-7)
