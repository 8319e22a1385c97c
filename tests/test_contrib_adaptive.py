"""gradxform.contrib's adaptive optimizers against optax.contrib 0.2.8: ACProp, AdEMAMix (and its
simplified form), ADOPT, COCOB, MADGRAD, D-Adaptation AdamW, Prodigy, and split_real_and_imaginary.

Each row runs eagerly and under jax.jit on the mixed pytree; updates, params and the full state must agree.
"""

import inspect

import jax
import jax.numpy as jnp
import optax
import pytest

import gradxform
from tests.extensions import EXTENSIONS
from tests.extensions import without_extensions
from convergence import assert_trains
from equivalence import Ref, assert_equivalent


def matrices_only(params):
  return jax.tree.map(lambda p: jnp.ndim(p) >= 2, params)


def square_root_bound(count):
  return jnp.sqrt(count.astype(jnp.float32)) + 0.5


LINEAR = Ref("linear_schedule", 0.05, 0.01, 4)
B3_SCHEDULE = Ref("linear_schedule", 0.9, 0.99, 3)
ALPHA_SCHEDULE = Ref("linear_schedule", 0.0, 4.0, 2)

ROWS = [
    Ref("contrib.scale_by_acprop"), Ref("contrib.scale_by_acprop", b1=0.5, b2=0.9, eps=1e-6, eps_root=1e-8),
    Ref("contrib.acprop", 1e-2), Ref("contrib.acprop", LINEAR, weight_decay=0.1, mask=matrices_only),
    Ref("contrib.scale_by_ademamix"),
    Ref("contrib.scale_by_ademamix", b1=0.5, b2=0.9, b3=B3_SCHEDULE, alpha=ALPHA_SCHEDULE, eps=1e-4, eps_root=1e-8,
        mu_dtype=jnp.bfloat16),
    Ref("contrib.ademamix", 1e-2),
    Ref("contrib.ademamix", LINEAR, b3=0.99, alpha=2.0, mu_dtype=jnp.float32, weight_decay=0.1, mask=matrices_only),
    Ref("contrib.scale_by_simplified_ademamix"),
    Ref("contrib.scale_by_simplified_ademamix", b1=0.9, b2=0.99, alpha=ALPHA_SCHEDULE, eps=1e-4, eps_root=1e-8),
    Ref("contrib.simplified_ademamix", 1e-3),
    Ref("contrib.simplified_ademamix", LINEAR, alpha=1.0, weight_decay=0.1, mask=matrices_only),
    Ref("contrib.scale_by_adopt"),
    Ref("contrib.scale_by_adopt", b1=0.5, b2=0.9, eps=1e-3, mu_dtype=jnp.bfloat16, nesterov=True,
        clip_value_fn=square_root_bound),
    Ref("contrib.scale_by_adopt", use_clipping=False),
    Ref("contrib.adopt", 1e-2), Ref("contrib.adopt", LINEAR, nesterov=True, use_clipping=False),
    Ref("contrib.scale_by_cocob"), Ref("contrib.scale_by_cocob", alpha=10.0, eps=1e-4),
    Ref("contrib.cocob"), Ref("contrib.cocob", LINEAR, alpha=10.0, weight_decay=0.1, mask=matrices_only),
    Ref("contrib.scale_by_madgrad", 1e-2), Ref("contrib.scale_by_madgrad", LINEAR, momentum=0.5, eps=1e-4),
    Ref("contrib.madgrad", 1e-2), Ref("contrib.madgrad", 1e-2, momentum=0.0, weight_decay=0.1, eps=1e-3),
    Ref("contrib.dadapt_adamw"),
    Ref("contrib.dadapt_adamw", LINEAR, betas=(0.5, 0.9), eps=1e-6, estim_lr0=1e-3, weight_decay=0.1),
    Ref("contrib.prodigy"),
    Ref("contrib.prodigy", LINEAR, betas=(0.5, 0.9), beta3=0.8, eps=1e-6, estim_lr0=1e-3, estim_lr_coef=2.0,
        weight_decay=0.1),
    Ref("contrib.prodigy", 1.0, safeguard_warmup=True),
    Ref("contrib.split_real_and_imaginary", Ref("contrib.acprop", 1e-2)),
]


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("spec", ROWS, ids=repr)
def test_equivalent_to_optax(spec, jit):
  assert_equivalent(spec, steps=3, jit=jit)


