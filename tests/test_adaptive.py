"""AdaBelief, Yogi, Adan, NovoGrad, Lion, optimistic gradients, SM3 and gradient noise, against optax 0.2.8.

Table rows run in both libraries (eager and jitted) on the mixed pytree and compare updates, params and
full states; every optimizer alias also trains on the digits data; bad arguments get clear errors.
"""

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import optax
from optax._src import transform as optax_transform
import pytest

import gradxform
from tests.extensions import optax_parameters
from gradxform import _adaptive
from convergence import assert_trains
from equivalence import Ref, assert_equivalent, assert_trees_equivalent, gradients, mixed_params


def matrices_only(params):
  """A mask: True for leaves of rank >= 2."""
  return jax.tree.map(lambda p: jnp.ndim(p) >= 2, params)


LINEAR = Ref("linear_schedule", 0.1, 0.01, 4)
WARMUP_COSINE = Ref("warmup_cosine_decay_schedule", 0.0, 0.1, 2, 10)
EXPONENTIAL = Ref("exponential_decay", 0.05, 2, 0.5)
BF16 = jnp.bfloat16

# Each transformation with its defaults, plus the options its optimizer alias does not pass on; the alias
# rows set every other option to a non-default value (several per row, to keep the suite fast).
TRANSFORMATIONS = [
    Ref("scale_by_belief"), Ref("scale_by_adan"), Ref("scale_by_optimistic_gradient"),
    Ref("scale_by_yogi"), Ref("scale_by_yogi", b1=0.5, b2=0.9, eps=1e-4, eps_root=1e-8, initial_accumulator_value=0.5),
    Ref("scale_by_novograd"), Ref("scale_by_novograd", mu_dtype=BF16),
    Ref("scale_by_lion"), Ref("scale_by_lion", mode="smooth", smooth_beta=2.0), Ref("scale_by_lion", mode="refined"),
]

OPTIMIZERS = [
    Ref("adabelief", 1e-2), Ref("adabelief", LINEAR, b1=0.5, b2=0.9, eps=1e-8, eps_root=1e-10, nesterov=True),
    Ref("yogi", 1e-2), Ref("yogi", WARMUP_COSINE, b1=0.5, b2=0.9, eps=1e-4),
    Ref("adan", 1e-2),
    Ref("adan", LINEAR, b1=0.9, b2=0.5, b3=0.9, eps=1e-4, eps_root=0.0, weight_decay=EXPONENTIAL, mask=matrices_only),
    Ref("novograd", 1e-2), Ref("novograd", LINEAR, b1=0.5, b2=0.5, eps=1e-4, eps_root=1e-6, weight_decay=0.1),
    Ref("lion", 1e-3),
    Ref("lion", LINEAR, b1=0.5, b2=0.9, mu_dtype=BF16, weight_decay=EXPONENTIAL, mask=matrices_only),
    Ref("optimistic_gradient_descent", 0.1), Ref("optimistic_gradient_descent", LINEAR, alpha=0.5, beta=0.2),
    Ref("optimistic_adam_v2", 1e-2),
    Ref("optimistic_adam_v2", LINEAR, alpha=0.5, beta=0.2, b1=0.5, b2=0.9, eps=1e-4, eps_root=1e-8, mu_dtype=BF16,
        nesterov=False),
]

# optimistic_adam is deprecated in optax: both libraries warn on construction.
DEPRECATED = [
    Ref("optimistic_adam", 1e-2),
    Ref("optimistic_adam", 1e-2, optimism=0.05, b1=0.5, b2=0.9, eps=1e-4, eps_root=1e-8, mu_dtype=BF16,
        nesterov=False),
]


def no_scalar_params():
  """The mixed pytree without its 0-d leaf: SM3 keeps one accumulator per axis, so scalars have none."""
  params = mixed_params()
  return {"dense": params["dense"], "blocks": [params["blocks"][0], (params["blocks"][1][1],)],
          "scale": params["scale"]}


SM3_ROWS = [Ref("scale_by_sm3"), Ref("scale_by_sm3", b1=0.5, b2=0.9, eps=1e-4), Ref("sm3", 0.05, momentum=0.5)]

JIT = pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])


@JIT
@pytest.mark.parametrize("spec", TRANSFORMATIONS + OPTIMIZERS, ids=repr)
def test_equivalent_to_optax(spec, jit):
  assert_equivalent(spec, jit=jit)


@JIT
@pytest.mark.parametrize("spec", DEPRECATED, ids=repr)
def test_optimistic_adam_equivalent_to_optax(spec, jit):
  with pytest.warns(DeprecationWarning, match="optimistic_adam"):
    assert_equivalent(spec, jit=jit)


