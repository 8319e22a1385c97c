"""Accumulation, finiteness guards and conditional wrappers, run against optax 0.2.8.

MultiSteps, apply_every, apply_if_finite, zero_nans, skip_not_finite / skip_large_updates,
conditionally_transform and conditionally_mask wrap gradxform inner transformations and optax ones, eager
and under jit, with NaN / inf gradients injected at chosen steps and extra arguments flowing through.
"""

import functools
import inspect

import chex
import jax
import jax.numpy as jnp
import optax
import pytest

import gradxform
from convergence import assert_trains
from equivalence import Ref, assert_equivalent, assert_trees_equivalent, gradients, mixed_params


class Name(Ref):
  """The object `lib.<name>` itself (a function to pass as an argument), not a call to it."""

  def build(self, lib):
    obj = lib
    for part in self.name.split("."):
      obj = getattr(obj, part)
    return obj


class Partial(Ref):
  """`functools.partial(lib.<name>, **kwargs)`."""

  def build(self, lib):
    return functools.partial(getattr(lib, self.name), **dict(self.kwargs))


class Fixed(Ref):
  """A ready-made object (named `name` in test ids), used as it is by both libraries."""

  def build(self, lib):
    del lib
    return self.args[0]

  def __repr__(self):
    return self.name


class AsTransformation(Ref):
  """`lib.<name>(*args, **kwargs).gradient_transformation()` (for MultiSteps)."""

  def build(self, lib):
    return super().build(lib).gradient_transformation()


def one_then_two(gradient_step):
  """A mini-step schedule: 1 for the first optimizer step, 2 afterwards."""
  return jnp.where(gradient_step < 1, 1, 2)


def even_steps(step):
  return step % 2 == 0


def positive_value(step, value=None, **_):
  del step
  return value > 0


def _scale_by_value_update(updates, state, params=None, *, value, **extra_args):
  del params, extra_args
  return jax.tree.map(lambda g: g * jnp.asarray(value, g.dtype), updates), state


# An optax-style inner transformation that needs an extra argument: it must reach it through every wrapper.
SCALE_BY_VALUE = Fixed("scale_by_value", optax.GradientTransformationExtraArgs(optax.init_empty_state,
                                                                             _scale_by_value_update))


def value_args(params, grads, step):
  del params, grads
  return {"value": jnp.asarray(1.0 - step, jnp.float32)}


def float_value_args(params, grads, step):
  del params, grads
  return {"value": 0.5 + step}


ADAM = Ref("adam", 1e-2)
SGD = Ref("sgd", 0.1, momentum=0.9)

ROWS = [
    Ref("apply_every"), Ref("apply_every", k=3), Ref("chain", Ref("apply_every", 2), SGD),
    Ref("MultiSteps", ADAM, 2), Ref("MultiSteps", SGD, 3, use_grad_mean=False), Ref("MultiSteps", SGD, one_then_two),
    Ref("MultiSteps", ADAM, 2, accumulator_dtype=jnp.bfloat16),
    Ref("chain", AsTransformation("MultiSteps", SGD, 2), Ref("scale", 0.5)),
    Ref("apply_if_finite", SGD, max_consecutive_errors=0), Ref("zero_nans"),
    Ref("conditionally_transform", ADAM, even_steps), Ref("conditionally_mask", SGD, even_steps),
]

# Eagerly, both libraries trace and compile their lax.cond at every call (seconds each), so the eager
# runs cover one row per wrapper; the skip rules and non-finite gradients have their own rows below.
EAGER_ROWS = [Ref("apply_every", 2), Ref("MultiSteps", SGD, one_then_two, use_grad_mean=False),
              Ref("apply_if_finite", SGD, 2), Ref("conditionally_transform", SGD, even_steps),
              Ref("conditionally_mask", SGD, even_steps)]


@pytest.mark.parametrize("spec", ROWS, ids=repr)
def test_equivalent_to_optax_jit(spec):
  assert_equivalent(spec, jit=True)


@pytest.mark.parametrize("spec", EAGER_ROWS, ids=repr)
def test_equivalent_to_optax_eager(spec):
  assert_equivalent(spec, jit=False)


def nonfinite_grads(nan_steps=(), inf_steps=(), scale_steps=()):
  """gradients() with a NaN in two leaves at `nan_steps`, an inf in one at `inf_steps`, and all
  gradients times 1e3 at `scale_steps`."""
  def grads_fn(params, step):
    grads = gradients(mixed_params(), step)
    if step in nan_steps:
      grads["dense"]["w"] = grads["dense"]["w"].at[1, 2].set(jnp.nan)
      grads["blocks"][1] = (grads["blocks"][1][0], grads["blocks"][1][1].at[0, 0].set(jnp.nan))
    if step in inf_steps:
      grads["scale"] = grads["scale"].at[1].set(-jnp.inf)
    if step in scale_steps:
      grads = jax.tree.map(lambda g: g * jnp.asarray(1e3, g.dtype), grads)
    return grads
  return grads_fn


