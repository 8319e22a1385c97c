"""Misuse gets a clear, early error naming the argument, the leaf path or the chain position."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradxform

PARAMS = {"encoder": {"w": jnp.ones((32, 64)), "b": jnp.ones((64,))}, "head": jnp.ones((4,))}


def _grads(**overrides):
  grads = jax.tree.map(jnp.ones_like, PARAMS)
  grads["encoder"] = {**grads["encoder"], **overrides}
  return grads


def _update(tx, grads, params=PARAMS, state_params=PARAMS):
  return tx.update(grads, tx.init(state_params), params)


def _user_chain():
  return gradxform.chain(gradxform.clip_by_global_norm(1.0), gradxform.adamw(1e-3))


TREE_CASES = [
    ("leaf shape differs, in a user chain",
     lambda: _update(_user_chain(), _grads(w=jnp.ones((64, 32)))),
     gradxform.TreeMismatchError,
     ["adamw (chain step 2 of 2)", "scale_by_adam (chain step 1 of 3)", "['encoder']['w']", "(64, 32) vs (32, 64)"]),
    ("update tree has an extra key",
     lambda: _update(gradxform.adam(1e-3), {**_grads(), "extra": jnp.ones(2)}),
     gradxform.TreeMismatchError, ["adam", "scale_by_adam", "'extra'"]),
    ("update tree misses a key",
     lambda: _update(gradxform.sgd(0.1, momentum=0.9), {"encoder": _grads()["encoder"]}),
     gradxform.TreeMismatchError, ["sgd", "trace (chain step 1 of 2)", "'head'"]),
    ("list where the state has a tuple",
     lambda: gradxform.adam(0.1).update([jnp.ones(2), jnp.ones(2)], gradxform.adam(0.1).init((jnp.ones(2), jnp.ones(2)))),
     gradxform.TreeMismatchError, ["scale_by_adam", "the root", "list vs tuple"]),
    ("params tree differs from updates in add_decayed_weights",
     lambda: _update(gradxform.adamw(1e-3), _grads(), params={"encoder": PARAMS["encoder"]}),
     gradxform.TreeMismatchError, ["adamw", "add_decayed_weights (chain step 2 of 3)", "params", "'head'"]),
    ("params leaf shape differs in add_decayed_weights",
     lambda: _update(gradxform.add_decayed_weights(0.1), _grads(),
                     params={**PARAMS, "head": jnp.ones((5,))}),
     gradxform.TreeMismatchError, ["add_decayed_weights", "['head']", "(4,) vs (5,)"]),
    ("mask tree does not match params",
     lambda: _update(gradxform.adamw(1e-3, mask={"encoder": True}), _grads()),
     gradxform.TreeMismatchError, ["adamw", "masked", "mask", "params"]),
    ("apply_updates with a missing leaf",
     lambda: gradxform.apply_updates(PARAMS, {"encoder": PARAMS["encoder"]}),
     gradxform.TreeMismatchError, ["params and updates", "'head'"]),
    ("apply_updates with a leaf of another shape",
     lambda: gradxform.apply_updates(PARAMS, _grads(b=jnp.ones((65,)))),
     gradxform.TreeMismatchError, ["['encoder']['b']", "(64,) vs (65,)"]),
    ("incremental_update with different trees",
     lambda: gradxform.incremental_update(PARAMS, {"head": jnp.ones(4)}, 0.1),
     gradxform.TreeMismatchError, ["new_tensors and old_tensors"]),
]

DTYPE_CASES = [
    ("integer gradient leaf",
     lambda: gradxform.adam(0.1).update({"w": jnp.ones(2), "step": jnp.array(3)},
                                         gradxform.adam(0.1).init({"w": jnp.ones(2), "step": jnp.array(3)})),
     gradxform.LeafTypeError, ["adam", "scale_by_adam (chain step 1 of 2)", "['step']", "int32", "None"]),
    ("bool gradient leaf in a stateless transformation",
     lambda: gradxform.clip_by_global_norm(1.0).update({"mask": jnp.array([True])}, gradxform.EmptyState()),
     gradxform.LeafTypeError, ["clip_by_global_norm", "['mask']", "bool"]),
    ("integer gradient leaf in scale",
     lambda: gradxform.scale(2.0).update([jnp.ones(2), jnp.arange(3)], gradxform.EmptyState()),
     gradxform.LeafTypeError, ["scale", "[1]", "int32"]),
]

STATE_CASES = [
    ("state of another optimizer",
     lambda: gradxform.sgd(0.1, momentum=0.9).update(_grads(), gradxform.adam(0.1).init(PARAMS)),
     gradxform.StateMismatchError, ["sgd", "trace (chain step 1 of 2)", "TraceState", "ScaleByAdamState"]),
    ("state of a shorter chain",
     lambda: _user_chain().update(_grads(), gradxform.adam(0.1).init(PARAMS), PARAMS),
     gradxform.StateMismatchError, ["adamw (chain step 2 of 2)", "chain of 3 transformations", "got EmptyState"]),
    ("a bare state instead of the chain's tuple",
     lambda: gradxform.adam(0.1).update(_grads(), gradxform.adam(0.1).init(PARAMS)[0]),
     gradxform.StateMismatchError, ["adam", "chain of 2 transformations", "got ScaleByAdamState"]),
    ("params=None to add_decayed_weights",
     lambda: gradxform.add_decayed_weights(1e-4).update(_grads(), gradxform.EmptyState(), None),
     gradxform.MissingParamsError, ["add_decayed_weights", "params"]),
    ("params=None to adamw inside a chain",
     lambda: _user_chain().update(_grads(), _user_chain().init(PARAMS)),
     gradxform.MissingParamsError, ["adamw (chain step 2 of 2)", "add_decayed_weights (chain step 2 of 3)"]),
]

HYPERPARAMETER_CASES = [
    ("negative learning rate", lambda: gradxform.adam(-1e-3), gradxform.HyperparameterError,
     ["adam", "`learning_rate`", "-0.001"]),
    ("negative sgd learning rate", lambda: gradxform.sgd(-0.1), gradxform.HyperparameterError, ["sgd", "`learning_rate`"]),
    ("NaN learning rate", lambda: gradxform.rmsprop(float("nan")), gradxform.HyperparameterError,
     ["rmsprop", "`learning_rate`", "NaN"]),
    ("string learning rate", lambda: gradxform.adamw("0.001"), gradxform.HyperparameterTypeError,
     ["adamw", "`learning_rate`", "str"]),
    ("b1 = 1", lambda: gradxform.adam(1e-3, b1=1.0), gradxform.HyperparameterError, ["adam", "`b1`", "[0.0, 1.0)"]),
    ("negative b2", lambda: gradxform.nadamw(1e-3, b2=-0.1), gradxform.HyperparameterError, ["nadamw", "`b2`"]),
    ("b2 > 1 in scale_by_adam", lambda: gradxform.scale_by_adam(b2=1.5), gradxform.HyperparameterError,
     ["scale_by_adam", "`b2`"]),
    ("negative eps", lambda: gradxform.adamax(1e-3, eps=-1e-8), gradxform.HyperparameterError, ["adamax", "`eps`"]),
    ("negative eps_root", lambda: gradxform.radam(1e-3, eps_root=-1.0), gradxform.HyperparameterError,
     ["radam", "`eps_root`"]),
    ("momentum = 1.5", lambda: gradxform.sgd(0.1, momentum=1.5), gradxform.HyperparameterError, ["sgd", "`momentum`"]),
    ("rmsprop decay = 1", lambda: gradxform.rmsprop(0.1, decay=1.0), gradxform.HyperparameterError,
     ["rmsprop", "`decay`"]),
    ("adadelta rho = -1", lambda: gradxform.adadelta(rho=-1.0), gradxform.HyperparameterError, ["adadelta", "`rho`"]),
    ("ema decay = 1", lambda: gradxform.ema(1.0), gradxform.HyperparameterError, ["ema", "`decay`"]),
    ("trace decay = 2", lambda: gradxform.trace(2.0), gradxform.HyperparameterError, ["trace", "`decay`"]),
    ("clip_by_global_norm(0)", lambda: gradxform.clip_by_global_norm(0.0), gradxform.HyperparameterError,
     ["clip_by_global_norm", "`max_norm`"]),
    ("clip_by_global_norm(-1)", lambda: gradxform.clip_by_global_norm(-1.0), gradxform.HyperparameterError,
     ["clip_by_global_norm", "`max_norm`"]),
    ("clip(-1)", lambda: gradxform.clip(-1.0), gradxform.HyperparameterError, ["clip", "`max_delta`"]),
    ("negative weight decay", lambda: gradxform.adamw(1e-3, weight_decay=-0.1), gradxform.HyperparameterError,
     ["adamw", "`weight_decay`"]),
    ("negative adagrad accumulator", lambda: gradxform.adagrad(0.1, initial_accumulator_value=-1.0),
     gradxform.HyperparameterError, ["adagrad", "`initial_accumulator_value`"]),
    ("scale_by_schedule of a number", lambda: gradxform.scale_by_schedule(0.1), gradxform.HyperparameterTypeError,
     ["scale_by_schedule", "`step_size_fn`"]),
    ("chain of something that is not a transformation", lambda: gradxform.chain(gradxform.adam(0.1), 0.5),
     gradxform.HyperparameterTypeError, ["chain", "argument 2"]),
    ("cosine decay with zero decay steps", lambda: gradxform.cosine_decay_schedule(0.1, 0),
     gradxform.HyperparameterError, ["cosine_decay_schedule", "`decay_steps`"]),
]


def assert_case_raises_named(case):
  """Runs one (name, call, error type, message fragments) case: the error and every fragment must show."""
  _, call, error_type, fragments = case
  with pytest.raises(error_type) as info:
    call()
  message = str(info.value)
  for fragment in fragments:
    assert fragment in message, f"{fragment!r} not in {message!r}"
  assert isinstance(info.value, gradxform.GradxformError)


@pytest.mark.parametrize("case", TREE_CASES + DTYPE_CASES + STATE_CASES + HYPERPARAMETER_CASES, ids=lambda c: c[0])
def test_misuse_is_named(case):
  assert_case_raises_named(case)


@pytest.mark.parametrize("case", TREE_CASES + DTYPE_CASES + STATE_CASES, ids=lambda c: c[0])
def test_misuse_is_named_under_jit_too(case):
  _, call, error_type, fragments = case
  with pytest.raises(error_type) as info:
    jax.jit(call)()
  assert all(fragment in str(info.value) for fragment in fragments)


def test_error_types_are_standard_exceptions():
  assert issubclass(gradxform.TreeMismatchError, ValueError)
  assert issubclass(gradxform.HyperparameterError, ValueError)
  assert issubclass(gradxform.HyperparameterTypeError, TypeError)
  assert issubclass(gradxform.MissingParamsError, ValueError)
  assert issubclass(gradxform.LeafTypeError, TypeError)


def test_full_message_reads_as_documented():
  with pytest.raises(gradxform.TreeMismatchError) as info:
    _update(_user_chain(), _grads(w=jnp.ones((64, 32))))
  assert str(info.value) == ("adamw (chain step 2 of 2) > scale_by_adam (chain step 1 of 3): updates and "
                             "state.mu differ at ['encoder']['w']: shape (64, 32) vs (32, 64)")


def test_valid_edge_cases_work():
  # Hyperparameters given as jax arrays (also traced under jit) are accepted as they are.
  @jax.jit
  def step(lr, b1, grads):
    tx = gradxform.adam(lr, b1=b1)
    return tx.update(grads, tx.init(grads))[0]
  out = step(jnp.asarray(0.1), jnp.asarray(0.9), {"w": jnp.ones(3)})
  np.testing.assert_allclose(out["w"], -0.1 * np.ones(3), rtol=1e-5)
  # Zero learning rate, b1 = 0 and clip(0) are valid boundaries.
  assert gradxform.adam(0.0, b1=0.0) is not None and gradxform.clip(0.0) is not None
  # numpy and Python-float leaves work like arrays.
  tx = gradxform.sgd(0.5, momentum=0.5)
  updates, _ = tx.update({"a": np.ones(2, np.float32), "b": 2.0}, tx.init({"a": np.ones(2, np.float32), "b": 1.0}))
  np.testing.assert_allclose(updates["a"], -0.5 * np.ones(2))
  assert re.fullmatch(r"-?1\.0+", str(float(updates["b"])))
