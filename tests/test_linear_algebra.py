"""Linear algebra and sampling utilities against optax 0.2.8: power iteration, inverse p-th roots, NNLS,
the diagonal normal of `multi_normal` and `scale_gradient`: values, dtypes, validation and signatures."""

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax import lax

import gradxform
from equivalence import assert_trees_equivalent


def _standard(fn, *args, **kwargs):
  """Runs optax under standard dtype promotion (it relies on implicit promotion)."""
  with jax.numpy_dtype_promotion("standard"):
    return fn(*args, **kwargs)


def _both(name, jit, *args, **kwargs):
  """`name(*args, **kwargs)` in gradxform and in optax, both eager or both jitted (keywords static)."""
  ours, theirs = getattr(gradxform, name), getattr(optax, name)
  if jit:
    ours = jax.jit(lambda *a, fn=ours: fn(*a, **kwargs))
    theirs = jax.jit(lambda *a, fn=theirs: fn(*a, **kwargs))
    return ours(*args), _standard(theirs, *args)
  return ours(*args, **kwargs), _standard(theirs, *args, **kwargs)


def psd(n, dtype=jnp.float32, seed=0, condition=None):
  """A random symmetric positive-definite matrix (of the given condition number if set)."""
  a = jax.random.normal(jax.random.key(seed), (n, n), jnp.float32)
  if condition is None:
    return (a @ a.T + 0.1 * jnp.eye(n)).astype(dtype)
  q, _ = jnp.linalg.qr(a)
  eigvals = jnp.asarray([condition ** (-i / max(n - 1, 1)) for i in range(n)], jnp.float32)
  return ((q * eigvals) @ q.T).astype(dtype)


def jit_all_eager_some(cases, eager):
  """(case, jit) pairs: every case compiled, the listed ones also eager (the loops compile either way)."""
  return pytest.mark.parametrize("case,jit", [(c, True) for c in sorted(cases)] + [(c, False) for c in eager],
                                 ids=lambda v: v if isinstance(v, str) else ("jit" if v else "eager"))


# ----------------------------------------------------------------------------------------------
# power_iteration

POWER_CASES = {
    "f32_default": (lambda: psd(6), {}),
    "bf16_default": (lambda: psd(4, jnp.bfloat16), {}),
    "few_iters": (lambda: psd(5, seed=1), {"num_iters": 3, "error_tolerance": 1e-3}),
    "v0": (lambda: psd(5, seed=2), {"v0": jnp.ones(5)}),
    "raw_key": (lambda: psd(5, seed=3), {"key": jax.random.PRNGKey(3)}),
    "typed_key": (lambda: psd(5, seed=3), {"key": jax.random.key(7)}),
    "default_precision": (lambda: psd(5, seed=4), {"precision": lax.Precision.DEFAULT, "error_tolerance": 1e-4}),
}


@jit_all_eager_some(POWER_CASES, ["f32_default"])
def test_power_iteration_on_a_matrix(case, jit):
  make, kwargs = POWER_CASES[case]
  ours, theirs = _both("power_iteration", jit, make(), **kwargs)
  assert_trees_equivalent(ours, theirs, f"power_iteration {case}")


def _block_product(v):
  """A block-diagonal operator on a pytree: 2 I on 'a', 0.5 times the identity on 'b'."""
  return {"a": 2 * v["a"], "b": 0.5 * v["b"]}


@pytest.mark.parametrize("v0,jit", [
    ({"a": jnp.ones(4), "b": jnp.ones(3)}, False),
    ({"a": jnp.linspace(0.1, 1.0, 4), "b": jnp.ones((2, 3), jnp.bfloat16)}, True),  # mixed: promotes to f32
], ids=["f32-eager", "mixed-jit"])
def test_power_iteration_on_a_pytree_operator(v0, jit):
  def run(lib, start):
    return lib.power_iteration(_block_product, v0=start, num_iters=20)

  if jit:
    run = jax.jit(run, static_argnums=0)
  ours, theirs = run(gradxform, v0), _standard(run, optax, v0)
  assert_trees_equivalent(ours, theirs, "power_iteration on a pytree")


def test_power_iteration_finds_the_dominant_eigenpair():
  matrix = psd(6, seed=5)
  eigval, eigvec = gradxform.power_iteration(matrix, num_iters=500, error_tolerance=1e-7)
  values, vectors = np.linalg.eigh(np.asarray(matrix, np.float64))
  np.testing.assert_allclose(float(eigval), values[-1], rtol=1e-4)
  np.testing.assert_allclose(np.abs(np.asarray(eigvec)), np.abs(vectors[:, -1]), atol=1e-3)


