"""More misuse, beyond tests/test_errors.py: each error names its place (argument, leaf path, transformation
and chain position), and each edge case that is valid gives the documented result (equal to optax where
optax has one).

Tables in the style of test_errors.py: (case name, callable, exception type, fragments that must all be
in the message). Every fragment list holds at least one place: an argument name in backticks, a leaf path
such as ['encoder']['w'], a state-dict key, or a transformation with its chain position.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradxform
from tests.test_errors import assert_case_raises_named

PARAMS = {"encoder": {"w": jnp.ones((3, 2)), "b": jnp.ones((2,))}, "head": jnp.ones((4,))}
GRADS = jax.tree.map(lambda p: 0.5 * p, PARAMS)
OTHER_SHAPE = {**PARAMS, "head": jnp.ones((5,))}                                   # same keys, a leaf differs
EXTRA_KEY = {**PARAMS, "extra": jnp.ones((2,))}                                    # one key more
TRANSPOSED = {**PARAMS, "encoder": {"w": jnp.ones((2, 3)), "b": jnp.ones((2,))}}    # (3, 2) vs (2, 3)
COMPLEX = {"c": jnp.array([1 + 1j, -0.5 + 2j], jnp.complex64), "r": jnp.ones((2,), jnp.float32)}


def _update(tx, grads=GRADS, params=PARAMS, state_params=PARAMS, **extra):
  """One update of `tx` whose state was made by init for `state_params`."""
  return tx.update(grads, tx.init(state_params), params, **extra)


def _masked_pair():
  tx = gradxform.masked(gradxform.sgd(0.1, momentum=0.9), [True, False])
  params = (jnp.ones(2), jnp.ones(2))
  return tx.update(params, tx.init(params), params)


def _lookahead_without_params():
  tx = gradxform.lookahead(gradxform.sgd(0.1), sync_period=2, slow_step_size=0.5)
  return tx.update(GRADS, tx.init(gradxform.LookaheadParams.init_synced(PARAMS)), None)


def _optimistic_adam_deprecated(*args, **kwargs):
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    return gradxform.optimistic_adam(*args, **kwargs)


def _load_with(edit):
  state = gradxform.adam(0.1).init(PARAMS)
  d = gradxform.state_dict(state)
  edit(d)
  return gradxform.load_state_dict(state, d)


# A state made by the same optimizer, but by init for another params tree, passed to update.
OTHER_PARAMS_STATE_CASES = [
    ("adam state from params with another leaf shape",
     lambda: _update(gradxform.adam(0.1), state_params=OTHER_SHAPE),
     gradxform.TreeMismatchError, ["adam", "scale_by_adam (chain step 1 of 2)", "['head']", "(4,) vs (5,)"]),
    ("lion state from params with an extra key",
     lambda: _update(gradxform.lion(0.1), state_params=EXTRA_KEY),
     gradxform.TreeMismatchError, ["lion", "scale_by_lion (chain step 1 of 3)", "state.mu", "['extra']"]),
    ("rmsprop state from transposed params",
     lambda: _update(gradxform.rmsprop(0.1), state_params=TRANSPOSED),
     gradxform.TreeMismatchError, ["rmsprop", "scale_by_rms", "['encoder']['w']", "(3, 2) vs (2, 3)"]),
    ("adafactor state from params with another leaf shape (was a broadcasting error deep in jax)",
     lambda: _update(gradxform.adafactor(0.1), state_params=OTHER_SHAPE),
     gradxform.TreeMismatchError, ["adafactor", "scale_by_factored_rms (chain step 1 of 5)", "state.v", "['head']",
                                   "(4,)", "(5,)"]),
    ("adafactor factored state from another matrix shape",
     lambda: _update(gradxform.adafactor(0.1, min_dim_size_to_factor=2),
                     {"w": jnp.ones((3, 4))}, {"w": jnp.ones((3, 4))}, {"w": jnp.ones((3, 5))}),
     gradxform.TreeMismatchError, ["scale_by_factored_rms", "state.v_col", "['w']", "(4,)", "(5,)"]),
    ("adafactor params of another shape than the updates",
     lambda: _update(gradxform.adafactor(0.1), params=OTHER_SHAPE),
     gradxform.TreeMismatchError, ["scale_by_factored_rms", "updates and params", "['head']", "(4,) vs (5,)"]),
    ("sm3 state from params with another leaf shape",
     lambda: _update(gradxform.sm3(0.1), state_params=OTHER_SHAPE),
     gradxform.TreeMismatchError, ["sm3", "scale_by_sm3 (chain step 1 of 2)", "['head']"]),
    ("MultiSteps state from other params",
     lambda: _update(gradxform.MultiSteps(gradxform.adam(0.1), 2), state_params=OTHER_SHAPE),
     gradxform.TreeMismatchError, ["MultiSteps", "state.acc_grads", "['head']", "(4,) vs (5,)"]),
    ("apply_if_finite state from other params",
     lambda: _update(gradxform.apply_if_finite(gradxform.adam(0.1), 2), state_params=OTHER_SHAPE),
     gradxform.TreeMismatchError, ["apply_if_finite > adam > scale_by_adam (chain step 1 of 2)", "['head']"]),
    ("inject_hyperparams state from params with an extra key",
     lambda: _update(gradxform.inject_hyperparams(gradxform.adam)(learning_rate=0.1), state_params=EXTRA_KEY),
     gradxform.TreeMismatchError, ["inject_hyperparams(adam) > adam > scale_by_adam", "['extra']"]),
]

MISSING_ARGUMENT_CASES = [
    ("params=None to lamb",
     lambda: _update(gradxform.lamb(0.1), params=None),
     gradxform.MissingParamsError, ["lamb", "add_decayed_weights (chain step 2 of 4)", "params"]),
    ("params=None to lars",
     lambda: _update(gradxform.lars(0.1), params=None),
     gradxform.MissingParamsError, ["lars", "masked (chain step 1 of 4) > add_decayed_weights", "params"]),
    ("params=None to scale_by_trust_ratio",
     lambda: _update(gradxform.scale_by_trust_ratio(), params=None),
     gradxform.MissingParamsError, ["scale_by_trust_ratio", "params"]),
    ("params=None to fromage",
     lambda: _update(gradxform.fromage(0.1), params=None),
     gradxform.MissingParamsError, ["fromage", "scale_by_trust_ratio (chain step 1 of 3)"]),
    ("params=None to add_decayed_weights in a user chain",
     lambda: _update(gradxform.chain(gradxform.scale_by_adam(), gradxform.add_decayed_weights(0.1)), params=None),
     gradxform.MissingParamsError, ["add_decayed_weights (chain step 2 of 2)", "params"]),
    ("params=None to adafactor",
     lambda: _update(gradxform.adafactor(0.1), params=None),
     gradxform.MissingParamsError, ["adafactor", "scale_by_factored_rms (chain step 1 of 5)"]),
    ("params=None to novograd",
     lambda: _update(gradxform.novograd(0.1), params=None),
     gradxform.MissingParamsError, ["novograd", "scale_by_novograd (chain step 1 of 2)"]),
    ("params=None to lookahead (it needs LookaheadParams)",
     _lookahead_without_params,
     gradxform.GradxformError, ["lookahead", "LookaheadParams(fast=..., slow=...)", "NoneType"]),
    ("polyak_sgd without value",
     lambda: _update(gradxform.polyak_sgd()),
     gradxform.MissingArgumentError, ["polyak_sgd", "scale_by_polyak (chain step 2 of 2)", "value", "got: none"]),
]

LEARNING_RATE_CASES = [
    ("negative lion learning rate", lambda: gradxform.lion(-0.1), gradxform.HyperparameterError,
     ["lion", "`learning_rate`", "-0.1"]),
    ("negative yogi learning rate", lambda: gradxform.yogi(-1.0), gradxform.HyperparameterError,
     ["yogi", "`learning_rate`"]),
    ("negative adafactor learning rate", lambda: gradxform.adafactor(-1.0), gradxform.HyperparameterError,
     ["adafactor", "`learning_rate`"]),
    ("negative optimistic_adam learning rate", lambda: _optimistic_adam_deprecated(-1.0),
     gradxform.HyperparameterError, ["optimistic_adam", "`learning_rate`"]),
    ("NaN lamb learning rate", lambda: gradxform.lamb(float("nan")), gradxform.HyperparameterError,
     ["lamb", "`learning_rate`", "NaN"]),
    ("NaN adagrad learning rate (numpy scalar)", lambda: gradxform.adagrad(np.float32("nan")),
     gradxform.HyperparameterError, ["adagrad", "`learning_rate`", "NaN"]),
    ("string sgd learning rate", lambda: gradxform.sgd("0.1"), gradxform.HyperparameterTypeError,
     ["sgd", "`learning_rate`", "str"]),
    ("None adam learning rate", lambda: gradxform.adam(None), gradxform.HyperparameterTypeError,
     ["adam", "`learning_rate`", "NoneType"]),
    ("None lion learning rate", lambda: gradxform.lion(None), gradxform.HyperparameterTypeError,
     ["lion", "`learning_rate`", "NoneType"]),
    ("list learning rate", lambda: gradxform.adam([0.1]), gradxform.HyperparameterTypeError,
     ["adam", "`learning_rate`", "list"]),
    ("a schedule factory passed uncalled (was a TypeError at the first update)",
     lambda: gradxform.adam(gradxform.linear_schedule), gradxform.HyperparameterTypeError,
     ["adam", "`learning_rate`", "linear_schedule", "schedule(count)"]),
    ("a zero-argument function as scale_by_schedule's schedule",
     lambda: gradxform.scale_by_schedule(lambda: 0.1), gradxform.HyperparameterTypeError,
     ["scale_by_schedule", "`step_size_fn`"]),
]

SCHEDULE_CASES = [
    ("warmup longer than decay", lambda: gradxform.warmup_cosine_decay_schedule(0.0, 1.0, 10, 5),
     gradxform.HyperparameterError, ["warmup_cosine_decay_schedule", "`warmup_steps`", "`decay_steps`"]),
    ("warmup as long as decay", lambda: gradxform.warmup_cosine_decay_schedule(0.0, 1.0, 10, 10),
     gradxform.HyperparameterError, ["warmup_cosine_decay_schedule", "`warmup_steps`", "`decay_steps`"]),
    ("zero decay steps with warmup", lambda: gradxform.warmup_cosine_decay_schedule(0.0, 1.0, 0, 0),
     gradxform.HyperparameterError, ["warmup_cosine_decay_schedule", "`decay_steps`"]),
    # optax accepts a negative warmup and returns values from before the schedule starts; gradxform refuses.
    ("negative warmup steps", lambda: gradxform.warmup_cosine_decay_schedule(0.0, 1.0, -1, 10),
     gradxform.HyperparameterError, ["warmup_cosine_decay_schedule", "`warmup_steps`", "-1"]),
    ("negative cosine decay steps", lambda: gradxform.cosine_decay_schedule(0.1, -5),
     gradxform.HyperparameterError, ["cosine_decay_schedule", "`decay_steps`", "-5"]),
    ("zero one-cycle transition steps", lambda: gradxform.linear_onecycle_schedule(0, 1.0),
     gradxform.HyperparameterError, ["linear_onecycle_schedule", "`transition_steps`"]),
    ("negative exponential decay rate", lambda: gradxform.exponential_decay(1.0, 10, -0.5),
     gradxform.HyperparameterError, ["exponential_decay", "`decay_rate`"]),
    ("clip_by_global_norm(numpy zero)", lambda: gradxform.clip_by_global_norm(np.float32(0.0)),
     gradxform.HyperparameterError, ["clip_by_global_norm", "`max_norm`"]),
    ("clip_by_global_norm(NaN)", lambda: gradxform.clip_by_global_norm(float("nan")),
     gradxform.HyperparameterError, ["clip_by_global_norm", "`max_norm`", "NaN"]),
]

MASK_AND_PARTITION_CASES = [
    ("mask with an extra key",
     lambda: _update(gradxform.masked(gradxform.sgd(0.1, momentum=0.9),
                                      {"encoder": {"w": True, "b": False}, "head": True, "x": False})),
     gradxform.TreeMismatchError, ["masked", "mask and params", "['x']"]),
    ("mask missing a key",
     lambda: _update(gradxform.masked(gradxform.sgd(0.1, momentum=0.9), {"encoder": {"w": True, "b": False}})),
     gradxform.TreeMismatchError, ["masked", "mask and params", "['head']"]),
    ("mask list where params are a tuple", _masked_pair,
     gradxform.TreeMismatchError, ["masked", "the root", "list vs tuple"]),
    ("mask function returning the wrong tree",
     lambda: _update(gradxform.masked(gradxform.adam(0.1), lambda p: {"encoder": True})),
     gradxform.TreeMismatchError, ["masked", "['head']"]),
    ("adamw mask with a missing key, inside a chain",
     lambda: _update(gradxform.chain(gradxform.clip_by_global_norm(1.0),
                                     gradxform.adamw(0.1, mask={"encoder": {"w": True, "b": False}}))),
     gradxform.TreeMismatchError, ["adamw (chain step 2 of 2)", "masked", "['head']"]),
    ("partition label with no transformation",
     lambda: _update(gradxform.partition({"a": gradxform.sgd(0.1)}, {"encoder": {"w": "a", "b": "b"}, "head": "a"})),
     gradxform.HyperparameterError, ["partition", "'b'", "['encoder']['b']", "['a']"]),
    ("partition labels missing a key",
     lambda: _update(gradxform.partition({"a": gradxform.sgd(0.1)}, {"encoder": {"w": "a", "b": "a"}})),
     gradxform.TreeMismatchError, ["partition", "param_labels", "'head'"]),
    ("partition label function returning a list",
     lambda: _update(gradxform.partition({"a": gradxform.sgd(0.1)}, lambda p: ["a"])),
     gradxform.TreeMismatchError, ["partition", "param_labels", "list"]),
    ("partition given a chain's state",
     lambda: gradxform.partition({"a": gradxform.sgd(0.1)}, {"encoder": "a", "head": "a"}).update(
         GRADS, gradxform.adam(0.1).init(PARAMS)),
     gradxform.StateMismatchError, ["partition", "PartitionState", "got tuple"]),
]

API_CASES = [
    ("inject_hyperparams with a misspelt name (was reported as a missing learning_rate)",
     lambda: gradxform.inject_hyperparams(gradxform.adam)(learnin_rate=0.1),
     gradxform.HyperparameterTypeError, ["inject_hyperparams(adam)", "`learnin_rate`", "did you mean `learning_rate`"]),
    ("inject_hyperparams with an unknown static arg",
     lambda: gradxform.inject_hyperparams(gradxform.adam, static_args="lr"),
     gradxform.HyperparameterError, ["inject_hyperparams", "`static_args`", "'lr'"]),
    ("apply_updates with an extra update key",
     lambda: gradxform.apply_updates(PARAMS, {**GRADS, "x": jnp.ones(1)}),
     gradxform.TreeMismatchError, ["params and updates", "['x']"]),
    ("apply_updates with a list for a tuple",
     lambda: gradxform.apply_updates([jnp.ones(2)], (jnp.ones(2),)),
     gradxform.TreeMismatchError, ["params and updates", "the root", "list vs tuple"]),
    ("apply_updates with transposed updates",
     lambda: gradxform.apply_updates(PARAMS, jax.tree.map(jnp.ones_like, TRANSPOSED)),
     gradxform.TreeMismatchError, ["params and updates", "['encoder']['w']", "(3, 2) vs (2, 3)"]),
    ("set_hyperparams with an unknown name",
     lambda: gradxform.set_hyperparams(gradxform.inject_hyperparams(gradxform.adam)(learning_rate=0.1).init(PARAMS),
                                       learnin_rate=0.1),
     gradxform.HyperparameterError, ["set_hyperparams", "`learnin_rate`", "'learning_rate'"]),
    ("set_hyperparams of a scheduled hyperparameter",
     lambda: gradxform.set_hyperparams(
         gradxform.inject_hyperparams(gradxform.adam)(
             learning_rate=gradxform.linear_schedule(0.1, 0.0, 10)).init(PARAMS), learning_rate=0.3),
     gradxform.HyperparameterError, ["set_hyperparams", "`learning_rate`", "schedule"]),
    ("set_hyperparams of a shape that is not stored",
     lambda: gradxform.set_hyperparams(gradxform.inject_hyperparams(gradxform.adam)(learning_rate=0.1).init(PARAMS),
                                       learning_rate=jnp.ones(3)),
     gradxform.HyperparameterError, ["set_hyperparams", "`learning_rate`", "(3,)"]),
    ("set_hyperparams of a group that does not exist",
     lambda: gradxform.set_hyperparams(
         gradxform.param_groups(gradxform.adam, [gradxform.group("head", learning_rate=0.2)],
                                learning_rate=0.1).init(PARAMS), group=3, learning_rate=0.1),
     gradxform.HyperparameterError, ["set_hyperparams", "group 3", "['default', 'group0']"]),
    ("load_state_dict missing keys",
     lambda: _load_with(lambda d: [d.pop(k) for k in ("0/mu/head", "0/nu/head")]),
     gradxform.StateMismatchError, ["load_state_dict", "missing keys (2)", "0/mu/head", "0/nu/head"]),
    ("load_state_dict with a wrong shape, a wrong dtype and an unknown key",
     lambda: _load_with(lambda d: d.update({"0/mu/head": np.ones(5, np.float32), "0/nu/head": np.ones(4, np.float16),
                                            "bogus": np.ones(1)})),
     gradxform.StateMismatchError, ["0/mu/head: expected (4,), got (5,)", "0/nu/head: expected float32, got float16",
                                    "unexpected keys (1", "bogus"]),
    ("param_groups group matching nothing",
     lambda: gradxform.param_groups(gradxform.adam, [gradxform.group("^decoder/", learning_rate=0.1)],
                                    learning_rate=0.1).init(PARAMS),
     gradxform.HyperparameterError, ["param_groups", "group 0", "'^decoder/'", "encoder/w"]),
    ("param_groups group with an unknown hyperparameter",
     lambda: gradxform.param_groups(gradxform.adam, [gradxform.group("head", learnin_rate=0.1)],
                                    learning_rate=0.1).init(PARAMS),
     gradxform.HyperparameterError, ["param_groups", "groups[0]", "'learnin_rate'"]),
    ("param_groups group with an invalid regex",
     lambda: gradxform.group("(", learning_rate=0.1),
     gradxform.HyperparameterError, ["group", "`pattern`", "'('"]),
]

LEAF_CASES = [
    ("complex leaf in rprop (was jnp.clip's ValueError without a place)",
     lambda: _update(gradxform.rprop(0.1), COMPLEX, COMPLEX, COMPLEX),
     gradxform.LeafTypeError, ["rprop", "scale_by_rprop (chain step 1 of 2)", "['c']", "complex64"]),
    ("complex leaf in clip",
     lambda: _update(gradxform.chain(gradxform.clip(1.0), gradxform.sgd(0.1)), COMPLEX, COMPLEX, COMPLEX),
     gradxform.LeafTypeError, ["clip (chain step 1 of 2)", "['c']", "complex"]),
    ("complex leaf in sm3",
     lambda: _update(gradxform.sm3(0.1), COMPLEX, COMPLEX, COMPLEX),
     gradxform.LeafTypeError, ["sm3", "['c']", "complex"]),
    ("sm3 on an empty matrix (was a reduction error deep in jax, as in optax)",
     lambda: gradxform.sm3(0.1).init({"w": jnp.ones((0, 3))}),
     gradxform.LeafTypeError, ["sm3", "scale_by_sm3 (chain step 1 of 2)", "['w']", "(0, 3)"]),
    ("Python int leaf",
     lambda: _update(gradxform.adam(0.1), {"a": 1}, {"a": 2}, {"a": 2}),
     gradxform.LeafTypeError, ["adam", "scale_by_adam (chain step 1 of 2)", "['a']", "int"]),
    ("numpy int leaf in a list",
     lambda: _update(gradxform.lion(0.1), [np.ones(2, np.float32), np.arange(3)], None,
                     [np.ones(2, np.float32), np.ones(3, np.float32)]),
     gradxform.LeafTypeError, ["lion", "[1]", "int"]),
]

ERROR_CASES = (OTHER_PARAMS_STATE_CASES + MISSING_ARGUMENT_CASES + LEARNING_RATE_CASES + SCHEDULE_CASES
               + MASK_AND_PARTITION_CASES + API_CASES + LEAF_CASES)
# The cases that fail inside `update` (or apply_updates): these must fail the same way under jax.jit.
TRACE_TIME_CASES = OTHER_PARAMS_STATE_CASES + MISSING_ARGUMENT_CASES + MASK_AND_PARTITION_CASES + LEAF_CASES


@pytest.mark.parametrize("case", ERROR_CASES, ids=lambda c: c[0])
def test_misuse_names_its_place(case):
  assert_case_raises_named(case)


@pytest.mark.parametrize("case", TRACE_TIME_CASES, ids=lambda c: c[0])
def test_misuse_names_its_place_under_jit(case):
  _, call, error_type, fragments = case
  with pytest.raises(error_type) as info:
    jax.jit(call)()
  assert all(fragment in str(info.value) for fragment in fragments), str(info.value)


def test_there_are_enough_new_cases_and_all_name_a_place():
  names = [c[0] for c in ERROR_CASES]
  assert len(names) == len(set(names)) and len(names) >= 30
  place_markers = ("`", "['", "[1]", "(chain step", "0/", "group", "masked", "partition", "lookahead", "params")
  assert all(any(m in f for f in c[3] for m in place_markers) for c in ERROR_CASES)


def test_errors_stay_the_standard_exception_types():
  """Code written for optax catches ValueError/TypeError: gradxform's errors are still those."""
  with pytest.raises(ValueError):  # jnp.clip raised ValueError on complex values; so does the new error
    _update(gradxform.rprop(0.1), COMPLEX, COMPLEX, COMPLEX)
  with pytest.raises(ValueError):
    _update(gradxform.clip(1.0), COMPLEX, COMPLEX, COMPLEX)
  with pytest.raises(TypeError):
    gradxform.inject_hyperparams(gradxform.adam)(learnin_rate=0.1)
  with pytest.raises(TypeError):
    gradxform.adam(gradxform.linear_schedule)


