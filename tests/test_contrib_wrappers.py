"""gradxform.contrib's wrappers and loss-aware methods against optax.contrib 0.2.8.

Covers momo / momo_adam, sam / normalize, schedule_free and its aliases, sophia and Hutchinson's
estimator, differentially private aggregation / dpsgd and reduce_on_plateau: an equivalence table
(eager and jit), training on digits for each optimizer alias, signatures, state layouts and errors.
"""

import inspect
import warnings

import jax
import jax.numpy as jnp
import optax
import optax.contrib
import pytest

import gradxform
import gradxform.contrib
from gradxform import _errors
from gradxform.contrib import _sophia
from convergence import assert_trains, digits_data, digits_loss, train_digits
from equivalence import (Ref, _optax_apply, _optax_update, assert_equivalent, assert_trees_equivalent, gradients,
                         mixed_params)


def float32_params():
  """The shared params, all float32: optax's adapt_lower_bound and Hutchinson's jvp fail on mixed dtypes."""
  return jax.tree.map(lambda p: p.astype(jnp.float32), mixed_params())


def quadratic_value(params, grads, step):
  """`value=`: a loss that depends on the params (so MoMo's Polyak step is exercised)."""
  del grads, step
  return {"value": 0.01 * sum(jnp.sum(jnp.square(p.astype(jnp.float32))) for p in jax.tree.leaves(params))}


PLATEAU_LOSSES = (3.0, 2.0, 2.5, 2.5, 2.4, 2.6)


def plateau_value(params, grads, step):
  """`value=`: a loss that improves, then stalls, so the scale is reduced (and cools down)."""
  del params, grads
  return {"value": jnp.float32(PLATEAU_LOSSES[step])}


def smooth_loss(params):
  """A non-quadratic loss, so Hutchinson's Hessian-vector products depend on the params."""
  return sum(jnp.sum(jnp.sin(p.astype(jnp.float32)) * jnp.square(p.astype(jnp.float32)))
             for p in jax.tree.leaves(params))


def per_example_gradients(params, step):
  """Gradients with a leading batch axis of 3 examples (what DP aggregation takes)."""
  return jax.tree.map(lambda *xs: jnp.stack(xs), *[gradients(params, 10 * step + i) for i in range(3)])


LINEAR = Ref("linear_schedule", 0.1, 0.01, 4)
ASCENT = Ref("chain", Ref("contrib.normalize"), Ref("sgd", 0.05))

# (spec, params or None for the mixed ones, extra_args hook, steps)
TABLE = [
    (Ref("contrib.momo"), None, quadratic_value, 3),
    (Ref("contrib.momo", 0.1, weight_decay=0.1), None, quadratic_value, 3),
    (Ref("contrib.momo", 0.1, beta=0.5, lower_bound=-1.0, weight_decay=0.1, adapt_lower_bound=True),
     float32_params(), quadratic_value, 3),
    (Ref("contrib.momo", LINEAR, adapt_lower_bound=True), float32_params(), quadratic_value, 3),
    (Ref("contrib.momo_adam"), None, quadratic_value, 3),
    (Ref("contrib.momo_adam", LINEAR, weight_decay=0.1), None, quadratic_value, 3),
    (Ref("contrib.momo_adam", 0.1, b1=0.5, b2=0.9, eps=1e-4, lower_bound=-1.0, weight_decay=0.1,
         adapt_lower_bound=True), None, quadratic_value, 3),
    (Ref("contrib.momo_adam", 0.1, b1=0.5, b2=0.9, eps=1e-4, lower_bound=-1.0, weight_decay=0.1,
         adapt_lower_bound=True), float32_params(), quadratic_value, 3),
    (Ref("contrib.reduce_on_plateau"), None, plateau_value, 3),
    (Ref("contrib.reduce_on_plateau", factor=0.5, patience=1, rtol=0.0, atol=0.1, cooldown=1, min_scale=0.3),
     None, plateau_value, 6),
    (Ref("contrib.reduce_on_plateau", factor=0.5, patience=1, accumulation_size=2), None, plateau_value, 6),
    (Ref("contrib.normalize"), None, None, 3),
    (Ref("contrib.sam", Ref("sgd", 0.1), ASCENT), None, None, 4),
    (Ref("contrib.sam", Ref("adam", 0.1), Ref("sgd", 0.05, momentum=0.9), sync_period=3, reset_state=False),
     None, None, 6),
    (Ref("contrib.schedule_free", Ref("sgd", 0.1), 0.1), None, None, 3),
    (Ref("contrib.schedule_free", Ref("adam", 0.1), LINEAR, b1=0.5, weight_lr_power=1.0,
         state_dtype=jnp.float32), None, None, 3),
    (Ref("contrib.schedule_free_sgd"), None, None, 3),
    (Ref("contrib.schedule_free_sgd", 0.5, warmup_steps=2, b1=0.8, weight_decay=0.1, weight_lr_power=1.0,
         state_dtype=jnp.bfloat16), None, None, 3),
    (Ref("contrib.schedule_free_adamw"), None, None, 3),
    (Ref("contrib.schedule_free_adamw", 0.01, warmup_steps=2, b1=0.8, b2=0.9, eps=1e-4, weight_decay=0.1,
         weight_lr_power=1.0, state_dtype=jnp.float32), None, None, 3),
]


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("spec,params,extra_args,steps", TABLE, ids=[repr(row[0]) for row in TABLE])
def test_equivalent_to_optax(spec, params, extra_args, steps, jit):
  assert_equivalent(spec, steps=steps, jit=jit, params=params, extra_args=extra_args)