# ----------------------------------------------------------------------------------------------
# matrix_inverse_pth_root

ROOT_CASES = {
    "p1": (lambda: psd(4), 1, {}),
    "p2": (lambda: psd(4, seed=1), 2, {}),
    "p3_uses_a_power_of_two": (lambda: psd(4, seed=2), 3, {}),
    "p4": (lambda: psd(6, seed=3), 4, {"ridge_epsilon": 1e-3}),
    "p_array": (lambda: psd(4, seed=5), jnp.asarray(2), {}),
    "bf16": (lambda: psd(4, jnp.bfloat16, seed=6), 2, {}),
    "one_by_one": (lambda: psd(1, seed=7), 2, {}),
    "one_by_one_bf16": (lambda: psd(1, jnp.bfloat16, seed=7), 4, {}),
    "few_iters": (lambda: psd(5, seed=8), 4, {"num_iters": 2, "error_tolerance": 1e-2}),
    "ill_conditioned": (lambda: psd(8, seed=9, condition=1e9), 4, {"ridge_epsilon": 1e-12}),
    # Indefinite: the Newton error grows, so the iteration stops and returns the previous iterate.
    "indefinite_stops_early": (lambda: jnp.diag(jnp.asarray([1.0, -0.5, 2.0, 0.3])), 2, {}),
    "default_precision": (lambda: psd(4, seed=10), 8, {"precision": lax.Precision.DEFAULT}),
}


@jit_all_eager_some(ROOT_CASES, ["bf16", "one_by_one"])
def test_matrix_inverse_pth_root(case, jit):
  make, p, kwargs = ROOT_CASES[case]
  ours, theirs = _both("matrix_inverse_pth_root", jit, make(), p, **kwargs)
  if isinstance(theirs[1], int):  # a 1 x 1 matrix: optax returns the Python int 0 as the error
    assert type(ours[1]) is int and ours[1] == theirs[1]
    ours, theirs = ours[0], theirs[0]
  assert_trees_equivalent(ours, theirs, f"matrix_inverse_pth_root {case}")


def test_matrix_inverse_pth_root_inverts():
  matrix = psd(4, seed=11)
  root, error = gradxform.matrix_inverse_pth_root(matrix, 2, ridge_epsilon=0.0)
  assert float(error) < 1e-3
  np.testing.assert_allclose(np.asarray(root @ root @ matrix), np.eye(4), atol=1e-3)


# ----------------------------------------------------------------------------------------------
# nnls

def _nnls_problem(m, n, k, dtypes, seed=0):
  ka, kb = jax.random.split(jax.random.key(seed))
  return (jax.random.normal(ka, (m, n), dtypes[0]), jax.random.normal(kb, (m, *k), dtypes[1]))


NNLS_CASES = {
    "vector": ((10, 11, ()), (jnp.float32, jnp.float32), {"iters": 7}),
    "matrix_rhs": ((20, 5, (3,)), (jnp.float32, jnp.float32), {"iters": 50}),
    "bf16": ((10, 4, (2,)), (jnp.bfloat16, jnp.bfloat16), {"iters": 5}),
    "mixed_dtypes": ((8, 3, ()), (jnp.bfloat16, jnp.float32), {"iters": 5}),
    "zero_iters": ((6, 4, ()), (jnp.float32, jnp.float32), {"iters": 0}),
    "unroll_and_bound": ((12, 6, ()), (jnp.float32, jnp.float32), {"iters": 9, "unroll": 3, "L": 200.0}),
    "unroll_all": ((12, 6, (2,)), (jnp.float32, jnp.float32), {"iters": 4, "unroll": True}),
}


@jit_all_eager_some(NNLS_CASES, ["mixed_dtypes"])
def test_nnls(case, jit):
  shape, dtypes, kwargs = NNLS_CASES[case]
  a, b = _nnls_problem(*shape, dtypes)
  ours, theirs = _both("nnls", jit, a, b, **kwargs)
  assert_trees_equivalent(ours, theirs, f"nnls {case}")
  assert (np.asarray(ours.astype(jnp.float32)) >= 0).all()


def test_nnls_zero_matrix_has_a_step_size():
  a, b = jnp.zeros((4, 3)), jnp.ones(4)
  assert_trees_equivalent(gradxform.nnls(a, b, 3), _standard(optax.nnls, a, b, 3), "nnls on A = 0")


