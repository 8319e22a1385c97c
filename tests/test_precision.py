"""The dtype policy: `nu_dtype` on the Adam family and `mixed_precision` around any transformation.

`nu_dtype` (a gradxform addition, keyword-only, default None = optax's behaviour) stores the second moment in
its own dtype. `mixed_precision(inner)` runs `inner.update` in float32 for bfloat16/float16 leaves and casts
updates and state back, so nothing changes dtype across steps. Every multi-step run here is one jitted
`lax.scan`, so each case compiles once.
"""

from __future__ import annotations

import functools
import inspect
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from optax._src import alias as optax_alias

import gradxform
from convergence import STEPS, digits_data
from equivalence import canonical

STATE_STEPS = 100


def _params(dtypes=(jnp.bfloat16, jnp.float32, jnp.bfloat16)):
  """A small tree: a matrix, a vector and a nested matrix, in the given dtypes."""
  k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
  return {"w": jax.random.normal(k1, (4, 5), jnp.float32).astype(dtypes[0]),
          "b": jax.random.normal(k2, (3,), jnp.float32).astype(dtypes[1]),
          "blocks": [jax.random.normal(k3, (2, 3), jnp.float32).astype(dtypes[2])]}


def _loss(params):
  """A quadratic with its minimum at 0.5, summed in float32 whatever the leaves' dtypes."""
  return sum(0.5 * jnp.sum(jnp.square(p.astype(jnp.float32) - 0.5)) for p in jax.tree.leaves(params))


def _grads_at(params, t):
  """Deterministic pseudo-gradients for step t, typed like the params, of magnitudes 0.1, 1 and 10 by leaf
  (cheap to compile, unlike a PRNG per step); complex leaves get an imaginary part too."""
  leaves, treedef = jax.tree.flatten(params)
  out = []
  for i, p in enumerate(leaves):
    phase = jnp.arange(p.size, dtype=jnp.float32).reshape(p.shape) * 0.7 + t.astype(jnp.float32) * (1.3 + i)
    g = 10.0 ** (i % 3 - 1) * jnp.sin(phase)
    if jnp.iscomplexobj(p):
      g = jax.lax.complex(g, jnp.cos(phase))
    out.append(g.astype(p.dtype))
  return treedef.unflatten(out)


def _finite(tree) -> bool:
  return all(np.all(np.isfinite(np.asarray(x) if jnp.iscomplexobj(x) else np.asarray(x, np.float32)))
             for x in jax.tree.leaves(tree))


def _train(tx, params, steps, *, grads="loss", extra_args=None, standard_promotion=False):
  """`steps` steps of `tx` in one scan; returns ((final params, final state), per-step updates)."""
  apply = optax.apply_updates if standard_promotion else gradxform.apply_updates

  def step(carry, t):
    params, state = carry
    if grads == "loss":
      value, g = jax.value_and_grad(_loss)(params)
    else:
      value, g = None, _grads_at(params, t)
    kwargs = {} if extra_args is None else extra_args(value, g)
    with jax.numpy_dtype_promotion("standard" if standard_promotion else "strict"):
      updates, state = tx.update(g, state, params, **kwargs)
      return (apply(params, updates), state), updates

  with jax.numpy_dtype_promotion("standard" if standard_promotion else "strict"):
    state = tx.init(params)
  return jax.lax.scan(step, (params, state), jnp.arange(steps))


def _layout(tree):
  """Structure, shapes and dtypes (of arrays or of `jax.eval_shape` results)."""
  return jax.tree.structure(tree), [(tuple(x.shape), x.dtype) for x in jax.tree.leaves(tree)]


def _dtypes_by_field(state) -> dict[str, set]:
  """{state field name: the dtypes of its leaves}, e.g. {"mu": {bfloat16}, "nu": {float32}, "count": {int32}}."""
  out: dict[str, set] = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
    fields = [entry.name for entry in path if isinstance(entry, jax.tree_util.GetAttrKey)]
    out.setdefault(fields[-1], set()).add(leaf.dtype)
  return out


