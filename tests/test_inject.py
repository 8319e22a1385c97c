"""inject_hyperparams against optax 0.2.8: stored hyperparameters, schedules, dtypes, manual changes.

Each row wraps the same factory in both libraries (gradxform's optimizer in gradxform, optax's in optax,
or one shared optax-style factory in both) and compares updates, params and the whole state, including
`hyperparams` (values and storage dtypes) and the schedule states, eagerly and under jit.
"""

import contextlib
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import optax
from optax.schedules import _inject as optax_inject
import pytest

import gradxform
from tests.extensions import optax_parameters
from convergence import assert_trains
from equivalence import Ref, _show, assert_equivalent, assert_trees_equivalent, gradients, mixed_params, resolve


class Fixed(Ref):
  """A ready-made object (named `name` in test ids), used as it is by both libraries."""

  def build(self, lib):
    del lib
    return self.args[0]

  def __repr__(self):
    return self.name


class Inject(Ref):
  """`lib.inject_hyperparams(factory, **options)(*args, **kwargs)`; factory is `lib.<name>` or a Ref."""

  def __init__(self, factory, *args, options=None, **kwargs):
    super().__init__(factory, *args, **kwargs)
    object.__setattr__(self, "options", tuple(sorted((options or {}).items())))

  def build(self, lib):
    factory = resolve(self.name, lib) if isinstance(self.name, Ref) else getattr(lib, self.name)
    options = {k: resolve(v, lib) for k, v in self.options}
    args = [resolve(a, lib) for a in self.args]
    kwargs = {k: resolve(v, lib) for k, v in self.kwargs}
    with jax.numpy_dtype_promotion("standard") if lib is optax else contextlib.nullcontext():
      return lib.inject_hyperparams(factory, **options)(*args, **kwargs)

  def __repr__(self):
    options = "".join(f", {k}={_show(v)}" for k, v in self.options)
    call_args = super().__repr__().split("(", 1)[1]
    return f"inject_hyperparams({self.name!r}{options})({call_args}"


def matrices_only(params):
  return jax.tree.map(lambda p: jnp.ndim(p) >= 2, params)


def two(count):
  """A schedule returning a Python int (stored as it is, not as an array)."""
  del count
  return 2


class HalvingSchedule:
  """A stateful schedule: starts at 0.1 and is multiplied by 1 / (1 + |value|) (0.5 without `value`)."""

  def init(self):
    return {"current": jnp.asarray(0.1, jnp.float32)}

  def update(self, state, value=None, **extra_args):
    del extra_args
    factor = 0.5 if value is None else 1.0 / (1.0 + jnp.abs(value))
    return {"current": state["current"] * factor}

  def __call__(self, state, **extra_args):
    del extra_args
    return state["current"]


HALVING = Fixed("halving", HalvingSchedule())


def _value_scaler_update(updates, state, params=None, *, factor, value, **extra_args):
  del params, extra_args
  return jax.tree.map(lambda g: g * (factor * value).astype(g.dtype), updates), state


def value_scaler(factor):
  """An optax-style factory whose update needs the extra argument `value`."""
  return optax.GradientTransformationExtraArgs(
      optax.init_empty_state, lambda u, s, p=None, **kw: _value_scaler_update(u, s, p, factor=factor, **kw))


def value_args(params, grads, step):
  del params, grads
  return {"value": jnp.asarray(0.5 + step, jnp.float32)}


WARMUP_COSINE = Ref("warmup_cosine_decay_schedule", 0.0, 0.1, 2, 10)
LINEAR = Ref("linear_schedule", 0.1, 0.01, 4)
EXPONENTIAL = Ref("exponential_decay", 0.05, 2, 0.5)

def float32_params():
  """The shared mixed pytree with every leaf in float32."""
  return jax.tree.map(lambda p: p.astype(jnp.float32), mixed_params())


# Rows on the mixed float32/bfloat16 pytree: the storage dtype is the params' highest (float32) unless
# hyperparam_dtype says otherwise.
MIXED_ROWS = [
    Inject("sgd", 0.1), Inject("sgd", EXPONENTIAL), Inject("sgd", 0.1, options={"hyperparam_dtype": jnp.bfloat16}),
    Inject("sgd", jnp.asarray(0.1, jnp.bfloat16)), Inject("apply_every", 2),
    Inject("apply_every", k=3, options={"hyperparam_dtype": jnp.bfloat16}),
]

