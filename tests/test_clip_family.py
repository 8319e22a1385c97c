"""The clipping family against optax 0.2.8: block-RMS and adaptive (unit-wise) clipping as transformations,
per-example clipping of gradients with a leading batch axis, unit-wise norms, validation and signatures."""

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.transforms
import pytest

import gradxform
from gradxform import _clip
from equivalence import Ref, assert_equivalent, assert_trees_equivalent, gradients, mixed_params


def _standard(fn, *args, **kwargs):
  """Runs optax under standard dtype promotion (it relies on implicit promotion)."""
  with jax.numpy_dtype_promotion("standard"):
    return fn(*args, **kwargs)


def conv_params() -> dict:
  """Layer-shaped params for the unit-wise defaults: Conv3D, Conv2D, dense, multi-head, bias, (1, n) row."""
  keys = jax.random.split(jax.random.key(2), 6)
  return {
      "conv3d": jax.random.normal(keys[0], (2, 2, 2, 3, 4), jnp.float32),
      "conv": jax.random.normal(keys[1], (3, 3, 2, 4), jnp.bfloat16),
      "dense": jax.random.normal(keys[2], (4, 5), jnp.float32),
      "heads": jax.random.normal(keys[3], (2, 3, 4), jnp.bfloat16),
      "bias": jax.random.normal(keys[4], (5,), jnp.float32),
      "row": jax.random.normal(keys[5], (1, 5), jnp.float32),
  }


# ----------------------------------------------------------------------------------------------
# Transformations: the equivalence table.

# Gradient leaves have RMS 0.1, 1 or 10 (see equivalence.gradients): the thresholds clip some, not all.
ON_MIXED = [
    Ref("clip_by_block_rms", 0.5), Ref("clip_by_block_rms", 0.0),
    Ref("clip_by_block_rms", np.float32(0.5)),  # a strongly typed threshold promotes bfloat16 leaves
    Ref("adaptive_grad_clip", 0.1), Ref("adaptive_grad_clip", 1.0, eps=0.5),
    Ref("adaptive_grad_clip", np.float32(0.2), eps=np.float32(1e-2)),
    Ref("chain", Ref("adaptive_grad_clip", 0.1), Ref("sgd", 0.1)),
]

ON_LAYERS = [
    Ref("adaptive_grad_clip", 0.1), Ref("adaptive_grad_clip", 0.05, axis=-1),
    Ref("adaptive_grad_clip", 0.3, eps=1e-1, axis=(0,)),
]


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("spec", ON_MIXED, ids=repr)
def test_matches_optax_on_mixed_params(spec, jit):
  assert_equivalent(spec, jit=jit)


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("spec", ON_LAYERS, ids=repr)
def test_matches_optax_on_layer_shaped_params(spec, jit):
  assert_equivalent(spec, jit=jit, params=conv_params())


@pytest.mark.parametrize("name,args", [("clip_by_block_rms", (0.5,)), ("adaptive_grad_clip", (0.1,))])
def test_none_update_leaves_pass_through(name, args):
  params = {"a": jnp.arange(1.0, 7.0).reshape(2, 3), "frozen": jnp.ones(3)}
  grads = {"a": jnp.arange(6.0).reshape(2, 3) * 4.0, "frozen": None}
  ours, _ = getattr(gradxform, name)(*args).update(grads, gradxform.EmptyState(), params)
  theirs, _ = _standard(getattr(optax, name)(*args).update, {"a": grads["a"]}, optax.EmptyState(),
                        {"a": params["a"]})
  assert ours["frozen"] is None
  assert_trees_equivalent(ours["a"], theirs["a"], f"{name} with a None leaf")


def test_equal_arguments_give_equal_hashable_transformations():
  assert gradxform.adaptive_grad_clip(0.1, axis=(0, 1)) == gradxform.adaptive_grad_clip(0.1, axis=(0, 1))
  assert hash(gradxform.clip_by_block_rms(0.5)) == hash(gradxform.clip_by_block_rms(0.5))
  assert gradxform.adaptive_grad_clip(0.1) != gradxform.adaptive_grad_clip(0.2)


# ----------------------------------------------------------------------------------------------
# Per-example clipping.

EXAMPLE_SCALES = (0.0, 0.01, 0.3, 1.0, 10.0)  # a zero example (0/0 at a zero bound) and clipped and unclipped ones


