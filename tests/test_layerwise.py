"""Factored (Adafactor), layer-wise, sign-based and step-size transformations and their optimizers.

Every row runs against optax 0.2.8, eagerly and under jax.jit, on the shared mixed pytree (and, where
a leaf must be large enough to be factored, on that tree plus large leaves); updates, params and the
full state must agree. Each optimizer also trains on the digits task, misuse gets a named error, and
the signatures and state classes are optax's.
"""

import inspect

import jax
import jax.numpy as jnp
import optax
import pytest
from optax._src import transform as optax_transform

import gradxform
from convergence import assert_trains
from equivalence import Ref, assert_equivalent, assert_trees_equivalent, gradients, mixed_params


def matrices_only(params):
  """A mask: True for leaves of rank >= 2."""
  return jax.tree.map(lambda p: jnp.ndim(p) >= 2, params)


def vectors_only(params):
  """A mask: True for leaves of rank <= 1 (biases, scales)."""
  return jax.tree.map(lambda p: jnp.ndim(p) <= 1, params)


def capped_decay(step, decay_rate):
  """A bounded second-moment decay (Zhai et al., 2021): min(decay_rate, 1 - (t + 1) ** -0.8)."""
  t = step.astype(jnp.float32) + 1.0
  return jnp.minimum(decay_rate, 1.0 - t ** -0.8)


DICT_MASK = {"dense": {"w": True, "b": False}, "blocks": [True, (False, True)], "scale": False}
FLOAT32_MASK = {"dense": {"w": True, "b": False}, "blocks": [True, (True, False)], "scale": False}
LINEAR = Ref("linear_schedule", 0.1, 0.01, 4)
EXPONENTIAL = Ref("exponential_decay", 0.05, 2, 0.5)


def factorable_params():
  """The mixed params plus leaves adafactor factors by default (second largest axis >= 128; float32 with
  the long axis first, bfloat16 with it last), and a (5, 4, 5) leaf whose largest axes tie and are not
  adjacent (factored from min_dim_size_to_factor=4 down)."""
  keys = jax.random.split(jax.random.key(2), 3)
  return {**mixed_params(),
          "big": jax.random.normal(keys[0], (130, 128), jnp.float32),
          "big16": jax.random.normal(keys[1], (128, 129), jnp.bfloat16),
          "tie": jax.random.normal(keys[2], (5, 4, 5), jnp.float32)}


def without_scalar_leaf():
  """The mixed params minus the 0-d leaf (see test_dog_scalar_leaf_update_has_shape_one_like_optax)."""
  p = mixed_params()
  return {"dense": p["dense"], "blocks": [p["blocks"][0], p["blocks"][1][1]], "scale": p["scale"]}


def with_zero_leaf():
  """The mixed params with an all-zero leaf, for the zero-norm branch of the trust ratio."""
  p = mixed_params()
  return {**p, "dense": {**p["dense"], "b": jnp.zeros((3,), jnp.float32)}}


def objective_value(params, grads, step):
  """The `value` Polyak's step needs: 0.5 ||p||^2 - 20 step, about 37, 17, -3 on the mixed params, so the
  gap to f_min turns negative at the third step (sps+ clips it to zero there, sps steps backwards)."""
  del grads
  sq = sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in jax.tree.leaves(params))
  return {"value": 0.5 * sq - 20.0 * step}


def zero_grads(params, step):
  del step
  return jax.tree.map(jnp.zeros_like, params)


# ----------------------------------------------------------------------------------------------
# Equivalence tables.

# scale_by_factored_rms and adafactor with their defaults run on factorable_params() (FACTORED_ROWS),
# which holds every mixed leaf as well as leaves they factor by default.
TRANSFORMATIONS = [
    Ref("scale_by_factored_rms", factored=False, min_dim_size_to_factor=2),
    Ref("scale_by_param_block_norm"), Ref("scale_by_param_block_norm", min_scale=1.0),
    Ref("scale_by_param_block_rms"), Ref("scale_by_param_block_rms", min_scale=0.9),
    Ref("normalize_by_update_norm"), Ref("normalize_by_update_norm", scale_factor=-2.0, eps=1e-2),
    Ref("centralize"), Ref("scale_by_sign"),
    Ref("scale_by_rprop", 0.01),
    Ref("scale_by_rprop", 0.1, eta_minus=0.3, eta_plus=1.5, min_step_size=0.05, max_step_size=0.2),
]

