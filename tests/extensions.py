"""gradxform's documented additions to optax signatures, shared by the signature tests."""

from __future__ import annotations

import inspect

# gradxform's additions to optax signatures: {(namespace, name): the trailing keyword-only parameters it appends}.
# Each addition is opt-in (keyword-only, default None, which keeps optax's behaviour exactly) and documented in
# the function's docstring and the README, so code written for optax runs unchanged and equal. The comparison
# checks that these parameters are the last ones, keyword-only and default None, drops them, and compares the
# rest exactly; every name not listed here must match optax's signature as it is.
# nu_dtype: the dtype the second moment is stored in (e.g. float32 for bfloat16 params), for every optax
# function that has `mu_dtype` and a second-moment accumulator `nu`.
EXTENSIONS = {
    ("", "adam"): ("nu_dtype",), ("", "adamw"): ("nu_dtype",), ("", "nadam"): ("nu_dtype",),
    ("", "nadamw"): ("nu_dtype",), ("", "amsgrad"): ("nu_dtype",), ("", "optimistic_adam"): ("nu_dtype",),
    ("", "optimistic_adam_v2"): ("nu_dtype",), ("", "scale_by_adam"): ("nu_dtype",),
    ("", "scale_by_amsgrad"): ("nu_dtype",), ("", "scale_by_novograd"): ("nu_dtype",),
    ("contrib", "ademamix"): ("nu_dtype",), ("contrib", "scale_by_ademamix"): ("nu_dtype",),
    ("contrib", "adopt"): ("nu_dtype",), ("contrib", "scale_by_adopt"): ("nu_dtype",),
}


def without_extensions(fn, added: tuple[str, ...]):
  """`fn`'s signature minus gradxform's `added` parameters, after checking they are its trailing
  keyword-only parameters with default None (so leaving them out keeps optax's behaviour)."""
  signature = inspect.signature(fn)
  params = list(signature.parameters.values())
  tail = params[len(params) - len(added):] if added else []
  assert [p.name for p in tail] == list(added), f"{fn.__name__}: {added} must be the last parameters"
  for p in tail:
    assert p.kind is inspect.Parameter.KEYWORD_ONLY, f"{fn.__name__}: `{p.name}` must be keyword-only"
    assert p.default is None, f"{fn.__name__}: `{p.name}` must default to None"
  return signature.replace(parameters=params[:len(params) - len(added)])



def optax_parameters(fn, namespace: str = "") -> list[tuple]:
  """(name, kind, default) of a gradxform function's parameters with its EXTENSIONS left out."""
  added = EXTENSIONS.get((namespace, getattr(fn, "__name__", "")), ())
  return [(p.name, p.kind, p.default) for p in without_extensions(fn, added).parameters.values()]