# ----------------------------------------------------------------------------------------------
# Valid edge cases: the documented result.


def _optax(fn, *args, **kwargs):
  """Runs optax under standard promotion (optax relies on implicit promotion, see conftest.py)."""
  with jax.numpy_dtype_promotion("standard"):
    return fn(*args, **kwargs)


def _two_steps(tx, grads, params):
  state = tx.init(params)
  for _ in range(2):
    updates, state = tx.update(grads, state, params)
  return updates, state


def _assert_same(ours, theirs, rtol=1e-6):
  assert jax.tree.structure(ours) == jax.tree.structure(theirs)
  for x, y in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs)):
    assert type(x) is type(y) or (isinstance(x, jax.Array) and isinstance(y, jax.Array)), (type(x), type(y))
    assert np.asarray(x).dtype == np.asarray(y).dtype
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=1e-7)


@pytest.mark.parametrize("name", ["adam", "sgd"])
def test_python_floats_and_numpy_arrays_are_leaves_like_optax(name):
  """Valid: Python floats and numpy arrays (float32 and float64) work, with optax's result types: sgd gives
  back a Python float / numpy array (it only scales), adam float32 jax arrays; float64 numpy leaves become
  float32 state with x64 off."""
  trees = [({"a": 1.0, "b": np.ones(2, np.float32)}, {"a": 2.0, "b": np.ones(2, np.float32)}),
           ({"a": np.full(2, 0.5)}, {"a": np.ones(2)})]
  for grads, params in trees:
    ours = _two_steps(getattr(gradxform, name)(0.1), grads, params)
    theirs = _optax(_two_steps, getattr(optax, name)(0.1), grads, params)
    _assert_same(ours[0], theirs[0])
  assert isinstance(ours[0]["a"], np.ndarray) if name == "sgd" else ours[0]["a"].dtype == jnp.float32
  _assert_same(gradxform.apply_updates({"a": 2.0}, {"a": 1.0}), optax.apply_updates({"a": 2.0}, {"a": 1.0}))


