"""gradxform.tree_utils and gradxform.tree against optax 0.2.8's.

Each row of the table calls one function with the same arguments in both libraries (optax under
standard promotion, gradxform under the suite's strict promotion), eagerly and, where jit can change
the outcome (weak types, traced scalars), under jax.jit too; it requires the same tree structure, the
same leaf kinds (Python scalar, NumPy or jax array), dtypes and weak types, and bit-equal values.
The trees mix nested dicts, lists and tuples, float32 and bfloat16 leaves, 0-d arrays, Python
scalars, None leaves, complex and integer leaves, empty leaves and empty trees.
The state utilities run on gradxform's optimizer states and optax's on optax's, and must agree on
values and paths.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradxform
from gradxform import tree as gx_tree
from gradxform import tree_utils as gx_tu
from gradxform.tree_utils import _casting, _state, _zip

from equivalence import Ref, assert_trees_equivalent, canonical, gradients, mixed_params

# ----------------------------------------------------------------------------------------------
# Trees.

PARAMS = mixed_params()
OTHER = gradients(PARAMS, 0)
THIRD = gradients(PARAMS, 1)
POSITIVE = jax.tree.map(lambda x: (jnp.abs(x) + 0.5).astype(x.dtype), OTHER)
# The same leaves in the other dtype: each pair of leaves mixes float32 and bfloat16.
SWAPPED = jax.tree.map(lambda x: x.astype(jnp.float32 if x.dtype == jnp.bfloat16 else jnp.bfloat16), OTHER)


def _with_nones(tree):
  """The mixed tree with the dense bias and the first element of the inner tuple replaced by None."""
  return {"dense": {"w": tree["dense"]["w"], "b": None},
          "blocks": [tree["blocks"][0], (None, tree["blocks"][1][1])], "scale": tree["scale"]}


NONE_PARAMS, NONE_OTHER = _with_nones(PARAMS), _with_nones(OTHER)
SCALARS = {"py_float": 1.5, "py_int": 3, "zero_d": jnp.asarray(2.0),
           "list": [0.25, jnp.asarray(-1.0, jnp.bfloat16)]}
SCALARS_OTHER = {"py_float": -0.5, "py_int": 2, "zero_d": jnp.asarray(0.5),
                 "list": [4.0, jnp.asarray(3.0, jnp.bfloat16)]}
COMPLEX = {"c": (jnp.arange(6.0) - 2.5).astype(jnp.complex64) * (1 + 0.5j),
           "r": jnp.linspace(-1.0, 1.0, 6).reshape(2, 3)}
COMPLEX_OTHER = {"c": (jnp.arange(6.0) + 1.0).astype(jnp.complex64) * (0.5 - 1j), "r": jnp.ones((2, 3))}
INTS = {"a": jnp.arange(-3, 3, dtype=jnp.int32), "b": [jnp.array([[1, -7], [4, 2]], jnp.int32)]}
INTS_OTHER = {"a": jnp.arange(1, 7, dtype=jnp.int32), "b": [jnp.array([[2, 3], [5, 1]], jnp.int32)]}
WITH_EMPTY = {"e": jnp.zeros((0,), jnp.float32), "x": jnp.array([-2.0, 5.0], jnp.bfloat16), "n": None}
ONLY_EMPTY = {"e": jnp.zeros((0, 3)), "n": None}
EMPTY_TREES = [[], {"a": None, "b": (None,)}]
KEY, RAW_KEY = jax.random.key(42), jax.random.PRNGKey(7)
# Sampling compiles for each leaf shape and dtype: random rows use this small tree.
SMALL = {"w": jnp.zeros((2, 3)), "b": [jnp.zeros(3, jnp.bfloat16), None, (jnp.zeros(()),)]}


def uniform_without_sharding(key, shape, dtype):
  """A sampler that takes no `out_sharding` (so tree_random_like must not pass one)."""
  return jax.random.uniform(key, shape, dtype, minval=-2.0, maxval=3.0)


MOMENTS = jax.tree.map(lambda x: (0.1 * jnp.abs(x)).astype(x.dtype), THIRD)
NONE_MOMENTS = {"dense": {"w": MOMENTS["dense"]["w"], "b": jnp.ones(3)},  # under a None update: ignored
                "blocks": [MOMENTS["blocks"][0], (None, MOMENTS["blocks"][1][1])], "scale": MOMENTS["scale"]}
COMPLEX_MOMENTS = {"c": jnp.full((6,), 0.5, jnp.float32), "r": jnp.full((2, 3), 0.25, jnp.float32)}


@dataclasses.dataclass(frozen=True)
class Row:
  """`tree_utils.<name>(*args, **kwargs)`; kwargs are static under jit."""

  name: str
  args: tuple
  kwargs: tuple = ()
  label: str = ""
  jit: bool = True
  eager_rtol: float = 0.0

  def __repr__(self):
    kw = "".join(f",{k}={_show(v)}" for k, v in self.kwargs)
    return f"{self.name}[{self.label}{kw}]"


def _show(value) -> str:
  """Stable text for test ids: functions and dtypes by name, not by address."""
  return value.__name__ if callable(value) and hasattr(value, "__name__") else repr(value)


def row(name, *args, label="", jit=True, eager_rtol=0.0, **kwargs):
  return Row(name, args, tuple(sorted(kwargs.items())), label, jit, eager_rtol)


# gradxform's bias_correction (shared with the optimizers) divides leaf by leaf; optax compiles the whole
# tree at once, and XLA then picks division or reciprocal-multiplication per leaf depending on the other
# leaves, so eager results may differ in the last bit (under jit both compile alike and agree exactly).
ONE_ULP = 1.2e-7


def _on_all_empty(name, *extra, **kwargs):
  return [row(name, tree, *extra, label=f"empty{i}", **kwargs) for i, tree in enumerate(EMPTY_TREES)]


ROWS = [
    row("tree_add", PARAMS, SWAPPED, label="f32+bf16"),
    row("tree_add", PARAMS, OTHER, THIRD, SWAPPED, label="four"),
    row("tree_add", NONE_PARAMS, NONE_OTHER, label="none"),
    row("tree_add", SCALARS, SCALARS_OTHER, label="scalars"), row("tree_add", INTS, INTS_OTHER, label="ints"),
    row("tree_add", COMPLEX, COMPLEX_OTHER, label="complex"), row("tree_add", {}, {}, label="empty"),
    row("tree_sub", PARAMS, SWAPPED, label="f32-bf16"), row("tree_sub", NONE_PARAMS, NONE_OTHER, label="none"),
    row("tree_sub", SCALARS, SCALARS_OTHER, label="scalars"),
    row("tree_mul", PARAMS, SWAPPED, label="f32*bf16"), row("tree_mul", NONE_PARAMS, NONE_OTHER, label="none"),
    row("tree_mul", SCALARS, SCALARS_OTHER, label="scalars"), row("tree_mul", COMPLEX, COMPLEX_OTHER, label="complex"),
    row("tree_div", PARAMS, POSITIVE, label="mixed"), row("tree_div", PARAMS, SWAPPED, label="f32/bf16"),
    row("tree_div", INTS, INTS_OTHER, label="ints"), row("tree_div", SCALARS, SCALARS_OTHER, label="scalars"),
    row("tree_scale", 0.5, PARAMS, label="float"), row("tree_scale", jnp.float32(-2.0), PARAMS, label="f32 array"),
    row("tree_scale", jnp.asarray(3.0, jnp.bfloat16), PARAMS, label="bf16 array"),
    row("tree_scale", 2, NONE_PARAMS, label="none"), row("tree_scale", 0.5, SCALARS, label="scalars"),
    row("tree_scale", 1j, COMPLEX, label="complex"),
    row("tree_add_scale", PARAMS, 0.5, OTHER, label="mixed"), row("tree_add_scale", PARAMS, jnp.float32(2.0), SWAPPED,
                                                                  label="f32 scalar"),
    row("tree_add_scale", NONE_PARAMS, -1.0, NONE_OTHER, label="none"),
    row("tree_add_scale", NONE_PARAMS, 3.0, OTHER, label="none over leaf"),
    row("tree_add_scale", SCALARS, 2.0, SCALARS_OTHER, label="scalars"),
    row("tree_vdot", PARAMS, OTHER, label="mixed"), row("tree_vdot", PARAMS, SWAPPED, label="f32.bf16"),
    row("tree_vdot", COMPLEX, {"c": COMPLEX_OTHER["r"].reshape(6), "r": COMPLEX_OTHER["c"].reshape(2, 3)},
        label="real.complex"),
    row("tree_vdot", NONE_PARAMS, NONE_OTHER, label="none"), row("tree_vdot", COMPLEX, COMPLEX_OTHER, label="complex"),
    row("tree_vdot", INTS, INTS_OTHER, label="ints"), row("tree_vdot", SCALARS, SCALARS_OTHER, label="scalars"),
    row("tree_vdot", {}, {}, label="empty"),
    row("tree_sum", PARAMS, label="mixed"), row("tree_sum", PARAMS, associative_reduction=True, label="mixed"),
    row("tree_sum", NONE_PARAMS, label="none"), row("tree_sum", SCALARS, label="scalars"),
    row("tree_sum", INTS, label="ints"), row("tree_sum", COMPLEX, label="complex"),
    row("tree_sum", INTS, associative_reduction=True, label="ints"), *_on_all_empty("tree_sum"),
    row("tree_sum", {}, associative_reduction=True, label="empty"),
    row("tree_max", PARAMS, label="mixed"), row("tree_max", NONE_PARAMS, label="none"),
    row("tree_max", SCALARS, label="scalars"), row("tree_max", INTS, label="ints"),
    row("tree_max", WITH_EMPTY, label="empty leaf"), row("tree_max", ONLY_EMPTY, label="only empty leaves"),
    *_on_all_empty("tree_max"),
    row("tree_min", PARAMS, label="mixed"), row("tree_min", NONE_PARAMS, label="none"),
    row("tree_min", SCALARS, label="scalars"), row("tree_min", INTS, label="ints"),
    row("tree_min", WITH_EMPTY, label="empty leaf"), row("tree_min", ONLY_EMPTY, label="only empty leaves"),
    *_on_all_empty("tree_min"),
    row("tree_size", PARAMS, label="mixed"), row("tree_size", NONE_PARAMS, label="none"),
    row("tree_size", SCALARS, label="scalars"), row("tree_size", WITH_EMPTY, label="empty leaf"),
    *_on_all_empty("tree_size"),
    row("tree_conj", COMPLEX, label="complex"), row("tree_conj", NONE_PARAMS, label="none"),
    row("tree_real", COMPLEX, label="complex"), row("tree_real", NONE_PARAMS, label="none"),
    row("tree_real", SCALARS, label="scalars"),
    *(row("tree_norm", PARAMS, label="mixed", **kw)
      for kw in [{}, {"squared": True}, {"ord": 2}, {"ord": 1}, {"ord": 1, "squared": True}, {"ord": jnp.inf},
                 {"ord": "inf", "squared": True}, {"ord": "infinity"}, {"ord": 2.0, "squared": True}]),
    *(row("tree_norm", tree, label=label, **kw)
      for tree, label in [(COMPLEX, "complex"), (INTS, "ints"), ({}, "empty")]
      for kw in [{}, {"ord": 1, "squared": True}, {"ord": "inf"}]),
    *(row("tree_norm", tree, label=label, **kw)
      for tree, label, kw in [(NONE_PARAMS, "none", {}), (SCALARS, "scalars", {"ord": 1}),
                              (WITH_EMPTY, "empty leaf", {"ord": "inf"}), (ONLY_EMPTY, "only empty", {"ord": "inf"})]),
    row("tree_batch_shape", PARAMS, label="default"), row("tree_batch_shape", PARAMS, shape=(2,), label="mixed"),
    row("tree_batch_shape", NONE_PARAMS, shape=(3, 1), label="none"),
    row("tree_batch_shape", SCALARS, shape=(2,), label="scalars"),
    row("tree_zeros_like", PARAMS, label="mixed"),
    row("tree_zeros_like", NONE_PARAMS, dtype=jnp.bfloat16, label="none"),
    row("tree_zeros_like", SCALARS, label="scalars"), row("tree_zeros_like", INTS, dtype=jnp.float32, label="ints"),
    row("tree_zeros_like", COMPLEX, label="complex"),
    row("tree_zeros_like", {"s": jax.ShapeDtypeStruct((2, 3), jnp.bfloat16)}, label="shape struct", jit=False),
    row("tree_full_like", {"s": jax.ShapeDtypeStruct((2,), jnp.int32)}, 2.5, label="shape struct", jit=False),
    row("tree_ones_like", PARAMS, label="mixed"), row("tree_ones_like", NONE_PARAMS, dtype=jnp.int32, label="none"),
    row("tree_ones_like", SCALARS, label="scalars"), row("tree_ones_like", INTS, dtype=jnp.bool_, label="ints"),
    row("tree_full_like", PARAMS, 0.3, label="mixed"),
    row("tree_full_like", PARAMS, jnp.float32(1 / 3), label="f32 fill"),
    row("tree_full_like", NONE_PARAMS, 2, dtype=jnp.bfloat16, label="none"),
    row("tree_full_like", SCALARS, -1.5, label="scalars"), row("tree_full_like", INTS, 7.9, label="ints"),
    row("tree_full_like", {"v": jnp.zeros((2, 3), jnp.bfloat16)}, jnp.arange(3.0), label="broadcast fill"),
    row("tree_clip", PARAMS, label="no bounds"), row("tree_clip", PARAMS, -0.5, 0.5, label="both"),
    row("tree_clip", PARAMS, min_value=0.0, label="min only"),
    row("tree_clip", PARAMS, max_value=0.1, label="max only"),
    row("tree_clip", PARAMS, jnp.float32(-0.25), jnp.asarray(0.3, jnp.bfloat16), label="array bounds"),
    row("tree_clip", NONE_PARAMS, -1.0, 1.0, label="none"), row("tree_clip", SCALARS, 0.0, 2.0, label="scalars"),
    row("tree_clip", INTS, -1, 2, label="ints"),
    row("tree_where", True, PARAMS, OTHER, label="true"), row("tree_where", False, PARAMS, SWAPPED, label="false"),
    row("tree_where", jnp.array(True), NONE_PARAMS, NONE_OTHER, label="none"),
    row("tree_where", False, SCALARS, SCALARS_OTHER, label="scalars"),
    row("tree_allclose", PARAMS, PARAMS, label="same"), row("tree_allclose", PARAMS, OTHER, label="different"),
    row("tree_allclose", PARAMS, jax.tree.map(lambda x: x * (1 + 1e-6), PARAMS), label="close"),
    row("tree_allclose", PARAMS, SWAPPED, rtol=10.0, atol=10.0, label="f32~bf16 loose"),
    row("tree_allclose", PARAMS, PARAMS, rtol=0.0, atol=0.0, label="exact"),
    row("tree_allclose", {"a": jnp.array([1.0, jnp.nan])}, {"a": jnp.array([1.0, jnp.nan])}, label="nan"),
    row("tree_allclose", {"a": jnp.array([1.0, jnp.nan])}, {"a": jnp.array([1.0, jnp.nan])}, equal_nan=True,
        label="nan"),
    row("tree_allclose", NONE_PARAMS, NONE_PARAMS, label="none"), row("tree_allclose", {}, {}, label="empty"),
    row("tree_update_moment", OTHER, MOMENTS, 0.9, 2, label="order 2"),
    row("tree_update_moment", OTHER, MOMENTS, 0.5, 1, label="order 1"),
    row("tree_update_moment", NONE_OTHER, NONE_MOMENTS, 0.9, 2, label="none"),
    row("tree_update_infinity_moment", OTHER, MOMENTS, 0.9, 1e-8, label="mixed"),
    row("tree_update_infinity_moment", NONE_OTHER, NONE_MOMENTS, 0.5, 0.0, label="none"),
    row("tree_update_moment_per_elem_norm", OTHER, MOMENTS, decay=0.9, order=2),
    row("tree_update_moment_per_elem_norm", OTHER, MOMENTS, jnp.float32(0.7), order=1, label="f32 decay"),
    row("tree_update_moment_per_elem_norm", NONE_OTHER, NONE_MOMENTS, decay=0.9, order=2, label="none"),
    row("tree_update_moment_per_elem_norm", OTHER, SWAPPED, decay=0.9, order=2, label="f32 vs bf16 moments"),
    *(row("tree_update_moment_per_elem_norm", COMPLEX, COMPLEX_MOMENTS, decay=0.9, order=order, label="complex")
      for order in (2, 3, 1.5)),
    row("tree_bias_correction", MOMENTS, 0.9, 1, label="t=1", eager_rtol=ONE_ULP),
    row("tree_bias_correction", MOMENTS, 0.999, jnp.asarray(7, jnp.int32), label="int32 count", eager_rtol=ONE_ULP),
    row("tree_bias_correction", NONE_MOMENTS, 0.9, 3, label="none", eager_rtol=ONE_ULP),
    row("tree_cast", PARAMS, dtype=jnp.bfloat16), row("tree_cast", PARAMS, dtype=None),
    row("tree_cast", NONE_PARAMS, dtype=jnp.float32, label="none"),
    row("tree_cast", INTS, dtype=jnp.float32, label="ints"),
    row("tree_cast_like", PARAMS, SWAPPED, label="mixed"),
    row("tree_cast_like", INTS, {"a": jnp.ones(6, jnp.bfloat16), "b": [jnp.ones((2, 2))]}, label="ints"),
    row("tree_cast_like", NONE_PARAMS, NONE_OTHER, label="none"),
    row("tree_cast_like", {"a": jnp.ones(2), "b": jnp.ones(2)}, {"a": 2.0, "b": None}, label="no dtype"),
    row("tree_cast_like", {"a": jnp.ones(2), "b": jnp.ones(2)}, {"a": np.float16(2.0), "b": np.ones(1, np.int8)},
        label="numpy"),
    *(row("tree_dtype", tree, label=label, jit=False, **kw)
      for tree, label in [(jax.tree.map(lambda x: x.astype(jnp.float32), PARAMS), "f32"), (PARAMS, "mixed"),
                          (NONE_PARAMS, "none"), ({}, "empty"), (SCALARS, "scalars"),
                          ({"a": jnp.ones(2, jnp.int8), "b": jnp.ones(2, jnp.uint8)}, "int8/uint8"),
                          ({"a": jnp.ones(2, jnp.int32), "b": jnp.ones(2, jnp.float16), "c": jnp.ones(1)}, "i/f16/f32")]
      for kw in ([{}] if label in ("f32", "empty") else [])
      + [{"mixed_dtype_handler": h} for h in ("promote", "highest", "lowest")
         if label != "int8/uint8" or h == "promote"]),  # int8 and uint8 have no highest: see ERROR_CASES
    row("tree_dtype", {"a": jnp.ones(2, jnp.bfloat16)}, label="bf16", jit=False),
    row("tree_unwrap_random_key_data", {"k": jax.random.key(3), "raw": jax.random.PRNGKey(4), "x": PARAMS["scale"],
                                        "n": None}, label="keys"),
    row("tree_split_key_like", KEY, PARAMS, label="typed key"), row("tree_split_key_like", RAW_KEY, NONE_PARAMS,
                                                                    label="raw key, none"),
    row("tree_split_key_like", KEY, {}, label="empty"), row("tree_split_key_like", KEY, jnp.ones(2), label="one leaf"),
    row("tree_random_like", KEY, SMALL, label="normal"), row("tree_random_like", RAW_KEY, SMALL, label="raw key"),
    row("tree_random_like", KEY, SMALL, sampler=jax.random.uniform, label="uniform"),
    row("tree_random_like", KEY, SMALL, sampler=uniform_without_sharding, label="no out_sharding"),
    row("tree_random_like", KEY, SMALL, dtype=jnp.bfloat16, label="bf16"),
    row("tree_random_like", KEY, {"i": jnp.zeros(3, jnp.int32)}, sampler=jax.random.rademacher, label="rademacher"),
    row("tree_random_like", KEY, SMALL, sampler=jax.random.laplace, dtype=jnp.float32, label="laplace"),
]


def _ours(name):
  return getattr(gx_tu, name)


def _theirs(name):
  fn = getattr(optax.tree_utils, name)

  def call(*args, **kwargs):
    with jax.numpy_dtype_promotion("standard"):
      return fn(*args, **kwargs)
  return call


def _unwrap_keys(tree):
  """Typed PRNG keys as their raw data, so they compare as arrays."""
  is_key = lambda x: isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)  # noqa: E731
  return jax.tree.map(lambda x: ("key", jax.random.key_data(x)) if is_key(x) else x, tree)


def _kind(x) -> tuple:
  """What must match besides the value: Python type for scalars; dtype and weak type for arrays."""
  if isinstance(x, jax.Array):
    return ("jax", x.dtype, x.shape, x.weak_type)
  if isinstance(x, np.ndarray | np.generic):
    return ("numpy", x.dtype, x.shape)
  return ("python", type(x))


def _is_none(x) -> bool:
  return x is None


def assert_same(ours: Any, theirs: Any, what: str, rtol: float = 0.0) -> None:
  """Same structure (NamedTuple class and field names included), leaf kinds and values (bit-equal by default)."""
  ours, theirs = canonical(_unwrap_keys(ours)), canonical(_unwrap_keys(theirs))
  assert jax.tree.structure(ours, is_leaf=_is_none) == jax.tree.structure(theirs, is_leaf=_is_none), what
  for a, b in zip(jax.tree.leaves(ours, is_leaf=_is_none), jax.tree.leaves(theirs, is_leaf=_is_none)):
    if b is None or isinstance(b, np.dtype):
      assert a == b, what
      continue
    assert _kind(a) == _kind(b), what
    if rtol:
      np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), rtol=rtol, err_msg=what)
    else:
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=what)


def _run(fn, args, kwargs, jit):
  if not jit:
    return fn(*args, **kwargs)
  return jax.jit(lambda *a: fn(*a, **kwargs))(*args)


def _jit_worthy(case: Row, index: int) -> bool:
  """Under jit the same code runs on tracers; what changes is weak typing (Python scalars become weakly
  typed tracers) and traced hyperparameters. So each function's first row, and every row with Python
  scalars, 0-d array arguments, keys or empty trees, are also run jitted."""
  first = all(other.name != case.name for other in ROWS[:index])
  return case.jit and (first or "scalars" in case.label or "empty" in case.label or "key" in case.label
                       or any(isinstance(a, jax.Array) and a.ndim == 0 for a in case.args))


CALLS = [(case, jit) for i, case in enumerate(ROWS) for jit in (False, True) if not jit or _jit_worthy(case, i)]


@pytest.mark.parametrize("case,jit", CALLS, ids=[f"{case!r}-{'jit' if jit else 'eager'}" for case, jit in CALLS])
def test_matches_optax(case, jit):
  kwargs = dict(case.kwargs)
  ours = _run(_ours(case.name), case.args, kwargs, jit)
  theirs = _run(_theirs(case.name), case.args, kwargs, jit)
  assert_same(ours, theirs, repr(case), rtol=0.0 if jit else case.eager_rtol)


# ----------------------------------------------------------------------------------------------
# State utilities: gradxform's functions on gradxform's states, optax's on optax's.


def matrices_only(params):
  """A mask: True for leaves of rank >= 2."""
  return jax.tree.map(lambda p: jnp.ndim(p) >= 2, params)


STATE_SPECS = {
    "adam": Ref("adam", 1e-2),
    "chain": Ref("chain", Ref("clip_by_global_norm", 1.0), Ref("adam", 1e-2)),
    "masked": Ref("masked", Ref("adam", 1e-2), matrices_only),
    "named_chain": Ref("named_chain", ("clip", Ref("clip", 1.0)), ("momentum", Ref("sgd", 0.1, momentum=0.9))),
    "two_counts": Ref("chain", Ref("ema", 0.9), Ref("scale_by_adam"), Ref("masked", Ref("trace", 0.5), matrices_only)),
}


@functools.lru_cache(maxsize=None)
def _built_state(spec_name: str, lib_name: str):
  """(transformation, state after one update) of a spec in one library."""
  lib = gradxform if lib_name == "gradxform" else optax
  tx = STATE_SPECS[spec_name].build(lib)
  with jax.numpy_dtype_promotion("standard" if lib is optax else "strict"):
    state = tx.init(PARAMS)
    _, state = tx.update(OTHER, state, PARAMS)
  return tx, state


def _in_adam(path, value):
  del value
  return getattr(path[-1], "tuple_name", None) == "ScaleByAdamState"


def _is_array(path, value):
  del path
  return isinstance(value, jax.Array)


def _nowhere(path, value):
  del path, value
  return False


def _double_plus(lib):
  """f for tree_map_params: 2 * state_leaf + param_leaf, leaving the library's MaskedNode markers alone."""
  return lambda s, p: s if isinstance(s, lib.MaskedNode) else s * 2 + p