# ----------------------------------------------------------------------------------------------
# multi_normal

NORMAL_CASES = {
    "f32": (lambda: jnp.linspace(-1.0, 1.0, 3), lambda: jnp.asarray([0.1, -0.5, 0.3])),
    "broadcast_mixed": (lambda: jnp.ones((2, 3), jnp.bfloat16), lambda: jnp.asarray([0.1, -0.5, 0.3])),
    "python_scalars": (lambda: 0.5, lambda: -1.0),
}


@pytest.mark.parametrize("case,shape", [("f32", (2, 5)), ("broadcast_mixed", ()), ("broadcast_mixed", (4,)),
                                        ("python_scalars", (3,))], ids=str)
def test_multi_normal_matches_optax(case, shape):
  loc, log_scale = (f() for f in NORMAL_CASES[case])
  ours, theirs = gradxform.multi_normal(loc, log_scale), _standard(optax.multi_normal, loc, log_scale)
  key = jax.random.key(4)
  samples = ours.sample(shape, key)
  assert_trees_equivalent(samples, _standard(theirs.sample, shape, key), f"{case} samples")
  assert_trees_equivalent(ours.log_prob(samples), _standard(theirs.log_prob, samples), f"{case} log_prob")
  assert_trees_equivalent(ours.log_prob(0.25), _standard(theirs.log_prob, 0.25), f"{case} log_prob of a scalar")
  assert_trees_equivalent(ours.params, theirs.params, f"{case} params")
  assert_trees_equivalent(ours.log_scale, theirs.log_scale, f"{case} log_scale")


def test_multi_normal_sample_is_differentiable_and_jittable():
  def mean_sample(loc, log_scale, lib):
    return jnp.mean(lib.multi_normal(loc, log_scale).sample((64,), jax.random.key(0)))

  args = (jnp.asarray([0.5, -0.2]), jnp.asarray([0.0, -1.0]))
  ours = jax.jit(jax.grad(mean_sample, argnums=(0, 1)), static_argnums=2)(*args, gradxform)
  theirs = _standard(jax.jit(jax.grad(mean_sample, argnums=(0, 1)), static_argnums=2), *args, optax)
  assert_trees_equivalent(ours, theirs, "gradients of a sample")


# ----------------------------------------------------------------------------------------------
# scale_gradient


def _loss(lib, scale):
  def loss(tree):
    scaled = lib.scale_gradient(tree, scale)
    return jnp.sum(scaled["a"] ** 2) + jnp.sum(jnp.sin(scaled["b"].astype(jnp.float32)))
  return loss


@pytest.mark.parametrize("scale,jit", [(0.0, False), (1.0, False), (0.5, True), (-2.0, False),
                                       (np.float32(3.0), True)], ids=repr)
def test_scale_gradient_matches_optax(scale, jit):
  tree = {"a": jnp.linspace(-1.0, 1.0, 4), "b": jnp.ones((2, 3), jnp.bfloat16)}
  ours, theirs = jax.grad(_loss(gradxform, scale)), jax.grad(_loss(optax, scale))
  if jit:
    ours, theirs = jax.jit(ours), jax.jit(theirs)
  assert_trees_equivalent(ours(tree), _standard(theirs, tree), f"scale_gradient({scale})")
  assert_trees_equivalent(gradxform.scale_gradient(tree, scale), tree, "forward pass is the identity")


def test_scale_gradient_accepts_a_traced_scale():
  """optax needs a concrete scale (it tests `scale == 1.0`); gradxform also takes a traced one."""
  tree = {"a": jnp.linspace(-1.0, 1.0, 4), "b": jnp.ones((2, 3), jnp.bfloat16)}
  grad_of = jax.jit(lambda t, s: jax.grad(_loss(gradxform, s))(t))
  for scale in (0.5, 0.0, 1.0):
    assert_trees_equivalent(grad_of(tree, jnp.asarray(scale)), _standard(jax.grad(_loss(optax, scale)), tree),
                            f"traced scale {scale}")


def test_scale_gradient_keeps_none_leaves():
  tree = {"a": jnp.ones(3), "skip": None}
  grads = jax.grad(lambda t: jnp.sum(gradxform.scale_gradient(t, 0.5)["a"]))(tree)
  assert grads["skip"] is None
  assert_trees_equivalent(grads["a"], jax.grad(lambda a: jnp.sum(optax.scale_gradient(a, 0.5)))(tree["a"]), "a")