COMPLEX_ALIASES = ["adabelief", "adafactor", "adan", "fromage", "lamb", "lars", "lion", "novograd",
                   "optimistic_adam_v2", "optimistic_gradient_descent", "sign_sgd", "signum", "yogi"]


def test_complex_leaves_work_and_equal_optax():
  """Valid: optimizers not covered by test_equivalence's complex rows take complex leaves as optax does."""
  grads = jax.tree.map(lambda p: (0.3 * p + 0.1).astype(p.dtype), COMPLEX)
  ours = [getattr(gradxform, n)(0.1) for n in COMPLEX_ALIASES]
  theirs = _optax(lambda: [getattr(optax, n)(0.1) for n in COMPLEX_ALIASES])
  got = jax.jit(lambda: [_two_steps(tx, grads, COMPLEX)[0] for tx in ours])()
  expected = jax.jit(lambda: _optax(lambda: [_two_steps(tx, grads, COMPLEX)[0] for tx in theirs]))()
  for name, u, e in zip(COMPLEX_ALIASES, got, expected):
    assert u["c"].dtype == jnp.complex64 and u["r"].dtype == jnp.float32, name
    for x, y in zip(jax.tree.leaves(u), jax.tree.leaves(e)):
      np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6, err_msg=name)


EMPTY_ALIASES = {"adabelief": (0.1,), "adadelta": (), "adafactor": (), "adagrad": (0.1,), "adam": (0.1,),
                 "adamax": (0.1,), "adamaxw": (0.1,), "adamw": (0.1,), "adan": (0.1,), "amsgrad": (0.1,),
                 "fromage": (0.1,), "lamb": (0.1,), "lars": (0.1,), "lion": (0.1,), "nadam": (0.1,),
                 "nadamw": (0.1,), "novograd": (0.1,), "optimistic_adam_v2": (0.1,),
                 "optimistic_gradient_descent": (0.1,), "radam": (0.1,), "rmsprop": (0.1,), "rprop": (0.1,),
                 "sgd": (0.1, 0.9), "sign_sgd": (0.1,), "signum": (0.1,), "sm3": (0.1,), "yogi": (0.1,)}


