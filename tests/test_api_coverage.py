"""gradxform has every public name of optax 0.2.8, in the same namespace, with the same signature.

The names are listed from the installed optax at test time, so nothing here can drift from the reference:
for each namespace below, every public name of optax's module must exist in gradxform's module of the same
name; functions and classes must have the same parameters (names, order, kinds, defaults), state NamedTuples the
same class name and fields, Protocols the same `__call__` parameters, enums the same members, and submodules are
checked recursively.

Exclusions, each defended:
- Names optax marks deprecated: optax serves them from a module `__getattr__` that warns
  (`differentially_private_aggregate`, `DifferentiallyPrivateAggregateState`, `dpsgd` at the top level, now in
  `contrib`; `monte_carlo`, removed). They are listed in `DEPRECATED` and checked to really be deprecated there.
- Names a module binds by importing from outside optax (`functools` and `typing` in
  `optax.tree_utils`, `Any`/`jax`/`jnp` in `optax.experimental.aggregating`) are its imports, not optax API; they
  are found by reading the module's import statements, not listed by hand. So are optax modules a module imports
  that are not its subpackages (`base`, `tree`, `utils` in `optax.experimental.aggregating`).
- gradxform's documented additions to optax signatures, listed in `EXTENSIONS` (see there): each is a trailing
  keyword-only parameter with default None, checked to be exactly that, then dropped before the comparison.
"""

from __future__ import annotations

import ast
import enum
import functools
import inspect
import types
import typing
import warnings

import optax
import pytest

import gradxform

# Optax's deprecated top-level names (served by its module __getattr__ with a DeprecationWarning).
DEPRECATED = {"": ("differentially_private_aggregate", "DifferentiallyPrivateAggregateState", "dpsgd",
                   "monte_carlo")}

from tests.extensions import EXTENSIONS  # noqa: E402
from tests.extensions import without_extensions  # noqa: E402

NAMESPACES = ["", "schedules", "transforms", "tree_utils", "tree"]

def _outside_imports(module) -> set[str]:
  """Names `module` binds by importing from outside optax (`from typing import Any`, `import jax`…)."""
  try:
    tree = ast.parse(inspect.getsource(module))
  except (OSError, TypeError):
    return set()
  names = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.ImportFrom) and node.level == 0 and not (node.module or "").startswith("optax"):
      names.update(alias.asname or alias.name for alias in node.names)
    elif isinstance(node, ast.Import):
      names.update((alias.asname or alias.name).split(".")[0] for alias in node.names
                   if not alias.name.startswith("optax"))
  return names


def _public_names(module) -> list[str]:
  """Non-underscore names the module does not import from outside optax, plus its `__all__`.

  Both, because optax's `__all__` lists drift from what its modules define and document (the top level's
  omits `named_chain`, `freeze`, `snapshot`…; `transforms`' omits `per_example_global_norm_clip`…).
  """
  deprecated = set(DEPRECATED.get(module.__name__.removeprefix("optax").lstrip("."), ()))
  leaked = _outside_imports(module)
  names = {name for name in dir(module) if not name.startswith("_") and name not in leaked}
  names = (names | set(getattr(module, "__all__", ()))) - deprecated
  # A module that is not a subpackage is an import too (`from optax._src import base` in aggregating).
  imported = {name for name in names if inspect.ismodule(getattr(module, name, None))
              and not _is_child(getattr(module, name), module)}
  return sorted(names - imported)


def _is_child(module, parent) -> bool:
  """A submodule of `parent` proper (not a module it merely imports, such as optax._src.base)."""
  return inspect.ismodule(module) and module.__name__.startswith(parent.__name__ + ".")


def _resolve(lib, ns: str):
  module = lib
  for part in filter(None, ns.split(".")):
    module = getattr(module, part)
  return module


def _all_namespaces() -> list[str]:
  """The listed namespaces plus every optax submodule reachable from them (contrib, losses, …)."""
  seen, queue = [], list(NAMESPACES)
  while queue:
    ns = queue.pop(0)
    if ns in seen:
      continue
    seen.append(ns)
    module = _resolve(optax, ns)
    queue.extend(f"{ns}.{name}".lstrip(".") for name in _public_names(module)
                 if _is_child(getattr(module, name), module))
  return seen


def _cases() -> list[tuple[str, str]]:
  cases = []
  for ns in _all_namespaces():
    module = _resolve(optax, ns)
    cases.extend((ns, name) for name in _public_names(module))
  return cases


CASES = _cases()


