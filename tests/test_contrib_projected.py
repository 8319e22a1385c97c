"""optax.contrib's Muon, GaLore, DoG/DoWG and Mechanic, run against optax 0.2.8.

Equivalence rows run eagerly and under jit on the mixed pytree (or on matrices only where optax's
transformation accepts nothing else); every alias also trains on digits; signatures, errors.
"""

import inspect

import jax
import jax.numpy as jnp
import optax
import pytest

import gradxform
import gradxform.contrib
from convergence import assert_trains
from equivalence import Ref, assert_equivalent, mixed_params

DN = lambda *a: Ref("contrib.MuonDimensionNumbers", *a)
GD = lambda *a: Ref("contrib.GaLoreDimensionNumbers", *a)


def _matrices():
  """Matrix leaves only, float32 and bfloat16 (scale_by_muon orthogonalises every leaf)."""
  p = mixed_params()
  return {"w": p["dense"]["w"], "v": p["blocks"][1][1], "u": 0.3 * jnp.ones((3, 6), jnp.float32)}


def _float32(params):
  return jax.tree.map(lambda x: x.astype(jnp.float32), params)


MATRIX_DIMS = {"w": DN(), "v": DN(1, 0), "u": DN()}
MUON_DIMS = {"dense": {"w": DN(), "b": None}, "blocks": [DN((0,), (2,)), (None, DN(1, 0))], "scale": None}
GALORE_DIMS = {"dense": {"w": GD(1, 0), "b": None}, "blocks": [GD((0, 2), 1), (None, None)], "scale": None}
TWO_COEFFS = ((4.0848, -6.8946, 2.9270), (3.9505, -6.3029, 2.6377))

class _Fixed:
  """A spec built by a function of the library (for arguments that must name each library's classes)."""

  def __init__(self, name, make):
    self.name, self.make = name, make

  def build(self, lib):
    if lib is optax:
      with jax.numpy_dtype_promotion("standard"):
        return self.make(lib)
    return self.make(lib)

  def __repr__(self):
    return self.name


def _muon_with_fn(lib):
  dims = lambda p: jax.tree.map(lambda x: lib.contrib.MuonDimensionNumbers(0, -1) if x.ndim == 3 else None, p)
  return lib.contrib.muon(0.05, muon_weight_dimension_numbers=dims)


def _galore_with_fn(lib):
  dims = lambda p: jax.tree.map(lambda x: lib.contrib.GaLoreDimensionNumbers() if x.ndim == 2 else None, p)
  return lib.contrib.galore(0.1, rank=2, weight_dimension_numbers=dims)


