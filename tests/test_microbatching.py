"""gradxform.microbatching against optax.microbatching 0.2.8: microbatch, micro_vmap, micro_grad,
reshape_batch_axis and the accumulators; each result is also checked against the unbatched computation."""

import dataclasses
import enum
import functools
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import optax.microbatching as om
import pytest

import gradxform
import gradxform.microbatching as gm
from equivalence import assert_trees_equivalent


def _standard(fn, *args, **kwargs):
  with jax.numpy_dtype_promotion("standard"):
    return fn(*args, **kwargs)


def _data(shape, seed, dtype=jnp.float32):
  return jax.random.normal(jax.random.key(seed), shape, jnp.float32).astype(dtype)


NONBATCH = _data((), 0)
BATCH1 = _data((10, 3), 1)
BATCH2 = _data((10, 3), 2) + 3.0  # away from zero: it divides


def per_example(nonbatch, x, y):
  return x * y, x / y * nonbatch


def summed(nonbatch, x, y):
  return jnp.sum(nonbatch + x + 2 * y, axis=0)


def averaged(nonbatch, x, y):
  return jnp.mean(nonbatch * x), {"key": jnp.mean(y)}


def combined(nonbatch, x, y):
  return {"per_example": per_example(nonbatch, x, y), "sum": summed(nonbatch, x, y),
          "mean": averaged(nonbatch, x, y)}


def _kinds(lib):
  t = lib.AccumulationType
  return {"per_example": (per_example, t.CONCAT), "sum": (summed, t.SUM), "mean": (averaged, t.MEAN),
          "running_mean": (averaged, t.RUNNING_MEAN),
          "combined": (combined, {"per_example": t.CONCAT, "sum": t.SUM, "mean": t.MEAN})}


def _both(build, *args, jit=False, **kwargs):
  """build(lib) -> function; its results in gradxform and in optax (optax under standard promotion)."""
  ours, theirs = build(gm), build(om)
  if jit:
    ours, theirs = jax.jit(ours), jax.jit(theirs)
  return ours(*args, **kwargs), _standard(theirs, *args, **kwargs)


# ----------------------------------------------------------------------------------------------
# microbatch


@pytest.mark.parametrize("kind,size,jit", [
    ("per_example", 2, False), ("per_example", 5, True), ("sum", 1, False), ("sum", 10, True),
    ("mean", 2, True), ("mean", 5, False), ("running_mean", 2, False), ("combined", 5, False),
    ("combined", 2, True)])
def test_microbatch_matches_optax_and_the_full_batch(kind, size, jit):
  def build(lib):
    fun, acc = _kinds(lib)[kind]
    return lib.microbatch(fun, argnums=(1, 2), microbatch_size=size, accumulator=acc)

  ours, theirs = _both(build, NONBATCH, BATCH1, BATCH2, jit=jit)
  assert_trees_equivalent(ours, theirs, f"microbatch {kind} size {size}")
  full = _kinds(gm)[kind][0](NONBATCH, BATCH1, BATCH2)
  assert_trees_equivalent(ours, full, f"microbatch {kind} vs the full batch", rtol=1e-5)


def test_microbatch_none_size_returns_the_function():
  assert gm.microbatch(summed, argnums=1, microbatch_size=None) is summed


def test_microbatch_keyword_batch_arguments():
  def fun(nonbatch, x, *, y):
    return jnp.sum(nonbatch + x + 2 * y, axis=0)

  build = lambda lib: lib.microbatch(fun, argnums=(1,), microbatch_size=2, argnames=("y",))
  ours, theirs = _both(build, NONBATCH, BATCH1, y=BATCH2)
  assert_trees_equivalent(ours, theirs, "argnames")
  assert_trees_equivalent(ours, fun(NONBATCH, BATCH1, y=BATCH2), "argnames vs the full batch", rtol=1e-5)