@JIT
@pytest.mark.parametrize("spec", SM3_ROWS, ids=repr)
def test_sm3_equivalent_to_optax(spec, jit):
  assert_equivalent(spec, jit=jit, params=no_scalar_params())


COMPLEX_PARAMS = {"c": (jnp.arange(6.0, dtype=jnp.float32) - 2.5).astype(jnp.complex64) * (1 + 0.5j),
                  "r": jnp.linspace(-1.0, 1.0, 6, dtype=jnp.float32).reshape(2, 3)}


@pytest.mark.parametrize("spec", [Ref("yogi", 1e-2), Ref("adan", 1e-2)], ids=repr)
def test_complex_parameters_match_optax(spec):
  assert_equivalent(spec, params=COMPLEX_PARAMS, jit=True)


# ----------------------------------------------------------------------------------------------
# Gradient noise: the state holds a PRNG key, compared through its key data.


def _unwrap_keys(tree):
  return jax.tree.map(lambda x: jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x,
                      tree)


def assert_equivalent_with_key(spec, jit, steps=3):
  """`assert_equivalent` for transformations whose state holds a typed PRNG key."""
  params = mixed_params()
  ours, theirs = spec.build(gradxform), spec.build(optax)
  ours_update = jax.jit(ours.update) if jit else ours.update
  ours_state = jax.jit(ours.init)(params) if jit else ours.init(params)
  with jax.numpy_dtype_promotion("standard"):
    theirs_state = theirs.init(params)
    theirs_update = jax.jit(theirs.update) if jit else theirs.update
    ours_params = theirs_params = params
    for step in range(steps):
      assert_trees_equivalent(_unwrap_keys(ours_state), _unwrap_keys(theirs_state), f"{spec}: state, step {step}")
      grads = gradients(params, step)
      theirs_updates, theirs_state = theirs_update(grads, theirs_state, theirs_params)
      theirs_params = optax.apply_updates(theirs_params, theirs_updates)
      with jax.numpy_dtype_promotion("strict"):
        ours_updates, ours_state = ours_update(grads, ours_state, ours_params)
        ours_params = gradxform.apply_updates(ours_params, ours_updates)
      assert_trees_equivalent(ours_updates, theirs_updates, f"{spec}: updates at step {step}")
      assert_trees_equivalent(ours_params, theirs_params, f"{spec}: params at step {step}")
  assert_trees_equivalent(_unwrap_keys(ours_state), _unwrap_keys(theirs_state), f"{spec}: final state")


NOISE_ROWS = [Ref("add_noise", 0.01, 0.55, 0), Ref("noisy_sgd", LINEAR, eta=0.1, gamma=1.0, key=jax.random.key(7))]


@JIT
@pytest.mark.parametrize("spec", NOISE_ROWS, ids=lambda spec: " ".join(repr(spec).split()))
def test_noise_equivalent_to_optax(spec, jit):
  assert_equivalent_with_key(spec, jit)


def test_noise_without_key_warns_and_uses_seed_zero():
  with pytest.warns(UserWarning, match="key"):
    tx = gradxform.add_noise(0.1, 0.5)
  params = mixed_params()
  ours, _ = tx.update(gradients(params, 0), tx.init(params))
  expected, _ = gradxform.add_noise(0.1, 0.5, 0).update(gradients(params, 0), tx.init(params))
  assert_trees_equivalent(ours, expected, "add_noise without key", rtol=1e-7)


def test_noise_seed_is_deprecated_and_equals_key():
  with pytest.warns(DeprecationWarning, match="seed"):
    tx = gradxform.noisy_sgd(0.1, seed=4)
  params = mixed_params()
  state = tx.init(params)
  np.testing.assert_array_equal(jax.random.key_data(state[0].rng_key),
                                jax.random.key_data(jax.random.key(4)))
  with pytest.warns(DeprecationWarning), pytest.raises(gradxform.HyperparameterError, match="add_noise.*key.*seed"):
    gradxform.add_noise(0.1, 0.5, 1, seed=4)


# ----------------------------------------------------------------------------------------------
# None leaves, hashing.


# The leafwise pattern makes every transformation here treat None alike; these rows cover the special
# layouts (per-axis lists, 0-d averages inside lax.cond, a previous gradient, one PRNG key per leaf).
NONE_ROWS = [Ref("scale_by_adan"), Ref("novograd", 0.1), Ref("optimistic_adam_v2", 0.1), Ref("scale_by_sm3"),
             Ref("noisy_sgd", 0.1, key=1)]


