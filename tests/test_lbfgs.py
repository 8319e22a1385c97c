"""L-BFGS and the line searches against optax 0.2.8: step-by-step equivalence, convergence, errors.

The line searches evaluate the objective, so their rows run the loop optax documents for lbfgs:
`value, grad = value_and_grad_from_state(f)(params, state=state)`, then
`update(grad, state, params, value=value, grad=grad, value_fn=f, **data)`, in both libraries side by side
(eager, and with the whole step under jax.jit), comparing updates, full states and params at every step.
"""

from __future__ import annotations

import dataclasses
import inspect
import math

import jax
import jax.numpy as jnp
import optax
from optax._src import linesearch as optax_linesearch
import pytest

import gradxform
from convergence import assert_trains, digits_data, digits_loss
from equivalence import Ref, assert_equivalent, assert_trees_equivalent, mixed_params

# ----------------------------------------------------------------------------------------------
# Objectives (written to run under strict dtype promotion: every leaf is read as float32).


def _leaves(params):
  return [jnp.ravel(x).astype(jnp.float32) for x in jax.tree.leaves(params)]


def quadratic(params):
  """sum_i (i + 1) |x_i - 0.5|^2 over the leaves x_i: a different curvature per leaf."""
  total = 0.0
  for i, x in enumerate(_leaves(params)):
    total = total + (i + 1.0) * jnp.sum((x - 0.5) ** 2)
  return total


def rosenbrock(params):
  """The Rosenbrock function of all the params read as one vector (minimum 0 at all ones)."""
  x = jnp.concatenate(_leaves(params))
  return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


def fenced_quadratic(params):
  """`quadratic` inside the ball |x|^2 < 12, +inf outside: long steps leave the domain."""
  radius = sum(jnp.sum(x ** 2) for x in _leaves(params))
  return jnp.where(radius < 12.0, quadratic(params), jnp.inf)


def complex_quadratic(params):
  """A real objective of complex and real leaves: sum |z - (1 + 2i)|^2 + |r|^2."""
  return jnp.sum(jnp.abs(params["z"] - (1.0 + 2.0j)) ** 2) + jnp.sum(params["r"] ** 2)


def small_params():
  """Two leaves, float32 and bfloat16: the cheap pytree for the option rows."""
  return {"a": jnp.array([[0.3, -1.2, 0.8], [1.5, -0.4, 0.1]], jnp.float32),
          "b": jnp.array([-0.7, 0.9, 0.2], jnp.bfloat16)}


def float32_params():
  """The small params, all float32 (optax's store_grad=True cannot run on mixed dtypes)."""
  return jax.tree.map(lambda x: x.astype(jnp.float32), small_params())


def complex_params():
  return {"z": jnp.array([0.5 - 1.0j, -0.2 + 0.3j, 1.5 + 0.0j], jnp.complex64),
          "r": jnp.array([0.7, -1.1], jnp.float32)}


def digits_params():
  return {"w": 0.01 * jax.random.normal(jax.random.key(0), (64, 10), jnp.float32), "b": jnp.zeros((10,), jnp.float32)}


def digits_batch():
  (x, y), _ = digits_data()
  return {"x": x[:256], "y": y[:256]}


# ----------------------------------------------------------------------------------------------
# The side-by-side loop.


@dataclasses.dataclass(frozen=True)
class Case:
  """A row: `spec` built in both libraries, run for `steps` steps of the documented loop on `objective`."""
  spec: Ref
  objective: object = quadratic
  params: object = small_params
  steps: int = 3
  from_state: bool = True  # value and grad from value_and_grad_from_state (else jax.value_and_grad)
  data: object = None  # extra keyword arguments of the objective (its data), passed through the update

  def __repr__(self):
    extra = "" if self.data is None else ", with data"
    return f"{self.spec!r} on {self.objective.__name__}({self.params.__name__}){extra}"


# Eagerly, every step re-traces and recompiles the search's while loop (in both libraries): eager rows take
# two steps, enough to reach the second one, which reuses the evaluation stored by the first.
EAGER_STEPS = 2


