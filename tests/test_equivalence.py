"""Every transformation, optimizer and combinator of the core, run against optax 0.2.8.

Each row is built in both libraries with the same arguments and run for a few steps on the mixed
pytree (nested dict/list/tuple, shapes (), (3,), (4, 5), (2, 3, 4), float32 and bfloat16), eagerly
and under jax.jit; updates, params and the full state (class names, fields, dtypes, values) must agree.
"""

import jax
import jax.numpy as jnp
import pytest

from equivalence import Ref, assert_equivalent


def matrices_only(params):
  """A mask: True for leaves of rank >= 2 (weights), False for vectors and scalars."""
  return jax.tree.map(lambda p: jnp.ndim(p) >= 2, params)


def halve(updates, params):
  del params
  return jax.tree.map(lambda g: g * 0.5, updates)


def add_sign(g, p):
  return g + 0.01 * jnp.sign(p) if p is not None else g


WARMUP_COSINE = Ref("warmup_cosine_decay_schedule", 0.0, 0.1, 2, 10)
LINEAR = Ref("linear_schedule", 0.1, 0.01, 4)
EXPONENTIAL = Ref("exponential_decay", 0.05, 2, 0.5)

TRANSFORMATIONS = [
    Ref("identity"), Ref("set_to_zero"), Ref("stateless", halve), Ref("stateless_with_tree_map", add_sign),
    Ref("scale", 0.5), Ref("scale", -2.0),
    Ref("scale_by_learning_rate", 0.1), Ref("scale_by_learning_rate", 0.1, flip_sign=False),
    Ref("scale_by_learning_rate", WARMUP_COSINE), Ref("scale_by_schedule", LINEAR),
    Ref("trace", 0.9), Ref("trace", 0.9, nesterov=True), Ref("trace", 0.5, accumulator_dtype=jnp.bfloat16),
    Ref("ema", 0.9), Ref("ema", 0.9, debias=False), Ref("ema", 0.7, accumulator_dtype=jnp.float32),
    Ref("scale_by_adam"), Ref("scale_by_adam", b1=0.5, b2=0.9, eps=1e-3, eps_root=1e-8),
    Ref("scale_by_adam", nesterov=True), Ref("scale_by_adam", mu_dtype=jnp.bfloat16),
    Ref("scale_by_amsgrad"), Ref("scale_by_amsgrad", b1=0.8, eps_root=1e-6, bias_correction_mu=False),
    Ref("scale_by_amsgrad", bias_correction_nu=False, mu_dtype=jnp.bfloat16),
    Ref("scale_by_adamax"), Ref("scale_by_adamax", b1=0.5, b2=0.9, eps=1e-3),
    Ref("scale_by_radam"), Ref("scale_by_radam", b2=0.9, threshold=2.0),
    Ref("scale_by_radam", b2=0.9, threshold=2.0, nesterov=True),
    Ref("scale_by_rms"), Ref("scale_by_rms", decay=0.5, eps=1e-3, initial_scale=1.0, eps_in_sqrt=False),
    Ref("scale_by_rms", bias_correction=True),
    Ref("scale_by_stddev"), Ref("scale_by_stddev", decay=0.5, eps=1e-3, initial_scale=1.0, eps_in_sqrt=False),
    Ref("scale_by_stddev", bias_correction=True),
    Ref("scale_by_rss"), Ref("scale_by_rss", initial_accumulator_value=0.0, eps=1e-5),
    Ref("scale_by_adadelta"), Ref("scale_by_adadelta", rho=0.5, eps=1e-3),
    Ref("add_decayed_weights", 0.1), Ref("add_decayed_weights", 0.0), Ref("add_decayed_weights", EXPONENTIAL),
    Ref("add_decayed_weights", 0.1, mask=matrices_only),
    Ref("add_decayed_weights", 0.1, mask={"dense": {"w": True, "b": False}, "blocks": False, "scale": True}),
    Ref("clip", 0.5), Ref("clip", 100.0), Ref("clip_by_global_norm", 1.0), Ref("clip_by_global_norm", 1e4),
    Ref("chain", Ref("clip_by_global_norm", 1.0), Ref("scale_by_adam"), Ref("scale", -0.01)),
    Ref("named_chain", ("clip", Ref("clip", 1.0)), ("adam", Ref("adam", 1e-2))),
    Ref("masked", Ref("adam", 1e-2), matrices_only),
]