@pytest.mark.parametrize("empty", [{}, ()], ids=["dict", "tuple"])
def test_empty_trees_are_valid(empty):
  """Valid: an empty params tree gives empty updates, and a state with optax's structure."""
  for name, args in EMPTY_ALIASES.items():
    tx = getattr(gradxform, name)(*args)
    updates, state = tx.update(empty, tx.init(empty), empty)
    assert updates == empty, name
    reference = _optax(getattr(optax, name), *args)
    expected_state = _optax(reference.init, empty)
    # Compared as text: the treedefs name the state classes, which are gradxform's and optax's own.
    assert str(jax.tree.structure(state)) == str(jax.tree.structure(expected_state)), name
  tx = gradxform.chain(gradxform.clip_by_global_norm(1.0), gradxform.inject_hyperparams(gradxform.adam)(0.1))
  assert tx.update(empty, tx.init(empty), empty)[0] == empty


def test_empty_chain_is_the_identity():
  """Valid: chain() passes updates through unchanged (the very same tree) and its state is ()."""
  tx = gradxform.chain()
  state = tx.init(PARAMS)
  assert state == ()
  updates, new_state = tx.update(GRADS, state, PARAMS)
  assert new_state == ()
  for u, g in zip(jax.tree.leaves(updates), jax.tree.leaves(GRADS)):
    assert u is g