def assert_equivalent_closed(spec, *, jit, params, kwargs, steps=3, grads_fn=None):
  """As `assert_equivalent`, for what its hook cannot carry: keyword arguments that are functions
  (`obj_fn=`, `grad_fn=`, closed over rather than passed through jit) and typed PRNG keys in the state
  (compared through their key data)."""
  ours, theirs = spec.build(gradxform), spec.build(optax)
  unwrap = gradxform.tree_utils.tree_unwrap_random_key_data
  ours_update = lambda g, s, p: ours.update(g, s, p, **kwargs)  # noqa: E731
  theirs_update = lambda g, s, p: _optax_update(theirs)(g, s, p, **kwargs)  # noqa: E731
  ours_apply, theirs_apply = gradxform.apply_updates, _optax_apply
  if jit:
    ours_update, theirs_update = jax.jit(ours_update), jax.jit(theirs_update)
    ours_apply, theirs_apply = jax.jit(ours_apply), jax.jit(theirs_apply)
  ours_state = ours.init(params)
  with jax.numpy_dtype_promotion("standard"):
    theirs_state = theirs.init(params)
  assert_trees_equivalent(unwrap(ours_state), unwrap(theirs_state), f"{spec}: init state")
  ours_params = theirs_params = params
  for step in range(steps):
    grads = gradients(params, step) if grads_fn is None else grads_fn(params, step)
    ours_updates, ours_state = ours_update(grads, ours_state, ours_params)
    theirs_updates, theirs_state = theirs_update(grads, theirs_state, theirs_params)
    assert_trees_equivalent(ours_updates, theirs_updates, f"{spec}: updates at step {step}")
    assert_trees_equivalent(unwrap(ours_state), unwrap(theirs_state), f"{spec}: state at step {step}")
    ours_params, theirs_params = ours_apply(ours_params, ours_updates), theirs_apply(theirs_params, theirs_updates)
    assert_trees_equivalent(ours_params, theirs_params, f"{spec}: params at step {step}")


def _smooth_grad(params, i):
  del i
  return jax.grad(smooth_loss)(params)


_with_obj_fn = {"obj_fn": smooth_loss}
_with_grad_fn = {"grad_fn": _smooth_grad}
_no_kwargs = {}


