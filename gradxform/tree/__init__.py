"""`gradxform.tree_utils` under short names, as `optax.tree`: `add` is `tree_utils.tree_add`, and so on."""

# pylint: disable=redefined-builtin
from gradxform.tree_utils import tree_add as add
from gradxform.tree_utils import tree_add_scale as add_scale
from gradxform.tree_utils import tree_allclose as allclose
from gradxform.tree_utils import tree_batch_shape as batch_shape
from gradxform.tree_utils import tree_bias_correction as bias_correction
from gradxform.tree_utils import tree_cast as cast
from gradxform.tree_utils import tree_cast_like as cast_like
from gradxform.tree_utils import tree_clip as clip
from gradxform.tree_utils import tree_conj as conj
from gradxform.tree_utils import tree_div as div
from gradxform.tree_utils import tree_dtype as dtype
from gradxform.tree_utils import tree_full_like as full_like
from gradxform.tree_utils import tree_get as get
from gradxform.tree_utils import tree_get_all_with_path as get_all_with_path
from gradxform.tree_utils import tree_map_params as map_params
from gradxform.tree_utils import tree_max as max
from gradxform.tree_utils import tree_min as min
from gradxform.tree_utils import tree_mul as mul
from gradxform.tree_utils import tree_norm as norm
from gradxform.tree_utils import tree_ones_like as ones_like
from gradxform.tree_utils import tree_random_like as random_like
from gradxform.tree_utils import tree_real as real
from gradxform.tree_utils import tree_scale as scale
from gradxform.tree_utils import tree_set as set
from gradxform.tree_utils import tree_size as size
from gradxform.tree_utils import tree_split_key_like as split_key_like
from gradxform.tree_utils import tree_sub as sub
from gradxform.tree_utils import tree_sum as sum
from gradxform.tree_utils import tree_unwrap_random_key_data as unwrap_random_key_data
from gradxform.tree_utils import tree_update_infinity_moment as update_infinity_moment
from gradxform.tree_utils import tree_update_moment as update_moment
from gradxform.tree_utils import tree_update_moment_per_elem_norm as update_moment_per_elem_norm
from gradxform.tree_utils import tree_vdot as vdot
from gradxform.tree_utils import tree_where as where
from gradxform.tree_utils import tree_zeros_like as zeros_like

__all__ = [
    "add",
    "add_scale",
    "allclose",
    "batch_shape",
    "bias_correction",
    "cast",
    "cast_like",
    "clip",
    "conj",
    "div",
    "dtype",
    "full_like",
    "get",
    "get_all_with_path",
    "map_params",
    "max",
    "min",
    "mul",
    "norm",
    "ones_like",
    "random_like",
    "real",
    "scale",
    "set",
    "size",
    "split_key_like",
    "sub",
    "sum",
    "unwrap_random_key_data",
    "update_infinity_moment",
    "update_moment",
    "update_moment_per_elem_norm",
    "vdot",
    "where",
    "zeros_like",
]
