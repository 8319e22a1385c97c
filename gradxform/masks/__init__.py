"""Ready-made masks for `masked`, `adamw(mask=...)` and friends."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

__all__ = ["decay_mask"]


def decay_mask(params: Any) -> Any:
  """True for the leaves that should get weight decay: those with ndim >= 2 (weight matrices, kernels).

  Biases, norm scales and other vectors or scalars get False, the usual practice for AdamW
  (Loshchilov & Hutter, 2019). Use as `gradxform.adamw(1e-3, mask=gradxform.masks.decay_mask)` (the
  function itself, evaluated on the params at init) or `mask=decay_mask(params)`.

  Args:
    params: the parameters (arrays or jax.ShapeDtypeStruct); None leaves stay None.

  Returns:
    A tree of Python bools with the params' structure.
  """
  return jax.tree.map(lambda x: len(np.shape(x)) >= 2, params)