# ----------------------------------------------------------------------------------------------
# Clear errors.


def _raises(error, fn, *words):
  with pytest.raises(error) as info:
    fn()
  for word in words:
    assert word in str(info.value), f"{word!r} not in {info.value}"


@pytest.mark.parametrize("call,error,words", [
    (lambda: gradxform.power_iteration(_block_product), gradxform.HyperparameterError, ["power_iteration", "v0"]),
    (lambda: gradxform.power_iteration(psd(3), num_iters=-1), gradxform.HyperparameterError,
     ["power_iteration", "num_iters"]),
    (lambda: gradxform.power_iteration(psd(3), error_tolerance=-1e-3), gradxform.HyperparameterError,
     ["power_iteration", "error_tolerance"]),
    (lambda: gradxform.matrix_inverse_pth_root(psd(3), 0), gradxform.HyperparameterError,
     ["matrix_inverse_pth_root", "`p`"]),
    (lambda: gradxform.matrix_inverse_pth_root(psd(3), -2), gradxform.HyperparameterError,
     ["matrix_inverse_pth_root", "`p`"]),
    (lambda: gradxform.matrix_inverse_pth_root(psd(3), 2, ridge_epsilon=-1.0), gradxform.HyperparameterError,
     ["matrix_inverse_pth_root", "ridge_epsilon"]),
    (lambda: gradxform.matrix_inverse_pth_root(psd(3), 2, num_iters=-5), gradxform.HyperparameterError,
     ["matrix_inverse_pth_root", "num_iters"]),
    (lambda: gradxform.matrix_inverse_pth_root(psd(3), 2, error_tolerance=-1.0), gradxform.HyperparameterError,
     ["matrix_inverse_pth_root", "error_tolerance"]),
    (lambda: gradxform.matrix_inverse_pth_root(jnp.ones((3, 2)), 2), gradxform.HyperparameterError,
     ["matrix_inverse_pth_root", "square", "(3, 2)"]),
    (lambda: gradxform.matrix_inverse_pth_root(psd(3), "2"), gradxform.HyperparameterTypeError,
     ["matrix_inverse_pth_root", "`p`"]),
    (lambda: gradxform.nnls(jnp.ones(3), jnp.ones(3), 2), gradxform.HyperparameterError, ["nnls", "`A`", "(3,)"]),
    (lambda: gradxform.nnls(jnp.ones((3, 2)), jnp.ones((3, 1, 1)), 2), gradxform.HyperparameterError,
     ["nnls", "`b`", "(3, 1, 1)"]),
    (lambda: gradxform.nnls(jnp.ones((3, 2)), jnp.ones(4), 2), gradxform.HyperparameterError,
     ["nnls", "rows", "(4,)"]),
    (lambda: gradxform.nnls(jnp.ones((3, 2)), jnp.ones(3), -1), gradxform.HyperparameterError, ["nnls", "iters"]),
    (lambda: gradxform.nnls(jnp.ones((3, 2)), jnp.ones(3), 2.5), gradxform.HyperparameterTypeError,
     ["nnls", "iters"]),
    (lambda: gradxform.scale_gradient(jnp.ones(2), "half"), gradxform.HyperparameterTypeError,
     ["scale_gradient", "scale"]),
], ids=["pi_v0", "pi_iters", "pi_tol", "root_p0", "root_p_neg", "root_ridge", "root_iters", "root_tol",
        "root_square", "root_p_type", "nnls_A", "nnls_b_rank", "nnls_rows", "nnls_iters", "nnls_iters_type",
        "scale_gradient_type"])
def test_bad_arguments_are_rejected(call, error, words):
  _raises(error, call, *words)


# ----------------------------------------------------------------------------------------------
# Signatures.


def _parameters(fn):
  return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]


@pytest.mark.parametrize("name", ["matrix_inverse_pth_root", "nnls", "power_iteration", "multi_normal",
                                  "scale_gradient"])
def test_signature_matches_optax(name):
  assert _parameters(getattr(gradxform, name)) == _parameters(getattr(optax, name))


def test_distribution_interface_matches_optax():
  ours, theirs = type(gradxform.multi_normal(0.0, 0.0)), type(optax.multi_normal(0.0, 0.0))
  assert ours.__name__ == theirs.__name__
  for method in ("__init__", "sample", "log_prob"):
    assert _parameters(getattr(ours, method)) == _parameters(getattr(theirs, method))
  assert isinstance(ours.params, property) and isinstance(ours.log_scale, property)
