"""Utilities for pytrees: leafwise arithmetic, reductions, casting, random trees, and state surgery.

The names and behaviour of `optax.tree_utils`; `gradxform.tree` has the same functions under short
names (`gradxform.tree.add is gradxform.tree_utils.tree_add`).
"""

from gradxform._moments import bias_correction as tree_bias_correction
from gradxform._moments import update_infinity_moment as tree_update_infinity_moment
from gradxform._moments import update_moment as tree_update_moment
from gradxform.tree_utils._arithmetic import tree_add as tree_add
from gradxform.tree_utils._arithmetic import tree_add_scale as tree_add_scale
from gradxform.tree_utils._arithmetic import tree_clip as tree_clip
from gradxform.tree_utils._arithmetic import tree_conj as tree_conj
from gradxform.tree_utils._arithmetic import tree_div as tree_div
from gradxform.tree_utils._arithmetic import tree_mul as tree_mul
from gradxform.tree_utils._arithmetic import tree_real as tree_real
from gradxform.tree_utils._arithmetic import tree_scale as tree_scale
from gradxform.tree_utils._arithmetic import tree_sub as tree_sub
from gradxform.tree_utils._arithmetic import tree_update_moment_per_elem_norm as tree_update_moment_per_elem_norm
from gradxform.tree_utils._arithmetic import tree_where as tree_where
from gradxform.tree_utils._casting import tree_cast as tree_cast
from gradxform.tree_utils._casting import tree_cast_like as tree_cast_like
from gradxform.tree_utils._casting import tree_dtype as tree_dtype
from gradxform.tree_utils._creation import tree_batch_shape as tree_batch_shape
from gradxform.tree_utils._creation import tree_full_like as tree_full_like
from gradxform.tree_utils._creation import tree_ones_like as tree_ones_like
from gradxform.tree_utils._creation import tree_zeros_like as tree_zeros_like
from gradxform.tree_utils._random import tree_random_like as tree_random_like
from gradxform.tree_utils._random import tree_split_key_like as tree_split_key_like
from gradxform.tree_utils._random import tree_unwrap_random_key_data as tree_unwrap_random_key_data
from gradxform.tree_utils._reductions import tree_allclose as tree_allclose
from gradxform.tree_utils._reductions import tree_max as tree_max
from gradxform.tree_utils._reductions import tree_min as tree_min
from gradxform.tree_utils._reductions import tree_norm as tree_norm
from gradxform.tree_utils._reductions import tree_size as tree_size
from gradxform.tree_utils._reductions import tree_sum as tree_sum
from gradxform.tree_utils._reductions import tree_vdot as tree_vdot
from gradxform.tree_utils._state import NamedTupleKey as NamedTupleKey
from gradxform.tree_utils._state import tree_get as tree_get
from gradxform.tree_utils._state import tree_get_all_with_path as tree_get_all_with_path
from gradxform.tree_utils._state import tree_map_params as tree_map_params
from gradxform.tree_utils._state import tree_set as tree_set

__all__ = [
    "NamedTupleKey",
    "tree_add",
    "tree_add_scale",
    "tree_allclose",
    "tree_batch_shape",
    "tree_bias_correction",
    "tree_cast",
    "tree_cast_like",
    "tree_clip",
    "tree_conj",
    "tree_div",
    "tree_dtype",
    "tree_full_like",
    "tree_get",
    "tree_get_all_with_path",
    "tree_map_params",
    "tree_max",
    "tree_min",
    "tree_mul",
    "tree_norm",
    "tree_ones_like",
    "tree_random_like",
    "tree_real",
    "tree_scale",
    "tree_set",
    "tree_size",
    "tree_split_key_like",
    "tree_sub",
    "tree_sum",
    "tree_unwrap_random_key_data",
    "tree_update_infinity_moment",
    "tree_update_moment",
    "tree_update_moment_per_elem_norm",
    "tree_vdot",
    "tree_where",
    "tree_zeros_like",
]