OPTIMIZERS = [
    Ref("adafactor", LINEAR, min_dim_size_to_factor=4, decay_rate=0.5, decay_offset=1,
        multiply_by_parameter_scale=False, clipping_threshold=0.5, momentum=0.9, dtype_momentum=jnp.bfloat16,
        weight_decay_rate=0.01, eps=1e-20, weight_decay_mask=matrices_only),
    Ref("adafactor", 1e-2, clipping_threshold=None, momentum=0.5, dtype_momentum=None,
        weight_decay_rate=EXPONENTIAL, factored=False, min_dim_size_to_factor=2, weight_decay_mask=DICT_MASK),
    Ref("lamb", LINEAR, b1=0.5, b2=0.9, eps=1e-4, eps_root=1e-8, weight_decay=0.1, mask=matrices_only),
    Ref("lamb", 1e-2, weight_decay=EXPONENTIAL, mask=DICT_MASK),
    Ref("lars", 0.1),
    Ref("lars", LINEAR, weight_decay=0.1, weight_decay_mask=matrices_only, trust_coefficient=0.01, eps=1e-3,
        trust_ratio_mask=matrices_only, momentum=0.5, nesterov=True),
    # A scheduled decay makes bfloat16 updates float32; optax's trace then stores them as float32 while
    # gradxform's keeps the buffer's dtype, so this row decays float32 leaves only (see the report).
    Ref("lars", 0.1, weight_decay=EXPONENTIAL, weight_decay_mask=FLOAT32_MASK, trust_ratio_mask=vectors_only),
    Ref("fromage", LINEAR, min_norm=1e-2),
    Ref("sign_sgd", 0.1), Ref("signum", 0.1), Ref("signum", LINEAR, beta=0.5, accumulator_dtype=jnp.bfloat16),
    Ref("rprop", 0.01),
]

# Rprop's step sizes reach their bounds, and its (lagged) updates become nonzero, only after a few steps.
LONG_RUNS = {"scale_by_rprop", "rprop"}


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("spec", TRANSFORMATIONS + OPTIMIZERS, ids=repr)
def test_equivalent_to_optax(spec, jit):
  assert_equivalent(spec, steps=5 if spec.name in LONG_RUNS else 3, jit=jit)


FACTORED_ROWS = [
    Ref("scale_by_factored_rms"),
    Ref("scale_by_factored_rms", decay_rate=0.5, step_offset=1, epsilon=1e-10, min_dim_size_to_factor=4),
    Ref("scale_by_factored_rms", decay_rate=0.9, min_dim_size_to_factor=4, decay_rate_fn=capped_decay),
    Ref("adafactor"),
    Ref("adafactor", 1e-2, momentum=0.9, dtype_momentum=jnp.bfloat16, weight_decay_rate=1e-3,
        weight_decay_mask=matrices_only, clipping_threshold=None, multiply_by_parameter_scale=False),
]


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("spec", FACTORED_ROWS, ids=repr)
def test_factored_leaves_match_optax(spec, jit):
  assert_equivalent(spec, jit=jit, params=factorable_params())


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("spec", [Ref("scale_by_trust_ratio"),
                                  Ref("scale_by_trust_ratio", min_norm=0.5, trust_coefficient=0.01, eps=1e-3),
                                  Ref("lamb", 1e-2), Ref("fromage", 0.1)], ids=repr)
def test_trust_ratio_with_a_zero_leaf_matches_optax(spec, jit):
  """The mixed params with one all-zero leaf: that leaf takes the ratio-1 branch (or the min_norm floor)."""
  assert_equivalent(spec, jit=jit, params=with_zero_leaf())