@pytest.mark.parametrize("name", ["sgd", "adam", "rmsprop", "lion", "adamw", "lamb", "adafactor", "rprop", "yogi"])
def test_zero_learning_rate_is_valid_and_gives_zero_updates(name):
  """Valid: a learning rate of 0 (a boundary, not an error) gives zero updates, weight decay included."""
  tx = getattr(gradxform, name)(learning_rate=0.0)
  updates, _ = jax.jit(lambda: _two_steps(tx, GRADS, PARAMS))()
  for u in jax.tree.leaves(updates):
    np.testing.assert_array_equal(np.abs(np.asarray(u)), 0.0)


SCHEDULES = [
    ("linear_schedule", (1.0, 0.1, 10)), ("polynomial_schedule", (1.0, 0.1, 2.0, 10)),
    ("cosine_decay_schedule", (1.0, 10)), ("exponential_decay", (1.0, 10, 0.5)),
    ("warmup_cosine_decay_schedule", (0.0, 1.0, 3, 10)), ("warmup_exponential_decay_schedule", (0.0, 1.0, 3, 10, 0.5)),
    ("piecewise_constant_schedule", (1.0, {3: 0.5, 6: 0.1})), ("linear_onecycle_schedule", (10, 1.0)),
    ("cosine_onecycle_schedule", (10, 1.0)),
    # Degenerate step counts optax accepts: no transition (a constant init_value), a negative transition_begin.
    ("linear_schedule", (1.0, 0.1, 0)), ("linear_schedule", (1.0, 0.1, -10)), ("linear_schedule", (1.0, 0.1, 10, -3)),
    ("polynomial_schedule", (1.0, 0.1, 2.0, 10, -3)), ("exponential_decay", (1.0, 0, 0.5)),
    ("exponential_decay", (1.0, -10, 0.5)), ("exponential_decay", (1.0, 10, 0.5, -3)),
    ("warmup_cosine_decay_schedule", (0.0, 1.0, 0, 10)), ("warmup_exponential_decay_schedule", (0.0, 1.0, 3, 0, 0.5)),
    ("piecewise_constant_schedule", (1.0, {-3: 0.5})),
]


