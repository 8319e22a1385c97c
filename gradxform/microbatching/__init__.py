"""Microbatching: evaluate a function (or per-example gradients) on slices of a batch in a sequential
loop, combining the results with an accumulator, to bound peak memory."""

from gradxform.microbatching._accumulator import AccumulationType as AccumulationType
from gradxform.microbatching._accumulator import Accumulator as Accumulator
from gradxform.microbatching._microbatch import micro_grad as micro_grad
from gradxform.microbatching._microbatch import micro_vmap as micro_vmap
from gradxform.microbatching._microbatch import microbatch as microbatch
from gradxform.microbatching._microbatch import reshape_batch_axis as reshape_batch_axis