def per_example_grads(params, scales=EXAMPLE_SCALES):
  """Per-example gradients: each leaf gets a leading batch axis, example i scaled by scales[i]."""
  examples = [jax.tree.map(lambda g: (g.astype(jnp.float32) * s).astype(g.dtype), gradients(params, i))
              for i, s in enumerate(scales)]
  return jax.tree.map(lambda *xs: jnp.stack(xs), *examples)


INT_GRADS = [jnp.array([[0, 0, 0], [0, 3, 4], [4, 0, 3], [3, 4, 0]])]
GRAD_SETS = {"mixed": lambda: per_example_grads(mixed_params()),
             "layers": lambda: per_example_grads(conv_params()),
             "int": lambda: INT_GRADS}
# (gradients, bound): bounds below, between and above the example norms, infinite, and strongly typed.
GLOBAL_CASES = [("mixed", 0.0), ("mixed", jnp.inf), ("mixed", np.float32(2.0)),
                ("mixed", jnp.asarray(1.5, jnp.bfloat16)), ("layers", 40.0), ("int", 1.25)]
LAYER_CASES = [("mixed", 1.0, True), ("mixed", np.float32(5.0), False), ("layers", 30.0, False),
               ("int", jnp.inf, True), ("int", 0.0, False)]


def jit_all_eager_some(cases, eager, names):
  """Parametrizes `names` + ",jit" with every case compiled and the `eager` ones (indices) also eager."""
  rows = [(*case, True) for case in cases] + [(*cases[i], False) for i in eager]
  return pytest.mark.parametrize(names + ",jit", rows, ids=repr)


def _maybe_jit(fn, jit, **static):
  if not jit:
    return lambda *args: fn(*args, **static)
  return jax.jit(lambda *args: fn(*args, **static))


@jit_all_eager_some(GLOBAL_CASES, [0, 5], "grads,clip_value")
def test_per_example_global_norm_clip_matches_optax(grads, clip_value, jit):
  grads = GRAD_SETS[grads]()
  ours = _maybe_jit(gradxform.per_example_global_norm_clip, jit)(grads, clip_value)
  theirs = _standard(_maybe_jit(optax.per_example_global_norm_clip, jit), grads, clip_value)
  assert_trees_equivalent(ours, theirs, f"per_example_global_norm_clip({clip_value})")


@jit_all_eager_some(LAYER_CASES, [1], "grads,clip_value,uniform")
def test_per_example_layer_norm_clip_matches_optax(grads, clip_value, uniform, jit):
  grads = GRAD_SETS[grads]()
  ours = _maybe_jit(gradxform.per_example_layer_norm_clip, jit, uniform=uniform)(grads, clip_value)
  theirs = _standard(_maybe_jit(optax.per_example_layer_norm_clip, jit, uniform=uniform), grads, clip_value)
  assert_trees_equivalent(ours, theirs, f"per_example_layer_norm_clip({clip_value}, uniform={uniform})")


def test_per_example_clip_bounds_each_example():
  """The clipped sum is the sum of examples each rescaled to norm <= C; the count is of examples over C."""
  grads = per_example_grads(mixed_params())
  summed, count = gradxform.per_example_global_norm_clip(grads, 1.0)
  norms = np.asarray(jax.vmap(gradxform.global_norm)(grads))
  assert int(count) == int(np.sum(norms > 1.0))
  single = jax.tree.map(lambda g: g[2:3], grads)  # one example of norm > 1: its clipped sum has norm 1
  clipped, _ = gradxform.per_example_global_norm_clip(single, 1.0)
  np.testing.assert_allclose(float(gradxform.global_norm(clipped)), 1.0, rtol=1e-2)
  assert jax.tree.structure(summed) == jax.tree.structure(mixed_params())


# ----------------------------------------------------------------------------------------------
# Unit-wise norms and clipping as functions (public in optax.transforms only).

UNIT_SHAPES = [(), (3,), (1, 5), (4, 5), (2, 3, 4), (3, 3, 2, 4), (2, 2, 2, 3, 4), (1, 1, 1, 1, 1, 1, 6)]
UNIT_CASES = ([(shape, jnp.float32) for shape in UNIT_SHAPES]
              + [(shape, dtype) for shape in [(4, 5), (3, 3, 2, 4)] for dtype in (jnp.bfloat16, jnp.complex64)])