def _assert_bit_equal(ours, theirs, what):
  ours, theirs = canonical(ours), canonical(theirs)
  assert jax.tree.structure(ours) == jax.tree.structure(theirs), what
  for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs)):
    assert a.dtype == b.dtype, what
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=what)


def _quiet(build):
  """Builds, silencing optimistic_adam's deprecation warning (the suite turns warnings into errors)."""
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    return build()


# ----------------------------------------------------------------------------------------------
# nu_dtype.


NU_DTYPE = {  # every function given nu_dtype, as a builder of nu_dtype
    "adam": lambda nu: gradxform.adam(1e-2, nu_dtype=nu),
    "adamw": lambda nu: gradxform.adamw(1e-2, weight_decay=0.1, nu_dtype=nu),
    "nadam": lambda nu: gradxform.nadam(1e-2, nu_dtype=nu),
    "nadamw": lambda nu: gradxform.nadamw(1e-2, nu_dtype=nu),
    "amsgrad": lambda nu: gradxform.amsgrad(1e-2, nu_dtype=nu),
    "optimistic_adam": lambda nu: gradxform.optimistic_adam(1e-2, nu_dtype=nu),
    "optimistic_adam_v2": lambda nu: gradxform.optimistic_adam_v2(1e-2, nu_dtype=nu),
    "scale_by_adam": lambda nu: gradxform.scale_by_adam(nu_dtype=nu),
    "scale_by_amsgrad": lambda nu: gradxform.scale_by_amsgrad(nu_dtype=nu),
    "scale_by_novograd": lambda nu: gradxform.scale_by_novograd(nu_dtype=nu),
    "contrib.ademamix": lambda nu: gradxform.contrib.ademamix(1e-2, nu_dtype=nu),
    "contrib.scale_by_ademamix": lambda nu: gradxform.contrib.scale_by_ademamix(nu_dtype=nu),
    "contrib.adopt": lambda nu: gradxform.contrib.adopt(1e-2, nu_dtype=nu),
    "contrib.scale_by_adopt": lambda nu: gradxform.contrib.scale_by_adopt(nu_dtype=nu),
}
SECOND_MOMENTS = {"nu", "nu_max"}
FIRST_MOMENTS = {"mu", "m1", "m2", "previous_gradient"}
# These run 100 jitted steps; for every function, one traced step (`jax.eval_shape`, nothing compiled) proves
# the layout is a fixed point of `update`, hence kept for any number of steps. (The None path of the others is
# proven equal to optax by test_adaptive / test_contrib_adaptive.)
LONG_RUNS = ("adam", "adamw", "nadam", "amsgrad")


def test_every_function_with_nu_dtype_is_covered():
  """The table above is every gradxform function with a `nu_dtype` parameter, at the top level and in contrib."""
  found = {prefix + name for module, prefix in ((gradxform, ""), (gradxform.contrib, "contrib."))
           for name in dir(module) if not name.startswith("_") and callable(getattr(module, name))
           and _has_parameter(getattr(module, name), "nu_dtype")}
  assert found == set(NU_DTYPE)


def _has_parameter(fn, name):
  try:
    return name in inspect.signature(fn).parameters
  except (TypeError, ValueError):
    return False


def _assert_float32_nu_bfloat16_rest(state, updates):
  fields = _dtypes_by_field(state)
  assert set().union(*(fields[f] for f in SECOND_MOMENTS & set(fields))) == {jnp.dtype(jnp.float32)}
  assert set().union(*(fields[f] for f in FIRST_MOMENTS & set(fields))) == {jnp.dtype(jnp.bfloat16)}
  # The update keeps the dtype it has without nu_dtype (the params' here): nu_dtype changes storage only.
  assert {u.dtype for u in jax.tree.leaves(updates)} == {jnp.dtype(jnp.bfloat16)}


@pytest.mark.parametrize("name", sorted(NU_DTYPE))
def test_float32_nu_for_bfloat16_params_is_a_fixed_layout(name):
  params = _params((jnp.bfloat16,) * 3)
  tx = _quiet(lambda: NU_DTYPE[name](jnp.float32))
  init = jax.eval_shape(tx.init, params)
  updates, state = jax.eval_shape(tx.update, params, init, params)
  assert _layout(state) == _layout(init)
  _assert_float32_nu_bfloat16_rest(state, updates)


