"""Every public name of the core has optax 0.2.8's signature, and every state class its fields.

(`test_api_coverage.py` walks all of optax's namespaces; this file also pins the layouts of state classes
optax keeps private but users meet, such as ScaleByRmsWithCountState.)
"""

import inspect

import optax
from optax._src import transform as optax_transform
from optax.transforms import _adding as optax_adding
import pytest

import gradxform
from tests.extensions import optax_parameters

FUNCTIONS = """
identity stateless stateless_with_tree_map set_to_zero init_empty_state with_extra_args_support
apply_updates incremental_update periodic_update safe_increment safe_int32_increment safe_norm
safe_root_mean_squares global_norm chain named_chain masked scale scale_by_learning_rate scale_by_schedule
trace ema scale_by_adam scale_by_amsgrad scale_by_adamax scale_by_radam scale_by_rms scale_by_stddev
scale_by_rss scale_by_adadelta add_decayed_weights clip clip_by_global_norm bias_correction update_moment
update_infinity_moment sgd adagrad rmsprop adadelta adam adamw nadam nadamw adamax adamaxw amsgrad radam
constant_schedule linear_schedule polynomial_schedule exponential_decay cosine_decay_schedule
warmup_cosine_decay_schedule warmup_constant_schedule warmup_exponential_decay_schedule
piecewise_constant_schedule piecewise_interpolate_schedule join_schedules linear_onecycle_schedule
cosine_onecycle_schedule sgdr_schedule
""".split()

STATES = """
EmptyState AddDecayedWeightsState TraceState EmaState ScaleByAdamState ScaleByAmsgradState ScaleByRmsState
ScaleByRStdDevState ScaleByRssState ScaleByAdaDeltaState ScaleByScheduleState MaskedState MaskedNode
GradientTransformation GradientTransformationExtraArgs
""".split()

# State classes optax keeps private (reachable only through its modules), but whose layout users meet.
PRIVATE_STATES = {"ScaleByRmsWithCountState": optax_transform, "ScaleByRStdDevWithCountState": optax_transform,
                  "WeightDecaySchedule": optax_adding}


def _parameters(fn):
  return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]


@pytest.mark.parametrize("name", FUNCTIONS)
def test_signature_matches_optax(name):
  ours, theirs = getattr(gradxform, name), getattr(optax, name)
  assert optax_parameters(ours) == _parameters(theirs)


@pytest.mark.parametrize("name", [n for n in FUNCTIONS if n.endswith("_schedule") and not n.startswith("scale_by")
                                  or n in ("exponential_decay", "join_schedules")])
def test_schedules_namespace_matches_optax(name):
  assert _parameters(getattr(gradxform.schedules, name)) == _parameters(getattr(optax.schedules, name))


@pytest.mark.parametrize("name", STATES + sorted(PRIVATE_STATES))
def test_state_class_fields_match_optax(name):
  ours, theirs = getattr(gradxform, name), getattr(PRIVATE_STATES.get(name, optax), name)
  assert ours.__name__ == theirs.__name__
  assert ours._fields == theirs._fields