@pytest.mark.parametrize("acc", ["SUM", "MEAN", "RUNNING_MEAN", "CONCAT"])
def test_microbatch_batch_axis_position(acc):
  x0 = _data((10, 4, 5), 3)
  x1 = jnp.transpose(x0, (1, 0, 2))
  fun0 = functools.partial(jnp.einsum, "bij,bkj->ik")
  fun1 = functools.partial(jnp.einsum, "ibj,kbj->ik")
  mixed = lambda a, b: jnp.einsum("bij,kbj->ik", a, b)
  build = lambda f, **kw: lambda lib: lib.microbatch(
      f, microbatch_size=2, accumulator=getattr(lib.AccumulationType, acc), **kw)
  ours0, theirs0 = _both(build(fun0, argnums=(0, 1), in_axes=0), x0, x0)
  ours1, _ = _both(build(fun1, argnums=(0, 1), in_axes=1), x1, x1)
  ours2, theirs2 = _both(build(mixed, argnums=(), argnames=("b", "a"), in_axes=(1, 0)), a=x0, b=x1)
  ours3, _ = _both(build(mixed, argnums=0, argnames="b", in_axes=(0, 1)), x0, b=x1)
  assert_trees_equivalent(ours0, theirs0, "in_axes=0")
  assert_trees_equivalent(ours2, theirs2, "argnames with in_axes")
  for other in (ours1, ours2, ours3):
    assert_trees_equivalent(other, ours0, "the batch axis position does not change the result", rtol=1e-5)


def test_microbatch_splits_the_batch_column_major():
  """Microbatch j takes rows j, j + n, ...: visible with a function that couples neighbouring rows."""
  x = jnp.arange(6.0)
  build = lambda lib: lib.microbatch(lambda v: v[:-1] @ v[1:], argnums=0, microbatch_size=3)
  ours, theirs = _both(build, x)
  assert_trees_equivalent(ours, theirs, "non-decomposable function")
  assert float(ours) == float(x[0::2][:-1] @ x[0::2][1:] + x[1::2][:-1] @ x[1::2][1:])


@pytest.mark.parametrize("dtype,acc", [(jnp.float16, "SUM"), (jnp.bfloat16, "RUNNING_MEAN"), (jnp.bfloat16, "MEAN"),
                                       (jnp.float32, "MEAN")], ids=str)
def test_microbatch_keeps_the_dtype(dtype, acc):
  args = (NONBATCH.astype(dtype), BATCH1.astype(dtype), BATCH2.astype(dtype))
  build = lambda lib: lib.microbatch(summed, argnums=(1, 2), microbatch_size=2,
                                     accumulator=getattr(lib.AccumulationType, acc))
  ours, theirs = _both(build, *args)
  assert ours.dtype == dtype
  assert_trees_equivalent(ours, theirs, f"{acc} in {dtype}")


@pytest.mark.parametrize("acc", ["CONCAT", "SUM", "RUNNING_MEAN", "MEAN"])
def test_microbatch_early_stopping(acc):
  x = jnp.arange(12.0) + 1
  build = lambda lib: lib.microbatch(lambda v: v * 2, argnums=0, microbatch_size=3, num_real_microbatches=2,
                                     accumulator=getattr(lib.AccumulationType, acc))
  ours, theirs = _both(build, x)
  assert_trees_equivalent(ours, theirs, f"{acc} stopped after 2 of 4 microbatches")


def test_microbatch_traced_number_of_microbatches():
  def run(lib, x, steps):
    return lib.microbatch(jnp.sum, argnums=0, microbatch_size=4, num_real_microbatches=steps)(x)

  x = jnp.arange(128.0)
  ours = jax.jit(run, static_argnums=0)(gm, x, 4)
  theirs = _standard(jax.jit(run, static_argnums=0), om, x, 4)
  assert_trees_equivalent(ours, theirs, "traced num_real_microbatches")


def test_microbatch_with_integer_outputs_sums():
  build = lambda lib: lib.microbatch(lambda v: jnp.sum(v, axis=0), argnums=0, microbatch_size=2)
  x = jnp.arange(24).reshape(8, 3)
  ours, theirs = _both(build, x)
  assert ours.dtype == theirs.dtype and (np.asarray(ours) == np.asarray(theirs)).all()