# (spec, params or None, extra keyword arguments of update, steps, per-example gradients)
CLOSED_TABLE = [
    (Ref("contrib.sam", Ref("adam", 0.1), Ref("sgd", 0.05, momentum=0.9), sync_period=3, opaque_mode=True),
     None, _with_grad_fn, 3, False),
    (Ref("contrib.sam", Ref("sgd", 0.1), ASCENT, opaque_mode=True, reset_state=False), None, _with_grad_fn, 3,
     False),
    (Ref("contrib.hutchinson_estimator_diag_hessian"), float32_params(), _with_obj_fn, 3, False),
    (Ref("contrib.sophia", 0.1), float32_params(), _with_obj_fn, 3, False),
    (Ref("contrib.sophia", 0.1, b1=0.5, b2=0.9, eps=1e-3, weight_decay=0.1, gamma=0.5, clip_threshold=None,
         update_interval=2, hessian_diagonal_fn=Ref("contrib.hutchinson_estimator_diag_hessian",
                                                    jax.random.PRNGKey(3)), mu_dtype=jnp.bfloat16),
     float32_params(), _with_obj_fn, 3, False),
    (Ref("contrib.sophia", LINEAR, clip_threshold=0.05, update_interval=1, weight_decay_mask={
        "dense": {"w": True, "b": False}, "blocks": False, "scale": True}), float32_params(), _with_obj_fn, 3, False),
    (Ref("contrib.differentially_private_aggregate", 1.0, 0.5, 3), None, _no_kwargs, 3, True),
    (Ref("contrib.differentially_private_aggregate", 0.1, 2.0, key=jax.random.key(5)), None, _no_kwargs, 3, True),
    (Ref("contrib.dpsgd", 0.1, 1.0, 0.5, 3), None, _no_kwargs, 3, True),
    # float32 params: with per-example clipping the bfloat16 leaves' updates come back float32, and
    # gradxform's core `trace` keeps its buffer in the params' dtype where optax's widens it.
    (Ref("contrib.dpsgd", LINEAR, 0.1, 2.0, 7, momentum=0.9, nesterov=True), float32_params(), _no_kwargs, 3, True),
]


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("spec,params,kwargs,steps,per_example", CLOSED_TABLE,
                         ids=[repr(row[0]) for row in CLOSED_TABLE])
def test_equivalent_to_optax_closed_kwargs(spec, params, kwargs, steps, per_example, jit):
  with warnings.catch_warnings():
    # optax's dpsgd always passes its deprecated `seed` on; gradxform's does not warn.
    warnings.simplefilter("ignore", DeprecationWarning)
    assert_equivalent_closed(spec, jit=jit, params=mixed_params() if params is None else params,
                             kwargs=kwargs, steps=steps,
                             grads_fn=per_example_gradients if per_example else None)


def test_schedule_free_eval_params_matches_optax():
  params = mixed_params()
  ours, theirs = gradxform.contrib.schedule_free_adamw(0.1), optax.contrib.schedule_free_adamw(0.1)
  ours_state = ours.init(params)
  with jax.numpy_dtype_promotion("standard"):
    theirs_state = theirs.init(params)
    theirs_updates, theirs_state = theirs.update(gradients(params, 0), theirs_state, params)
    theirs_eval = optax.contrib.schedule_free_eval_params(theirs_state, optax.apply_updates(params, theirs_updates))
  ours_updates, ours_state = ours.update(gradients(params, 0), ours_state, params)
  ours_eval = gradxform.contrib.schedule_free_eval_params(ours_state, gradxform.apply_updates(params, ours_updates))
  assert_trees_equivalent(ours_eval, theirs_eval, "schedule_free_eval_params")


# ----------------------------------------------------------------------------------------------
# Training on digits.


def _loss_value(params, loss, grads):
  del params, grads
  return {"value": loss}


def _digits_obj_fn(params, loss, grads):
  del params, loss, grads
  (x, y), _ = digits_data()
  return {"obj_fn": lambda p: digits_loss(p, x, y)}


@pytest.mark.parametrize("tx,extra_args", [
    (gradxform.contrib.momo(), _loss_value),
    (gradxform.contrib.momo_adam(0.1), _loss_value),
    (gradxform.contrib.schedule_free_sgd(1.0), None),
    (gradxform.contrib.schedule_free_adamw(0.05), None),
    (gradxform.contrib.sophia(0.5, update_interval=5), _digits_obj_fn),
], ids=["momo", "momo_adam", "schedule_free_sgd", "schedule_free_adamw", "sophia"])
def test_alias_trains(tx, extra_args):
  assert_trains(tx, extra_args=extra_args)