def _to_float32(lib):
  return lambda s: s if isinstance(s, lib.MaskedNode) else s.astype(jnp.float32)


def _masked_node(lib):
  return lambda x: isinstance(x, lib.MaskedNode)


SEVEN = jnp.asarray(7, jnp.int32)

# Each query: (id, fn(tree_utils module, library, transformation, state) -> result).
STATE_QUERIES = [
    *((f"get_all {key}", lambda tu, lib, tx, s, key=key: tu.tree_get_all_with_path(s, key))
      for key in ["count", "mu", "nu", "trace", "ema", "ScaleByAdamState", "MaskedState", "inner_state",
                  "momentum", "w", "missing"]),
    ("get_all count in adam", lambda tu, lib, tx, s: tu.tree_get_all_with_path(s, "count", _in_adam)),
    ("get_all w arrays", lambda tu, lib, tx, s: tu.tree_get_all_with_path(s, "w", filtering=_is_array)),
    ("get mu", lambda tu, lib, tx, s: tu.tree_get(s, "mu")),
    ("get count", lambda tu, lib, tx, s: tu.tree_get(s, "count")),
    ("get count in adam", lambda tu, lib, tx, s: tu.tree_get(s, "count", filtering=_in_adam)),
    ("get adam state", lambda tu, lib, tx, s: tu.tree_get(s, "ScaleByAdamState")),
    ("get missing", lambda tu, lib, tx, s: tu.tree_get(s, "missing", jnp.asarray(-1.0))),
    ("set count", lambda tu, lib, tx, s: tu.tree_set(s, count=SEVEN)),
    ("set count in adam", lambda tu, lib, tx, s: tu.tree_set(s, _in_adam, count=SEVEN)),
    ("set nowhere", lambda tu, lib, tx, s: tu.tree_set(s, _nowhere, count=SEVEN)),
    ("set mu and nu", lambda tu, lib, tx, s: tu.tree_set(s, mu=jnp.ones(2), nu=jnp.zeros(3))),
    ("set adam state", lambda tu, lib, tx, s: tu.tree_set(s, ScaleByAdamState=jnp.ones(1))),
    ("set momentum", lambda tu, lib, tx, s: tu.tree_set(s, momentum=jnp.ones(1))),
    ("set w", lambda tu, lib, tx, s: tu.tree_set(s, w=jnp.ones(1))),
    ("map_params", lambda tu, lib, tx, s: tu.tree_map_params(tx, _double_plus(lib), s, PARAMS,
                                                              is_leaf=_masked_node(lib))),
    ("map_params init fn", lambda tu, lib, tx, s: tu.tree_map_params(
        tx.init, _to_float32(lib), s, transform_non_params=lambda v: jnp.zeros((), jnp.int8),
        is_leaf=_masked_node(lib))),
]

