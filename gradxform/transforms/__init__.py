"""The `transforms` namespace: the building blocks of optimizers, as in `optax.transforms`.

Every name here is also exported at gradxform's top level; this namespace exists so that code written
against `optax.transforms` runs unchanged.
"""

from gradxform._accumulate import MultiSteps as MultiSteps
from gradxform._accumulate import MultiStepsState as MultiStepsState
from gradxform._accumulate import ShouldSkipUpdateFunction as ShouldSkipUpdateFunction
from gradxform._accumulate import skip_large_updates as skip_large_updates
from gradxform._accumulate import skip_not_finite as skip_not_finite
from gradxform._clip import adaptive_grad_clip as adaptive_grad_clip
from gradxform._clip import clip as clip
from gradxform._clip import clip_by_block_rms as clip_by_block_rms
from gradxform._clip import clip_by_global_norm as clip_by_global_norm
from gradxform._clip import per_example_global_norm_clip as per_example_global_norm_clip
from gradxform._clip import per_example_layer_norm_clip as per_example_layer_norm_clip
from gradxform._clip import unitwise_clip as unitwise_clip
from gradxform._clip import unitwise_norm as unitwise_norm
from gradxform._combine import MaskedNode as MaskedNode
from gradxform._combine import MaskedState as MaskedState
from gradxform._combine import chain as chain
from gradxform._combine import masked as masked
from gradxform._combine import named_chain as named_chain
from gradxform._conditional import ConditionFn as ConditionFn
from gradxform._conditional import ConditionallyMaskState as ConditionallyMaskState
from gradxform._conditional import ConditionallyTransformState as ConditionallyTransformState
from gradxform._conditional import conditionally_mask as conditionally_mask
from gradxform._conditional import conditionally_transform as conditionally_transform
from gradxform._decay import AddNoiseState as AddNoiseState
from gradxform._decay import add_decayed_weights as add_decayed_weights
from gradxform._decay import add_noise as add_noise
from gradxform._finite import ApplyIfFiniteState as ApplyIfFiniteState
from gradxform._finite import ZeroNansState as ZeroNansState
from gradxform._finite import apply_if_finite as apply_if_finite
from gradxform._finite import zero_nans as zero_nans
from gradxform._moments import EmaState as EmaState
from gradxform._moments import TraceState as TraceState
from gradxform._moments import ema as ema
from gradxform._moments import trace as trace
from gradxform._partition import PartitionState as PartitionState
from gradxform._partition import freeze as freeze
from gradxform._partition import partition as partition
from gradxform._partition import selective_transform as selective_transform
from gradxform._wrappers import MonitorState as MonitorState
from gradxform._wrappers import NonNegativeParamsState as NonNegativeParamsState
from gradxform._wrappers import SnapshotState as SnapshotState
from gradxform._wrappers import flatten as flatten
from gradxform._wrappers import keep_params_nonnegative as keep_params_nonnegative
from gradxform._wrappers import measure_with_ema as measure_with_ema
from gradxform._wrappers import monitor as monitor
from gradxform._wrappers import snapshot as snapshot