def _run(lib, case, jit):
  """[(updates, state, params) after each step] for `case` in `lib` (optax under standard promotion)."""
  promotion = "standard" if lib is optax else "strict"
  tx = case.spec.build(lib)
  data = {} if case.data is None else case.data()
  from_state = lib.value_and_grad_from_state(case.objective)

  def step(params, state):
    with jax.numpy_dtype_promotion(promotion):
      if case.from_state:
        value, grad = from_state(params, state=state, **data)
      else:
        value, grad = jax.value_and_grad(case.objective)(params, **data)
      updates, state = tx.update(grad, state, params, value=value, grad=grad, value_fn=case.objective, **data)
      return updates, state, lib.apply_updates(params, updates)

  params = case.params()
  with jax.numpy_dtype_promotion(promotion):
    state = (jax.jit(tx.init) if jit else tx.init)(params)
  step = jax.jit(step) if jit else step
  history = [(None, state, params)]
  for _ in range(case.steps if jit else min(case.steps, EAGER_STEPS)):
    updates, state, params = step(params, state)
    history.append((updates, state, params))
  return history


def assert_case_equivalent(case, jit):
  ours, theirs = _run(gradxform, case, jit), _run(optax, case, jit)
  for step, ((u, s, p), (u_ref, s_ref, p_ref)) in enumerate(zip(ours, theirs)):
    assert_trees_equivalent(s, s_ref, f"{case}: state after {step} steps")
    if step:
      assert_trees_equivalent(u, u_ref, f"{case}: updates at step {step}")
      assert_trees_equivalent(p, p_ref, f"{case}: params after {step} steps")


def sgd_then(linesearch, learning_rate=1.0):
  return Ref("chain", Ref("sgd", learning_rate), linesearch)


ZOOM = "scale_by_zoom_linesearch"
BACKTRACKING = "scale_by_backtracking_linesearch"

CASES = [
    # The defaults, on the shared mixed pytree.
    Case(Ref("lbfgs")),
    Case(sgd_then(Ref(ZOOM, 15)), params=mixed_params),
    Case(sgd_then(Ref(BACKTRACKING, 15)), params=mixed_params, from_state=False),
    # L-BFGS options: a short memory that wraps around, no scaled initial preconditioner, a rugged objective.
    Case(Ref("lbfgs", memory_size=2, scale_init_precond=False), rosenbrock, steps=4),
    # A learning rate, and backtracking that restarts at its cap and keeps the gradient for the next step.
    Case(Ref("lbfgs", 0.5, linesearch=Ref(BACKTRACKING, 20, increase_factor=math.inf, store_grad=True)),
         rosenbrock, float32_params),
    # Zoom: every option off its default; no curvature test; the Armijo test alone.
    Case(sgd_then(Ref(ZOOM, 10, max_learning_rate=0.8, tol=1e-6, increase_factor=3.0, slope_rtol=1e-3,
                      curv_rtol=0.5, approx_dec_rtol=1e-3, stepsize_precision=1e-3,
                      initial_guess_strategy="one"), 0.1), rosenbrock),
    Case(sgd_then(Ref(ZOOM, 15, curv_rtol=math.inf, approx_dec_rtol=None)), rosenbrock),
    # Zoom failures: a cap too small to bracket; too few steps (safe step); values that turn infinite;
    # an ascent direction (no step decreases f).
    Case(sgd_then(Ref(ZOOM, 15, max_learning_rate=1e-3))),
    Case(sgd_then(Ref(ZOOM, 2, stepsize_precision=0.5)), rosenbrock),
    Case(sgd_then(Ref(ZOOM, 6), 20.0), fenced_quadratic),
    Case(Ref("chain", Ref("scale", 1.0), Ref(ZOOM, 4, verbose=True))),
    # Backtracking: every option off its default; failures.
    Case(sgd_then(Ref(BACKTRACKING, 10, slope_rtol=0.3, decrease_factor=0.5, increase_factor=2.0,
                      max_learning_rate=2.0, atol=1e-4, rtol=1e-4), 2.0), rosenbrock, from_state=False),
    Case(sgd_then(Ref(BACKTRACKING, 1, verbose=True), 5.0), rosenbrock, from_state=False),
    Case(sgd_then(Ref(BACKTRACKING, 3), 50.0), fenced_quadratic, from_state=False),
]


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("case", CASES, ids=repr)
def test_line_search_rows_match_optax(case, jit):
  assert_case_equivalent(case, jit)


GRADIENT_ROWS = [  # (spec, params): the defaults on the shared pytree, options on the small one
    (Ref("scale_by_lbfgs"), mixed_params),
    (Ref("scale_by_lbfgs", memory_size=2, scale_init_precond=False), small_params),
    (Ref("lbfgs", Ref("linear_schedule", 0.1, 0.01, 3), memory_size=3, linesearch=None), small_params),
    (Ref("lbfgs", linesearch=None), small_params),
]


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("spec, params", GRADIENT_ROWS, ids=lambda x: repr(x) if isinstance(x, Ref) else "")
def test_without_line_search_matches_optax(spec, params, jit):
  """Without a line search nothing evaluates the objective: the shared harness feeds pseudo-gradients."""
  assert_equivalent(spec, steps=3, jit=jit, params=params())