def test_schedules_at_negative_counts_and_degenerate_steps_equal_optax():
  """Valid, documented by optax's semantics: counts below 0 are clipped to the schedule's start where optax
  clips them (linear, polynomial, exponential, warmups, piecewise) and not where optax does not
  (cosine_decay_schedule is evaluated as given, 0.5 at count -5 of 10); zero or negative transition steps
  give a constant init_value; a negative transition_begin counts as 0."""
  counts = jnp.asarray([-5, -1, 0, 3, 20], jnp.int32)
  ours = [getattr(gradxform, name)(*args) for name, args in SCHEDULES]
  theirs = _optax(lambda: [getattr(optax, name)(*args) for name, args in SCHEDULES])
  got = jax.jit(lambda c: [jax.vmap(s)(c) for s in ours])(counts)  # one compilation for all the rows
  expected = jax.jit(lambda c: _optax(lambda: [jax.vmap(s)(c) for s in theirs]))(counts)
  for (name, args), x, y in zip(SCHEDULES, got, expected):
    np.testing.assert_allclose(x, y, rtol=1e-6, err_msg=f"{name}{args}")
  np.testing.assert_allclose(gradxform.cosine_decay_schedule(1.0, 10)(-5), 0.5, rtol=1e-6)


def test_partition_labels_may_be_a_prefix_of_params_as_in_optax():
  """Valid: one label for a whole subtree ({"encoder": "a"}) labels every leaf under it."""
  labels = {"encoder": "a", "head": "b"}
  ours = _two_steps(gradxform.partition({"a": gradxform.sgd(0.1), "b": gradxform.adam(0.1)}, labels), GRADS, PARAMS)
  theirs = _optax(_two_steps, optax.partition({"a": optax.sgd(0.1), "b": optax.adam(0.1)}, labels), GRADS, PARAMS)
  _assert_same(ours[0], theirs[0])