OPTIMIZERS = [
    Ref("sgd", 0.1), Ref("sgd", 0.1, momentum=0.9), Ref("sgd", 0.1, momentum=0.9, nesterov=True),
    Ref("sgd", LINEAR, momentum=0.5, accumulator_dtype=jnp.bfloat16),
    Ref("adagrad", 0.1), Ref("adagrad", LINEAR, initial_accumulator_value=0.5, eps=1e-5),
    Ref("rmsprop", 1e-2), Ref("rmsprop", 1e-2, centered=True), Ref("rmsprop", 1e-2, momentum=0.9, nesterov=True),
    Ref("rmsprop", LINEAR, decay=0.5, eps=1e-3, initial_scale=1.0, eps_in_sqrt=False, bias_correction=True),
    Ref("rmsprop", 1e-2, centered=True, bias_correction=True), Ref("rmsprop", 1e-2, centered=True, momentum=0.5),
    Ref("adadelta"), Ref("adadelta", 1.0, rho=0.5, eps=1e-4, weight_decay=0.1, weight_decay_mask=matrices_only),
    Ref("adam", 1e-2), Ref("adam", WARMUP_COSINE), Ref("adam", 1e-2, b1=0.5, b2=0.9, eps=1e-4, eps_root=1e-8),
    Ref("adam", 1e-2, nesterov=True), Ref("adam", 1e-2, mu_dtype=jnp.bfloat16),
    Ref("adamw", 1e-2), Ref("adamw", WARMUP_COSINE, weight_decay=0.1, mask=matrices_only),
    Ref("adamw", 1e-2, weight_decay=EXPONENTIAL, nesterov=True),
    Ref("nadam", 1e-2), Ref("nadam", LINEAR, b1=0.8, nesterov=False),
    Ref("nadamw", 1e-2), Ref("nadamw", 1e-2, weight_decay=0.05, mask=matrices_only),
    Ref("adamax", 1e-2), Ref("adamax", LINEAR, b1=0.5, eps=1e-4),
    Ref("adamaxw", 1e-2), Ref("adamaxw", 1e-2, weight_decay=0.1, mask=matrices_only),
    Ref("amsgrad", 1e-2), Ref("amsgrad", WARMUP_COSINE, bias_correction_mu=False, bias_correction_nu=False),
    Ref("radam", 1e-2), Ref("radam", 1e-2, b2=0.9, threshold=2.0), Ref("radam", LINEAR, b2=0.9, nesterov=True),
    Ref("chain", Ref("clip_by_global_norm", 1.0), Ref("adamw", WARMUP_COSINE, weight_decay=1e-4)),
]

# RAdam's rectified branch switches on only after a few steps: run those rows longer.
LONG_RUNS = {"scale_by_radam", "radam"}




def _centred_with_bias_correction(spec):
  kwargs = dict(spec.kwargs)
  return (spec.name == "scale_by_stddev" or kwargs.get("centered")) and kwargs.get("bias_correction")


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("spec", TRANSFORMATIONS + OPTIMIZERS, ids=repr)
def test_equivalent_to_optax(spec, jit):
  assert_equivalent(spec, steps=8 if spec.name in LONG_RUNS else 3, jit=jit,
                    noisy_first_update=_centred_with_bias_correction(spec))


COMPLEX_PARAMS = {"c": (jnp.arange(6.0, dtype=jnp.float32) - 2.5).astype(jnp.complex64) * (1 + 0.5j),
                  "r": jnp.linspace(-1.0, 1.0, 6, dtype=jnp.float32).reshape(2, 3)}

COMPLEX_ROWS = [
    Ref("sgd", 0.1, momentum=0.9), Ref("adam", 1e-2), Ref("adamw", 1e-2), Ref("rmsprop", 1e-2, centered=True),
    Ref("adagrad", 0.1), Ref("adadelta"), Ref("amsgrad", 1e-2), Ref("adamax", 1e-2), Ref("radam", 1e-2),
    Ref("chain", Ref("clip_by_global_norm", 1.0), Ref("nadam", 1e-2)), Ref("ema", 0.9),
]


@pytest.mark.parametrize("spec", COMPLEX_ROWS, ids=repr)
def test_complex_parameters_match_optax(spec):
  """Complex leaves work wherever optax supports them (|g|^2 moments, real-valued norms)."""
  assert_equivalent(spec, params=COMPLEX_PARAMS, jit=True)