NONFINITE_ROWS = [
    # Skipped at step 1, then given up on at step 2 (two bad steps in a row > 1).
    (Ref("apply_if_finite", ADAM, 1), nonfinite_grads(nan_steps=(1,), inf_steps=(2,)), 4),
    (Ref("apply_if_finite", ADAM, 3), nonfinite_grads(nan_steps=(0, 2), inf_steps=(3,)), 5),
    (Ref("apply_if_finite", SGD, 0), nonfinite_grads(inf_steps=(1,)), 3),
    (Ref("zero_nans"), nonfinite_grads(nan_steps=(0, 2)), 3),
    (Ref("chain", Ref("zero_nans"), ADAM), nonfinite_grads(nan_steps=(1,)), 3),
    (Ref("MultiSteps", ADAM, 2, should_skip_update_fn=Name("skip_not_finite")),
     nonfinite_grads(nan_steps=(1,), inf_steps=(3,)), 4),
    (Ref("MultiSteps", SGD, one_then_two, use_grad_mean=False, should_skip_update_fn=Name("skip_not_finite")),
     nonfinite_grads(inf_steps=(0, 2)), 4),
    (Ref("MultiSteps", ADAM, 2, should_skip_update_fn=Partial("skip_large_updates", max_squared_norm=1e5)),
     nonfinite_grads(scale_steps=(1,), nan_steps=(3,)), 4),
    (Ref("MultiSteps", SGD, 2), nonfinite_grads(nan_steps=(1,)), 4),  # no skip rule: the NaN reaches the optimizer
    (Ref("apply_every", 2), nonfinite_grads(inf_steps=(1,)), 4),
]


@pytest.mark.parametrize("spec,grads_fn,steps", NONFINITE_ROWS, ids=lambda x: repr(x) if isinstance(x, Ref) else "")
def test_nonfinite_gradients_match_optax(spec, grads_fn, steps):
  assert_equivalent(spec, steps=steps, jit=True, grads_fn=grads_fn)


@pytest.mark.parametrize("spec,grads_fn,steps", [NONFINITE_ROWS[i] for i in (2, 3, 6)],
                         ids=lambda x: repr(x) if isinstance(x, Ref) else "")
def test_nonfinite_gradients_match_optax_eager(spec, grads_fn, steps):
  assert_equivalent(spec, steps=steps, jit=False, grads_fn=grads_fn)


EXTRA_ARG_ROWS = [
    Ref("apply_if_finite", SCALE_BY_VALUE, 1), Ref("MultiSteps", SCALE_BY_VALUE, 2),
    Ref("MultiSteps", SCALE_BY_VALUE, 2, should_skip_update_fn=Name("skip_not_finite")),
    Ref("conditionally_transform", SCALE_BY_VALUE, even_steps),
    Ref("conditionally_mask", SCALE_BY_VALUE, positive_value, forward_extra_args=True),
    Ref("conditionally_transform", SCALE_BY_VALUE, positive_value, forward_extra_args=True),
    Ref("chain", Ref("apply_every", 2), SCALE_BY_VALUE),
]


@pytest.mark.parametrize("spec", EXTRA_ARG_ROWS, ids=repr)
def test_extra_args_reach_the_inner_transformation(spec):
  assert_equivalent(spec, jit=True, extra_args=value_args)


@pytest.mark.parametrize("extra_args", [value_args, float_value_args], ids=["array", "float"])
@pytest.mark.parametrize("spec", [EXTRA_ARG_ROWS[2]], ids=repr)
def test_extra_args_reach_the_inner_transformation_eager(spec, extra_args):
  """Eagerly, MultiSteps passes array extra args to its shape-only skip branch as traced, others as static."""
  assert_equivalent(spec, jit=False, extra_args=extra_args)


OPTAX_ADAM = Fixed("optax.adam(1e-2)", optax.adam(1e-2))
OPTAX_INNER = [Ref("apply_if_finite", OPTAX_ADAM, 1),
               Ref("MultiSteps", Fixed("optax.sgd(0.1, momentum=0.9)", optax.sgd(0.1, momentum=0.9)), 2),
               Ref("conditionally_mask", OPTAX_ADAM, even_steps), Ref("chain", Ref("zero_nans"), OPTAX_ADAM)]


