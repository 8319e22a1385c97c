"""partition (multi_transform), freeze and selective_transform, against optax 0.2.8.

Rows run on the shared mixed pytree, eagerly and under jax.jit; updates, params and the full state
(PartitionState of MaskedStates, MaskedNodes where a label is absent) must agree with optax's.
"""

import inspect

import jax
import jax.numpy as jnp
import optax
import pytest

import gradxform
from convergence import assert_trains
from equivalence import Ref, assert_equivalent, mixed_params

# A prefix of mixed_params: "blocks" (a list holding a tuple) is labelled as a whole.
PREFIX_LABELS = {"dense": {"w": "w", "b": "b"}, "blocks": "w", "scale": "b"}
FULL_INT_LABELS = {"dense": {"w": 0, "b": 1}, "blocks": [0, (1, 0)], "scale": 1}
FREEZE_DICT = {"dense": {"w": True, "b": False}, "blocks": [False, (True, False)], "scale": True}
FREEZE_PREFIX = {"dense": False, "blocks": True, "scale": False}


def rank_labels(params):
  """A label function: "w" for matrices and higher-rank leaves, "b" for vectors and scalars."""
  return jax.tree.map(lambda p: "w" if jnp.ndim(p) >= 2 else "b", params)


def matrices_only(params):
  return jax.tree.map(lambda p: jnp.ndim(p) >= 2, params)


def empty_init(params):
  del params
  return ()


def shift_by_offset(updates, state, params=None, *, offset, **extra_args):
  """A transformation needing a tree-shaped extra argument: updates + offset (leaf by leaf)."""
  del params, extra_args
  return jax.tree.map(lambda g, o: g + o, updates, offset), state


def scale_by_factor(updates, state, params=None, *, factor, **extra_args):
  """A transformation needing a scalar extra argument."""
  del params, extra_args
  return jax.tree.map(lambda g: g * factor, updates), state


SHIFT = Ref("GradientTransformationExtraArgs", empty_init, shift_by_offset)
FACTOR = Ref("GradientTransformationExtraArgs", empty_init, scale_by_factor)

ROWS = [
    Ref("partition", {"w": Ref("adam", 1e-2), "b": Ref("sgd", 0.1)}, PREFIX_LABELS),
    Ref("partition", {"w": Ref("chain", Ref("clip_by_global_norm", 1.0), Ref("adam", 1e-2)),
                      "b": Ref("sgd", 0.1, momentum=0.9)}, rank_labels),
    Ref("partition", {0: Ref("adamw", 1e-2, weight_decay=0.1), 1: Ref("set_to_zero")}, FULL_INT_LABELS),
    # A label nobody carries: its transformation runs on an all-masked tree and keeps an empty state.
    Ref("partition", {"w": Ref("adam", 1e-2), "b": Ref("sgd", 0.1), "unused": Ref("adam", 1e-3)}, rank_labels),
    Ref("partition", {"w": Ref("rmsprop", 1e-2)}, "w"),  # one label for the whole tree
    Ref("freeze", True), Ref("freeze", FREEZE_PREFIX),
    Ref("freeze", jnp.array(True)), Ref("freeze", matrices_only),
    Ref("chain", Ref("freeze", FREEZE_DICT), Ref("adam", 1e-2)),
    Ref("selective_transform", Ref("adam", 1e-2), freeze_mask=FREEZE_DICT),
    Ref("selective_transform", Ref("sgd", 0.1, momentum=0.9), freeze_mask=FREEZE_PREFIX),
    Ref("selective_transform", Ref("adam", 1e-2), freeze_mask=True),
    Ref("selective_transform", Ref("adam", 1e-2), freeze_mask=jnp.array(False)),
]


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("spec", ROWS, ids=repr)
def test_equivalent_to_optax(spec, jit):
  assert_equivalent(spec, jit=jit)


def _offset_args(params, grads, step):
  del params, step
  return {"offset": jax.tree.map(lambda g: g * 0.5, grads)}


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_mask_compatible_extra_args_match_optax(jit):
  """Tree-shaped extra arguments are masked like the updates, so each label sees only its part."""
  spec = Ref("partition", {"w": SHIFT, "b": Ref("chain", SHIFT, Ref("adam", 1e-2))}, rank_labels,
             mask_compatible_extra_args=True)
  assert_equivalent(spec, jit=jit, extra_args=_offset_args)


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_extra_args_reach_inner_transformations(jit):
  spec = Ref("partition", {"w": Ref("chain", FACTOR, Ref("sgd", 0.1)), "b": Ref("adam", 1e-2)}, PREFIX_LABELS)
  assert_equivalent(spec, jit=jit, extra_args=lambda params, grads, step: {"factor": 0.5 + step})


class _WithOptaxInner:
  """A partition whose "w" transformation is optax's own, in both libraries."""

  def build(self, lib):
    return lib.partition({"w": optax.sgd(0.1, momentum=0.9), "b": lib.adam(1e-2)}, rank_labels)

  def __repr__(self):
    return "partition(w=optax.sgd, b=adam)"


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_optax_inner_transformations(jit):
  assert_equivalent(_WithOptaxInner(), jit=jit)


def test_freeze_zeroes_frozen_updates_only():
  params = mixed_params()
  tx = gradxform.freeze(FREEZE_DICT)
  grads = jax.tree.map(jnp.ones_like, params)
  updates, _ = tx.update(grads, tx.init(params), params)
  for frozen, update in zip(jax.tree.leaves(FREEZE_DICT), jax.tree.leaves(updates)):
    assert bool(jnp.all(update == 0)) == frozen