# Rows on all-float32 params. With array hyperparameters (what inject_hyperparams passes) and bfloat16
# leaves, some core transformations do not yet keep optax's dtypes (moments kept in bfloat16 where optax
# promotes them to float32, and strict-promotion errors): a core matter, reported, not inject_hyperparams'.
FLOAT32_ROWS = [
    Inject("adam", 1e-2),
    Inject("adam", WARMUP_COSINE, b1=Ref("linear_schedule", 0.9, 0.5, 3), nesterov=True),
    Inject("sgd", EXPONENTIAL, momentum=0.9), Inject("sgd", 0.1, momentum=HALVING, nesterov=True),
    Inject("scale_by_adam", b1=0.8, eps=1e-4),
    Inject("adamw", LINEAR, weight_decay=0.1, mask=matrices_only, options={"static_args": "mask"}),
    Inject("adam", LINEAR, b2=0.99, options={"hyperparam_dtype": jnp.float32, "static_args": ("mu_dtype",)}),
    Inject("adam", jnp.asarray(1e-2, jnp.float32), b1=np.float64(0.8), b2=np.float32(0.99)),
    Inject("rmsprop", 1e-2, decay=0.8, centered=True, momentum=0.5), Inject("clip_by_global_norm", 1.0),
]

ROWS = [(spec, mixed_params) for spec in MIXED_ROWS] + [(spec, float32_params) for spec in FLOAT32_ROWS]
# Eager runs where the storage rules meet Python numbers, numpy scalars, stateful schedules, static args.
EAGER_ROWS = ROWS[:6] + [ROWS[6 + i] for i in (1, 3, 5, 7)]


@pytest.mark.parametrize("spec,params", ROWS, ids=lambda x: repr(x) if isinstance(x, Ref) else x.__name__)
def test_equivalent_to_optax_jit(spec, params):
  assert_equivalent(spec, jit=True, params=params())


@pytest.mark.parametrize("spec,params", EAGER_ROWS, ids=lambda x: repr(x) if isinstance(x, Ref) else x.__name__)
def test_equivalent_to_optax_eager(spec, params):
  assert_equivalent(spec, jit=False, params=params())


def test_python_number_from_a_schedule_is_stored_as_it_is():
  """optax stores a schedule's Python int as it is (no array): the same here."""
  params = mixed_params()
  ours = gradxform.inject_hyperparams(gradxform.apply_every)(two).init(params)
  with jax.numpy_dtype_promotion("standard"):
    theirs = optax.inject_hyperparams(optax.apply_every)(two).init(params)
  assert type(ours.hyperparams["k"]) is type(theirs.hyperparams["k"]) is int
  assert ours.hyperparams["k"] == theirs.hyperparams["k"] == 2


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_extra_args_reach_the_factory_and_the_schedules(jit):
  spec = Inject(Fixed("value_scaler", value_scaler), HALVING)
  assert_equivalent(spec, jit=jit, extra_args=value_args)


def test_optax_factory_inside_gradxform():
  """An optax factory works too (run under optax's own dtype promotion)."""
  spec = Inject(Fixed("optax.adam", optax.adam), WARMUP_COSINE, b1=0.8)
  with jax.numpy_dtype_promotion("standard"):
    assert_equivalent(spec, jit=True, params=float32_params())


def test_inject_stateful_hyperparams_warns_and_matches_optax():
  params = float32_params()
  with pytest.warns(DeprecationWarning, match="inject_hyperparams"):
    ours = gradxform.inject_stateful_hyperparams(gradxform.sgd)(LINEAR.build(gradxform), momentum=0.9)
  with pytest.warns(DeprecationWarning):
    theirs = optax.inject_stateful_hyperparams(optax.sgd)(LINEAR.build(optax), momentum=0.9)
  grads = gradients(params, 0)
  ours_out = ours.update(grads, ours.init(params), params)
  with jax.numpy_dtype_promotion("standard"):
    theirs_out = theirs.update(grads, theirs.init(params), params)
  assert_trees_equivalent(ours_out, theirs_out, "inject_stateful_hyperparams")


def _run_with_change(lib, factory_kwargs, change, jit, steps=3):
  """Runs inject_hyperparams(lib.adam) for `steps` steps, applying `change` to state.hyperparams after step 0."""
  params = float32_params()
  kwargs = {k: resolve(v, lib) for k, v in factory_kwargs.items()}
  with jax.numpy_dtype_promotion("standard") if lib is optax else contextlib.nullcontext():
    tx = lib.inject_hyperparams(lib.adam)(**kwargs)
    update = jax.jit(tx.update) if jit else tx.update
    state = tx.init(params)
    history = []
    for step in range(steps):
      updates, state = update(gradients(params, step), state, params)
      params = lib.apply_updates(params, updates)
      history.append((updates, state))
      if step == 0:  # a new dict, so `history` keeps what the step returned
        state = state._replace(hyperparams={**state.hyperparams, **change})
  return history