COMPLEX_PARAMS = {"c": (jnp.arange(6.0, dtype=jnp.float32) - 2.5).astype(jnp.complex64) * (1 + 0.5j),
                  "r": jnp.linspace(-1.0, 1.0, 6, dtype=jnp.float32).reshape(2, 3)}


@pytest.mark.parametrize("spec", [
    Ref("contrib.split_real_and_imaginary", Ref("adam", 1e-2)),
    Ref("contrib.split_real_and_imaginary", Ref("contrib.cocob")),
    Ref("contrib.split_real_and_imaginary", Ref("contrib.prodigy")),
    Ref("contrib.acprop", 1e-2), Ref("contrib.ademamix", 1e-2),
    Ref("contrib.adopt", 1e-2, use_clipping=False),  # clipping complex values fails in optax too
], ids=repr)
def test_complex_parameters_match_optax(spec):
  assert_equivalent(spec, params=COMPLEX_PARAMS, jit=True)


def test_extra_update_arguments_are_ignored():
  assert_equivalent(Ref("contrib.prodigy"), jit=True, extra_args=lambda params, grads, step: {"loss": 1.0 + step})


# ----------------------------------------------------------------------------------------------
# Every optimizer trains softmax regression on digits in 150 steps.

TRAINING = [
    gradxform.contrib.acprop(0.05), gradxform.contrib.ademamix(0.05, b3=0.999),
    gradxform.contrib.simplified_ademamix(5e-3), gradxform.contrib.adopt(0.05), gradxform.contrib.cocob(),
    gradxform.contrib.madgrad(0.05), gradxform.contrib.dadapt_adamw(), gradxform.contrib.prodigy(),
    gradxform.contrib.split_real_and_imaginary(gradxform.adam(0.05)),
]


@pytest.mark.parametrize("tx", TRAINING, ids=lambda tx: tx.update.label)
def test_trains_on_digits(tx):
  assert_trains(tx)


# ----------------------------------------------------------------------------------------------
# The API: signatures, state classes, names.

FUNCTIONS = """acprop scale_by_acprop ademamix scale_by_ademamix simplified_ademamix scale_by_simplified_ademamix
adopt scale_by_adopt cocob scale_by_cocob madgrad scale_by_madgrad dadapt_adamw prodigy
split_real_and_imaginary""".split()

STATES = "ScaleByAdemamixState ScaleBySimplifiedAdEMAMixState COCOBState MadgradState DAdaptAdamWState " \
         "ProdigyState SplitRealAndImaginaryState".split()


def _same_default(ours, theirs):
  if ours is inspect.Parameter.empty or theirs is inspect.Parameter.empty:
    return ours is theirs
  if inspect.isfunction(ours) and inspect.isfunction(theirs):  # a default function: compare what it computes
    counts = jnp.arange(5, dtype=jnp.int32)
    with jax.numpy_dtype_promotion("standard"):
      return bool(jnp.array_equal(ours(counts), theirs(counts)))
  return ours == theirs


@pytest.mark.parametrize("name", FUNCTIONS)
def test_signature_matches_optax(name):
  ours_fn = getattr(gradxform.contrib, name)
  ours = without_extensions(ours_fn, EXTENSIONS.get(("contrib", name), ())).parameters.values()
  theirs = inspect.signature(getattr(optax.contrib, name)).parameters.values()
  assert [(p.name, p.kind) for p in ours] == [(p.name, p.kind) for p in theirs]
  for a, b in zip(ours, theirs):
    assert _same_default(a.default, b.default), (a.name, a.default, b.default)


@pytest.mark.parametrize("name", STATES)
def test_state_class_fields_match_optax(name):
  ours, theirs = getattr(gradxform.contrib, name), getattr(optax.contrib, name)
  assert ours.__name__ == theirs.__name__ and ours._fields == theirs._fields