def _comparable_default(value):
  """Defaults compare by value where they are plain data; other objects by their kind.

  Classes and instances (a `Gumbel()` noise, a default line-search transformation) are each library's own
  objects, so they compare by name and type; functions by kind only; enum members by class and member name.
  """
  if value is inspect.Parameter.empty or value is None or isinstance(value, (bool, int, float, complex, str)):
    return value
  if isinstance(value, (tuple, list)) and not hasattr(value, "_fields"):
    return type(value).__name__, tuple(_comparable_default(v) for v in value)
  if isinstance(value, enum.Enum):
    return ("enum", type(value).__name__, value.name)
  if inspect.isclass(value):
    return ("class", value.__name__)
  if inspect.isfunction(value) or isinstance(value, functools.partial):
    # A default function is often a lambda on one side and a named helper on the other; what it computes
    # is proven by the equivalence tests that run the default.
    return ("function",)
  if hasattr(value, "dtype") and not hasattr(value, "shape"):
    return ("dtype", str(value))
  if isinstance(value, type) or str(type(value).__module__).startswith("numpy"):
    return ("dtype", str(value))
  return ("instance", type(value).__name__)


def _parameters(fn) -> list[tuple]:
  return [(p.name, p.kind, _comparable_default(p.default)) for p in inspect.signature(fn).parameters.values()]


def _is_protocol(cls) -> bool:
  return getattr(cls, "_is_protocol", False)


def _describe(value) -> tuple:
  """What must agree between the two libraries for one public name."""
  if inspect.ismodule(value):
    return ("module",)
  if inspect.isclass(value) and issubclass(value, enum.Enum):
    return ("enum", value.__name__, tuple(m.name for m in value))
  if inspect.isclass(value) and hasattr(value, "_fields"):
    return ("namedtuple", value.__name__, value._fields)
  if inspect.isclass(value) and _is_protocol(value):
    return ("protocol", value.__name__, _parameters(value.__call__))
  if inspect.isclass(value):
    return ("class", value.__name__, _parameters(value))
  if callable(value) and not isinstance(value, typing._GenericAlias | types.GenericAlias) \
      and not type(value).__module__.startswith(("typing", "collections")):
    return ("callable", _parameters(value))
  return ("type alias",)  # Params, Schedule, MaskOrFn…: existence is what users rely on


@pytest.mark.parametrize("ns,name", CASES, ids=[f"{ns or 'optax'}.{name}" for ns, name in CASES])
def test_name_exists_with_the_same_signature(ns, name):
  theirs = getattr(_resolve(optax, ns), name)
  where = "gradxform" + (f".{ns}" if ns else "")
  parts = [part for part in ns.split(".") if part]
  for depth, part in enumerate(parts):
    assert hasattr(_resolve(gradxform, ".".join(parts[:depth])), part), f"no namespace {where}"
  ours_module = _resolve(gradxform, ns)
  assert hasattr(ours_module, name), f"{where} has no `{name}`"
  ours = getattr(ours_module, name)
  if (ns, name) in EXTENSIONS:
    added = EXTENSIONS[ns, name]
    assert not set(added) & set(inspect.signature(theirs).parameters), f"optax's {name} now has {added}"
    stripped = without_extensions(ours, added)
    assert ("callable", [(p.name, p.kind, _comparable_default(p.default)) for p in stripped.parameters.values()]) \
        == _describe(theirs)
    return
  assert _describe(ours) == _describe(theirs)


def test_extensions_are_listed_names():
  """Every EXTENSIONS entry names a compared optax function (no stale rows)."""
  assert set(EXTENSIONS) <= set(CASES)


def test_namespaces_found():
  """The walk reaches optax's submodules, so an empty listing cannot pass silently."""
  found = _all_namespaces()
  assert {"schedules", "transforms", "tree_utils", "tree", "losses", "contrib"} <= set(found)
  assert len(CASES) > 300


@pytest.mark.parametrize("name", DEPRECATED[""])
def test_excluded_names_are_deprecated_in_optax(name):
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    try:
      getattr(optax, name)
    except AttributeError:
      pass  # removed after its deprecation period (monte_carlo): the message is the deprecation notice
    else:
      assert any(issubclass(w.category, DeprecationWarning) for w in caught), name
      return
  assert name in optax._deprecations and "deprecated" in optax._deprecations[name][0]


def test_stdlib_exclusions_are_the_stdlib():
  assert optax.tree_utils.functools is functools and optax.tree_utils.typing is typing