STATE_CASES = [(spec, query) for spec in STATE_SPECS for query in STATE_QUERIES]


def _outcome(fn):
  """("ok", result) or ("raised", exception)."""
  try:
    return "ok", fn()
  except Exception as err:  # pylint: disable=broad-except
    return "raised", err


def _path_text(path) -> list:
  return [(type(entry).__name__, str(entry)) for entry in path]


def _assert_state_results_match(ours, theirs, what):
  if "get_all" in what:  # tree_get_all_with_path: [(path, value)]
    assert [_path_text(p) for p, _ in ours] == [_path_text(p) for p, _ in theirs], what
    ours, theirs = [v for _, v in ours], [v for _, v in theirs]
  assert_trees_equivalent(ours, theirs, what)


@pytest.mark.parametrize("spec,query", STATE_CASES, ids=[f"{spec}-{query[0]}" for spec, query in STATE_CASES])
def test_state_utils_match_optax(spec, query):
  name, fn = query
  ours_tx, ours_state = _built_state(spec, "gradxform")
  theirs_tx, theirs_state = _built_state(spec, "optax")
  ours = _outcome(lambda: fn(gx_tu, gradxform, ours_tx, ours_state))
  with jax.numpy_dtype_promotion("standard"):
    theirs = _outcome(lambda: fn(optax.tree_utils, optax, theirs_tx, theirs_state))
  what = f"{spec}: {name}"
  if theirs[0] == "raised":  # ambiguous or missing keys: the same exception type, with a clear message
    assert ours[0] == "raised", f"{what}: optax raised {theirs[1]!r}, gradxform returned {ours[1]!r}"
    assert isinstance(ours[1], type(theirs[1])), what
    assert isinstance(ours[1], gradxform.GradxformError) and "tree_" in str(ours[1]), what
    return
  assert ours[0] == "ok", f"{what}: gradxform raised {ours[1]!r}"
  _assert_state_results_match(ours[1], theirs[1], what)