JIT_ONLY_CASES = [
    # The objective takes data (x, y) as keyword arguments, forwarded by the update to value_fn.
    Case(Ref("lbfgs"), digits_loss, digits_params, data=digits_batch),
    # Complex leaves: conjugated inner products, real-valued slopes.
    Case(Ref("lbfgs"), complex_quadratic, complex_params),
    Case(sgd_then(Ref(BACKTRACKING, 10)), complex_quadratic, complex_params, from_state=False),
]


@pytest.mark.parametrize("case", JIT_ONLY_CASES, ids=repr)
def test_data_and_complex_rows_match_optax(case):
  """Jitted only (as the complex rows of test_equivalence.py): the eager path is the rows' above, and
  eager line searches recompile at every step."""
  assert_case_equivalent(case, jit=True)


def test_scale_by_lbfgs_complex_matches_optax():
  assert_equivalent(Ref("scale_by_lbfgs", memory_size=2), params=complex_params(), steps=3, jit=True)


# ----------------------------------------------------------------------------------------------
# What the searches report and store.


def _one_update(tx, objective=quadratic, params=None, **kwargs):
  params = small_params() if params is None else params
  value, grad = jax.value_and_grad(objective)(params)
  return tx.update(grad, tx.init(params), params, value=value, grad=grad, value_fn=objective, **kwargs)


def test_backtracking_store_grad_works_on_mixed_dtypes():
  """optax fails here (its lax.cond branches disagree on dtypes); gradxform stores the gradient at the
  accepted point, cast to the params' dtypes."""
  params = mixed_params()
  tx = gradxform.chain(gradxform.sgd(1.0), gradxform.scale_by_backtracking_linesearch(15, store_grad=True))
  updates, state = _one_update(tx, params=params)
  # The accepted point is params + updates in the promoted dtype (float32), before apply_updates rounds
  # the bfloat16 leaves back.
  accepted = jax.tree.map(lambda p, u: p.astype(jnp.float32) + u, params, updates)
  stored = state[1]
  assert_trees_equivalent(stored.value, quadratic(accepted), "stored value")
  expected = jax.tree.map(lambda g, p: g.astype(p.dtype), jax.grad(quadratic)(accepted), params)
  assert_trees_equivalent(stored.grad, expected, "stored gradient")


def test_unknown_keyword_arguments_are_ignored():
  """Extra arguments reach value_fn only if it names them; others (meant for other steps) are dropped."""
  tx = gradxform.chain(gradxform.sgd(1.0), gradxform.scale_by_zoom_linesearch(5))
  plain = _one_update(tx)
  with_extra = _one_update(tx, learning_rate_scale=3.0, batch_index=7)
  assert_trees_equivalent(with_extra, plain, "update with unrelated keyword arguments")


@pytest.mark.parametrize("verbose, quiet", [
    (gradxform.scale_by_zoom_linesearch(3, verbose=True), gradxform.scale_by_zoom_linesearch(3)),
    (gradxform.scale_by_backtracking_linesearch(2, verbose=True), gradxform.scale_by_backtracking_linesearch(2)),
], ids=["zoom", "backtracking"])
def test_verbose_prints_a_diagnostic_on_failure(verbose, quiet, capsys):
  params = small_params()
  value, grad = jax.value_and_grad(quadratic)(params)
  for tx in (verbose, quiet):  # along +grad (an ascent direction) no step can decrease f
    tx.update(grad, tx.init(params), params, value=value, grad=grad, value_fn=quadratic)
    jax.effects_barrier()
    printed = capsys.readouterr().out
    assert ("linesearch: " in printed) == (tx is verbose), printed


def test_successful_search_prints_nothing(capsys):
  descent = gradxform.chain(gradxform.sgd(1.0), gradxform.scale_by_zoom_linesearch(15, verbose=True))
  _one_update(descent)
  jax.effects_barrier()
  assert capsys.readouterr().out == ""


def test_value_and_grad_from_state_evaluates_on_the_first_step():
  params = small_params()
  tx = gradxform.lbfgs()
  state = tx.init(params)
  value, grad = gradxform.value_and_grad_from_state(quadratic)(params, state=state)
  ref_value, ref_grad = jax.value_and_grad(quadratic)(params)
  assert_trees_equivalent((value, grad), (ref_value, ref_grad), "first evaluation")
  updates, state = tx.update(grad, state, params, value=value, grad=grad, value_fn=quadratic)
  new_params = gradxform.apply_updates(params, updates)
  value, grad = gradxform.value_and_grad_from_state(quadratic)(new_params, state=state)
  assert_trees_equivalent((value, grad), (state[2].value, state[2].grad), "reused evaluation")


