"""gradxform: composable gradient transformations for JAX, with optax 0.2.8's API and numerics.

Every optimizer is a pure `(init, update)` pair built by chaining small transformations. The public
names below mirror optax's top level, so `import gradxform as optax` works for the names gradxform has.
"""

from gradxform import schedules as schedules
from gradxform._alias import adadelta as adadelta
from gradxform._alias import adagrad as adagrad
from gradxform._alias import adam as adam
from gradxform._alias import adamax as adamax
from gradxform._alias import adamaxw as adamaxw
from gradxform._alias import adamw as adamw
from gradxform._alias import amsgrad as amsgrad
from gradxform._alias import nadam as nadam
from gradxform._alias import nadamw as nadamw
from gradxform._alias import radam as radam
from gradxform._alias import rmsprop as rmsprop
from gradxform._alias import sgd as sgd
from gradxform._base import ArrayTree as ArrayTree
from gradxform._base import EmptyState as EmptyState
from gradxform._base import GradientTransformation as GradientTransformation
from gradxform._base import GradientTransformationExtraArgs as GradientTransformationExtraArgs
from gradxform._base import OptState as OptState
from gradxform._base import Params as Params
from gradxform._base import PyTree as PyTree
from gradxform._base import Schedule as Schedule
from gradxform._base import ScalarOrSchedule as ScalarOrSchedule
from gradxform._base import TransformInitFn as TransformInitFn
from gradxform._base import TransformUpdateExtraArgsFn as TransformUpdateExtraArgsFn
from gradxform._base import TransformUpdateFn as TransformUpdateFn
from gradxform._base import Updates as Updates
from gradxform._base import identity as identity
from gradxform._base import init_empty_state as init_empty_state
from gradxform._base import set_to_zero as set_to_zero
from gradxform._base import stateless as stateless
from gradxform._base import stateless_with_tree_map as stateless_with_tree_map
from gradxform._base import with_extra_args_support as with_extra_args_support
from gradxform._clip import clip as clip
from gradxform._clip import clip_by_global_norm as clip_by_global_norm
from gradxform._combine import MaskedNode as MaskedNode
from gradxform._combine import MaskedState as MaskedState
from gradxform._combine import chain as chain
from gradxform._combine import masked as masked
from gradxform._combine import named_chain as named_chain
from gradxform._decay import WeightDecaySchedule as WeightDecaySchedule
from gradxform._decay import add_decayed_weights as add_decayed_weights
from gradxform._errors import GradxformError as GradxformError
from gradxform._errors import HyperparameterError as HyperparameterError
from gradxform._errors import HyperparameterTypeError as HyperparameterTypeError
from gradxform._errors import LeafTypeError as LeafTypeError
from gradxform._errors import MissingArgumentError as MissingArgumentError
from gradxform._errors import MissingParamsError as MissingParamsError
from gradxform._errors import StateMismatchError as StateMismatchError
from gradxform._errors import StateDictKeyError as StateDictKeyError
from gradxform._errors import TreeMismatchError as TreeMismatchError
from gradxform._moments import EmaState as EmaState
from gradxform._moments import ScaleByAdamState as ScaleByAdamState
from gradxform._moments import ScaleByAmsgradState as ScaleByAmsgradState
from gradxform._moments import TraceState as TraceState
from gradxform._moments import bias_correction as bias_correction
from gradxform._moments import ema as ema
from gradxform._moments import scale_by_adam as scale_by_adam
from gradxform._moments import scale_by_adamax as scale_by_adamax
from gradxform._moments import scale_by_amsgrad as scale_by_amsgrad
from gradxform._moments import scale_by_radam as scale_by_radam
from gradxform._moments import trace as trace
from gradxform._moments import update_infinity_moment as update_infinity_moment
from gradxform._moments import update_moment as update_moment
from gradxform._numerics import safe_increment as safe_increment
from gradxform._numerics import safe_int32_increment as safe_int32_increment
from gradxform._numerics import safe_norm as safe_norm
from gradxform._numerics import safe_root_mean_squares as safe_root_mean_squares
from gradxform._rms import ScaleByAdaDeltaState as ScaleByAdaDeltaState
from gradxform._rms import ScaleByRmsState as ScaleByRmsState
from gradxform._rms import ScaleByRmsWithCountState as ScaleByRmsWithCountState
from gradxform._rms import ScaleByRssState as ScaleByRssState
from gradxform._rms import ScaleByRStdDevState as ScaleByRStdDevState
from gradxform._rms import ScaleByRStdDevWithCountState as ScaleByRStdDevWithCountState
from gradxform._rms import scale_by_adadelta as scale_by_adadelta
from gradxform._rms import scale_by_rms as scale_by_rms
from gradxform._rms import scale_by_rss as scale_by_rss
from gradxform._rms import scale_by_stddev as scale_by_stddev
from gradxform._scale import ScaleByScheduleState as ScaleByScheduleState
from gradxform._scale import scale as scale
from gradxform._scale import scale_by_learning_rate as scale_by_learning_rate
from gradxform._scale import scale_by_schedule as scale_by_schedule
from gradxform._tree import global_norm as global_norm
from gradxform._update import apply_updates as apply_updates
from gradxform._update import incremental_update as incremental_update
from gradxform._update import periodic_update as periodic_update
from gradxform.schedules import constant_schedule as constant_schedule
from gradxform.schedules import cosine_decay_schedule as cosine_decay_schedule
from gradxform.schedules import cosine_onecycle_schedule as cosine_onecycle_schedule
from gradxform.schedules import exponential_decay as exponential_decay
from gradxform.schedules import join_schedules as join_schedules
from gradxform.schedules import linear_onecycle_schedule as linear_onecycle_schedule
from gradxform.schedules import linear_schedule as linear_schedule
from gradxform.schedules import piecewise_constant_schedule as piecewise_constant_schedule
from gradxform.schedules import piecewise_interpolate_schedule as piecewise_interpolate_schedule
from gradxform.schedules import polynomial_schedule as polynomial_schedule
from gradxform.schedules import sgdr_schedule as sgdr_schedule
from gradxform.schedules import warmup_constant_schedule as warmup_constant_schedule
from gradxform.schedules import warmup_cosine_decay_schedule as warmup_cosine_decay_schedule
from gradxform.schedules import warmup_exponential_decay_schedule as warmup_exponential_decay_schedule