class Holder(NamedTuple):
  count: Any
  sub: Any


class Count(NamedTuple):
  count: Any


# Corners of the search and replace rules, on one tree given to both libraries: a key nested in a
# matched dict (found by get, but not replaced by set), keys inside lists, a NamedTuple whose class
# name is searched, a field named like its class, int dict keys.
PLAIN = {"count": 1, "inner": {"x": {"count": 2}}, "lst": [{"count": 3}, Holder(count=4, sub={"count": 5})],
         "nt": Holder(count=Count(count=6), sub=[Count(count=7)]), "ints": {3: {"count": 8}, 4: 9}, "none": None}

PLAIN_QUERIES = [
    ("get_all count", lambda tu: tu.tree_get_all_with_path(PLAIN, "count")),
    ("get_all Holder", lambda tu: tu.tree_get_all_with_path(PLAIN, "Holder")),
    ("get_all Count", lambda tu: tu.tree_get_all_with_path(PLAIN, "Count")),
    ("get_all int key", lambda tu: tu.tree_get_all_with_path(PLAIN, 3)),
    ("get x", lambda tu: tu.tree_get(PLAIN, "x")),
    ("get sub with filter", lambda tu: tu.tree_get(PLAIN, "sub", filtering=lambda p, v: isinstance(v, list))),
    ("set count", lambda tu: tu.tree_set(PLAIN, count=0)),
    ("set Holder", lambda tu: tu.tree_set(PLAIN, Holder=-1)),
    ("set Count", lambda tu: tu.tree_set(PLAIN, Count=-1)),
    ("set count in Count", lambda tu: tu.tree_set(PLAIN, lambda p, v: getattr(p[-1], "tuple_name", "") == "Count",
                                                  count=0)),
    ("set sub and x", lambda tu: tu.tree_set(PLAIN, sub=None, x=[1])),
]