def _leaves_under_b(state):
  with_path, _ = jax.tree_util.tree_flatten_with_path(state)
  return [x for path, x in with_path if "'b'" in jax.tree_util.keystr(path)]


@pytest.mark.parametrize("spec", NONE_ROWS, ids=repr)
def test_none_leaves_pass_through(spec):
  """A None update leaf gives a None update and keeps its state; other leaves act as if it were absent."""
  params = {"a": jnp.linspace(-1.0, 1.0, 6).reshape(2, 3), "b": jnp.arange(1.0, 4.0)}
  alone = {"a": params["a"]}
  tx = spec.build(gradxform)
  state, alone_state = tx.init(params), tx.init(alone)
  for step in range(2):
    grads = {"a": jnp.full((2, 3), 0.3 + step), "b": None}
    updates, state = tx.update(grads, state, params)
    alone_updates, alone_state = tx.update({"a": grads["a"]}, alone_state, alone)
    assert updates["b"] is None
    np.testing.assert_allclose(updates["a"], alone_updates["a"], rtol=1e-6)
  for before, after in zip(_leaves_under_b(tx.init(params)), _leaves_under_b(state), strict=True):
    np.testing.assert_array_equal(before, after)


def test_construction_is_hashable_and_compares_by_value():
  for build in (lambda: gradxform.adan(1e-2, weight_decay=0.1), lambda: gradxform.scale_by_lion(mode="smooth"),
                lambda: gradxform.sm3(0.1), lambda: gradxform.noisy_sgd(0.1, key=3)):
    assert build() == build() and hash(build()) == hash(build())
  assert gradxform.scale_by_belief() != gradxform.scale_by_belief(nesterov=True)


# ----------------------------------------------------------------------------------------------
# Convergence.


OPTIMIZER_RUNS = {
    "adabelief": lambda: gradxform.adabelief(0.05),
    "adabelief_nesterov": lambda: gradxform.adabelief(0.05, nesterov=True),
    "yogi": lambda: gradxform.yogi(0.05),
    "adan": lambda: gradxform.adan(0.05, weight_decay=1e-4),
    "novograd": lambda: gradxform.novograd(0.1),
    "lion": lambda: gradxform.lion(0.005),
    "optimistic_gradient_descent": lambda: gradxform.optimistic_gradient_descent(0.5),
    "optimistic_adam_v2": lambda: gradxform.optimistic_adam_v2(0.05),
    "sm3": lambda: gradxform.sm3(0.5),
    "noisy_sgd": lambda: gradxform.noisy_sgd(1.0, key=0),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZER_RUNS))
def test_optimizer_trains_on_digits(name):
  assert_trains(OPTIMIZER_RUNS[name]())


def test_optimistic_adam_trains_on_digits():
  with pytest.warns(DeprecationWarning):
    tx = gradxform.optimistic_adam(0.05)
  assert_trains(tx)


# ----------------------------------------------------------------------------------------------
# Errors.


BAD_ARGUMENTS = [
    (lambda: gradxform.scale_by_belief(b1=1.0), "scale_by_belief", "b1"),
    (lambda: gradxform.scale_by_belief(eps_root=-1.0), "scale_by_belief", "eps_root"),
    (lambda: gradxform.scale_by_yogi(initial_accumulator_value=-1e-6), "scale_by_yogi", "initial_accumulator_value"),
    (lambda: gradxform.scale_by_yogi(b2=-0.1), "scale_by_yogi", "b2"),
    (lambda: gradxform.scale_by_adan(b3=1.5), "scale_by_adan", "b3"),
    (lambda: gradxform.scale_by_novograd(weight_decay=-0.1), "scale_by_novograd", "weight_decay"),
    (lambda: gradxform.scale_by_lion(b1=1.1), "scale_by_lion", "b1"),
    (lambda: gradxform.scale_by_lion(mode="soft"), "scale_by_lion", "mode"),
    (lambda: gradxform.scale_by_optimistic_gradient(alpha="1"), "scale_by_optimistic_gradient", "alpha"),
    (lambda: gradxform.scale_by_sm3(b2=1.5), "scale_by_sm3", "b2"),
    (lambda: gradxform.add_noise(-0.1, 0.5, 0), "add_noise", "eta"),
    (lambda: gradxform.add_noise(0.1, 0.5, jax.random.PRNGKey(0)), "add_noise", "key"),
    (lambda: gradxform.adabelief(-1e-3), "adabelief", "learning_rate"),
    (lambda: gradxform.yogi(1e-3, eps=-1.0), "yogi", "eps"),
    (lambda: gradxform.adan(1e-3, weight_decay=-0.1), "adan", "weight_decay"),
    (lambda: gradxform.novograd(1e-3, weight_decay=lambda count: 0.1), "novograd", "weight_decay"),
    (lambda: gradxform.lion(1e-3, b2=1.0), "lion", "b2"),
    (lambda: gradxform.optimistic_gradient_descent(0.1, beta=lambda count: 0.1), "optimistic_gradient_descent", "beta"),
    (lambda: gradxform.optimistic_adam_v2(0.1, alpha=float("nan")), "optimistic_adam_v2", "alpha"),
    (lambda: gradxform.sm3(optax.linear_schedule(0.1, 0.0, 10)), "sm3", "learning_rate"),
    (lambda: gradxform.sm3(0.1, momentum=1.0), "sm3", "momentum"),
    (lambda: gradxform.noisy_sgd(0.1, eta=-1.0, key=0), "noisy_sgd", "eta"),
]