def test_partition_trains_on_digits():
  """Adam on the weights, plain SGD on the biases."""
  assert_trains(gradxform.partition({"w": gradxform.adam(1e-2), "b": gradxform.sgd(0.5)}, {"w": "w", "b": "b"}))


def test_transformations_are_hashable_and_equal_by_value():
  a = gradxform.partition({"w": gradxform.adam(1e-2), "b": gradxform.sgd(0.1)}, PREFIX_LABELS)
  b = gradxform.partition({"w": gradxform.adam(1e-2), "b": gradxform.sgd(0.1)}, PREFIX_LABELS)
  assert a == b and hash(a) == hash(b)
  assert gradxform.selective_transform(gradxform.adam(1e-2), freeze_mask=FREEZE_PREFIX) == \
      gradxform.selective_transform(gradxform.adam(1e-2), freeze_mask=FREEZE_PREFIX)


# ----------------------------------------------------------------------------------------------
# Signatures and names.


def _parameters(fn):
  return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]


@pytest.mark.parametrize("name", ["partition", "multi_transform", "freeze", "selective_transform"])
def test_signature_matches_optax(name):
  assert _parameters(getattr(gradxform, name)) == _parameters(getattr(optax, name))


@pytest.mark.parametrize("name", ["PartitionState", "MultiTransformState"])
def test_state_fields_match_optax(name):
  ours, theirs = getattr(gradxform, name), getattr(optax, name)
  assert ours.__name__ == theirs.__name__ and ours._fields == theirs._fields


def test_backward_compatible_aliases():
  assert gradxform.multi_transform is gradxform.partition
  assert gradxform.MultiTransformState is gradxform.PartitionState
  assert gradxform.MaskOrFn == optax.MaskOrFn


# ----------------------------------------------------------------------------------------------
# Clear errors, of the builtin type optax raises.


def _init(tx):
  return tx.init(mixed_params())


def test_unknown_label_names_label_and_path():
  labels = {"dense": {"w": "w", "b": "bias"}, "blocks": "w", "scale": "bias"}
  transforms = {"w": gradxform.adam(1e-2), "b": gradxform.sgd(0.1)}
  with pytest.raises(ValueError):  # what optax raises
    optax.partition({"w": optax.adam(1e-2), "b": optax.sgd(0.1)}, labels).init(mixed_params())
  with pytest.raises(gradxform.HyperparameterError) as info:
    _init(gradxform.partition(transforms, labels))
  message = str(info.value)
  assert isinstance(info.value, ValueError)
  assert "partition" in message and "'bias'" in message
  assert "['dense']['b']" in message and "['scale']" in message and "['w', 'b']" in message


def test_unknown_label_from_a_label_function():
  with pytest.raises(gradxform.HyperparameterError, match=r"label 'w' at .*\['dense'\]\['w'\]"):
    _init(gradxform.partition({"b": gradxform.sgd(0.1)}, rank_labels))


def test_missing_label_names_path():
  labels = {"dense": {"w": "w", "b": None}, "blocks": "w", "scale": "w"}
  with pytest.raises(ValueError):  # optax fails deep inside its tree mapping
    optax.partition({"w": optax.adam(1e-2)}, labels).init(mixed_params())
  with pytest.raises(gradxform.HyperparameterError, match=r"partition: .*no label .*\['dense'\]\['b'\]"):
    _init(gradxform.partition({"w": gradxform.adam(1e-2)}, labels))


@pytest.mark.parametrize("labels, where", [
    ({"dense": "w", "blocks": "w"}, r"the root: keys only in the labels: none; only in the params: \['scale'\]"),
    ({"dense": {"w": "w", "b": "w", "c": "w"}, "blocks": "w", "scale": "w"},
     r"\['dense'\]: keys only in the labels: \['c'\]; only in the params: none"),
    ({"dense": "w", "blocks": ("w", "w"), "scale": "w"}, r"\['blocks'\]: tuple in the labels vs list in the params"),
    ({"dense": "w", "blocks": ["w"], "scale": "w"},
     r"\['blocks'\]: keys only in the labels: none; only in the params: \[1\]"),
])
def test_labels_not_shaped_like_params(labels, where):
  with pytest.raises(ValueError):
    optax.partition({"w": optax.sgd(0.1)}, labels).init(mixed_params())
  with pytest.raises(gradxform.TreeMismatchError, match="partition: param_labels .*" + where):
    _init(gradxform.partition({"w": gradxform.sgd(0.1)}, labels))


def test_transforms_must_be_a_mapping_of_transformations():
  with pytest.raises(gradxform.HyperparameterTypeError, match="partition: argument `transforms`"):
    gradxform.partition([gradxform.sgd(0.1)], "w")
  with pytest.raises(gradxform.HyperparameterTypeError, match=r"partition: transforms\['w'\]"):
    gradxform.partition({"w": 0.1}, "w")


def test_inner_error_names_the_label():
  tx = gradxform.partition({"w": gradxform.adam(1e-2), "b": gradxform.sgd(0.1)}, rank_labels)
  params = mixed_params()
  state = tx.init(params)
  bad = jax.tree.map(jnp.ones_like, params)
  bad["dense"]["w"] = jnp.ones((5, 4))
  with pytest.raises(gradxform.TreeMismatchError, match=r"partition > masked \(label 'w'\) > adam"):
    tx.update(bad, state, params)


def test_wrong_state():
  tx = gradxform.partition({"w": gradxform.adam(1e-2)}, "w")
  other = gradxform.partition({"v": gradxform.adam(1e-2)}, "v").init(mixed_params())
  with pytest.raises(gradxform.StateMismatchError, match=r"partition: needs a state .*\['w'\]"):
    tx.update(mixed_params(), other, mixed_params())