@pytest.mark.parametrize("query", PLAIN_QUERIES, ids=[q[0] for q in PLAIN_QUERIES])
def test_state_utils_match_optax_on_plain_trees(query):
  name, fn = query
  ours, theirs = fn(gx_tu), fn(optax.tree_utils)
  if name.startswith("get_all"):
    assert [_path_text(p) for p, _ in ours] == [_path_text(p) for p, _ in theirs], name
    ours, theirs = [v for _, v in ours], [v for _, v in theirs]
  assert type(ours) is type(theirs)
  assert ours == theirs, name


def test_named_tuple_key():
  key = gx_tu.NamedTupleKey("ScaleByAdamState", "mu")
  theirs = optax.tree_utils.NamedTupleKey("ScaleByAdamState", "mu")
  assert str(key) == str(theirs) == "ScaleByAdamState.mu"
  assert [f.name for f in dataclasses.fields(key)] == [f.name for f in dataclasses.fields(theirs)]
  assert key == gx_tu.NamedTupleKey("ScaleByAdamState", "mu") != gx_tu.NamedTupleKey("ScaleByAdamState", "nu")
  assert hash(key) == hash(gx_tu.NamedTupleKey("ScaleByAdamState", "mu"))
  with pytest.raises(dataclasses.FrozenInstanceError):
    key.name = "nu"
  path = gx_tu.tree_get_all_with_path(gradxform.adam(1e-2).init(PARAMS), "w")[0][0]
  assert jax.tree_util.keystr(path) == "[0]ScaleByAdamState.mu['dense']['w']"


