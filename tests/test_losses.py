"""gradxform.losses against optax.losses 0.2.8: values, dtypes and gradients, jitted and eager.

The table lists several argument sets per loss, built from a fixed key (float32 and bfloat16, several
shapes and axes, masks, integer labels, edge values). For each argument set the loss and its
vector-Jacobian product (a fixed random cotangent pulled back to the differentiable arguments) are
computed in both libraries; all the sets of one loss, in both libraries, compile as ONE jitted
function. Eagerly, every loss's first value and the flagged sets' values and gradients are compared.
gradxform runs under the suite's strict dtype promotion; optax under standard promotion, as it needs.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Callable
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradxform
from gradxform import losses

F32, BF16 = jnp.float32, jnp.bfloat16

NAMES = sorted(losses.__all__)


class Inputs:
  """Deterministic random inputs: every call draws from a new fold of one fixed key."""

  def __init__(self, seed: int):
    self.key = jax.random.key(seed)
    self.count = 0

  def _next(self):
    self.count += 1
    return jax.random.fold_in(self.key, self.count)

  def normal(self, shape, dtype=F32, scale=1.0):
    return (scale * jax.random.normal(self._next(), shape)).astype(dtype)

  def uniform(self, shape, low=0.0, high=1.0, dtype=F32):
    return jax.random.uniform(self._next(), shape, minval=low, maxval=high).astype(dtype)

  def ints(self, shape, high, low=0, dtype=jnp.int32):
    return jax.random.randint(self._next(), shape, low, high).astype(dtype)

  def bits(self, shape, dtype=F32, p=0.5):
    return jax.random.bernoulli(self._next(), p, shape).astype(dtype)

  def signs(self, shape, dtype=F32):
    return 2 * self.bits(shape, dtype) - 1

  def probs(self, shape, dtype=F32, axis=-1):
    return jax.nn.softmax(self.normal(shape), axis=axis).astype(dtype)

  def log_probs(self, shape, dtype=F32):
    return jax.nn.log_softmax(self.normal(shape)).astype(dtype)

  def one_hot(self, shape, dtype=F32):
    return jax.nn.one_hot(self.ints(shape[:-1], shape[-1]), shape[-1], dtype=dtype)


def scaled_logsumexp(scores, temperature=1.0):
  """A max function with a keyword argument, for make_fenchel_young_loss."""
  return temperature * jax.nn.logsumexp(scores / temperature)


@dataclasses.dataclass(frozen=True)
class Case:
  """One argument set of a loss: `name(*args, **kwargs)`, differentiated w.r.t. the arguments in `grad`."""

  name: str
  make: Callable[[Inputs], tuple]  # -> (args, kwargs)
  grad: tuple = (0,)
  id: str = ""
  factory: tuple | None = None  # (maker, maker args): the loss is maker(*args) (make_fenchel_young_loss)
  eager: bool = False  # value and gradient also compared eagerly (the first set's value always is)
  jit: bool = True  # False where optax cannot run under jit

  @property
  def key(self) -> str:
    return self.factory[0] if self.factory else self.name


def case(name, make, grad=(0,), id="", **flags):
  return Case(name, make, grad, id or "default", **flags)


def _ctc_inputs(g, dtype=F32, blank=0, classes=5, paddings_dtype=F32, repeat=False):
  logits = g.normal((2, 6, classes), dtype, scale=2.0)
  logit_paddings = jnp.array([[0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 1, 1]], paddings_dtype)
  low, high = (1, classes) if blank == 0 else (0, classes - 1)
  labels = g.ints((2, 3), high, low)
  if repeat:
    labels = labels.at[:, 1].set(labels[:, 0])
  label_paddings = jnp.array([[0, 0, 0], [0, 0, 1]], paddings_dtype)
  return (logits, logit_paddings, labels, label_paddings), {"blank_id": blank}


def _dice_inputs(g, dtype=F32, classes=3, target_dtype=F32):
  return g.normal((2, 4, 4, classes), dtype, scale=2.0), g.one_hot((2, 4, 4, classes), target_dtype)


def _masked_lists(g):
  where = g.bits((3, 5), bool, p=0.7).at[1].set(False)  # one list with no valid item
  return (g.normal((3, 5)), g.uniform((3, 5), 0, 3)), {"where": where}


CASES = [
    # Binary classification.
    case("sigmoid_binary_cross_entropy", lambda g: ((g.normal((4, 5)), g.bits((4, 5))), {}), (0, 1)),
    case("sigmoid_binary_cross_entropy", lambda g: ((g.normal((4, 5), BF16), g.uniform((4, 5), dtype=BF16)), {}),
         (0, 1), "bf16"),
    case("sigmoid_binary_cross_entropy", lambda g: ((g.normal((4, 5), scale=60.0), g.ints((4, 5), 2)), {}),
         id="large-int-labels"),
    case("sigmoid_binary_cross_entropy", lambda g: ((g.normal((4, 5)), g.bits((5,))), {}), (0, 1), "broadcast"),
    case("hinge_loss", lambda g: ((g.normal((6,)), g.signs((6,))), {}), (0, 1)),
    case("hinge_loss", lambda g: ((g.normal((2, 3), BF16), g.signs((2, 3))), {}), (0, 1), "bf16-f32"),
    case("hinge_loss", lambda g: ((g.ints((6,), 3, -3), g.ints((6,), 2) * 2 - 1), {}), (), "int"),
    case("perceptron_loss", lambda g: ((g.normal((6,)), g.signs((6,))), {}), (0, 1)),
    case("perceptron_loss", lambda g: ((g.normal((2, 3), BF16), g.signs((2, 3), BF16)), {}), (0, 1), "bf16"),
    case("sparsemax_loss", lambda g: ((g.normal((3, 4), scale=2.0), g.ints((3, 4), 2)), {})),
    case("sparsemax_loss", lambda g: ((g.normal((3, 4), BF16, 2.0), g.bits((3, 4), bool)), {}), id="bf16-bool"),
    case("sigmoid_focal_loss", lambda g: ((g.normal((4, 5), scale=3.0), g.bits((4, 5))), {}), (0, 1)),
    case("sigmoid_focal_loss", lambda g: ((g.normal((4, 5)), g.uniform((4, 5))), {"alpha": 0.25, "gamma": 0.5}),
         (0, 1), "alpha-soft"),
    case("sigmoid_focal_loss", lambda g: ((g.normal((4, 5), scale=40.0), g.bits((5,))), {"gamma": 0.0}),
         id="large-gamma0-broadcast"),
    case("sigmoid_focal_loss", lambda g: ((g.normal((4, 5), BF16), g.bits((4, 5))), {"gamma": jnp.float32(1.5)}),
         id="bf16-f32-gamma"),
    # Softmax cross entropies.
    case("safe_softmax_cross_entropy", lambda g: ((g.normal((4, 5)), g.probs((4, 5))), {}), (0, 1)),
    case("safe_softmax_cross_entropy",
         lambda g: ((g.normal((4, 5)).at[:, :2].set(-jnp.inf), g.probs((4, 5)).at[:, :2].set(0.0)), {}),
         (0, 1), "neg-inf", eager=True),
    case("safe_softmax_cross_entropy", lambda g: ((g.normal((4, 5), BF16), g.probs((4, 5))), {}), (0, 1),
         "bf16-f32"),
    case("softmax_cross_entropy", lambda g: ((g.normal((4, 5)), g.probs((4, 5))), {}), (0, 1)),
    case("softmax_cross_entropy", lambda g: ((g.normal((5, 4)), g.probs((5, 4), axis=0)), {"axis": 0}), (0, 1),
         "axis0"),
    case("softmax_cross_entropy", lambda g: ((g.normal((2, 3, 4)), g.one_hot((2, 3, 4))), {"axis": (0, 2)}),
         (0, 1), "axes"),
    case("softmax_cross_entropy", lambda g: ((g.normal((3, 4)), g.probs((3, 4))), {"axis": None}), (0, 1),
         "axis-none"),
    case("softmax_cross_entropy",
         lambda g: ((g.normal((4, 5)), g.probs((4, 5))), {"where": g.bits((4, 5), bool, 0.7).at[:, 0].set(True)}),
         (0, 1), "where-full", eager=True),
    case("softmax_cross_entropy",
         lambda g: ((g.normal((4, 5)), g.probs((4, 5))), {"where": jnp.array([True, False, True, True])}),
         (0, 1), "where-batch"),
    case("softmax_cross_entropy", lambda g: ((g.normal((4, 5), BF16), g.one_hot((4, 5), jnp.int32)), {}),
         id="bf16-int-labels"),
    case("softmax_cross_entropy", lambda g: ((g.normal((4, 5)), g.probs((5,))), {}), (0, 1), "broadcast"),
    case("softmax_cross_entropy_with_integer_labels", lambda g: ((g.normal((4, 5)), g.ints((4,), 5)), {})),
    case("softmax_cross_entropy_with_integer_labels",
         lambda g: ((g.normal((5, 4)), g.ints((4,), 5)), {"axis": 0}), id="axis0"),
    case("softmax_cross_entropy_with_integer_labels",
         lambda g: ((g.normal((2, 3, 4, 5)), g.ints((2, 3), 20)), {"axis": (2, 3)}), id="axes"),
    case("softmax_cross_entropy_with_integer_labels",
         lambda g: ((g.normal((2, 3, 4, 5)), g.ints((2, 4), 15)), {"axis": (3, 1)}), id="axes-unordered"),
    case("softmax_cross_entropy_with_integer_labels",
         lambda g: ((g.normal((4, 5)), g.ints((4,), 5)), {"where": g.bits((4, 5), bool, 0.7).at[1].set(False)}),
         id="where-full"),
    case("softmax_cross_entropy_with_integer_labels",
         lambda g: ((g.normal((2, 3, 4)), g.ints((2,), 12)), {"axis": (1, 2), "where": jnp.array([True, False])}),
         id="axes-where-batch"),
    case("softmax_cross_entropy_with_integer_labels",
         lambda g: ((g.normal((4, 5), BF16, 100.0), g.ints((4,), 5, dtype=jnp.uint8)), {}), id="bf16-large-uint8"),
    case("multiclass_hinge_loss", lambda g: ((g.normal((4, 5)), g.ints((4,), 5)), {})),
    case("multiclass_hinge_loss", lambda g: ((g.normal((2, 3, 5), BF16), g.ints((2, 3), 5)), {}), id="bf16-3d"),
    case("multiclass_perceptron_loss", lambda g: ((g.normal((4, 5)), g.ints((4,), 5)), {})),
    case("multiclass_perceptron_loss", lambda g: ((g.normal((2, 3, 5), BF16), g.ints((2, 3), 5)), {}),
         id="bf16-3d"),
    case("poly_loss_cross_entropy", lambda g: ((g.normal((4, 5)), g.probs((4, 5))), {}), (0, 1)),
    case("poly_loss_cross_entropy", lambda g: ((g.normal((5, 4)), g.probs((5, 4), axis=0)),
                                               {"epsilon": -1.0, "axis": 0}), (0, 1), "axis0"),
    case("poly_loss_cross_entropy",
         lambda g: ((g.normal((4, 5)), g.one_hot((4, 5))), {"where": g.bits((4, 5), bool, 0.8).at[:, 0].set(True)}),
         (0, 1), "where"),
    case("poly_loss_cross_entropy", lambda g: ((g.normal((4, 5), BF16), g.probs((4, 5), BF16)),
                                               {"epsilon": jnp.float32(1.0)}), (0, 1), "bf16"),
    # Divergences.
    case("kl_divergence", lambda g: ((g.log_probs((4, 5)), g.probs((4, 5))), {}), (0, 1)),
    case("kl_divergence", lambda g: ((g.log_probs((4, 5)), g.probs((4, 5)).at[:, 0].set(0.0)), {"axis": None}),
         id="zero-targets"),
    case("kl_divergence", lambda g: ((g.log_probs((4, 5), BF16), g.probs((4, 5))),
                                     {"where": g.bits((4, 5), bool)}), (0, 1), "bf16-where"),
    case("kl_divergence_with_log_targets", lambda g: ((g.log_probs((4, 5)), g.log_probs((4, 5))), {}), (0, 1)),
    case("kl_divergence_with_log_targets",
         lambda g: ((g.log_probs((5, 4), BF16), g.log_probs((5, 4), BF16)), {"axis": 0, "where": g.bits((5, 4), bool)}),
         (0, 1), "bf16-axis0-where"),
    case("generalized_kl_divergence", lambda g: ((g.normal((4, 5)), g.uniform((4, 5), 0.1, 2.0)), {}), (0, 1)),
    case("generalized_kl_divergence",
         lambda g: ((g.normal((4, 5)), g.uniform((4, 5), 0.1, 2.0)), {"axis": (0, 1), "where": g.bits((4, 5), bool)}),
         (0, 1), "axes-where"),
    case("convex_kl_divergence", lambda g: ((g.normal((4, 5)), g.uniform((4, 5), 0.1, 2.0)), {}), (0, 1)),
    case("convex_kl_divergence", lambda g: ((g.normal((5, 4), BF16), g.uniform((5, 4), 0.1, 2.0)), {"axis": 0}),
         (0, 1), "bf16-axis0"),
    # CTC.
    case("ctc_loss", lambda g: _ctc_inputs(g)),
    case("ctc_loss", lambda g: _ctc_inputs(g, blank=4, repeat=True), id="blank-last-repeats"),
    case("ctc_loss", lambda g: _ctc_inputs(g, BF16, paddings_dtype=jnp.int32), id="bf16-int-paddings"),
    case("ctc_loss", lambda g: (_ctc_inputs(g)[0], {"log_epsilon": -1e4}), id="log-epsilon"),
    case("ctc_loss_with_forward_probs", lambda g: _ctc_inputs(g, repeat=True)),
    case("ctc_loss_with_forward_probs", lambda g: _ctc_inputs(g, blank=2), id="blank-mid"),
    # Sparsemax and Fenchel-Young.
    case("multiclass_sparsemax_loss", lambda g: ((g.normal((4, 5)), g.ints((4,), 5)), {})),
    case("multiclass_sparsemax_loss", lambda g: ((g.normal((4, 5), scale=0.05), g.ints((4,), 5)), {}),
         id="dense-support"),
    case("multiclass_sparsemax_loss", lambda g: ((g.normal((4, 5), BF16, 2.0), g.ints((4,), 5)), {}), (),
         "bf16-value"),
    case("fenchel_young_loss", lambda g: ((g.normal((3, 4)), g.probs((3, 4))), {}), (0, 1), "logsumexp",
         factory=("make_fenchel_young_loss", (jax.nn.logsumexp,))),
    case("fenchel_young_loss", lambda g: ((g.normal((2, 3, 4), BF16), g.probs((3, 4))), {"temperature": 2.0}),
         (0, 1), "kwargs-bf16-broadcast", factory=("make_fenchel_young_loss", (scaled_logsumexp,))),
    # Ranking.
    case("ranking_softmax_loss", lambda g: ((g.normal((3, 5)), g.uniform((3, 5), 0, 3)), {})),
    case("ranking_softmax_loss", _masked_lists, id="where-empty-list"),
    case("ranking_softmax_loss",
         lambda g: ((g.normal((3, 5)), g.ints((3, 5), 3)), {"weights": g.uniform((3, 5)), "reduce_fn": jnp.sum}),
         id="int-labels-weights-sum"),
    case("ranking_softmax_loss", lambda g: (_masked_lists(g)[0], {**_masked_lists(g)[1], "reduce_fn": None}),
         id="where-unreduced"),
    case("ranking_softmax_loss", lambda g: ((g.normal((3, 5), BF16), g.uniform((3, 5), 0, 3)),
                                            {"weights": g.uniform((5,))}), id="bf16-f32-weights"),
    # Regression.
    case("squared_error", lambda g: ((g.normal((4, 5)), g.normal((4, 5))), {}), (0, 1)),
    case("squared_error", lambda g: ((g.normal((3,), BF16),), {}), id="bf16-no-targets"),
    case("squared_error", lambda g: ((g.normal((3,), BF16), g.normal((3,))), {}), (0, 1), "bf16-f32"),
    case("l2_loss", lambda g: ((g.normal((4, 5)), g.normal((4, 5))), {}), (0, 1)),
    case("l2_loss", lambda g: ((g.normal((3,), BF16),), {}), id="bf16-no-targets"),
    case("huber_loss", lambda g: ((g.normal((4, 5), scale=2.0), g.normal((4, 5))), {}), (0, 1)),
    case("huber_loss", lambda g: ((g.normal((4, 5), scale=2.0), g.normal((5,))), {"delta": 0.5}), (0, 1),
         "delta-broadcast"),
    case("huber_loss", lambda g: ((jnp.array([-2.0, -1.0, 0.0, 1.0, 3.0]),), {}), id="ties-no-targets", eager=True),
    case("huber_loss", lambda g: ((g.normal((4,), BF16, 2.0),), {"delta": jnp.float32(1.5)}), id="bf16-f32-delta"),
    case("log_cosh", lambda g: ((g.normal((4, 5)), g.normal((4, 5))), {}), (0, 1)),
    case("log_cosh", lambda g: ((g.normal((4, 5), scale=200.0),), {}), id="large-no-targets"),
    case("log_cosh", lambda g: ((g.normal((4,), BF16), g.normal((4,), BF16)), {}), (0, 1), "bf16"),
    case("cosine_similarity", lambda g: ((g.normal((4, 5)), g.normal((4, 5))), {}), (0, 1)),
    case("cosine_similarity", lambda g: ((g.normal((5, 4)).at[:, 0].set(0.0), g.normal((5, 4))),
                                         {"epsilon": 1e-6, "axis": 0}), (0, 1), "zero-axis0", eager=True),
    case("cosine_similarity", lambda g: ((g.normal((4, 5), BF16), g.normal((4, 5))),
                                         {"epsilon": 0.1, "where": g.bits((4, 5), bool, 0.8)}), (0, 1),
         "bf16-f32-where"),
    case("cosine_distance", lambda g: ((g.normal((4, 5)), g.normal((5,))), {}), (0, 1), "broadcast"),
    case("cosine_distance", lambda g: ((g.normal((2, 3, 4)), g.normal((2, 3, 4))), {"axis": (1, 2)}), (0, 1),
         "axes"),
    # Segmentation.
    case("dice_loss", lambda g: (_dice_inputs(g), {}), (0, 1)),
    case("dice_loss", lambda g: (_dice_inputs(g), {"alpha": 0.3, "beta": 0.7, "class_weights": g.uniform((3,)),
                                                    "reduction": "sum"}), (0, 1), "tversky-weights-sum"),
    case("dice_loss", lambda g: (_dice_inputs(g), {"ignore_background": True, "reduction": "none",
                                                   "axis": (1,), "smooth": 0.1}), (0, 1), "background-none-axis"),
    case("dice_loss", lambda g: ((g.normal((2, 4, 4), scale=2.0), g.bits((2, 4, 4))), {}), (0, 1), "binary"),
    case("dice_loss", lambda g: ((g.probs((2, 4, 4, 3)), g.one_hot((2, 4, 4, 3))), {"apply_softmax": False}),
         (0, 1), "probabilities", eager=True, jit=False),
    case("dice_loss", lambda g: (_dice_inputs(g, BF16, target_dtype=jnp.int32), {}), id="bf16-int-targets"),
    case("multiclass_generalized_dice_loss", lambda g: (_dice_inputs(g, classes=4), {}), (0, 1)),
    case("multiclass_generalized_dice_loss",
         lambda g: (_dice_inputs(g, BF16, 4, jnp.int32), {"ignore_background": True, "smooth": 0.5}),
         id="bf16-int-targets-background"),
    case("binary_dice_loss", lambda g: ((g.normal((2, 8)), g.bits((2, 8))), {}), (0, 1)),
    case("binary_dice_loss", lambda g: ((g.normal((2, 4, 4, 1), BF16), g.bits((2, 4, 4, 1), BF16)),
                                        {"smooth": 0.5}), (0, 1), "bf16-channel"),
    # Self-supervised.
    case("ntxent", lambda g: ((g.normal((6, 3)), jnp.array([0, 0, 1, 1, 2, 2])), {})),
    case("ntxent", lambda g: ((g.normal((5, 4), BF16), jnp.array([0, 1, 0, 1, 2])), {"temperature": 0.5}),
         id="bf16-singleton"),
    case("triplet_margin_loss", lambda g: ((g.normal((4, 3)), g.normal((4, 3)), g.normal((4, 3))), {}),
         (0, 1, 2)),
    case("triplet_margin_loss", lambda g: ((g.normal((3, 4)), g.normal((3, 4)), g.normal((3, 4))),
                                           {"axis": 0, "norm_degree": 4, "margin": 3.0, "eps": 1e-3}), (0, 1, 2),
         "axis0-degree4"),
    case("triplet_margin_loss", lambda g: ((g.normal((4, 3), BF16), g.normal((4, 3), BF16), g.normal((4, 3))),
                                           {"margin": 2.0}), (0, 1, 2), "bf16-f32"),
    # Smoothing.
    case("smooth_labels", lambda g: ((g.one_hot((4, 5)), 0.1), {})),
    case("smooth_labels", lambda g: ((g.one_hot((2, 3, 4)), 0.2), {"axis": (1, 2)}), id="axes"),
    case("smooth_labels", lambda g: ((g.one_hot((4, 5), BF16), 0.1), {"where": g.bits((4, 5), bool, 0.8)}),
         id="bf16-where"),
    case("smooth_labels", lambda g: ((g.one_hot((4, 5), BF16), jnp.float32(0.2)), {}), id="bf16-f32-alpha"),
]


def _loss(spec: Case, lib):
  if spec.factory is not None:
    maker, maker_args = spec.factory
    return getattr(lib.losses, maker)(*maker_args)
  return getattr(lib.losses, spec.name)


def _cotangent(out):
  """A fixed random cotangent shaped and typed like the output (a tuple for tuple outputs)."""
  leaves, treedef = jax.tree.flatten(out)
  keys = jax.random.split(jax.random.key(7), len(leaves))
  return jax.tree.unflatten(treedef, [jax.random.normal(k, x.shape).astype(x.dtype)
                                      for k, x in zip(keys, leaves)])


def _value_and_pullback(fn, args, kwargs, argnums):
  """(fn(*args, **kwargs), vjp of a fixed cotangent w.r.t. args[argnums])."""
  def of_diff(*diff):
    full = list(args)
    for i, d in zip(argnums, diff):
      full[i] = d
    return fn(*full, **kwargs)

  out, pullback = jax.vjp(of_diff, *(args[i] for i in argnums))
  return out, pullback(_cotangent(out))


def _eager(spec: Case, lib, args, kwargs):
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # convex_kl_divergence warns in both
    if lib is optax:
      with jax.numpy_dtype_promotion("standard"):
        return _value_and_pullback(_loss(spec, lib), args, kwargs, spec.grad)
    return _value_and_pullback(_loss(spec, lib), args, kwargs, spec.grad)


def _jitted_both(specs: list[Case], inputs: list[tuple]):
  """Every argument set of one loss, in both libraries, from ONE compiled function (one compile per loss)."""
  arrays = [(args, {k: v for k, v in kw.items() if isinstance(v, jax.Array)}) for args, kw in inputs]
  static = [{k: v for k, v in kw.items() if not isinstance(v, jax.Array)} for _, kw in inputs]

  def run_all(arrays):
    out = []
    for spec, fixed, (args, kw) in zip(specs, static, arrays):
      kw = {**fixed, **kw}  # static options (axis, reduction, reduce_fn...) stay Python values
      out.append((_eager(spec, gradxform, args, kw), _eager(spec, optax, args, kw)))
    return out

  # LLVM's optimization level changes neither the HLO nor its float semantics, only how fast the
  # tiny test programs run; level 0 makes their compilation (the bulk of this test's time) cheaper.
  compiled = jax.jit(run_all).lower(arrays).compile({"xla_backend_optimization_level": 0})
  return compiled(arrays)


def _tolerance(dtype):
  return (2e-2, 2e-2) if dtype in (BF16, jnp.float16) else (1e-6, 1e-6)


def assert_close(ours, theirs, what):
  ours_leaves, ours_def = jax.tree.flatten(ours)
  theirs_leaves, theirs_def = jax.tree.flatten(theirs)
  assert ours_def == theirs_def, f"{what}: structure {ours_def} vs {theirs_def}"
  for i, (a, b) in enumerate(zip(ours_leaves, theirs_leaves)):
    a, b = jnp.asarray(a), jnp.asarray(b)
    assert a.shape == b.shape, f"{what}[{i}]: shape {a.shape} vs {b.shape}"
    assert a.dtype == b.dtype, f"{what}[{i}]: dtype {a.dtype} vs {b.dtype}"
    rtol, atol = _tolerance(a.dtype)
    np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32), rtol=rtol, atol=atol,
                               err_msg=f"{what}[{i}]")


GROUPS: dict[str, list[Case]] = {}
for _spec in CASES:
  GROUPS.setdefault(_spec.key, []).append(_spec)


def _compare(spec, ours, theirs):
  (ours_value, ours_grads), (theirs_value, theirs_grads) = ours, theirs
  assert_close(ours_value, theirs_value, f"{spec.key}[{spec.id}] value")
  assert_close(ours_grads, theirs_grads, f"{spec.key}[{spec.id}] gradient")


@pytest.mark.parametrize("name", sorted(GROUPS))
def test_matches_optax_jit(name):
  specs = [spec for spec in GROUPS[name] if spec.jit]
  results = _jitted_both(specs, [spec.make(Inputs(0)) for spec in specs])
  for spec, (ours, theirs) in zip(specs, results):
    _compare(spec, ours, theirs)


@pytest.mark.parametrize("name", sorted(GROUPS))
def test_matches_optax_eager(name):
  # Eager execution compiles every operation on its own, so this pass is kept small: the value of
  # each loss's first argument set, and value and gradient of the sets flagged `eager` (those whose
  # Python-level logic depends on concrete values, and the numerically delicate corners).
  first = dataclasses.replace(GROUPS[name][0], grad=())
  for spec in [first] + [spec for spec in GROUPS[name] if spec.eager]:
    args, kwargs = spec.make(Inputs(0))
    _compare(spec, _eager(spec, gradxform, args, kwargs), _eager(spec, optax, args, kwargs))


def test_table_covers_every_loss():
  assert set(GROUPS) == set(NAMES)
  assert all(len(GROUPS[name]) >= 2 for name in NAMES)


# ----------------------------------------------------------------------------------------------
# Corners where optax itself fails: gradxform gives the answer optax gives on the nearest input it
# can handle.


def test_multiclass_sparsemax_bf16_gradient():
  # optax's simplex projection returns float32 for bfloat16 scores but a bfloat16 tangent, so its
  # custom JVP raises; gradxform returns the float32-consistent gradient.
  g = Inputs(3)
  scores, labels = g.normal((4, 5), BF16, 2.0), g.ints((4,), 5)

  @jax.jit
  def both(scores):
    ours = jax.grad(lambda s: losses.multiclass_sparsemax_loss(s, labels).sum())(scores)
    with jax.numpy_dtype_promotion("standard"):
      theirs = jax.grad(lambda s: optax.losses.multiclass_sparsemax_loss(s, labels).sum())(scores.astype(F32))
    return ours, theirs

  ours, theirs = both(scores)
  assert ours.dtype == BF16
  np.testing.assert_allclose(np.asarray(ours, np.float32), np.asarray(theirs), atol=2e-2)
  with jax.numpy_dtype_promotion("standard"), pytest.raises(TypeError):
    jax.jit(jax.grad(lambda s: optax.losses.multiclass_sparsemax_loss(s, labels).sum()))(scores)


def test_safe_softmax_cross_entropy_integer_labels_gradient():
  # optax multiplies the float0 tangent of integer labels and fails; integer labels mean float ones.
  g = Inputs(4)
  logits, labels = g.normal((4, 5)), g.one_hot((4, 5), jnp.int32)

  @jax.jit
  def both(logits):
    ours = jax.value_and_grad(lambda x: losses.safe_softmax_cross_entropy(x, labels).sum())(logits)
    with jax.numpy_dtype_promotion("standard"):
      theirs = jax.value_and_grad(
          lambda x: optax.losses.safe_softmax_cross_entropy(x, labels.astype(F32)).sum())(logits)
    return ours, theirs

  assert_close(*both(logits), "value and gradient")


def test_dice_loss_probabilities_under_jit():
  # optax reads the traced sums in Python and fails under jit; gradxform checks only known values.
  g = Inputs(5)
  probs, targets = g.probs((2, 4, 4, 3)), g.one_hot((2, 4, 4, 3))
  eager = losses.dice_loss(probs, targets, apply_softmax=False)
  jitted = jax.jit(lambda p, t: losses.dice_loss(p, t, apply_softmax=False))(probs, targets)
  assert_close(jitted, eager, "jitted value")
  with pytest.raises(jax.errors.ConcretizationTypeError):
    jax.jit(lambda p, t: optax.losses.dice_loss(p, t, apply_softmax=False))(probs, targets)


def test_dice_loss_rejects_non_probabilities_like_optax():
  g = Inputs(6)
  logits, targets = g.normal((2, 4, 4, 3)), g.one_hot((2, 4, 4, 3))
  with pytest.raises(ValueError, match="sum to 1"):
    optax.losses.dice_loss(logits, targets, apply_softmax=False)
  with pytest.raises(gradxform.GradxformError, match=r"dice_loss.*apply_softmax=False.*`predictions`"):
    losses.dice_loss(logits, targets, apply_softmax=False)
  # binary_dice_loss inherits the check over its single channel (an optax corner kept as is).
  probs, bits = g.uniform((2, 8)), g.bits((2, 8))
  with pytest.raises(ValueError):
    optax.losses.binary_dice_loss(probs, bits, apply_sigmoid=False)
  with pytest.raises(ValueError, match="binary_dice_loss"):
    losses.binary_dice_loss(probs, bits, apply_sigmoid=False)


def test_convex_kl_divergence_warns():
  g = Inputs(7)
  with pytest.warns(DeprecationWarning, match="generalized_kl_divergence"):
    losses.convex_kl_divergence(g.normal((3,)), g.uniform((3,), 0.1, 1.0))


# ----------------------------------------------------------------------------------------------
# Signatures.


def _parameters(fn):
  return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]


@pytest.mark.parametrize("name", NAMES)
def test_signature_matches_optax(name):
  assert _parameters(getattr(losses, name)) == _parameters(getattr(optax.losses, name))


def test_names_match_optax():
  theirs = {n for n in dir(optax.losses) if not n.startswith("_") and callable(getattr(optax.losses, n))}
  assert set(NAMES) == theirs
  assert all(getattr(gradxform.losses, n).__doc__ for n in NAMES)


def test_fenchel_young_loss_signature_matches_optax():
  ours = losses.make_fenchel_young_loss(jax.nn.logsumexp)
  theirs = optax.losses.make_fenchel_young_loss(jax.nn.logsumexp)
  assert _parameters(ours) == _parameters(theirs)
  assert ours.__name__ == theirs.__name__


# ----------------------------------------------------------------------------------------------
# Clear errors, raised at trace time.

Z = jnp.zeros
ERRORS = [
    # (loss, args, kwargs, builtin class, words the message must contain)
    ("softmax_cross_entropy", (Z((4, 5)), Z((4, 3))), {}, ValueError,
     ["softmax_cross_entropy", "`logits`", "`labels`", "[4, 5]", "[4, 3]"]),
    ("softmax_cross_entropy", (Z((4, 5), jnp.int32), Z((4, 5))), {}, TypeError,
     ["softmax_cross_entropy", "`logits`", "floating", "int32"]),
    ("softmax_cross_entropy", (Z((4, 5)), Z((4, 5))), {"where": Z((3,), bool)}, ValueError,
     ["softmax_cross_entropy", "`where`", "[3, 1]", "[4, 5]"]),
    ("softmax_cross_entropy", (Z((4, 5)), Z((4, 5))), {"axis": 2}, ValueError,
     ["softmax_cross_entropy", "`axis`", "rank 2"]),
    ("softmax_cross_entropy_with_integer_labels", (Z((4, 5)), Z((3,), jnp.int32)), {}, ValueError,
     ["softmax_cross_entropy_with_integer_labels", "`labels`", "[3]", "[4, 5]", "[4]"]),
    ("softmax_cross_entropy_with_integer_labels", (Z((4, 5)), Z((4,))), {}, TypeError,
     ["softmax_cross_entropy_with_integer_labels", "`labels`", "integer", "float32[4]"]),
    ("softmax_cross_entropy_with_integer_labels", (Z((4, 5)), Z((4,), jnp.int32)), {"axis": [1]}, ValueError,
     ["softmax_cross_entropy_with_integer_labels", "`axis`", "list"]),
    ("sigmoid_binary_cross_entropy", (Z((4, 5)), Z((4,))), {}, ValueError,
     ["sigmoid_binary_cross_entropy", "`logits`", "`labels`", "[4, 5]", "[4]"]),
    ("safe_softmax_cross_entropy", (Z((4, 5)), Z((2, 5))), {}, ValueError,
     ["safe_softmax_cross_entropy", "`labels`", "[2, 5]"]),
    ("perceptron_loss", (Z((3,)), Z((3, 1))), {}, ValueError,
     ["perceptron_loss", "`predictor_outputs`", "`targets`", "[3]", "[3, 1]"]),
    ("hinge_loss", (Z((3,)), Z((2,))), {}, ValueError, ["hinge_loss", "`targets`", "[2]"]),
    ("multiclass_hinge_loss", (Z((4, 5)), Z((3,), jnp.int32)), {}, ValueError,
     ["multiclass_hinge_loss", "`labels`", "[3]", "[4, 5]"]),
    ("multiclass_perceptron_loss", (Z((4, 5)), Z((4, 2), jnp.int32)), {}, ValueError,
     ["multiclass_perceptron_loss", "`labels`", "[4, 2]"]),
    ("multiclass_sparsemax_loss", (Z((4, 5)), Z((3,), jnp.int32)), {}, ValueError,
     ["multiclass_sparsemax_loss", "`scores`", "`labels`", "batch"]),
    ("multiclass_sparsemax_loss", (Z((2, 4, 5)), Z((2,), jnp.int32)), {}, ValueError,
     ["multiclass_sparsemax_loss", "`scores`", "rank 2"]),
    ("poly_loss_cross_entropy", (Z((4, 5)), Z((4, 5), jnp.int32)), {}, TypeError,
     ["poly_loss_cross_entropy", "`labels`", "floating"]),
    ("kl_divergence", (Z((4, 5)), Z((4, 3))), {}, ValueError, ["kl_divergence", "`log_predictions`", "`targets`"]),
    ("kl_divergence_with_log_targets", (Z((4, 5)), Z((4, 5), jnp.int32)), {}, TypeError,
     ["kl_divergence_with_log_targets", "`log_targets`"]),
    ("ctc_loss", (Z((2, 6)), Z((2, 6)), Z((2, 3), jnp.int32), Z((2, 3))), {}, ValueError,
     ["ctc_loss", "`logits`", "rank 3"]),
    ("ctc_loss", (Z((2, 6, 5)), Z((2, 5)), Z((2, 3), jnp.int32), Z((2, 3))), {}, ValueError,
     ["ctc_loss", "`logit_paddings`", "[2, 6]", "[2, 5]"]),
    ("ctc_loss_with_forward_probs", (Z((2, 6, 5)), Z((2, 6)), Z((3, 3), jnp.int32), Z((3, 3))), {}, ValueError,
     ["ctc_loss_with_forward_probs", "`labels`", "batch"]),
    ("ctc_loss", (Z((2, 6, 5)), Z((2, 6)), Z((2, 3), jnp.int32), Z((2, 4))), {}, ValueError,
     ["ctc_loss", "`labels`", "`label_paddings`", "[2, 4]"]),
    ("ctc_loss", (Z((2, 6, 5)), Z((2, 6)), Z((2, 3), jnp.int32), Z((2, 3))), {"blank_id": 5}, ValueError,
     ["ctc_loss", "`blank_id`", "[0, 5)"]),
    ("sigmoid_focal_loss", (Z((4,), jnp.int32), Z((4,))), {}, TypeError, ["sigmoid_focal_loss", "`logits`"]),
    ("ranking_softmax_loss", (Z((3, 5)), Z((3, 5))), {"where": Z((3, 4), bool)}, ValueError,
     ["ranking_softmax_loss", "`where`", "[3, 4]"]),
    ("squared_error", (Z((3,)), Z((3, 1))), {}, ValueError,
     ["squared_error", "`predictions`", "`targets`", "[3]", "[3, 1]"]),
    ("l2_loss", (Z((3,)), Z((1,))), {}, ValueError, ["l2_loss", "`targets`", "[1]"]),
    ("huber_loss", (Z((3,), jnp.int32),), {}, TypeError, ["huber_loss", "`predictions`", "int32"]),
    ("log_cosh", (Z((3,)), Z((2,))), {}, ValueError, ["log_cosh", "`targets`", "[2]"]),
    ("cosine_similarity", (Z((4, 5)), Z((4, 3))), {}, ValueError, ["cosine_similarity", "`targets`", "[4, 3]"]),
    ("cosine_distance", (Z((4, 5)), Z((4, 5))), {"axis": (0, 2)}, ValueError, ["cosine_distance", "`axis`"]),
    ("dice_loss", (Z((2, 4, 4, 3)), Z((2, 4, 4, 2))), {}, ValueError,
     ["dice_loss", "`predictions`", "`targets`", "[2, 4, 4, 3]", "[2, 4, 4, 2]"]),
    ("dice_loss", (Z((2, 4, 4, 3)), Z((2, 4, 4, 3))), {"reduction": "max"}, ValueError,
     ["dice_loss", "`reduction`", "'max'"]),
    ("dice_loss", (Z((2, 4, 4, 3)), Z((2, 4, 4, 3))), {"class_weights": Z((3, 1))}, ValueError,
     ["dice_loss", "`class_weights`", "rank 1"]),
    ("multiclass_generalized_dice_loss", (Z((2, 4, 3)), Z((2, 4, 2))), {}, ValueError,
     ["multiclass_generalized_dice_loss", "`predictions`", "`targets`"]),
    ("binary_dice_loss", (Z((2, 8)), Z((2, 7))), {}, ValueError, ["binary_dice_loss", "[2, 8, 1]", "[2, 7, 1]"]),
    ("ntxent", (Z((6, 3)), Z((5,), jnp.int32)), {}, ValueError, ["ntxent", "`labels`", "`embeddings`", "[5]"]),
    ("ntxent", (Z((6,)), Z((6,), jnp.int32)), {}, ValueError, ["ntxent", "`embeddings`", "rank 2"]),
    ("triplet_margin_loss", (Z((4, 3)), Z((4, 3)), Z((3, 3))), {}, ValueError,
     ["triplet_margin_loss", "`negatives`", "[3, 3]"]),
    ("smooth_labels", (Z((4, 5), jnp.int32), 0.1), {}, TypeError, ["smooth_labels", "`labels`"]),
    ("sparsemax_loss", (Z((4, 5)), Z((3,))), {}, ValueError, ["sparsemax_loss", "`labels`", "[3]"]),
]


@pytest.mark.parametrize("name,args,kwargs,builtin,words", ERRORS,
                         ids=[f"{e[0]}-{i}" for i, e in enumerate(ERRORS)])
@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_clear_errors(name, args, kwargs, builtin, words, jit):
  fn = getattr(losses, name)
  call = jax.jit(lambda *a: fn(*a, **kwargs)) if jit else (lambda *a: fn(*a, **kwargs))
  with pytest.raises(gradxform.GradxformError) as info:
    call(*args)
  assert isinstance(info.value, builtin)
  for word in words:
    assert word in str(info.value), f"{word!r} missing from: {info.value}"


def test_fenchel_young_errors():
  with pytest.raises(gradxform.HyperparameterTypeError, match="make_fenchel_young_loss.*`max_fun`"):
    losses.make_fenchel_young_loss("logsumexp")
  loss = losses.make_fenchel_young_loss(jax.nn.logsumexp)
  with pytest.raises(ValueError, match=r"fenchel_young_loss.*`scores`.*\[3, 4\].*`targets`.*\[3, 5\]"):
    jax.jit(loss)(Z((3, 4)), Z((3, 5)))


def test_errors_type():
  # The loss errors are gradxform errors and the builtin optax raises in the same place.
  assert issubclass(losses._checks.LossShapeError, (gradxform.GradxformError, ValueError))
  assert issubclass(losses._checks.LossDtypeError, TypeError)