# Families being added module by module: each module lists its public names in __all__.
from gradxform._accumulate import *  # noqa: E402,F401,F403
from gradxform._adaptive import *  # noqa: E402,F401,F403
from gradxform._alias_adaptive import *  # noqa: E402,F401,F403
from gradxform._alias_layerwise import *  # noqa: E402,F401,F403
from gradxform._clip import *  # noqa: E402,F401,F403
from gradxform._conditional import *  # noqa: E402,F401,F403
from gradxform._decay import *  # noqa: E402,F401,F403
from gradxform._factored import *  # noqa: E402,F401,F403
from gradxform._finite import *  # noqa: E402,F401,F403
from gradxform._layerwise import *  # noqa: E402,F401,F403
from gradxform._lbfgs import *  # noqa: E402,F401,F403
from gradxform._linear_algebra import *  # noqa: E402,F401,F403
from gradxform._linesearch import *  # noqa: E402,F401,F403
from gradxform._partition import *  # noqa: E402,F401,F403
from gradxform._sampling import *  # noqa: E402,F401,F403
from gradxform._scale import *  # noqa: E402,F401,F403
from gradxform._sign import *  # noqa: E402,F401,F403
from gradxform._wrappers import *  # noqa: E402,F401,F403
from gradxform.schedules._inject import *  # noqa: E402,F401,F403
# Beyond optax (opt-in; see the README): hyperparameters by name, parameter groups, metrics,
# state_dict, mixed precision, fused and flat paths, 8-bit and bfloat16 Adam state.
from gradxform._groups import *  # noqa: E402,F401,F403
from gradxform._lowbit import *  # noqa: E402,F401,F403
from gradxform._hyperparams import *  # noqa: E402,F401,F403
from gradxform._flat import *  # noqa: E402,F401,F403
from gradxform._fused import *  # noqa: E402,F401,F403
from gradxform._metrics import *  # noqa: E402,F401,F403
from gradxform._precision import *  # noqa: E402,F401,F403
from gradxform._state_dict import *  # noqa: E402,F401,F403

AddDecayedWeightsState = EmptyState  # optax exports this alias for the state of a constant weight decay

__version__ = "0.1.0"

# Optax's top level also carries these names from its subpackages.
from gradxform import assignment as assignment  # noqa: E402
from gradxform import contrib as contrib  # noqa: E402
from gradxform import experimental as experimental  # noqa: E402
from gradxform import losses as losses  # noqa: E402
from gradxform import masks as masks  # noqa: E402
from gradxform import microbatching as microbatching  # noqa: E402
from gradxform import perturbations as perturbations  # noqa: E402
from gradxform import projections as projections  # noqa: E402
from gradxform import second_order as second_order  # noqa: E402
from gradxform import transforms as transforms  # noqa: E402
from gradxform import tree as tree  # noqa: E402
from gradxform import tree_utils as tree_utils  # noqa: E402
from gradxform.losses import convex_kl_divergence as convex_kl_divergence  # noqa: E402
from gradxform.losses import cosine_distance as cosine_distance  # noqa: E402
from gradxform.losses import cosine_similarity as cosine_similarity  # noqa: E402
from gradxform.losses import ctc_loss as ctc_loss  # noqa: E402
from gradxform.losses import ctc_loss_with_forward_probs as ctc_loss_with_forward_probs  # noqa: E402
from gradxform.losses import generalized_kl_divergence as generalized_kl_divergence  # noqa: E402
from gradxform.losses import hinge_loss as hinge_loss  # noqa: E402
from gradxform.losses import huber_loss as huber_loss  # noqa: E402
from gradxform.losses import kl_divergence as kl_divergence  # noqa: E402
from gradxform.losses import l2_loss as l2_loss  # noqa: E402
from gradxform.losses import log_cosh as log_cosh  # noqa: E402
from gradxform.losses import ntxent as ntxent  # noqa: E402
from gradxform.losses import safe_softmax_cross_entropy as safe_softmax_cross_entropy  # noqa: E402
from gradxform.losses import sigmoid_binary_cross_entropy as sigmoid_binary_cross_entropy  # noqa: E402
from gradxform.losses import sigmoid_focal_loss as sigmoid_focal_loss  # noqa: E402
from gradxform.losses import smooth_labels as smooth_labels  # noqa: E402
from gradxform.losses import softmax_cross_entropy as softmax_cross_entropy  # noqa: E402
from gradxform.losses import (  # noqa: E402
    softmax_cross_entropy_with_integer_labels as softmax_cross_entropy_with_integer_labels)
from gradxform.losses import squared_error as squared_error  # noqa: E402
from gradxform.microbatching import microbatch as microbatch  # noqa: E402
from gradxform.tree_utils import tree_map_params as tree_map_params  # noqa: E402
from gradxform.tree_utils import tree_update_moment_per_elem_norm as update_moment_per_elem_norm  # noqa: E402

# Optax's names for the (empty) states of stateless transformations.
ScaleByTrustRatioState = EmptyState
ScaleState = EmptyState