def _max_accumulator(lib):
  """A user-defined accumulator: the elementwise maximum over microbatches."""
  return lib.Accumulator(
      init=lambda value: jax.tree.map(lambda s: jnp.full(s.shape, -jnp.inf, s.dtype), value),
      update=lambda carry, value, index: jax.tree.map(jnp.maximum, carry, value),
      finalize=lambda carry: carry,
      aggregate=lambda values: jax.tree.map(lambda v: jnp.max(v, axis=0), values),
  )


def test_custom_accumulator_in_a_tree():
  def fun(x):
    return {"max": jnp.max(x, axis=0), "sum": jnp.sum(x, axis=0)}

  build = lambda lib: lib.microbatch(fun, argnums=0, microbatch_size=2,
                                     accumulator={"max": _max_accumulator(lib), "sum": lib.AccumulationType.SUM})
  ours, theirs = _both(build, BATCH1)
  assert_trees_equivalent(ours, theirs, "custom accumulator")
  assert_trees_equivalent(ours, fun(BATCH1), "custom accumulator vs the full batch", rtol=1e-5)


# ----------------------------------------------------------------------------------------------
# reshape_batch_axis


@pytest.mark.parametrize("axis,size", [(0, 2), (0, 5), (1, 2)])
def test_reshape_batch_axis(axis, size):
  tree = {"a": _data((10, 4), 5), "b": [_data((10, 4, 3), 6)]} if axis == 0 else {"a": _data((3, 4), 7)}
  ours = gm.reshape_batch_axis(tree, size, axis)
  theirs = om.reshape_batch_axis(tree, size, axis)
  assert_trees_equivalent(ours, theirs, f"reshape_batch_axis axis={axis}")


# ----------------------------------------------------------------------------------------------
# micro_vmap


@pytest.mark.parametrize("acc,size,jit", [("CONCAT", 2, False), ("CONCAT", None, False), ("SUM", 2, True),
                                          ("MEAN", 4, False), ("RUNNING_MEAN", 2, True)])
def test_micro_vmap_matches_optax_and_vmap(acc, size, jit):
  x = jnp.arange(2 * 8 * 4, dtype=jnp.float32).reshape(2, 8, 4)
  build = lambda lib: lib.micro_vmap(jnp.sum, in_axes=1, microbatch_size=size,
                                     accumulator=getattr(lib.AccumulationType, acc))
  ours, theirs = _both(build, x, jit=jit)
  assert_trees_equivalent(ours, theirs, f"micro_vmap {acc}")
  mapped = jax.vmap(jnp.sum, in_axes=1)(x)
  expected = {"CONCAT": mapped, "SUM": jnp.sum(mapped), "MEAN": jnp.mean(mapped),
              "RUNNING_MEAN": jnp.mean(mapped)}[acc]
  assert_trees_equivalent(ours, expected, f"micro_vmap {acc} vs vmap", rtol=1e-5)


def test_micro_vmap_keywords_and_unmapped_arguments():
  def fun(w, x, *, y):
    return jnp.sum(w * x + y)

  x = jnp.arange(4 * 8, dtype=jnp.float32).reshape(4, 8)
  y = jnp.ones((4, 8), jnp.float32)
  w = jnp.float32(0.5)
  build = lambda lib: lib.micro_vmap(fun, in_axes=(None, 0), microbatch_size=2)
  ours, theirs = _both(build, w, x, y=y)
  assert_trees_equivalent(ours, theirs, "micro_vmap with kwargs")
  assert_trees_equivalent(ours, jax.vmap(fun, in_axes=(None, 0))(w, x, y=y), "vs vmap")