# (spec, params): params None means the shared mixed pytree.
ROWS = [
    (Ref("contrib.scale_by_muon", weight_dimension_numbers=MATRIX_DIMS), "matrices"),
    (Ref("contrib.scale_by_muon", (3.0, -3.2, 1.2), ns_steps=3, beta=0.9, nesterov=False, adaptive=True, preconditioning="aol",
         mu_dtype=jnp.float32, weight_dimension_numbers=MATRIX_DIMS), "matrices"),
    (Ref("contrib.scale_by_muon", TWO_COEFFS, preconditioning="schatten", weight_dimension_numbers=MATRIX_DIMS),
     "matrices"),
    # optax's spectral norm (an SVD) has no bfloat16 kernel: float32 matrices only.
    (Ref("contrib.scale_by_muon", preconditioning="spectral", eps=1e-6, weight_dimension_numbers=MATRIX_DIMS),
     "matrices32"),
    (Ref("contrib.muon", 0.1), None),
    (Ref("contrib.muon", 0.05, "dion", beta=0.8, eps=1e-6, weight_decay=0.1, adam_b1=0.8, adam_b2=0.99, adam_eps_root=1e-8,
         adam_weight_decay=0.01, adam_learning_rate=0.01, consistent_rms=0.2, nesterov=False), None),
    (Ref("contrib.muon", 0.05, muon_weight_dimension_numbers=MUON_DIMS, adaptive=True, mu_dtype=jnp.float32,
         preconditioning="aol", weight_decay_mask=lambda p: jax.tree.map(lambda x: x.ndim == 2, p)), None),
    (_Fixed("muon(muon_weight_dimension_numbers=fn)", _muon_with_fn), None),
    (Ref("contrib.scale_by_galore"), None),
    (Ref("contrib.scale_by_galore", rank=2, weight_dimension_numbers=GD(1, 0)), "matrices"),
    (Ref("contrib.scale_by_galore", 2, 2, 0.5, Ref("scale_by_lion")), None),
    (Ref("contrib.galore", 0.1), None),
    (Ref("contrib.galore", 0.1, 2, 2, 0.5, Ref("sgd", 1.0, 0.9), weight_decay=0.1,
         mask=lambda p: jax.tree.map(lambda x: x.ndim >= 2, p)), None),
    (Ref("contrib.galore", 0.1, rank=3, weight_dimension_numbers=GALORE_DIMS), None),
    (_Fixed("galore(weight_dimension_numbers=fn)", _galore_with_fn), None),
    (Ref("contrib.dog"), None),
    (Ref("contrib.dog", 0.5, ("distance", 1e-3), 1e-6, weight_decay=1e-2, mask={"dense": True, "blocks": False,
                                                                               "scale": True}), None),
    (Ref("contrib.dog", init_step=("learning_rate", 1e-3)), None),
    (Ref("contrib.dowg"), None),
    (Ref("contrib.dowg", 0.3, 1e-2, 1e-3, weight_decay=0.1), None),
    # optax's mechanize cannot mix float32 and bfloat16 params (lax.clamp of mixed dtypes).
    (Ref("contrib.mechanize", Ref("sgd", 0.1)), "float32"),
    (Ref("contrib.mechanize", Ref("adam", 1.0), 0.1, 1e-6, 1e-5, 3), "float32"),
    (Ref("contrib.mechanize", Ref("lion", 0.1), weight_decay=0.0), "bfloat16"),
]


def _params(kind):
  if kind == "matrices":
    return _matrices()
  if kind == "matrices32":
    return _float32(_matrices())
  if kind == "float32":
    return _float32(mixed_params())
  if kind == "bfloat16":
    return jax.tree.map(lambda x: x.astype(jnp.bfloat16), mixed_params())
  return None


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("spec,params", ROWS, ids=[repr(s) for s, _ in ROWS])
def test_equivalent_to_optax(spec, params, jit):
  assert_equivalent(spec, jit=jit, params=_params(params))


@pytest.mark.parametrize("name,tx", [
    ("dog", gradxform.contrib.dog()),
    ("dowg", gradxform.contrib.dowg()),
    ("mechanize", gradxform.contrib.mechanize(gradxform.adam(1.0))),
    ("muon", gradxform.contrib.muon(0.05)),
    ("galore", gradxform.contrib.galore(0.1, rank=8)),
])
def test_trains(name, tx):
  del name
  assert_trains(tx)


def _parameters(fn):
  return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]


NAMES = ["muon", "scale_by_muon", "galore", "scale_by_galore", "dog", "dowg", "mechanize"]


@pytest.mark.parametrize("name", NAMES)
def test_signature_matches_optax(name):
  assert _parameters(getattr(gradxform.contrib, name)) == _parameters(getattr(optax.contrib, name))


@pytest.mark.parametrize("name", ["MuonState", "MuonDimensionNumbers", "GaLoreState", "GaLoreDimensionNumbers",
                                  "DoGState", "DoWGState", "MechanicState"])
def test_state_fields_match_optax(name):
  ours, theirs = getattr(gradxform.contrib, name), getattr(optax.contrib, name)
  assert ours._fields == theirs._fields
  assert ours._field_defaults == theirs._field_defaults


def test_constructions_compare_by_value():
  assert gradxform.contrib.muon(0.1) == gradxform.contrib.muon(0.1)
  assert hash(gradxform.contrib.galore(0.1, rank=4)) == hash(gradxform.contrib.galore(0.1, rank=4))
  assert gradxform.contrib.dog() == gradxform.contrib.dog()