def test_hyperparameters_as_traced_arrays_equal_optax():
  """Valid: hyperparameters passed as jax arrays into a jitted function (so traced) are used as they are."""
  rows = [("adam", {"learning_rate": 0.1, "b1": 0.8, "b2": 0.99, "eps": 1e-6}), ("sgd", {"learning_rate": 0.1, "momentum": 0.9}),
          ("rmsprop", {"learning_rate": 0.1, "decay": 0.8, "eps": 1e-4}), ("lion", {"learning_rate": 0.1, "b1": 0.8}),
          ("adamw", {"learning_rate": 0.1, "weight_decay": 0.01}), ("clip_by_global_norm", {"max_norm": 0.5})]
  arrays = [{k: jnp.asarray(v, jnp.float32) for k, v in kwargs.items()} for _, kwargs in rows]

  def run(lib, arrays):
    out = []
    for (name, _), kwargs in zip(rows, arrays):
      out.append(_two_steps(getattr(lib, name)(**kwargs), GRADS, PARAMS)[0])
    return out

  ours = jax.jit(lambda a: run(gradxform, a))(arrays)
  theirs = jax.jit(lambda a: _optax(run, optax, a))(arrays)
  for (name, _), u, e in zip(rows, ours, theirs):
    for x, y in zip(jax.tree.leaves(u), jax.tree.leaves(e)):
      np.testing.assert_allclose(x, y, rtol=1e-6, err_msg=name)