def test_micro_vmap_early_stopping_and_custom_vmap():
  calls = []

  def counting_vmap(fun, in_axes, out_axes):
    calls.append(in_axes)
    return jax.vmap(fun, in_axes, out_axes)

  build = lambda lib: lib.micro_vmap(jnp.sum, microbatch_size=4, num_real_microbatches=3, vmap_fn=counting_vmap,
                                     accumulator=lib.AccumulationType.SUM)
  ours, theirs = _both(build, jnp.ones(16))
  assert_trees_equivalent(ours, theirs, "micro_vmap stopped after 3 microbatches")
  assert calls and all(axes == (0,) for axes in calls)


# ----------------------------------------------------------------------------------------------
# micro_grad


def mean_squared_loss(params, features, targets):
  diff = features @ params - targets
  return 0.5 * jnp.mean(diff ** 2)


FEATURES = _data((8, 3), 8)
TARGETS = _data((8,), 9)
PARAMS = _data((3,), 10)


@pytest.mark.parametrize("keep_batch_dim", [True, False])
@pytest.mark.parametrize("size,acc", [(None, "SUM"), (2, "MEAN"), (4, "RUNNING_MEAN")])
def test_micro_grad_matches_optax(keep_batch_dim, size, acc):
  build = lambda lib: lib.micro_grad(
      mean_squared_loss, argnums=0, batch_argnums=(1, 2), keep_batch_dim=keep_batch_dim, microbatch_size=size,
      accumulator=getattr(lib.AccumulationType, acc), transform_fn=lambda g: (g, g ** 2),
      metrics_fn=jnp.linalg.norm)
  ours, theirs = _both(build, PARAMS, FEATURES, TARGETS)
  assert_trees_equivalent(ours[0], theirs[0], "transformed gradients")
  assert type(ours[1]).__name__ == type(theirs[1]).__name__ == "Aux"
  assert ours[1]._fields == theirs[1]._fields
  assert_trees_equivalent(tuple(ours[1]), tuple(theirs[1]), "per-example outputs")
  per_example = jax.vmap(jax.grad(mean_squared_loss), in_axes=(None, 0, 0))(PARAMS, FEATURES[:, None], TARGETS[:, None])
  reduce = jnp.sum if acc == "SUM" else jnp.mean
  assert_trees_equivalent(ours[0][0], reduce(per_example, axis=0), "vs per-example gradients", rtol=1e-5)


def test_micro_grad_with_aux_and_early_stopping():
  def loss(scale, x):
    return scale * jnp.sum(x), {"rows": jnp.sum(x, axis=-1)}

  build = lambda lib: lib.micro_grad(loss, has_aux=True, microbatch_size=4, num_real_microbatches=3,
                                     keep_batch_dim=False)
  ours, theirs = _both(build, 1.0, jnp.ones((16, 2)))
  assert_trees_equivalent(ours[0], theirs[0], "gradient over 3 of 4 microbatches")
  assert_trees_equivalent(tuple(ours[1]), tuple(theirs[1]), "aux outputs")


def test_micro_grad_several_argnums_and_a_prng_batch():
  def loss(w, b, x):
    return jnp.sum(jnp.tanh(x @ w + b))

  w, b, x = _data((3, 2), 11), _data((2,), 12), _data((6, 3), 13)
  build = lambda lib: lib.micro_grad(loss, argnums=(0, 1), batch_argnums=2, microbatch_size=3)
  ours, theirs = _both(build, w, b, x, jit=True)
  assert_trees_equivalent(ours, theirs, "gradients for two arguments")
  assert_trees_equivalent(ours[0], jax.grad(loss, argnums=(0, 1))(w, b, x), "vs the full-batch gradient", rtol=1e-5)


# ----------------------------------------------------------------------------------------------
# Clear errors.


def _raises(error, fn, *words):
  with pytest.raises(error) as info:
    fn()
  for word in words:
    assert word in str(info.value), f"{word!r} not in {info.value}"