@pytest.mark.parametrize("spec", OPTAX_INNER, ids=repr)
def test_optax_inner_transformations(spec):
  """An optax inner transformation works inside the gradxform wrappers (under optax's own promotion)."""
  with jax.numpy_dtype_promotion("standard"):
    assert_equivalent(spec, jit=True, grads_fn=nonfinite_grads(nan_steps=(1,)))


def test_multi_steps_has_updated_matches_optax():
  params = mixed_params()
  ours = gradxform.MultiSteps(gradxform.adam(1e-2), one_then_two)
  theirs = optax.MultiSteps(optax.adam(1e-2), one_then_two)
  ours_update = jax.jit(ours.update)
  theirs_update = jax.jit(jax.numpy_dtype_promotion("standard")(theirs.update))
  ours_state = ours.init(params)
  with jax.numpy_dtype_promotion("standard"):
    theirs_state = theirs.init(params)
  seen = []
  for step in range(6):
    grads = gradients(params, step)
    ours_updates, ours_state = ours_update(grads, ours_state, params)
    theirs_updates, theirs_state = theirs_update(grads, theirs_state, params)
    assert_trees_equivalent(ours_updates, theirs_updates, f"updates at {step}")
    assert bool(ours.has_updated(ours_state)) == bool(theirs.has_updated(theirs_state))
    seen.append(bool(ours.has_updated(ours_state)))
  assert seen == [True, False, True, False, True, False]


def test_multi_steps_gradient_transformation_is_a_plain_transformation():
  ms = gradxform.MultiSteps(gradxform.adam(1e-2), 2)
  tx = ms.gradient_transformation()
  assert type(tx) is gradxform.GradientTransformation  # as optax: extra args stop at a chain around it
  assert ms.inner_opt == gradxform.adam(1e-2)


def test_wrappers_compare_by_value():
  assert gradxform.MultiSteps(gradxform.adam(0.1), 2) == gradxform.MultiSteps(gradxform.adam(0.1), 2)
  assert hash(gradxform.MultiSteps(gradxform.adam(0.1), 2)) == hash(gradxform.MultiSteps(gradxform.adam(0.1), 2))
  assert gradxform.MultiSteps(gradxform.adam(0.1), 2) != gradxform.MultiSteps(gradxform.adam(0.1), 3)
  assert gradxform.apply_if_finite(gradxform.sgd(0.1), 2) == gradxform.apply_if_finite(gradxform.sgd(0.1), 2)
  assert gradxform.conditionally_mask(gradxform.sgd(0.1), even_steps) == gradxform.conditionally_mask(
      gradxform.sgd(0.1), even_steps)
  assert gradxform.apply_every(2) == gradxform.apply_every(2) != gradxform.apply_every(3)
  assert gradxform.zero_nans() == gradxform.zero_nans()


def test_skip_functions_match_optax():
  grads = nonfinite_grads(nan_steps=(0,), inf_steps=(0,))(None, 0)
  for fn in ("skip_not_finite",):
    ours, theirs = getattr(gradxform, fn)(grads, 0, None), getattr(optax, fn)(grads, 0, None)
    assert_trees_equivalent(ours, theirs, fn)
    assert bool(ours[0]) and int(ours[1]["num_not_finite"]) == 3
  clean = gradients(mixed_params(), 0)
  for limit in (1.0, 1e6, jnp.asarray(1e6, jnp.bfloat16)):
    ours = gradxform.skip_large_updates(clean, 0, None, limit)
    with jax.numpy_dtype_promotion("standard"):
      theirs = optax.skip_large_updates(clean, 0, None, limit)
    assert_trees_equivalent(ours, theirs, f"skip_large_updates({limit})")
  assert bool(gradxform.skip_large_updates(clean, 0, None, 1.0)[0])
  assert not bool(gradxform.skip_large_updates(clean, 0, None, 1e6)[0])


# ----------------------------------------------------------------------------------------------
# Convergence.


def test_multi_steps_adam_trains():
  assert_trains(gradxform.MultiSteps(gradxform.adam(0.05), 2))


# ----------------------------------------------------------------------------------------------
# Clear errors.