def test_float32_nu_for_bfloat16_params_for_100_jitted_steps():
  params = _params((jnp.bfloat16,) * 3)
  txs = {name: NU_DTYPE[name](jnp.float32) for name in LONG_RUNS}
  # One compiled program for all four (one compile is cheaper than four).
  runs = jax.jit(lambda p: {name: _train(tx, p, STATE_STEPS, grads="synthetic") for name, tx in txs.items()})(params)
  for name, ((final_params, state), updates) in runs.items():
    assert _layout(state) == _layout(jax.eval_shape(txs[name].init, params)), name
    _assert_float32_nu_bfloat16_rest(state, updates)
    assert _finite(updates) and _finite(final_params) and _finite(state), name


def test_bfloat16_nu_for_float32_params():
  """The other direction (halving nu's memory): nu stays bfloat16, mu and the updates float32."""
  params = _params((jnp.float32,) * 3)
  tx = gradxform.adam(1e-2, nu_dtype=jnp.bfloat16)
  (_, state), updates = jax.jit(lambda p: _train(tx, p, 20, grads="synthetic"))(params)
  assert _dtypes_by_field(state) == {"count": {jnp.dtype(jnp.int32)}, "mu": {jnp.dtype(jnp.float32)},
                                     "nu": {jnp.dtype(jnp.bfloat16)}}
  assert {u.dtype for u in jax.tree.leaves(updates)} == {jnp.dtype(jnp.float32)}


def test_float32_nu_accumulates_bfloat16_gradients_exactly():
  """With a constant gradient g, nu_t = (1 - b2^t) g^2: a float32 nu gets it to float32 precision, while
  optax's bfloat16 nu (nu_dtype=None) drifts by more than 0.1% after 100 steps (the reason for nu_dtype)."""
  g = {"w": jnp.asarray([0.3, -1.7, 5.0, 1e-3], jnp.bfloat16)}
  exact = (1 - 0.999 ** STATE_STEPS) * np.square(np.asarray(g["w"], np.float64))

  def nu_after(nu_dtype):
    tx = gradxform.scale_by_adam(nu_dtype=nu_dtype)
    step = lambda state, _: (tx.update(g, state)[1], None)
    return jax.lax.scan(step, tx.init(g), None, length=STATE_STEPS)[0].nu["w"]

  wide, narrow = jax.jit(lambda: (nu_after(jnp.float32), nu_after(None)))()
  assert wide.dtype == jnp.float32 and narrow.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(wide, np.float64), exact, rtol=1e-5)
  assert np.max(np.abs(np.asarray(narrow, np.float64) / exact - 1)) > 1e-3


def test_default_nu_dtype_is_optax_bit_for_bit():
  """On float32 params, nu_dtype=None and nu_dtype=float32 both give optax's updates and state exactly."""
  cases = {"adam": {}, "nadamw": {"weight_decay": 0.1}, "amsgrad": {}}  # nadamw: Nesterov and weight decay
  params = _params((jnp.float32,) * 3)

  def run(p):
    out = {}
    for name, kwargs in cases.items():
      out[name] = (_train(getattr(gradxform, name)(1e-2, **kwargs), p, 30, grads="synthetic"),
                   _train(getattr(gradxform, name)(1e-2, nu_dtype=jnp.float32, **kwargs), p, 30, grads="synthetic"),
                   _train(getattr(optax, name)(1e-2, **kwargs), p, 30, grads="synthetic", standard_promotion=True))
    return out

  for name, (ours, explicit, theirs) in jax.jit(run)(params).items():
    _assert_bit_equal(ours, theirs, f"{name}: nu_dtype=None vs optax")
    _assert_bit_equal(explicit, theirs, f"{name}: nu_dtype=float32 vs optax")


def test_nu_dtype_defaults_keep_optax_layout():
  params = _params()
  for name in ("adam", "amsgrad"):
    ours, theirs = getattr(gradxform, name)(1e-2).init(params), getattr(optax, name)(1e-2).init(params)
    assert _layout(canonical(ours)) == _layout(canonical(theirs))