def test_dpsgd_trains():
  """DP-SGD on per-example gradients of digits (small noise): the loss falls and accuracy is high."""
  (x, y), (x_test, y_test) = digits_data()
  x, y = x[:256], y[:256]
  tx = gradxform.contrib.dpsgd(0.5, l2_norm_clip=5.0, noise_multiplier=0.01, seed=0, momentum=0.9)
  params = {"w": jnp.zeros((64, 10), jnp.float32), "b": jnp.zeros((10,), jnp.float32)}
  per_example = jax.vmap(jax.grad(lambda p, xi, yi: digits_loss(p, xi[None], yi[None])), in_axes=(None, 0, 0))

  @jax.jit
  def run(params):
    def step(carry, _):
      params, state = carry
      updates, state = tx.update(per_example(params, x, y), state, params)
      return (gradxform.apply_updates(params, updates), state), digits_loss(params, x, y)
    (params, _), losses = jax.lax.scan(step, (params, tx.init(params)), None, length=150)
    return params, losses

  params, losses = run(params)
  accuracy = jnp.mean(jnp.argmax(x_test @ params["w"] + params["b"], axis=1) == y_test)
  assert losses[-1] < 0.3 * losses[0], (losses[0], losses[-1])
  assert accuracy >= 0.9, accuracy


def test_reduce_on_plateau_scales_an_optimizer():
  """Chained after SGD, the plateau scale never grows, and training still works."""
  tx = gradxform.chain(gradxform.sgd(0.5), gradxform.contrib.reduce_on_plateau(patience=3, factor=0.5))
  first, last, accuracy = train_digits(tx, extra_args=_loss_value)
  assert last < 0.3 * first and accuracy >= 0.9, (first, last, accuracy)


def test_sam_trains():
  tx = gradxform.contrib.sam(gradxform.sgd(0.5), gradxform.chain(gradxform.contrib.normalize(), gradxform.sgd(0.05)))
  first, last, accuracy = train_digits(tx, steps=300)  # half the calls are ascent steps
  assert last < 0.3 * first and accuracy >= 0.9, (first, last, accuracy)


# ----------------------------------------------------------------------------------------------
# API: signatures, state layouts, hashing.

MODULES = ["_momo", "_sam", "_schedule_free", "_sophia", "_privacy", "_reduce_on_plateau"]
PUBLIC = sorted(name for module in MODULES
                for name in getattr(gradxform.contrib, module).__all__)


def test_public_names_exported():
  import importlib
  expected = set()
  for module in MODULES:
    expected |= {n for n in dir(importlib.import_module(f"optax.contrib.{module}"))
                 if n in optax.contrib.__dict__ and not n.startswith("_")
                 and getattr(optax.contrib, n).__module__ == f"optax.contrib.{module}"}
  expected.add("NormalizeState")  # an alias of base.EmptyState, defined in optax.contrib._sam
  assert set(PUBLIC) == expected
  for name in PUBLIC:
    assert getattr(gradxform.contrib, name) is not None


def _same_default(ours, theirs):
  if isinstance(theirs, optax.GradientTransformation):
    return isinstance(ours, gradxform.GradientTransformation)  # the default estimator, built by each library
  return ours == theirs and type(ours) is type(theirs)


@pytest.mark.parametrize("name", [n for n in PUBLIC if not n[0].isupper()] + ["scale_by_sophia"])
def test_signature_matches_optax(name):
  ours = getattr(gradxform.contrib, name, None) or getattr(_sophia, name)
  theirs = getattr(optax.contrib, name, None) or getattr(optax.contrib._sophia, name)
  ours_params, theirs_params = inspect.signature(ours).parameters, inspect.signature(theirs).parameters
  assert list(ours_params) == list(theirs_params)
  for p, q in zip(ours_params.values(), theirs_params.values()):
    assert p.kind == q.kind, p.name
    assert _same_default(p.default, q.default), p.name


@pytest.mark.parametrize("name", [n for n in PUBLIC if n.endswith("State")])
def test_state_fields_match_optax(name):
  assert getattr(gradxform.contrib, name)._fields == getattr(optax.contrib, name)._fields


def test_equal_arguments_give_equal_transformations():
  assert gradxform.contrib.momo(0.5) == gradxform.contrib.momo(0.5)
  assert hash(gradxform.contrib.schedule_free_adamw()) == hash(gradxform.contrib.schedule_free_adamw())
  assert gradxform.contrib.reduce_on_plateau(patience=3) != gradxform.contrib.reduce_on_plateau(patience=4)


# ----------------------------------------------------------------------------------------------
# Errors.