# ----------------------------------------------------------------------------------------------
# Convergence.


def test_lbfgs_solves_rosenbrock():
  params = {"x": jnp.array([-1.2, 1.0, -0.5], jnp.float32), "y": jnp.array(0.8, jnp.float32)}
  solver = gradxform.lbfgs()
  value_and_grad = gradxform.value_and_grad_from_state(rosenbrock)

  @jax.jit
  def step(params, state):
    value, grad = value_and_grad(params, state=state)
    updates, state = solver.update(grad, state, params, value=value, grad=grad, value_fn=rosenbrock)
    return gradxform.apply_updates(params, updates), state

  state = solver.init(params)
  for _ in range(60):
    params, state = step(params, state)
  assert rosenbrock(params) < 1e-8
  assert_trees_equivalent(params, jax.tree.map(jnp.ones_like, params), "Rosenbrock minimizer", rtol=1e-3)


def test_lbfgs_trains_on_digits():
  """Full-batch softmax regression: the line search picks every step."""
  (x, y), _ = digits_data()
  assert_trains(gradxform.lbfgs(), extra_args=lambda params, loss, grads: dict(
      value=loss, grad=grads, value_fn=digits_loss, x=x, y=y))


# ----------------------------------------------------------------------------------------------
# Errors.


BAD_HYPERPARAMETERS = [
    (lambda: gradxform.scale_by_lbfgs(memory_size=0), gradxform.HyperparameterError, "scale_by_lbfgs", "memory_size"),
    (lambda: gradxform.scale_by_lbfgs(memory_size=2.0), gradxform.HyperparameterTypeError, "scale_by_lbfgs",
     "memory_size"),
    (lambda: gradxform.lbfgs(memory_size=-3), gradxform.HyperparameterError, "lbfgs", "memory_size"),
    (lambda: gradxform.lbfgs(learning_rate=-0.1), gradxform.HyperparameterError, "lbfgs", "learning_rate"),
    (lambda: gradxform.lbfgs(linesearch="zoom"), gradxform.HyperparameterTypeError, "lbfgs", "linesearch"),
    (lambda: gradxform.scale_by_zoom_linesearch(-1), gradxform.HyperparameterError, ZOOM, "max_linesearch_steps"),
    (lambda: gradxform.scale_by_zoom_linesearch(5, max_learning_rate=0.0), gradxform.HyperparameterError, ZOOM,
     "max_learning_rate"),
    (lambda: gradxform.scale_by_zoom_linesearch(5, tol=float("nan")), gradxform.HyperparameterError, ZOOM, "tol"),
    (lambda: gradxform.scale_by_zoom_linesearch(5, curv_rtol=-0.1), gradxform.HyperparameterError, ZOOM,
     "curv_rtol"),
    (lambda: gradxform.scale_by_zoom_linesearch(5, approx_dec_rtol="small"), gradxform.HyperparameterTypeError,
     ZOOM, "approx_dec_rtol"),
    (lambda: gradxform.scale_by_zoom_linesearch(5, initial_guess_strategy="two"), gradxform.HyperparameterError,
     ZOOM, "initial_guess_strategy"),
    (lambda: gradxform.scale_by_backtracking_linesearch(-1), gradxform.HyperparameterError, BACKTRACKING,
     "max_backtracking_steps"),
    (lambda: gradxform.scale_by_backtracking_linesearch(5, decrease_factor=1.5), gradxform.HyperparameterError,
     BACKTRACKING, "decrease_factor"),
    (lambda: gradxform.scale_by_backtracking_linesearch(5, increase_factor=0.0), gradxform.HyperparameterError,
     BACKTRACKING, "increase_factor"),
    (lambda: gradxform.scale_by_backtracking_linesearch(5, atol=-1e-3), gradxform.HyperparameterError,
     BACKTRACKING, "atol"),
]


@pytest.mark.parametrize("make, error, fn, argument", BAD_HYPERPARAMETERS,
                         ids=[f"{fn}-{arg}" for _, _, fn, arg in BAD_HYPERPARAMETERS])
def test_bad_hyperparameters_are_rejected(make, error, fn, argument):
  with pytest.raises(error) as info:
    make()
  assert fn in str(info.value) and f"`{argument}`" in str(info.value)