DOG_ROWS = [Ref("scale_by_distance_over_gradients"),
            Ref("scale_by_distance_over_gradients", reps_rel=1e-4, eps=1e-6, param_dtype=jnp.bfloat16,
                global_scale=-1.0)]


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("spec", DOG_ROWS, ids=repr)
def test_distance_over_gradients_matches_optax(spec, jit):
  assert_equivalent(spec, jit=jit, params=without_scalar_leaf())


@pytest.mark.parametrize("spec", DOG_ROWS, ids=repr)
def test_dog_scalar_leaf_update_has_shape_one_like_optax(spec):
  """optax's per-leaf step has shape (1,) (from its (1,) accumulator), so a 0-d leaf gets a (1,) update,
  which optax.apply_updates broadcasts into the param. gradxform gives the same update and state."""
  params = mixed_params()
  grads = gradients(params, 0)
  ours, theirs = spec.build(gradxform), spec.build(optax)
  ours_updates, ours_state = ours.update(grads, ours.init(params), params)
  with jax.numpy_dtype_promotion("standard"):
    theirs_updates, theirs_state = theirs.update(grads, theirs.init(params), params)
  assert jnp.shape(ours_updates["blocks"][1][0]) == (1,)
  assert_trees_equivalent(ours_updates, theirs_updates, "updates")
  assert_trees_equivalent(ours_state, theirs_state, "state")


POLYAK_ROWS = [
    Ref("scale_by_polyak"), Ref("scale_by_polyak", f_min=-5.0, max_learning_rate=0.05, eps=1e-2),
    Ref("scale_by_polyak", f_min=1.0, eps=1e-3, variant="sps+"),
    Ref("polyak_sgd"), Ref("polyak_sgd", max_learning_rate=0.5, scaling=LINEAR, f_min=-1.0, eps=1e-3, variant="sps+"),
]


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("spec", POLYAK_ROWS, ids=repr)
def test_polyak_matches_optax(spec, jit):
  assert_equivalent(spec, jit=jit, extra_args=objective_value)


@pytest.mark.parametrize("spec", [Ref("scale_by_polyak"), Ref("polyak_sgd", eps=0.0, variant="sps+")], ids=repr)
def test_polyak_zero_gradient_takes_no_step_like_optax(spec):
  assert_equivalent(spec, jit=True, extra_args=objective_value, grads_fn=zero_grads)


# ----------------------------------------------------------------------------------------------
# Training.

OPTIMIZERS_TRAIN = {
    "adafactor": lambda: gradxform.adafactor(0.1),
    "lamb": lambda: gradxform.lamb(0.03),
    "lars": lambda: gradxform.lars(1.0),
    # The digits model starts at zero params, where Fromage's step (proportional to ||p||, floored at
    # min_norm) vanishes with the default min_norm=1e-6; a floor of 1 lets it start.
    "fromage": lambda: gradxform.fromage(0.1, min_norm=1.0),
    "sign_sgd": lambda: gradxform.sign_sgd(0.01),
    "signum": lambda: gradxform.signum(0.01),
    "rprop": lambda: gradxform.rprop(0.01),
    "polyak_sgd": lambda: gradxform.polyak_sgd(),
}


def _loss_as_value(params, loss, grads):
  del params, grads
  return {"value": loss}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS_TRAIN))
def test_optimizer_trains_on_digits(name):
  assert_trains(OPTIMIZERS_TRAIN[name](), extra_args=_loss_as_value if name == "polyak_sgd" else None)


# ----------------------------------------------------------------------------------------------
# Construction: hashable, equal when built alike.


def test_equal_arguments_build_equal_transformations():
  schedule = gradxform.linear_schedule(0.1, 0.01, 4)
  for build in (lambda: gradxform.fromage(schedule), lambda: gradxform.adafactor(0.1, momentum=0.9),
                lambda: gradxform.lars(0.1, trust_ratio_mask=matrices_only), lambda: gradxform.polyak_sgd(),
                lambda: gradxform.scale_by_distance_over_gradients(), lambda: gradxform.rprop(0.1)):
    assert build() == build() and hash(build()) == hash(build())
  assert gradxform.fromage(0.1) != gradxform.fromage(0.2)