@pytest.mark.parametrize("factory_kwargs,change,takes_effect,jit", [
    ({"learning_rate": 1e-2}, {"learning_rate": 0.05}, True, False),
    ({"learning_rate": 1e-2}, {"b2": jnp.asarray(0.9, jnp.float32)}, True, True),
    # A bfloat16 array is stored as it is (explicit dtype), a Python float in the storage dtype.
    ({"learning_rate": 1e-2, "b1": 0.5}, {"learning_rate": jnp.asarray(0.02, jnp.bfloat16), "eps": 1e-3}, True,
     True),
    ({"learning_rate": LINEAR}, {"learning_rate": 1.0}, False, False),  # scheduled: the schedule wins, as in optax
], ids=["lr-eager", "b2-jit", "bf16-lr-and-eps-jit", "scheduled-lr-eager"])
def test_hyperparameter_changed_in_the_state(factory_kwargs, change, takes_effect, jit):
  ours = _run_with_change(gradxform, factory_kwargs, change, jit)
  theirs = _run_with_change(optax, factory_kwargs, change, jit)
  for step, (a, b) in enumerate(zip(ours, theirs)):
    assert_trees_equivalent(a, b, f"step {step}")
  for name, value in change.items():  # the step after the change ran with (and kept) the new values
    stored = ours[1][1].hyperparams[name]
    expected = value if isinstance(value, jax.Array) else jnp.asarray(value, jnp.float32)
    assert (stored.dtype == expected.dtype and float(stored) == float(expected)) == takes_effect


def test_changing_a_hyperparameter_does_not_recompile():
  params = mixed_params()
  tx = gradxform.inject_hyperparams(gradxform.adam)(learning_rate=1e-2)
  update = jax.jit(tx.update)
  state = tx.init(params)
  first, state = update(gradients(params, 0), state, params)
  state.hyperparams["learning_rate"] = jnp.asarray(0.5, jnp.float32)
  second, state = update(gradients(params, 0), state, params)
  assert update._cache_size() == 1  # pylint: disable=protected-access
  assert float(state.hyperparams["learning_rate"]) == 0.5
  assert not np.allclose(np.asarray(first["dense"]["w"]), np.asarray(second["dense"]["w"]))


def test_state_layout_matches_optax():
  params = mixed_params()
  ours = gradxform.inject_hyperparams(gradxform.adam)(learning_rate=LINEAR.build(gradxform))
  state = ours.init(params)
  assert type(state).__name__ == "InjectStatefulHyperparamsState"
  assert isinstance(state.hyperparams, dict) and sorted(state.hyperparams) == ["b1", "b2", "eps", "eps_root",
                                                                              "learning_rate"]
  assert all(v.dtype == jnp.float32 for v in state.hyperparams.values())  # the params' highest dtype
  assert type(state.hyperparams_states["learning_rate"]).__name__ == "WrappedScheduleState"
  assert state.count.dtype == jnp.int32


def test_injected_transformations_compare_by_value():
  lr = gradxform.linear_schedule(0.1, 0.01, 4)
  inject = gradxform.inject_hyperparams
  assert inject(gradxform.adam) == inject(gradxform.adam)
  assert inject(gradxform.adam)(lr, b1=0.8) == inject(gradxform.adam)(lr, b1=0.8)
  assert hash(inject(gradxform.adam)(lr, b1=0.8)) == hash(inject(gradxform.adam)(lr, b1=0.8))
  assert inject(gradxform.adam)(lr, b1=0.8) != inject(gradxform.adam)(lr, b1=0.7)


def test_stateful_schedule_protocol():
  assert isinstance(gradxform.WrappedSchedule(lambda c: c), gradxform.schedules.StatefulSchedule)
  assert isinstance(optax.WrappedSchedule(lambda c: c), gradxform.schedules.StatefulSchedule)
  assert isinstance(gradxform.WrappedSchedule(lambda c: c), optax.schedules.StatefulSchedule)
  assert isinstance(HalvingSchedule(), gradxform.schedules.StatefulSchedule)
  assert not isinstance(gradxform.linear_schedule(0.1, 0.0, 3), gradxform.schedules.StatefulSchedule)
  ours, theirs = gradxform.WrappedSchedule(LINEAR.build(gradxform)), optax.WrappedSchedule(LINEAR.build(optax))
  ours_state, theirs_state = ours.init(), theirs.init()
  for _ in range(3):
    assert_trees_equivalent((ours(ours_state), ours_state), (theirs(theirs_state), theirs_state), "schedule")
    ours_state, theirs_state = ours.update(ours_state), theirs.update(theirs_state)