@pytest.mark.parametrize("call,error,words", [
    (lambda: gm.microbatch(summed, 1, 0), gradxform.HyperparameterError,
     ["microbatch", "microbatch_size"]),
    (lambda: gm.microbatch(summed, 1, -2), ValueError, ["microbatch", "microbatch_size"]),
    (lambda: gm.microbatch(summed, 1, 2.5), TypeError, ["microbatch", "microbatch_size"]),
    (lambda: gm.micro_vmap(jnp.sum, microbatch_size=0), ValueError, ["micro_vmap", "microbatch_size"]),
    (lambda: gm.micro_grad(mean_squared_loss, microbatch_size=-1), ValueError, ["micro_grad", "microbatch_size"]),
    (lambda: gm.reshape_batch_axis(BATCH1, 0), ValueError, ["reshape_batch_axis", "microbatch_size"]),
    (lambda: gm.microbatch(summed, 1, 2, num_real_microbatches=-1), ValueError,
     ["microbatch", "num_real_microbatches"]),
    (lambda: gm.microbatch(summed, 1, 2, accumulator="sum"), TypeError, ["microbatch", "accumulator", "'sum'"]),
    (lambda: gm.micro_vmap(jnp.sum, accumulator={"a": max}), TypeError, ["micro_vmap", "accumulator", "['a']"]),
    (lambda: gm.micro_grad(mean_squared_loss, accumulator=[gm.AccumulationType.SUM, 1.0]), TypeError,
     ["micro_grad", "accumulator", "[1]"]),
    (lambda: gm.microbatch(summed, (1, 2), 2, in_axes=(0,)), ValueError, ["microbatch", "in_axes"]),
    (lambda: gm.micro_vmap(jnp.sum, out_axes=1), NotImplementedError, ["micro_vmap", "out_axes"]),
], ids=["size0", "size_neg", "size_float", "vmap_size", "grad_size", "reshape_size", "num_real", "acc_str",
        "acc_tree", "acc_none", "in_axes_len", "out_axes"])
def test_bad_arguments_are_rejected_at_construction(call, error, words):
  _raises(error, call, *words)


def test_batch_size_must_be_divisible():
  fn = gm.microbatch(summed, argnums=(1, 2), microbatch_size=3)
  _raises(ValueError, lambda: fn(NONBATCH, BATCH1, BATCH2), "divisible", "10", "microbatch_size=3")


def test_batch_sizes_must_agree():
  fn = gm.microbatch(summed, argnums=(1, 2), microbatch_size=2)
  _raises(ValueError, lambda: fn(NONBATCH, BATCH1, BATCH2[:8]), "microbatch", "same size", "10", "8")


@pytest.mark.parametrize("acc", ["MEAN", "RUNNING_MEAN"])
def test_means_need_floating_point_results(acc):
  fn = gm.microbatch(lambda v: jnp.sum(v, axis=0), argnums=0, microbatch_size=2,
                     accumulator=getattr(gm.AccumulationType, acc))
  _raises(ValueError, lambda: fn(jnp.arange(8)), acc, "floating-point", "int32")


# ----------------------------------------------------------------------------------------------
# Signatures and types.


def _comparable(value):
  if isinstance(value, enum.Enum):
    return (type(value).__name__, value.name)
  if callable(value) and hasattr(value, "__name__"):
    return ("callable", value.__name__)
  return value


def _parameters(fn):
  return [(p.name, p.kind, _comparable(p.default)) for p in inspect.signature(fn).parameters.values()]


@pytest.mark.parametrize("name", ["Accumulator", "micro_grad", "micro_vmap", "microbatch", "reshape_batch_axis"])
def test_signature_matches_optax(name):
  assert _parameters(getattr(gm, name)) == _parameters(getattr(om, name))


def test_public_names_and_types_match_optax():
  public = lambda mod: sorted(n for n in dir(mod) if not n.startswith("_"))
  assert public(gm) == public(om)
  assert [m.name for m in gm.AccumulationType] == [m.name for m in om.AccumulationType]
  assert [f.name for f in dataclasses.fields(gm.Accumulator)] == [f.name for f in dataclasses.fields(om.Accumulator)]
  with pytest.raises(AttributeError):  # frozen, as optax's
    gm.Accumulator(None, None, None, None).init = None