@pytest.mark.parametrize("build,error,fn,arg", [
    (lambda: gradxform.MultiSteps(gradxform.adam(0.1), 0), gradxform.HyperparameterError, "MultiSteps",
     "every_k_schedule"),
    (lambda: gradxform.MultiSteps(gradxform.adam(0.1), -3), gradxform.HyperparameterError, "MultiSteps",
     "every_k_schedule"),
    (lambda: gradxform.MultiSteps(gradxform.adam(0.1), 2.5), gradxform.HyperparameterTypeError, "MultiSteps",
     "every_k_schedule"),
    (lambda: gradxform.MultiSteps(gradxform.adam(0.1), 2, should_skip_update_fn=3),
     gradxform.HyperparameterTypeError, "MultiSteps", "should_skip_update_fn"),
    (lambda: gradxform.MultiSteps("adam", 2), gradxform.HyperparameterTypeError, "MultiSteps", "opt"),
    (lambda: gradxform.apply_every(0), gradxform.HyperparameterError, "apply_every", "k"),
    (lambda: gradxform.apply_if_finite(gradxform.sgd(0.1), -1), gradxform.HyperparameterError, "apply_if_finite",
     "max_consecutive_errors"),
    (lambda: gradxform.apply_if_finite(None, 1), gradxform.HyperparameterTypeError, "apply_if_finite", "inner"),
    (lambda: gradxform.conditionally_mask(gradxform.sgd(0.1), "even"), gradxform.HyperparameterTypeError,
     "conditionally_mask", "should_transform_fn"),
    (lambda: gradxform.conditionally_transform(3, even_steps), gradxform.HyperparameterTypeError,
     "conditionally_transform", "inner"),
])
def test_bad_arguments_raise_clear_errors(build, error, fn, arg):
  with pytest.raises(error) as info:
    build()
  assert fn in str(info.value) and arg in str(info.value)


def test_bad_skip_function_output_raises():
  ms = gradxform.MultiSteps(gradxform.sgd(0.1), 2, should_skip_update_fn=lambda u, s, p: (jnp.zeros(2), ()))
  params = mixed_params()
  with pytest.raises(gradxform.HyperparameterError, match="should_skip_update_fn.*bool scalar"):
    ms.update(gradients(params, 0), ms.init(params), params)


@pytest.mark.parametrize("tx,name", [
    (gradxform.MultiSteps(gradxform.sgd(0.1), 2), "MultiSteps"), (gradxform.apply_every(2), "apply_every"),
    (gradxform.apply_if_finite(gradxform.sgd(0.1), 1), "apply_if_finite"), (gradxform.zero_nans(), "zero_nans"),
    (gradxform.conditionally_mask(gradxform.sgd(0.1), even_steps), "conditionally_mask"),
    (gradxform.conditionally_transform(gradxform.sgd(0.1), even_steps), "conditionally_transform"),
], ids=lambda x: x if isinstance(x, str) else "")
def test_wrong_state_is_named(tx, name):
  params = mixed_params()
  with pytest.raises(gradxform.StateMismatchError, match=name):
    tx.update(gradients(params, 0), gradxform.EmptyState(), params)


# ----------------------------------------------------------------------------------------------
# Signatures and state layouts.


def _parameters(fn):
  return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]


@pytest.mark.parametrize("name", [
    "apply_every", "apply_if_finite", "zero_nans", "conditionally_mask", "conditionally_transform",
    "skip_not_finite", "skip_large_updates", "MultiSteps", "MultiSteps.init", "MultiSteps.update",
    "MultiSteps.has_updated", "MultiSteps.gradient_transformation", "ShouldSkipUpdateFunction.__call__",
    "transforms.ConditionFn.__call__"])
def test_signature_matches_optax(name):
  ours = Name(name.removeprefix("transforms.")).build(gradxform)
  theirs = Name(name).build(optax)
  assert _parameters(ours) == _parameters(theirs)


@pytest.mark.parametrize("name", ["ApplyEvery", "ApplyIfFiniteState", "ZeroNansState", "ConditionallyMaskState",
                                  "ConditionallyTransformState", "MultiStepsState"])
def test_state_class_fields_match_optax(name):
  ours, theirs = getattr(gradxform, name), getattr(optax, name)
  assert ours.__name__ == theirs.__name__
  assert ours._fields == theirs._fields
  assert ours._field_defaults == theirs._field_defaults


def test_multisteps_object_goes_into_chain_as_it_is():
  # optax's chain cannot unpack a MultiSteps object; gradxform's takes anything with init/update.
  params = {"w": jnp.ones(3)}
  chained = gradxform.chain(gradxform.clip_by_global_norm(1.0), gradxform.MultiSteps(gradxform.adam(0.1), 2))
  by_hand = gradxform.MultiSteps(gradxform.adam(0.1), 2)
  state, hand_state = chained.init(params), by_hand.init(params)
  for _ in range(4):
    updates, state = chained.update(params, state, params)
    clipped = jax.tree.map(lambda g: g / jnp.sqrt(3.0), params)
    hand_updates, hand_state = by_hand.update(clipped, hand_state, params)
    chex.assert_trees_all_close(updates, hand_updates)