@pytest.mark.parametrize("name", sorted(NU_DTYPE))
@pytest.mark.parametrize("bad", [jnp.int32, "not a dtype"])
def test_bad_nu_dtype_is_named(name, bad):
  with pytest.raises(gradxform.HyperparameterTypeError, match=r"nu_dtype"):
    _quiet(lambda: NU_DTYPE[name](bad))


def test_nu_dtype_through_inject_hyperparams():
  """A dtype object (not the callable scalar type jnp.bfloat16, which inject_hyperparams would take for a
  schedule, as optax does with mu_dtype) or `static_args` keeps nu_dtype static."""
  params = {"w": jnp.ones((3,), jnp.float32)}
  for tx in (gradxform.inject_hyperparams(gradxform.adam)(1e-3, nu_dtype=jnp.dtype(jnp.bfloat16)),
             gradxform.inject_hyperparams(gradxform.adam, static_args=("nu_dtype",))(1e-3, nu_dtype=jnp.bfloat16)):
    init = jax.eval_shape(tx.init, params)
    updates, state = jax.eval_shape(tx.update, params, init, params)
    assert _layout(state) == _layout(init) and _dtypes_by_field(state)["nu"] == {jnp.dtype(jnp.bfloat16)}
    assert updates["w"].dtype == jnp.float32


def test_nu_dtype_is_static_and_hashable():
  assert gradxform.adam(1e-3, nu_dtype=jnp.float32) == gradxform.adam(1e-3, nu_dtype="float32")
  assert gradxform.adam(1e-3, nu_dtype=jnp.float32) != gradxform.adam(1e-3)
  hash(gradxform.adamw(1e-3, nu_dtype=jnp.float32))


# ----------------------------------------------------------------------------------------------
# mixed_precision around every optimizer alias.


def _optax_aliases() -> list[str]:
  """optax's optimizer aliases (the functions and partials defined in its alias module)."""
  return sorted(name for name, value in vars(optax_alias).items()
                if not name.startswith("_") and hasattr(optax, name)
                and (inspect.isfunction(value) and value.__module__ == optax_alias.__name__
                     or isinstance(value, functools.partial)))


def _line_search_args(value, grads):
  return {"value": value, "grad": grads, "value_fn": _loss}


ALIASES = {  # name: (constructor arguments, extra arguments of update)
    "adabelief": ({"learning_rate": 1e-2}, None), "adadelta": ({}, None), "adafactor": ({}, None),
    "adagrad": ({"learning_rate": 1e-2}, None), "adam": ({"learning_rate": 1e-2}, None),
    "adamax": ({"learning_rate": 1e-2}, None), "adamaxw": ({"learning_rate": 1e-2}, None),
    "adamw": ({"learning_rate": 1e-2}, None), "adan": ({"learning_rate": 1e-2}, None),
    "amsgrad": ({"learning_rate": 1e-2}, None), "fromage": ({"learning_rate": 1e-2}, None),
    "lamb": ({"learning_rate": 1e-2}, None), "lars": ({"learning_rate": 1e-2}, None),
    "lbfgs": ({}, _line_search_args), "lion": ({"learning_rate": 1e-2}, None),
    "nadam": ({"learning_rate": 1e-2}, None), "nadamw": ({"learning_rate": 1e-2}, None),
    "noisy_sgd": ({"learning_rate": 1e-2, "key": 0}, None), "novograd": ({"learning_rate": 1e-2}, None),
    "optimistic_adam": ({"learning_rate": 1e-2}, None), "optimistic_adam_v2": ({"learning_rate": 1e-2}, None),
    "optimistic_gradient_descent": ({"learning_rate": 1e-2}, None),
    "polyak_sgd": ({}, lambda value, grads: {"value": value}), "radam": ({"learning_rate": 1e-2}, None),
    "rmsprop": ({"learning_rate": 1e-2}, None), "rprop": ({"learning_rate": 1e-2}, None),
    "sgd": ({"learning_rate": 1e-2}, None), "sign_sgd": ({"learning_rate": 1e-2}, None),
    "signum": ({"learning_rate": 1e-2}, None), "sm3": ({"learning_rate": 1e-2}, None),
    "yogi": ({"learning_rate": 1e-2}, None),
}