# ----------------------------------------------------------------------------------------------
# Misuse: the same exception type as optax (where it raises), a message naming function and place.


ERROR_CASES = [
    # (id, name, args, kwargs, gradxform error class, message fragments)
    ("add keys", "tree_add", ({"a": 1.0, "b": 2.0}, {"a": 1.0}), {}, gradxform.TreeMismatchError,
     ["tree_add", "tree_x", "tree_y", "['b']"]),
    ("add list length", "tree_add", ([jnp.ones(2)], [jnp.ones(2), jnp.ones(2)]), {}, gradxform.TreeMismatchError,
     ["tree_add", "the root"]),
    ("add third tree", "tree_add", ({"a": jnp.ones(2)}, {"a": jnp.ones(2)}, {"b": jnp.ones(2)}), {},
     gradxform.TreeMismatchError, ["tree_add", "other_trees[0]"]),
    ("add none in x", "tree_add", ({"a": None}, {"a": jnp.ones(2)}), {}, gradxform.TreeMismatchError,
     ["tree_add", "['a']", "None"]),
    ("add none in y", "tree_add", ({"a": {"b": jnp.ones(2)}}, {"a": {"b": None}}), {}, _zip.LeafMismatchError,
     ["tree_add", "tree_y has None at ['a']['b']"]),
    ("sub dict vs list", "tree_sub", ({"a": jnp.ones(2)}, [jnp.ones(2)]), {}, gradxform.TreeMismatchError,
     ["tree_sub", "dict vs list"]),
    ("mul keys", "tree_mul", ({"a": jnp.ones(2)}, {"b": jnp.ones(2)}), {}, gradxform.TreeMismatchError,
     ["tree_mul", "['a']", "['b']"]),
    ("div none", "tree_div", ((jnp.ones(2),), (None,)), {}, _zip.LeafMismatchError, ["tree_div", "[0]"]),
    ("where keys", "tree_where", (True, {"a": jnp.ones(2)}, {"b": jnp.ones(2)}), {}, gradxform.TreeMismatchError,
     ["tree_where"]),
    ("add_scale none", "tree_add_scale", ({"a": jnp.ones(2)}, 2.0, {"a": None}), {}, _zip.LeafMismatchError,
     ["tree_add_scale", "['a']"]),
    ("vdot keys", "tree_vdot", ({"a": jnp.ones(2)}, {"b": jnp.ones(2)}), {}, gradxform.TreeMismatchError,
     ["tree_vdot"]),
    ("vdot lengths", "tree_vdot", ({"a": jnp.ones(3)}, {"a": jnp.ones(4)}), {}, _zip.LeafMismatchError,
     ["tree_vdot", "['a']", "(3,) vs (4,)"]),
    ("allclose keys", "tree_allclose", ({"a": jnp.ones(2)}, {"b": jnp.ones(2)}), {}, gradxform.TreeMismatchError,
     ["tree_allclose"]),
    ("cast_like keys", "tree_cast_like", ({"a": jnp.ones(2)}, {"b": jnp.ones(2)}), {}, gradxform.TreeMismatchError,
     ["tree_cast_like", "other_tree"]),
    ("norm ord", "tree_norm", (PARAMS,), {"ord": "fro"}, gradxform.HyperparameterError, ["tree_norm", "`ord`", "fro"]),
    ("norm ord 3", "tree_norm", (PARAMS,), {"ord": 3}, gradxform.HyperparameterError, ["tree_norm", "`ord`"]),
    ("dtype mixed", "tree_dtype", (PARAMS,), {}, _casting.DtypeMismatchError,
     ["tree_dtype", "bfloat16", "['scale']", "mixed_dtype_handler"]),
    ("dtype handler", "tree_dtype", (PARAMS, "max"), {}, gradxform.HyperparameterError,
     ["tree_dtype", "mixed_dtype_handler", "'max'"]),
    ("dtype unordered", "tree_dtype", ({"a": jnp.ones(1, jnp.int8), "b": jnp.ones(1, jnp.uint8)}, "highest"), {},
     _casting.DtypeMismatchError, ["tree_dtype", "int8", "uint8"]),
    ("dtype unordered floats", "tree_dtype", ({"a": jnp.ones(1, jnp.bfloat16), "b": jnp.ones(1, jnp.float16)},
                                              "lowest"), {}, _casting.DtypeMismatchError, ["bfloat16", "float16"]),
    ("get ambiguous", "tree_get", (gradxform.chain(gradxform.ema(0.9), gradxform.scale_by_adam()).init(PARAMS),
                                   "count"), {}, _state.TreeKeyError, ["tree_get", "'count'", "EmaState.count"]),
    ("set missing", "tree_set", ({"a": 1},), {"b": 2}, _state.TreeKeyError, ["tree_set", "'b'"]),
    ("set filtered out", "tree_set", ({"a": 1}, _nowhere), {"a": 2}, _state.TreeKeyError,
     ["tree_set", "'a'", "filtering"]),
    ("set tuple dict key", "tree_set", ({("x", 1): 1.0, "count": 0},), {"count": 2}, _state.TreeKeyError,
     ["tree_set", "('x', 1)"]),
]