@pytest.mark.parametrize("build,fn,arg,error", [
    (lambda: gradxform.contrib.muon(-0.1), "muon", "learning_rate", gradxform.HyperparameterError),
    (lambda: gradxform.contrib.muon(0.1, "nope"), "muon", "ns_coeffs", gradxform.HyperparameterError),
    (lambda: gradxform.contrib.muon(0.1, beta=1.5), "muon", "beta", gradxform.HyperparameterError),
    (lambda: gradxform.contrib.muon(0.1, preconditioning="qr"), "muon", "preconditioning",
     gradxform.HyperparameterError),
    (lambda: gradxform.contrib.scale_by_muon(((1.0, 2.0),)), "scale_by_muon", "ns_coeffs",
     gradxform.HyperparameterError),
    (lambda: gradxform.contrib.scale_by_muon(TWO_COEFFS, ns_steps=1), "scale_by_muon", "ns_steps",
     gradxform.HyperparameterError),
    (lambda: gradxform.contrib.galore(0.1, rank=0), "galore", "rank", gradxform.HyperparameterError),
    (lambda: gradxform.contrib.scale_by_galore(rank=2.5), "scale_by_galore", "rank",
     gradxform.HyperparameterTypeError),
    (lambda: gradxform.contrib.galore(0.1, update_proj_gap=0), "galore", "update_proj_gap",
     gradxform.HyperparameterError),
    (lambda: gradxform.contrib.dog(init_step=("guess", 1.0)), "dog", "init_step", gradxform.HyperparameterError),
    (lambda: gradxform.contrib.dog(eps=-1.0), "dog", "eps", gradxform.HyperparameterError),
    (lambda: gradxform.contrib.dowg(weight_decay=-1.0), "dowg", "weight_decay", gradxform.HyperparameterError),
    (lambda: gradxform.contrib.mechanize(gradxform.sgd(0.1), num_betas=0), "mechanize", "num_betas",
     gradxform.HyperparameterError),
    (lambda: gradxform.contrib.mechanize(gradxform.sgd(0.1), s_init=-1.0), "mechanize", "s_init",
     gradxform.HyperparameterError),
])
def test_bad_hyperparameters(build, fn, arg, error):
  with pytest.raises(error, match=f"{fn}.*{arg}"):
    build()


def test_dimension_numbers_errors():
  params = mixed_params()
  bad = {"dense": {"w": gradxform.contrib.MuonDimensionNumbers(0, 0), "b": None},
         "blocks": [None, (None, None)], "scale": None}
  tx = gradxform.contrib.muon(0.1, muon_weight_dimension_numbers=bad)
  with pytest.raises(gradxform.HyperparameterError, match="overlap"):
    tx.update(params, tx.init(params), params)
  tx = gradxform.contrib.scale_by_galore(rank=2, weight_dimension_numbers=gradxform.contrib.GaLoreDimensionNumbers())
  with pytest.raises(gradxform.HyperparameterError, match="scale_by_galore.*every axis"):
    tx.init(params)


@pytest.mark.parametrize("tx", [gradxform.contrib.dog(), gradxform.contrib.dowg(),
                                gradxform.contrib.mechanize(gradxform.sgd(0.1))], ids=["dog", "dowg", "mechanize"])
def test_needs_params(tx):
  params = _float32(mixed_params())
  with pytest.raises(gradxform.MissingParamsError):
    tx.update(params, tx.init(params))


def test_wrong_state():
  params = _matrices()
  tx = gradxform.contrib.scale_by_galore()
  with pytest.raises(gradxform.StateMismatchError, match="scale_by_galore"):
    tx.update(params, gradxform.EmptyState())


def test_none_updates_pass_through():
  params = {"w": jnp.ones((4, 3)), "b": jnp.ones((3,))}
  tx = gradxform.contrib.dowg()
  updates, _ = tx.update({"w": jnp.ones((4, 3)), "b": None}, tx.init(params), params)
  assert updates["b"] is None
  assert updates["w"].shape == (4, 3)


def test_mechanize_mixed_dtypes():
  # optax raises TypeError here (lax.clamp of bfloat16 bounds and a float32 h); gradxform promotes.
  params = mixed_params()
  tx = gradxform.contrib.mechanize(gradxform.sgd(0.1))
  state = tx.init(params)
  for step in range(2):
    updates, state = tx.update(jax.tree.map(lambda p: 0.1 * p, params), state, params)
    params = gradxform.apply_updates(params, updates)
  assert state.s.dtype == jnp.float32
  assert bool(jnp.all(jnp.isfinite(state.s))) and bool(jnp.all(state.s > 0))
  assert all(bool(jnp.all(jnp.isfinite(p))) for p in jax.tree.leaves(params))
