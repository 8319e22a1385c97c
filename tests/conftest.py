"""Suite-wide strictness: strict dtype promotion for gradxform code, warnings as errors.

The optax reference is run under standard promotion (see equivalence.reference), because optax itself
relies on implicit promotion in places; gradxform must not.
"""

import jax

jax.config.update("jax_numpy_dtype_promotion", "strict")


def pytest_configure(config):
  # Warnings are errors, except for these deliberate, known ones:
  config.addinivalue_line("filterwarnings", "error")
  # jax warns when a donated buffer cannot be reused on CPU; harmless for tests.
  config.addinivalue_line("filterwarnings", "ignore:Some donated buffers were not usable")