# ----------------------------------------------------------------------------------------------
# Errors.

BAD_HYPERPARAMETERS = [
    (lambda: gradxform.scale_by_factored_rms(epsilon=-1.0), gradxform.HyperparameterError,
     "scale_by_factored_rms", "epsilon"),
    (lambda: gradxform.scale_by_factored_rms(min_dim_size_to_factor=-1), gradxform.HyperparameterError,
     "scale_by_factored_rms", "min_dim_size_to_factor"),
    (lambda: gradxform.scale_by_factored_rms(decay_rate_fn=0.8), gradxform.HyperparameterTypeError,
     "scale_by_factored_rms", "decay_rate_fn"),
    (lambda: gradxform.scale_by_trust_ratio(min_norm=-1.0), gradxform.HyperparameterError,
     "scale_by_trust_ratio", "min_norm"),
    (lambda: gradxform.scale_by_trust_ratio(trust_coefficient="big"), gradxform.HyperparameterTypeError,
     "scale_by_trust_ratio", "trust_coefficient"),
    (lambda: gradxform.scale_by_param_block_norm(-0.1), gradxform.HyperparameterError,
     "scale_by_param_block_norm", "min_scale"),
    (lambda: gradxform.scale_by_param_block_rms(float("nan")), gradxform.HyperparameterError,
     "scale_by_param_block_rms", "min_scale"),
    (lambda: gradxform.normalize_by_update_norm(eps=-1e-6), gradxform.HyperparameterError,
     "normalize_by_update_norm", "eps"),
    (lambda: gradxform.scale_by_distance_over_gradients(reps_rel=-1.0), gradxform.HyperparameterError,
     "scale_by_distance_over_gradients", "reps_rel"),
    (lambda: gradxform.scale_by_polyak(variant="sgd"), gradxform.HyperparameterError, "scale_by_polyak", "variant"),
    (lambda: gradxform.scale_by_polyak(max_learning_rate=-1.0), gradxform.HyperparameterError,
     "scale_by_polyak", "max_learning_rate"),
    (lambda: gradxform.scale_by_rprop(-0.1), gradxform.HyperparameterError, "scale_by_rprop", "learning_rate"),
    (lambda: gradxform.scale_by_rprop(0.1, max_step_size=-1.0), gradxform.HyperparameterError,
     "scale_by_rprop", "max_step_size"),
    (lambda: gradxform.adafactor(momentum=1.0), gradxform.HyperparameterError, "adafactor", "momentum"),
    (lambda: gradxform.adafactor(clipping_threshold=0.0), gradxform.HyperparameterError,
     "adafactor", "clipping_threshold"),
    (lambda: gradxform.adafactor(weight_decay_rate=-0.1), gradxform.HyperparameterError,
     "adafactor", "weight_decay_rate"),
    (lambda: gradxform.adafactor("fast"), gradxform.HyperparameterTypeError, "adafactor", "learning_rate"),
    (lambda: gradxform.lamb(1e-3, b2=1.0), gradxform.HyperparameterError, "lamb", "b2"),
    (lambda: gradxform.lamb(1e-3, weight_decay=-1.0), gradxform.HyperparameterError, "lamb", "weight_decay"),
    (lambda: gradxform.lars(0.1, momentum=-0.5), gradxform.HyperparameterError, "lars", "momentum"),
    (lambda: gradxform.lars(0.1, eps=-1.0), gradxform.HyperparameterError, "lars", "eps"),
    (lambda: gradxform.fromage(-0.1), gradxform.HyperparameterError, "fromage", "learning_rate"),
    (lambda: gradxform.fromage(0.1, min_norm=-1.0), gradxform.HyperparameterError, "fromage", "min_norm"),
    (lambda: gradxform.sign_sgd(None), gradxform.HyperparameterTypeError, "sign_sgd", "learning_rate"),
    (lambda: gradxform.signum(0.1, beta=1.5), gradxform.HyperparameterError, "signum", "beta"),
    (lambda: gradxform.rprop(0.1, eta_plus=-1.2), gradxform.HyperparameterError, "rprop", "eta_plus"),
    (lambda: gradxform.polyak_sgd(scaling=-1.0), gradxform.HyperparameterError, "polyak_sgd", "scaling"),
    (lambda: gradxform.polyak_sgd(variant="sps-"), gradxform.HyperparameterError, "polyak_sgd", "variant"),
]