@pytest.mark.parametrize("build, fn, arg", BAD_ARGUMENTS, ids=[f"{fn}-{arg}" for _, fn, arg in BAD_ARGUMENTS])
def test_bad_hyperparameters_raise_clear_errors(build, fn, arg):
  with pytest.raises((gradxform.HyperparameterError, gradxform.HyperparameterTypeError)) as info:
    build()
  assert fn in str(info.value) and f"`{arg}`" in str(info.value)


def test_optimistic_adam_rejects_schedules_like_optax():
  with pytest.warns(DeprecationWarning), pytest.raises(ValueError, match="optimistic_adam.*learning_rate"):
    gradxform.optimistic_adam(optax.linear_schedule(0.1, 0.0, 10))


def test_sm3_rejects_complex_and_scalar_params():
  for params, what in (({"w": jnp.ones((2, 2), jnp.complex64)}, "complex"), ({"s": jnp.ones(())}, "0-d")):
    with pytest.raises(ValueError, match=rf"scale_by_sm3.*\['{list(params)[0]}'\].*{what}") as info:
      gradxform.sm3(0.1).init(params)
    assert isinstance(info.value, gradxform.LeafTypeError)


def test_novograd_needs_params():
  tx = gradxform.novograd(0.1)
  params = {"w": jnp.ones(3)}
  with pytest.raises(gradxform.MissingParamsError, match="scale_by_novograd"):
    tx.update(params, tx.init(params))


@pytest.mark.parametrize("name", ["scale_by_belief", "scale_by_yogi", "scale_by_adan", "scale_by_novograd",
                                  "scale_by_lion", "scale_by_optimistic_gradient", "scale_by_sm3"])
def test_wrong_state_is_named(name):
  tx, other = getattr(gradxform, name)(), gradxform.trace(0.9)
  params = {"w": jnp.ones(3)}
  with pytest.raises(gradxform.StateMismatchError, match=name):
    tx.update(params, other.init(params), params)


def test_add_noise_wrong_state_is_named():
  params = {"w": jnp.ones(3)}
  with pytest.raises(gradxform.StateMismatchError, match="add_noise"):
    gradxform.add_noise(0.1, 0.5, 0).update(params, gradxform.trace(0.9).init(params), params)


# ----------------------------------------------------------------------------------------------
# Signatures and state classes.


FUNCTIONS = """
scale_by_belief scale_by_yogi scale_by_adan scale_by_novograd scale_by_lion scale_by_optimistic_gradient
scale_by_sm3 add_noise adabelief yogi adan novograd lion optimistic_gradient_descent optimistic_adam
optimistic_adam_v2 sm3 noisy_sgd
""".split()


def _parameters(fn):
  return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]


@pytest.mark.parametrize("name", FUNCTIONS)
def test_signature_matches_optax(name):
  assert optax_parameters(getattr(gradxform, name)) == _parameters(getattr(optax, name))


@pytest.mark.parametrize("ours, theirs", [
    (getattr(gradxform, n), getattr(optax, n)) for n in
    "ScaleByBeliefState ScaleByAdanState ScaleByNovogradState ScaleByLionState ScaleBySM3State AddNoiseState".split()
] + [(_adaptive.ScaleByOptimisticGradientState, optax_transform.ScaleByOptimisticGradientState)],
                         ids=lambda cls: cls.__name__)
def test_state_class_fields_match_optax(ours, theirs):
  assert ours.__name__ == theirs.__name__
  assert ours._fields == theirs._fields