def _optax_args(args):
  """The same arguments, with gradxform states rebuilt by optax (for the tree_get case)."""
  if args and isinstance(args[0], tuple) and args[0] and type(args[0][0]).__name__ == "EmaState":
    with jax.numpy_dtype_promotion("standard"):
      return (optax.chain(optax.ema(0.9), optax.scale_by_adam()).init(PARAMS), *args[1:])
  return args


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("case", ERROR_CASES, ids=[c[0] for c in ERROR_CASES])
def test_misuse_raises_like_optax_with_a_clear_message(case, jit):
  _, name, args, kwargs, error, fragments = case
  with jax.numpy_dtype_promotion("standard"), pytest.raises(Exception) as theirs:
    getattr(optax.tree_utils, name)(*_optax_args(args), **kwargs)
  fn = getattr(gx_tu, name)
  call = (lambda: jax.jit(lambda a: fn(*a, **kwargs))(args)) if jit and name not in _NOT_JITTABLE else (
      lambda: fn(*args, **kwargs))
  with pytest.raises(error) as ours:
    call()
  assert isinstance(ours.value, type(theirs.value)), (type(ours.value), type(theirs.value))
  for fragment in fragments:
    assert fragment in str(ours.value), (fragment, str(ours.value))


# Arguments that cannot be traced (strings, callables, states with Python ints) are checked eagerly only.
_NOT_JITTABLE = {"tree_dtype", "tree_set", "tree_get", "tree_norm"}


