"""Suite-wide strictness: strict dtype promotion for gradxform code, warnings as errors.

The optax reference is run under standard promotion (see equivalence.reference), because optax itself
relies on implicit promotion in places; gradxform must not.
"""

import jax
import pytest

jax.config.update("jax_numpy_dtype_promotion", "strict")


def pytest_configure(config):
  # Warnings are errors, except for these deliberate, known ones:
  config.addinivalue_line("filterwarnings", "error")
  # jax warns when a donated buffer cannot be reused on CPU; harmless for tests.
  config.addinivalue_line("filterwarnings", "ignore:Some donated buffers were not usable")


# Eager rows are the slow ones (every primitive of every leaf shape dispatches and compiles on its own),
# and across rows of one transformation they exercise the same Python paths. By default one eager row is
# kept per transformation name, the first collected; every row still runs under jit.
# GRADXFORM_ALL_EAGER=1 runs every eager row.
def pytest_collection_modifyitems(config, items):
  import os
  import re
  if os.environ.get("GRADXFORM_ALL_EAGER") == "1":
    return
  seen, kept, dropped = set(), [], []
  for item in items:
    _, _, parameters = item.nodeid.partition("[")
    if not parameters.endswith("-eager]"):
      kept.append(item)
      continue
    key = re.split(r"[(\s\-\[]", parameters, maxsplit=1)[0]
    if key in seen:
      dropped.append(item)
    else:
      seen.add(key)
      kept.append(item)
  if dropped:
    config.hook.pytest_deselected(items=dropped)
    items[:] = kept


@pytest.fixture(autouse=True)
def _cheap_compiles_for_eager_rows(request):
  # Eager rows run op by op: each primitive is compiled on its own, so XLA's fusion and LLVM effort buy
  # nothing there but compile time. Both libraries' eager ops get the same setting.
  if "eager" not in request.node.name:
    yield
    return
  previous = jax.config.jax_optimization_level
  jax.config.update("jax_optimization_level", "O1")
  try:
    yield
  finally:
    jax.config.update("jax_optimization_level", previous)