def test_every_alias_is_in_the_table():
  assert set(ALIASES) == set(_optax_aliases())


def test_mixed_precision_keeps_state_layout_for_every_alias():
  """bfloat16 + float32 params: after 100 steps each alias's state has init's structure and dtypes, the updates
  have the params' dtypes, and updates and params stay finite. All aliases run in one compiled program (one
  compile of 31 scans costs about half of 31 compiles); problems are collected and reported by name."""
  params = _params()
  txs = {name: gradxform.mixed_precision(_quiet(functools.partial(getattr(gradxform, name), **kwargs)))
         for name, (kwargs, _) in ALIASES.items()}
  runs = jax.jit(lambda p: {name: _train(tx, p, STATE_STEPS, extra_args=ALIASES[name][1])
                            for name, tx in txs.items()})(params)
  problems = []
  for name, ((final_params, state), updates) in runs.items():
    if _layout(state) != _layout(jax.eval_shape(txs[name].init, params)):
      problems.append(f"{name}: state layout changed")
    if jax.tree.map(lambda u: u.dtype, updates) != jax.tree.map(lambda p: p.dtype, params):
      problems.append(f"{name}: updates not in the params' dtypes")
    if not (_finite(updates) and _finite(final_params)):
      problems.append(f"{name}: not finite")
  assert not problems, problems


# ----------------------------------------------------------------------------------------------
# mixed_precision: exactness on wide leaves, and the details of the contract.


EXACT_INNERS = {
    "adam": lambda: gradxform.adam(1e-2),
    "sgd_momentum": lambda: gradxform.sgd(1e-2, momentum=0.9, nesterov=True),
    "optax_adam": lambda: optax.adam(1e-2),
}


def test_mixed_precision_is_the_inner_transformation_on_float32():
  """With float32 (and complex64) params and state nothing is cast: updates and state equal the inner's bit for
  bit. (A narrow state leaf, e.g. nu_dtype=bfloat16, is widened, so its arithmetic runs in float32.)"""
  params = {"w": jax.random.normal(jax.random.key(2), (4, 5), jnp.float32),
            "b": jnp.linspace(-1.0, 1.0, 3, dtype=jnp.float32),
            "z": jnp.asarray([1 + 2j, -0.5j, 3.0], jnp.complex64)}
  inners = {name: build() for name, build in EXACT_INNERS.items()}

  def run(p):
    return {name: (_train(inner, p, 20, grads="synthetic", standard_promotion=name.startswith("optax")),
                   _train(gradxform.mixed_precision(inner), p, 20, grads="synthetic",
                          standard_promotion=name.startswith("optax")))
            for name, inner in inners.items()}

  for name, (plain, mixed) in jax.jit(run)(params).items():
    _assert_bit_equal(mixed, plain, f"mixed_precision({name}) vs {name}")


def test_float16_adam_underflows_without_mixed_precision_and_not_with_it():
  """float16 cannot hold g^2 = 1e-8 or eps = 1e-8, so optax's (and plain) Adam divides 0 by 0; in float32
  it does not. Here mixed_precision is what makes float16 Adam usable."""
  params = {"w": jnp.ones((3,), jnp.float16)}
  grads = {"w": jnp.full((3,), 1e-4, jnp.float16)}
  plain, mixed = gradxform.adam(1e-3), gradxform.mixed_precision(gradxform.adam(1e-3))
  (plain_updates, _), (mixed_updates, mixed_state) = jax.jit(lambda p, g: (
      plain.update(g, plain.init(p), p), mixed.update(g, mixed.init(p), p)))(params, grads)
  assert not bool(jnp.all(jnp.isfinite(plain_updates["w"])))
  assert mixed_updates["w"].dtype == jnp.float16 and bool(jnp.all(jnp.isfinite(mixed_updates["w"])))
  np.testing.assert_allclose(np.asarray(mixed_updates["w"], np.float32), -1e-3, rtol=1e-3)
  assert mixed_state[0].nu["w"].dtype == jnp.float16