@pytest.mark.parametrize("build,error,fn,arg", BAD_HYPERPARAMETERS,
                         ids=[f"{fn}-{arg}" for _, _, fn, arg in BAD_HYPERPARAMETERS])
def test_bad_hyperparameter_is_named(build, error, fn, arg):
  with pytest.raises(error) as info:
    build()
  assert fn in str(info.value) and f"`{arg}`" in str(info.value)


NEEDS_PARAMS = ["scale_by_factored_rms", "scale_by_trust_ratio", "scale_by_param_block_norm",
                "scale_by_param_block_rms", "scale_by_distance_over_gradients"]


@pytest.mark.parametrize("name", NEEDS_PARAMS)
def test_update_without_params_is_named(name):
  tx = getattr(gradxform, name)()
  params = mixed_params()
  with pytest.raises(gradxform.MissingParamsError, match=name):
    tx.update(gradients(params, 0), tx.init(params))


@pytest.mark.parametrize("build", [gradxform.scale_by_polyak, gradxform.polyak_sgd], ids=["scale_by_polyak",
                                                                                       "polyak_sgd"])
def test_polyak_without_value_is_named(build):
  tx = build()
  params = mixed_params()
  with pytest.raises(gradxform.MissingArgumentError, match="scale_by_polyak needs the keyword argument.* value"):
    tx.update(gradients(params, 0), tx.init(params), params)


@pytest.mark.parametrize("name", ["scale_by_factored_rms", "scale_by_rprop", "scale_by_distance_over_gradients"])
def test_foreign_state_is_rejected(name):
  tx = getattr(gradxform, name)(0.1) if name == "scale_by_rprop" else getattr(gradxform, name)()
  params = mixed_params()
  with pytest.raises(gradxform.StateMismatchError, match=name):
    tx.update(gradients(params, 0), gradxform.EmptyState(), params)


# ----------------------------------------------------------------------------------------------
# Signatures and state classes.

FUNCTIONS = """
scale_by_factored_rms scale_by_trust_ratio scale_by_param_block_norm scale_by_param_block_rms
normalize_by_update_norm centralize scale_by_distance_over_gradients scale_by_polyak scale_by_sign scale_by_rprop
adafactor lamb lars fromage sign_sgd signum rprop polyak_sgd
""".split()


def _parameters(fn):
  # A function default (adafactor's decay schedule) is compared by name: each library has its own.
  return [(p.name, p.kind, p.default.__name__ if inspect.isfunction(p.default) else p.default)
          for p in inspect.signature(fn).parameters.values()]


@pytest.mark.parametrize("name", FUNCTIONS)
def test_signature_matches_optax(name):
  assert _parameters(getattr(gradxform, name)) == _parameters(getattr(optax, name))


@pytest.mark.parametrize("name", ["FactoredState", "ScaleByRpropState", "ScaleByDistanceOverGradientsState"])
def test_state_class_matches_optax(name):
  ours = getattr(gradxform, name)
  theirs = getattr(optax, name, None) or getattr(optax_transform, name)
  assert ours.__name__ == theirs.__name__ and ours._fields == theirs._fields


def test_default_decay_schedule_matches_optax():
  """The default decay_rate_fn gives optax's values (the equivalence rows use it; this pins it alone)."""
  ours = inspect.signature(gradxform.scale_by_factored_rms).parameters["decay_rate_fn"].default
  theirs = inspect.signature(optax.scale_by_factored_rms).parameters["decay_rate_fn"].default
  steps = jnp.arange(6, dtype=jnp.int32)
  assert_trees_equivalent(ours(steps, 0.8), theirs(steps, 0.8), "decay schedule")