def _array(shape, dtype, seed=0):
  key = jax.random.key(seed)
  if jnp.issubdtype(dtype, jnp.complexfloating):
    k1, k2 = jax.random.split(key)
    return jax.lax.complex(jax.random.normal(k1, shape), jax.random.normal(k2, shape)).astype(dtype)
  return jax.random.normal(key, shape, dtype)


@pytest.mark.parametrize("shape,dtype", UNIT_CASES, ids=str)
def test_unitwise_norm_default_axes_match_optax(shape, dtype):
  x = _array(shape, dtype)
  assert_trees_equivalent(_clip.unitwise_norm(x), _standard(optax.transforms.unitwise_norm, x), f"{shape}")


@pytest.mark.parametrize("shape,axis", [((4, 5), 1), ((2, 3, 4), (1, 2)), ((2, 3, 4), -1),
                                        ((2, 3, 2, 2, 2, 2), (0, 1, 2))], ids=str)
def test_unitwise_norm_explicit_axis_matches_optax(shape, axis):
  x = _array(shape, jnp.float32, seed=3)
  assert_trees_equivalent(_clip.unitwise_norm(x, axis=axis), _standard(optax.transforms.unitwise_norm, x, axis=axis),
                          f"{shape} axis={axis}")


@jit_all_eager_some([((jnp.float32, jnp.float32), 1e-6), ((jnp.float32, jnp.float32), 0.5),
                     ((jnp.bfloat16, jnp.bfloat16), 1e-6), ((jnp.bfloat16, jnp.float32), 1e-6),
                     ((jnp.float32, jnp.bfloat16), 0.5)], [0, 3], "dtypes,div_eps")
def test_unitwise_clip_matches_optax(dtypes, div_eps, jit):
  grad_dtype, bound_dtype = dtypes
  grad = _array((4, 5), grad_dtype, seed=1) * 3
  grad = grad.at[:, 0].set(0)  # a zero unit: the divisor floor matters
  g_norm = _clip.unitwise_norm(grad)
  max_norm = jnp.abs(_array((5,), bound_dtype, seed=2)).astype(bound_dtype) * jnp.ones((4, 1), bound_dtype)
  ours = _maybe_jit(_clip.unitwise_clip, jit)(g_norm, max_norm, grad, div_eps)
  theirs = _standard(_maybe_jit(optax.transforms.unitwise_clip, jit), g_norm, max_norm, grad, div_eps)
  assert_trees_equivalent(ours, theirs, f"unitwise_clip {dtypes}")


# ----------------------------------------------------------------------------------------------
# Clear errors.


def _raises(error, fn, *words):
  with pytest.raises(error) as info:
    fn()
  for word in words:
    assert word in str(info.value), f"{word!r} not in {info.value}"


@pytest.mark.parametrize("build,words", [
    (lambda: gradxform.clip_by_block_rms(-1.0), ["clip_by_block_rms", "threshold"]),
    (lambda: gradxform.clip_by_block_rms(float("nan")), ["clip_by_block_rms", "threshold"]),
    (lambda: gradxform.adaptive_grad_clip(-0.1), ["adaptive_grad_clip", "clipping"]),
    (lambda: gradxform.adaptive_grad_clip(0.1, eps=-1e-3), ["adaptive_grad_clip", "eps"]),
    (lambda: gradxform.per_example_global_norm_clip(INT_GRADS, -1.0), ["per_example_global_norm_clip", "l2_norm_clip"]),
    (lambda: gradxform.per_example_layer_norm_clip(INT_GRADS, -2.0),
     ["per_example_layer_norm_clip", "global_l2_norm_clip"]),
], ids=["block_rms", "block_rms_nan", "agc_clipping", "agc_eps", "global_norm_clip", "layer_norm_clip"])
def test_negative_thresholds_are_rejected(build, words):
  _raises(gradxform.HyperparameterError, build, *words)


@pytest.mark.parametrize("build,words", [
    (lambda: gradxform.clip_by_block_rms("0.5"), ["clip_by_block_rms", "threshold"]),
    (lambda: gradxform.adaptive_grad_clip(0.1, axis="rows"), ["adaptive_grad_clip", "axis"]),
    (lambda: gradxform.adaptive_grad_clip(0.1, axis=[0, 1]), ["adaptive_grad_clip", "axis"]),
], ids=["string_threshold", "string_axis", "list_axis"])
def test_mistyped_hyperparameters_are_rejected(build, words):
  _raises(gradxform.HyperparameterTypeError, build, *words)