def test_stateless_optimizers_accept_a_state_made_for_other_params():
  """Valid: sgd without momentum, sign_sgd and polyak_sgd keep no per-parameter state, so a state from
  init on another tree is the same state: nothing to mismatch."""
  for tx, extra in [(gradxform.sgd(0.1), {}), (gradxform.sign_sgd(0.1), {}),
                    (gradxform.polyak_sgd(), {"value": jnp.asarray(1.0)})]:
    expected, _ = _update(tx, **extra)
    got, _ = _update(tx, state_params=EXTRA_KEY, **extra)
    _assert_same(got, expected)


def test_mixed_dtypes_in_apply_updates_keep_the_params_dtype_as_in_optax():
  """Valid: float32 updates on bfloat16 params give bfloat16 params (optax casts the same way)."""
  params = {"a": jnp.ones(3, jnp.bfloat16)}
  updates = {"a": jnp.full(3, 0.25, jnp.float32)}
  _assert_same(gradxform.apply_updates(params, updates), _optax(optax.apply_updates, params, updates))


def test_apply_if_finite_around_an_optimizer_that_changes_dtypes():
  """Valid (optax fails with a lax.cond type error): polyak_sgd turns bfloat16 updates into float32, as
  optax does; apply_if_finite skips a NaN step with float32 zeros for them, eagerly and under jit."""
  params = {"a": jnp.ones(2, jnp.float32), "b": jnp.ones(2, jnp.bfloat16)}
  tx = gradxform.apply_if_finite(gradxform.polyak_sgd(max_learning_rate=0.1), 2)
  value = jnp.asarray(2.0, jnp.float32)
  updates, state = tx.update(params, tx.init(params), params, value=value)
  assert [u.dtype for u in jax.tree.leaves(updates)] == [jnp.float32, jnp.float32]
  bad = {**params, "a": params["a"].at[0].set(jnp.nan)}
  for step in (tx.update, jax.jit(tx.update)):
    skipped, new_state = step(bad, state, params, value=value)
    assert [u.dtype for u in jax.tree.leaves(skipped)] == [jnp.float32, jnp.float32]
    assert all(np.all(np.asarray(u) == 0) for u in jax.tree.leaves(skipped))
    assert int(new_state.notfinite_count) == 1