def test_names_are_exported():
  for name in FUNCTIONS + STATES:
    assert hasattr(gradxform.contrib, name), name


def test_transformations_compare_by_value():
  assert gradxform.contrib.prodigy(betas=(0.8, 0.9)) == gradxform.contrib.prodigy(betas=(0.8, 0.9))
  assert hash(gradxform.contrib.adopt(0.1)) == hash(gradxform.contrib.adopt(0.1))
  assert gradxform.contrib.ademamix(0.1) != gradxform.contrib.ademamix(0.2)


# ----------------------------------------------------------------------------------------------
# Clear errors.

BAD_ARGUMENTS = [
    ("scale_by_acprop", {"b1": 1.5}, "b1"), ("acprop", {"learning_rate": -1.0}, "learning_rate"),
    ("acprop", {"learning_rate": 0.1, "eps": -1.0}, "eps"),
    ("scale_by_ademamix", {"b3": 1.0}, "b3"), ("ademamix", {"learning_rate": 0.1, "alpha": "x"}, "alpha"),
    ("scale_by_simplified_ademamix", {"b2": -0.1}, "b2"),
    ("simplified_ademamix", {"learning_rate": 0.1, "weight_decay": -1.0}, "weight_decay"),
    ("scale_by_adopt", {"clip_value_fn": 3.0}, "clip_value_fn"), ("adopt", {"learning_rate": 0.1, "b2": 1.0}, "b2"),
    ("scale_by_cocob", {"alpha": 0.0}, "alpha"), ("cocob", {"eps": -1.0}, "eps"),
    ("scale_by_madgrad", {"learning_rate": 0.1, "momentum": 2.0}, "momentum"),
    ("madgrad", {"learning_rate": "fast"}, "learning_rate"),
    ("dadapt_adamw", {"betas": (0.9, 1.5)}, "betas[1]"), ("dadapt_adamw", {"betas": 0.9}, "betas"),
    ("prodigy", {"beta3": 1.0}, "beta3"), ("prodigy", {"estim_lr0": 0.0}, "estim_lr0"),
    ("split_real_and_imaginary", {"inner": 0.1}, "inner"),
]


@pytest.mark.parametrize("name,kwargs,argument", BAD_ARGUMENTS, ids=lambda x: str(x))
def test_bad_hyperparameters_raise_clear_errors(name, kwargs, argument):
  with pytest.raises((gradxform.HyperparameterError, gradxform.HyperparameterTypeError)) as info:
    getattr(gradxform.contrib, name)(**kwargs)
  assert name in str(info.value) and f"`{argument}`" in str(info.value)


@pytest.mark.parametrize("tx", [gradxform.contrib.cocob(), gradxform.contrib.madgrad(0.1),
                                gradxform.contrib.dadapt_adamw(), gradxform.contrib.prodigy()],
                         ids=lambda tx: tx.update.label)
def test_missing_params_raise(tx):
  params = {"w": jnp.ones(3)}
  with pytest.raises(gradxform.MissingParamsError, match=tx.update.label):
    tx.update(params, tx.init(params))


def test_wrong_state_is_named():
  params = {"w": jnp.ones(3)}
  with pytest.raises(gradxform.StateMismatchError, match="scale_by_ademamix"):
    gradxform.contrib.scale_by_ademamix().update(params, gradxform.contrib.adopt(0.1).init(params)[0])


def test_none_updates_pass_through():
  params = {"w": jnp.ones(3), "frozen": jnp.ones(2)}
  grads = {"w": jnp.full(3, 0.5), "frozen": None}
  for tx in (gradxform.contrib.acprop(0.1), gradxform.contrib.ademamix(0.1), gradxform.contrib.adopt(0.1),
             gradxform.contrib.simplified_ademamix(0.1)):
    state = tx.init(params)
    updates, _ = tx.update(grads, state, params)
    assert updates["frozen"] is None and updates["w"].shape == (3,)