def test_reduce_associative_missing_raises_like_optax(monkeypatch):
  monkeypatch.delattr(jax.tree, "reduce_associative")  # as on JAX < 0.6
  with pytest.raises(ValueError):
    optax.tree_utils.tree_sum(PARAMS, associative_reduction=True)
  with pytest.raises(gradxform.HyperparameterError, match="tree_sum: argument `associative_reduction"):
    gx_tu.tree_sum(PARAMS, associative_reduction=True)


# ----------------------------------------------------------------------------------------------
# Namespaces and signatures.

TREE_UTILS_NAMES = sorted(n for n in dir(optax.tree_utils)
                          if not n.startswith("_") and n not in ("functools", "typing"))  # its stdlib imports
TREE_NAMES = sorted(n for n in dir(optax.tree) if not n.startswith("_"))


def _comparable_default(value):
  if callable(value) and hasattr(value, "__name__"):
    return ("callable", value.__name__)
  return value


def _parameters(fn) -> list:
  return [(p.name, p.kind, _comparable_default(p.default)) for p in inspect.signature(fn).parameters.values()]


def test_namespaces_list_all_of_optax():
  assert len(TREE_UTILS_NAMES) == 36 and len(TREE_NAMES) == 35
  assert not {"functools", "typing"} & set(dir(gx_tu))


@pytest.mark.parametrize("name", TREE_UTILS_NAMES)
def test_tree_utils_signature_matches_optax(name):
  assert _parameters(getattr(gx_tu, name)) == _parameters(getattr(optax.tree_utils, name))


def _long_name(short: str) -> str:
  """The tree_utils name of which optax.tree.<short> is an alias."""
  target = getattr(optax.tree, short)
  (long,) = [n for n in TREE_UTILS_NAMES if getattr(optax.tree_utils, n) is target]
  return long


@pytest.mark.parametrize("short", TREE_NAMES)
def test_tree_names_are_the_tree_utils_objects(short):
  assert getattr(gx_tree, short) is getattr(gx_tu, _long_name(short))
  assert _parameters(getattr(gx_tree, short)) == _parameters(getattr(optax.tree, short))


def test_moment_utilities_are_the_core_ones():
  """One implementation: the tree_utils moment helpers are gradxform's top-level ones, as in optax."""
  assert gx_tu.tree_bias_correction is gradxform.bias_correction
  assert gx_tu.tree_update_moment is gradxform.update_moment
  assert gx_tu.tree_update_infinity_moment is gradxform.update_infinity_moment