def test_traced_thresholds_are_accepted():
  grads = per_example_grads(mixed_params())
  ours = jax.jit(gradxform.per_example_global_norm_clip)(grads, jnp.asarray(-1.0))  # unchecked when traced
  theirs = _standard(jax.jit(optax.per_example_global_norm_clip), grads, jnp.asarray(-1.0))
  assert_trees_equivalent(ours, theirs, "a traced negative bound behaves as optax's")


@pytest.mark.parametrize("fn", [gradxform.per_example_global_norm_clip, gradxform.per_example_layer_norm_clip])
@pytest.mark.parametrize("grads,words", [
    ({"w": jnp.ones((4, 3)), "b": jnp.ones(())}, ["batch axis", "['b']"]),
    ({"w": jnp.ones((4, 3)), "b": jnp.ones((5,))}, ["batch dimension", "['b']", "['w']", "(4, 3)"]),
    ({}, ["no array leaves"]),
], ids=["scalar_leaf", "batch_mismatch", "empty"])
def test_per_example_clip_needs_a_batch_axis(fn, grads, words):
  _raises(gradxform.TreeMismatchError, lambda: fn(grads, 1.0), fn.__name__, *words)
  assert issubclass(gradxform.TreeMismatchError, ValueError)  # optax raises ValueError here


def test_unitwise_norm_without_default_unit_asks_for_axis():
  _raises(gradxform.HyperparameterError, lambda: _clip.unitwise_norm(jnp.ones((2, 2, 2, 2, 2, 2))),
          "unitwise_norm", "axis", "(2, 2, 2, 2, 2, 2)")
  tx = gradxform.adaptive_grad_clip(0.1)
  params = {"big": jnp.ones((2, 2, 2, 2, 2, 2))}
  _raises(gradxform.HyperparameterError, lambda: tx.update(params, tx.init(params), params),
          "adaptive_grad_clip", "axis")


def test_unitwise_clip_shape_mismatch():
  square = jnp.ones((4, 5))
  _raises(gradxform.TreeMismatchError, lambda: _clip.unitwise_clip(square, jnp.ones((1, 5)), square),
          "unitwise_clip", "max_norm", "(1, 5)")
  _raises(gradxform.TreeMismatchError, lambda: _clip.unitwise_clip(square, square, jnp.ones(5)),
          "unitwise_clip", "grad", "(5,)")


def test_adaptive_grad_clip_needs_params():
  tx = gradxform.adaptive_grad_clip(0.1)
  grads = {"w": jnp.ones((2, 3))}
  _raises(gradxform.MissingParamsError, lambda: tx.update(grads, tx.init(grads)), "adaptive_grad_clip", "params")


def test_adaptive_grad_clip_params_shape_mismatch():
  tx = gradxform.adaptive_grad_clip(0.1)
  grads = {"w": jnp.ones((2, 3))}
  _raises(gradxform.TreeMismatchError, lambda: tx.update(grads, tx.init(grads), {"w": jnp.ones((3, 2))}),
          "adaptive_grad_clip", "['w']")


# ----------------------------------------------------------------------------------------------
# Signatures and where the names live.

TOP_LEVEL = ["adaptive_grad_clip", "clip_by_block_rms", "per_example_global_norm_clip", "per_example_layer_norm_clip"]


def _parameters(fn):
  return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]


@pytest.mark.parametrize("name", TOP_LEVEL)
def test_top_level_signature_matches_optax(name):
  assert _parameters(getattr(gradxform, name)) == _parameters(getattr(optax, name))


@pytest.mark.parametrize("name", ["unitwise_clip", "unitwise_norm"])
def test_transforms_only_names(name):
  """optax exposes these in optax.transforms only (outside its __all__), not at the top level."""
  assert _parameters(getattr(_clip, name)) == _parameters(getattr(optax.transforms, name))
  assert hasattr(gradxform, name) == hasattr(optax, name)
  assert name not in _clip.__all__


@pytest.mark.parametrize("name", ["AdaptiveGradClipState", "ClipByGlobalNormState", "ClipState"])
def test_state_aliases_match_optax(name):
  ours, theirs = getattr(gradxform, name), getattr(optax, name)
  assert ours.__name__ == theirs.__name__ and ours._fields == theirs._fields
  tx = gradxform.adaptive_grad_clip(0.1) if name.startswith("Adaptive") else gradxform.clip(1.0)
  assert isinstance(tx.init({"w": jnp.ones(2)}), ours)