@pytest.mark.parametrize("build,fn,arg", [
    (lambda: gradxform.contrib.momo(beta=1.5), "momo", "beta"),
    (lambda: gradxform.contrib.momo(learning_rate=-1.0), "momo", "learning_rate"),
    (lambda: gradxform.contrib.momo_adam(b2=1.0), "momo_adam", "b2"),
    (lambda: gradxform.contrib.momo_adam(weight_decay=-0.1), "momo_adam", "weight_decay"),
    (lambda: gradxform.contrib.reduce_on_plateau(factor=1.0), "reduce_on_plateau", "factor"),
    (lambda: gradxform.contrib.reduce_on_plateau(rtol=1.5), "reduce_on_plateau", "rtol"),
    (lambda: gradxform.contrib.reduce_on_plateau(rtol=0.0, atol=0.0), "reduce_on_plateau", "atol"),
    (lambda: gradxform.contrib.sam(gradxform.sgd(0.1), gradxform.sgd(0.1), sync_period=0), "sam", "sync_period"),
    (lambda: gradxform.contrib.schedule_free(gradxform.sgd(0.1), 0.1, b1=0.0), "schedule_free", "b1"),
    (lambda: gradxform.contrib.schedule_free_sgd(warmup_steps=0), "schedule_free_sgd", "warmup_steps"),
    (lambda: gradxform.contrib.schedule_free_adamw(b2=-0.5), "schedule_free_adamw", "b2"),
    (lambda: gradxform.contrib.sophia(0.1, b1=1.0), "sophia", "b1"),
    (lambda: gradxform.contrib.sophia(0.1, update_interval=0), "sophia", "update_interval"),
    (lambda: gradxform.contrib.dpsgd(0.1, 1.0, 0.5, 0, momentum=1.0), "dpsgd", "momentum"),
    (lambda: gradxform.contrib.differentially_private_aggregate(-1.0, 0.5, key=0),
     "differentially_private_aggregate", "l2_norm_clip"),
    (lambda: gradxform.contrib.differentially_private_aggregate(1.0, 0.5, key=0, seed=0),
     "differentially_private_aggregate", "seed"),
])
def test_bad_hyperparameters_raise(build, fn, arg):
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    with pytest.raises(_errors.HyperparameterError) as info:
      build()
  assert fn in str(info.value) and arg in str(info.value)


def test_missing_value_and_params_raise():
  params = mixed_params()
  grads = gradients(params, 0)
  for tx, name in [(gradxform.contrib.momo(), "momo"), (gradxform.contrib.momo_adam(), "momo_adam"),
                   (gradxform.contrib.reduce_on_plateau(), "reduce_on_plateau")]:
    with pytest.raises(_errors.MissingArgumentError, match=f"{name}.*value"):
      tx.update(grads, tx.init(params), params)
  tx = gradxform.contrib.momo()
  with pytest.raises(_errors.MissingParamsError, match="momo"):
    tx.update(grads, tx.init(params), None, value=1.0)
  tx = gradxform.contrib.schedule_free_sgd()
  with pytest.raises(_errors.MissingParamsError, match="schedule_free"):
    tx.update(grads, tx.init(params))
  tx = gradxform.contrib.sam(gradxform.sgd(0.1), gradxform.sgd(0.1), opaque_mode=True)
  with pytest.raises(_errors.MissingArgumentError, match="sam.*grad_fn"):
    tx.update(grads, tx.init(params), params)
  tx = gradxform.contrib.sophia(0.1)
  with pytest.raises(_errors.MissingArgumentError, match="hutchinson.*obj_fn"):
    tx.update(grads, tx.init(params), params)


def test_wrong_state_and_eval_params_raise():
  params = mixed_params()
  with pytest.raises(_errors.StateMismatchError, match="momo"):
    gradxform.contrib.momo().update(gradients(params, 0), gradxform.sgd(0.1).init(params), params, value=1.0)
  with pytest.raises(_errors.StateMismatchError, match="schedule_free_eval_params"):
    gradxform.contrib.schedule_free_eval_params(gradxform.adam(0.1).init(params), params)


def test_dp_aggregate_warns_like_optax():
  with pytest.warns(DeprecationWarning, match="seed"):
    gradxform.contrib.differentially_private_aggregate(1.0, 0.5, seed=0)
  with pytest.warns(UserWarning, match="key"):
    gradxform.contrib.differentially_private_aggregate(1.0, 0.5)