@pytest.mark.parametrize("missing", ["value", "grad", "value_fn"])
@pytest.mark.parametrize("name, make", [
    (ZOOM, lambda: gradxform.scale_by_zoom_linesearch(5)),
    (BACKTRACKING, lambda: gradxform.scale_by_backtracking_linesearch(5)),
    ("lbfgs", gradxform.lbfgs),
], ids=["zoom", "backtracking", "lbfgs"])
def test_missing_objective_arguments_fail_at_trace_time(name, make, missing):
  tx, params = make(), small_params()
  value, grad = jax.value_and_grad(quadratic)(params)
  kwargs = {"value": value, "grad": grad, "value_fn": quadratic}
  del kwargs[missing]
  update = jax.jit(lambda g, s, p: tx.update(g, s, p, **kwargs))
  with pytest.raises(gradxform.GradxformError) as info:
    update(grad, tx.init(params), params)
  assert isinstance(info.value, TypeError)
  message = str(info.value)
  assert f"`{missing}`" in message and name in message
  if name == "lbfgs":
    assert ZOOM in message and "chain step 3 of 3" in message


def test_line_search_needs_params():
  tx, params = gradxform.scale_by_zoom_linesearch(5), small_params()
  value, grad = jax.value_and_grad(quadratic)(params)
  with pytest.raises(gradxform.MissingParamsError, match=ZOOM):
    tx.update(grad, tx.init(params), None, value=value, grad=grad, value_fn=quadratic)


def test_wrong_state_is_rejected():
  params = small_params()
  with pytest.raises(gradxform.StateMismatchError, match="scale_by_lbfgs"):
    gradxform.scale_by_lbfgs().update(params, gradxform.adam(0.1).init(params)[0], params)


@pytest.mark.parametrize("tx, expected", [
    (gradxform.adam(0.1), "no stored"),
    (gradxform.scale_by_backtracking_linesearch(5), "no stored"),  # grad is kept only with store_grad=True
    (gradxform.chain(gradxform.scale_by_zoom_linesearch(5), gradxform.scale_by_zoom_linesearch(5)), "holds 2"),
], ids=["adam", "backtracking-without-store_grad", "two-line-searches"])
def test_value_and_grad_from_state_needs_one_stored_evaluation(tx, expected):
  params = small_params()
  with pytest.raises(gradxform.StateMismatchError, match=expected):
    gradxform.value_and_grad_from_state(quadratic)(params, state=tx.init(params))


# ----------------------------------------------------------------------------------------------
# API.


FUNCTIONS = ["scale_by_lbfgs", "scale_by_backtracking_linesearch", "scale_by_zoom_linesearch",
             "value_and_grad_from_state"]


def _parameters(fn):
  return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]


@pytest.mark.parametrize("name", FUNCTIONS)
def test_signature_matches_optax(name):
  assert _parameters(getattr(gradxform, name)) == _parameters(getattr(optax, name))


def test_lbfgs_signature_matches_optax():
  ours, theirs = _parameters(gradxform.lbfgs), _parameters(optax.lbfgs)
  assert [p[:2] for p in ours] == [p[:2] for p in theirs]
  assert ours[:-1] == theirs[:-1]
  # The default line search is each library's own zoom search, with the same arguments.
  default = inspect.signature(gradxform.lbfgs).parameters["linesearch"].default
  assert default == gradxform.scale_by_zoom_linesearch(max_linesearch_steps=20, initial_guess_strategy="one")


@pytest.mark.parametrize("ours, theirs", [
    (gradxform.ScaleByLBFGSState, optax.ScaleByLBFGSState),
    (gradxform.ScaleByBacktrackingLinesearchState, optax.ScaleByBacktrackingLinesearchState),
    (gradxform.ScaleByZoomLinesearchState, optax.ScaleByZoomLinesearchState),
    (gradxform.ZoomLinesearchInfo, optax.ZoomLinesearchInfo),
    (gradxform._linesearch.BacktrackingLinesearchInfo, optax_linesearch.BacktrackingLinesearchInfo),
], ids=lambda c: c.__name__ if isinstance(c, type) else None)
def test_state_classes_match_optax(ours, theirs):
  assert (ours.__name__, ours._fields) == (theirs.__name__, theirs._fields)


def test_transformations_compare_by_value():
  assert gradxform.lbfgs() == gradxform.lbfgs() and hash(gradxform.lbfgs()) == hash(gradxform.lbfgs())
  assert gradxform.lbfgs(memory_size=3) != gradxform.lbfgs()
  assert gradxform.scale_by_backtracking_linesearch(5) == gradxform.scale_by_backtracking_linesearch(5)