def test_mixed_precision_none_leaves_extra_args_and_counters():
  params = {"w": jnp.ones((2, 2), jnp.bfloat16), "frozen": jnp.arange(3), "b": jnp.zeros((2,), jnp.float32)}
  grads = {"w": jnp.full((2, 2), 0.5, jnp.bfloat16), "frozen": None, "b": jnp.ones((2,), jnp.float32)}
  tx = gradxform.mixed_precision(gradxform.polyak_sgd())
  state = tx.init({"w": params["w"], "frozen": None, "b": params["b"]})
  with pytest.raises(gradxform.MissingArgumentError, match="value"):
    tx.update(grads, state, params)
  updates, new_state = jax.jit(lambda g, s, p: tx.update(g, s, p, value=jnp.asarray(2.0, jnp.bfloat16), unused=1))(
      grads, state, params)
  assert updates["frozen"] is None
  assert updates["w"].dtype == jnp.bfloat16 and updates["b"].dtype == jnp.float32
  assert _layout(new_state) == _layout(state)

  adam = gradxform.mixed_precision(gradxform.adam(1e-2, mu_dtype=jnp.float32))
  state = adam.init(grads)
  updates, new_state = jax.jit(adam.update)(grads, state)
  assert updates["frozen"] is None and new_state[0].mu["frozen"] is None
  assert new_state[0].count.dtype == jnp.int32 and int(new_state[0].count) == 1
  assert _dtypes_by_field(new_state)["mu"] == {jnp.dtype(jnp.float32)}  # the inner's choice, kept
  assert _dtypes_by_field(new_state)["nu"] == {jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float32)}


def test_mixed_precision_is_hashable_and_checks_its_arguments():
  assert gradxform.mixed_precision(gradxform.adam(1e-3)) == gradxform.mixed_precision(gradxform.adam(1e-3))
  assert hash(gradxform.mixed_precision(gradxform.adam(1e-3))) == hash(gradxform.mixed_precision(gradxform.adam(1e-3)))
  assert gradxform.mixed_precision(gradxform.adam(1e-3)) != gradxform.mixed_precision(gradxform.adam(1e-3),
                                                                                       jnp.bfloat16)
  for bad in (jnp.int32, jnp.complex64, "not a dtype", None):
    with pytest.raises(gradxform.HyperparameterTypeError, match="mixed_precision.*compute_dtype"):
      gradxform.mixed_precision(gradxform.adam(1e-3), bad)
  with pytest.raises(gradxform.HyperparameterTypeError, match="mixed_precision.*inner"):
    gradxform.mixed_precision(0.1)


# ----------------------------------------------------------------------------------------------
# bfloat16 training on the digits (softmax regression of convergence.py, params stored in bfloat16).


def _digits_loss(params, x, y):
  logits = x @ params["w"].astype(jnp.float32) + params["b"].astype(jnp.float32)
  return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1))


def _digits_accuracy(tx, dtype) -> float:
  (x, y), (x_test, y_test) = digits_data()
  params = {"w": jnp.zeros((64, 10), dtype), "b": jnp.zeros((10,), dtype)}

  @jax.jit
  def run(params):
    def step(carry, _):
      params, state = carry
      grads = jax.grad(_digits_loss)(params, x, y)
      updates, state = tx.update(grads, state, params)
      return (gradxform.apply_updates(params, updates), state), None
    return jax.lax.scan(step, (params, tx.init(params)), None, length=STEPS)[0][0]

  params = run(params)
  assert {p.dtype for p in jax.tree.leaves(params)} == {jnp.dtype(dtype)}
  logits = x_test @ params["w"].astype(jnp.float32) + params["b"].astype(jnp.float32)
  return float(jnp.mean(jnp.argmax(logits, axis=1) == y_test))


def test_bfloat16_training_matches_float32_accuracy():
  """Adam (lr 0.05, 150 full-batch steps): bfloat16 params and updates under mixed_precision reach the float32
  accuracy within one point (measured: 0.972 both)."""
  f32 = _digits_accuracy(gradxform.adam(0.05), jnp.float32)
  bf16 = _digits_accuracy(gradxform.mixed_precision(gradxform.adam(0.05)), jnp.bfloat16)
  assert f32 >= 0.95
  assert abs(bf16 - f32) <= 0.01, (bf16, f32)