def test_inject_hyperparams_adam_trains():
  lr = gradxform.warmup_cosine_decay_schedule(0.0, 0.05, 10, 150)
  assert_trains(gradxform.inject_hyperparams(gradxform.adam)(learning_rate=lr))


# ----------------------------------------------------------------------------------------------
# Clear errors.


def test_unknown_static_arg_is_named():
  with pytest.raises(gradxform.HyperparameterError) as info:
    gradxform.inject_hyperparams(gradxform.adamw, static_args=("mask", "lr"))
  message = str(info.value)
  assert "inject_hyperparams" in message and "static_args" in message and "'lr'" in message
  assert isinstance(info.value, ValueError)  # as optax raises


def test_bad_factory_and_arguments_raise_clear_errors():
  with pytest.raises(gradxform.HyperparameterTypeError, match="inject_hyperparams.*inner_factory"):
    gradxform.inject_hyperparams(3)
  with pytest.raises(gradxform.HyperparameterTypeError, match="inject_hyperparams.*adam.*lr"):
    gradxform.inject_hyperparams(gradxform.adam)(0.1, lr=0.1)
  with pytest.raises(gradxform.HyperparameterError, match="inject_hyperparams.*adam.*learning_rate"):
    gradxform.inject_hyperparams(gradxform.adam)(learning_rate=-1.0)  # checked as given, at construction


def test_ambiguous_params_dtype_asks_for_hyperparam_dtype():
  params = {"a": jnp.ones(2, jnp.bfloat16), "b": jnp.ones(2, jnp.float16)}
  with pytest.raises(gradxform.HyperparameterTypeError, match="hyperparam_dtype"):
    gradxform.inject_hyperparams(gradxform.sgd)(0.1).init(params)
  state = gradxform.inject_hyperparams(gradxform.sgd, hyperparam_dtype=jnp.float32)(0.1).init(params)
  assert state.hyperparams["learning_rate"].dtype == jnp.float32


def test_wrong_state_is_named():
  params = mixed_params()
  tx = gradxform.inject_hyperparams(gradxform.sgd)(0.1)
  with pytest.raises(gradxform.StateMismatchError, match="inject_hyperparams"):
    tx.update(gradients(params, 0), gradxform.EmptyState(), params)


# ----------------------------------------------------------------------------------------------
# Signatures and state layouts.


def _parameters(fn):
  return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]


@pytest.mark.parametrize("name", ["inject_hyperparams", "inject_stateful_hyperparams", "WrappedSchedule",
                                  "WrappedSchedule.init", "WrappedSchedule.update", "WrappedSchedule.__call__"])
def test_signature_matches_optax(name):
  ours, theirs = gradxform, optax
  for part in name.split("."):
    ours, theirs = getattr(ours, part), getattr(theirs, part)
  assert _parameters(ours) == _parameters(theirs)


@pytest.mark.parametrize("name", ["init", "update", "__call__"])
def test_stateful_schedule_protocol_matches_optax(name):
  ours = getattr(gradxform.schedules.StatefulSchedule, name)
  assert _parameters(ours) == _parameters(getattr(optax.schedules.StatefulSchedule, name))


@pytest.mark.parametrize("factory", ["adam", "sgd", "adamw", "scale_by_adam", "clip_by_global_norm"])
def test_injected_factory_keeps_the_factory_signature(factory):
  ours = gradxform.inject_hyperparams(getattr(gradxform, factory))
  assert _parameters(ours) == _parameters(getattr(gradxform, factory))
  assert optax_parameters(ours) == _parameters(optax.inject_hyperparams(getattr(optax, factory)))
  assert ours.__name__ == factory


@pytest.mark.parametrize("name,theirs", [("InjectHyperparamsState", optax), ("InjectStatefulHyperparamsState", optax),
                                         ("WrappedScheduleState", optax_inject)])
def test_state_class_fields_match_optax(name, theirs):
  from gradxform.schedules import _inject  # pylint: disable=import-outside-toplevel
  ours, theirs = getattr(_inject, name), getattr(theirs, name)
  assert ours.__name__ == theirs.__name__
  assert ours._fields == theirs._fields


@pytest.mark.parametrize("name", ["inject_hyperparams", "inject_stateful_hyperparams", "InjectHyperparamsState",
                                  "InjectStatefulHyperparamsState", "WrappedSchedule", "StatefulSchedule"])
def test_schedules_namespace_has_the_names(name):
  assert hasattr(optax.schedules, name) and hasattr(gradxform.schedules, name)
