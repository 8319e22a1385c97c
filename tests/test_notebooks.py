"""The Colab notebooks in notebooks/ run top to bottom, as a user runs them, and learn.

Each notebook is executed by nbclient (the engine behind nbmake) in a fresh IPython kernel of this very
interpreter, in an empty temporary working directory, skipping the cells tagged `skip-execution` (the
`!pip install` cells: the package under test is already installed). The suite's conftest settings (strict
dtype promotion, warnings as errors) live in this process, not in the kernel, so an unstored prelude cell
sets them in the kernel too: the code users copy from the notebooks is clean under both. Unstored check
cells at the end assert that each notebook's model learned.

The stored notebooks are also checked for what Colab users see: a first markdown cell with the "Open in
Colab" badge pointing at the notebook itself, an install cell tagged `skip-execution`, and no outputs.
"""

import json
import os
import pathlib
import re
import sys
import textwrap

import pytest

nbformat = pytest.importorskip("nbformat", reason="the notebooks need the `notebooks` extra")
nbclient = pytest.importorskip("nbclient", reason="the notebooks need the `notebooks` extra")
ipykernel_kernelspec = pytest.importorskip("ipykernel.kernelspec", reason="the notebooks need the `notebooks` extra")
pytest.importorskip("sklearn", reason="the notebooks need the `notebooks` extra")
pytest.importorskip("matplotlib", reason="the notebooks need the `notebooks` extra")

# jupyter_client comes with nbclient.
from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
from jupyter_client.manager import AsyncKernelManager

NOTEBOOKS = pathlib.Path(__file__).resolve().parents[1] / "notebooks"
SKIP_TAG = "skip-execution"  # nbclient's default `skip_cells_with_tag`, which nbmake uses as it is
CELL_TIMEOUT_S = 120
BADGE = ("[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
         "(https://colab.research.google.com/github/gradxform/gradxform/blob/main/notebooks/{name}.ipynb)")

# The suite's rules, inside the kernel (see tests/conftest.py). As pytest does per test, warnings are errors
# while each cell runs (and its figures render), not in between: ipykernel's own shutdown handler emits a
# PendingDeprecationWarning, which must not turn into an error in the kernel's control thread.
PRELUDE = """
import warnings

import jax
from IPython import get_ipython

jax.config.update("jax_numpy_dtype_promotion", "strict")


class _WarningsAsErrors:
    def __init__(self):
        self.context = None

    def pre_run_cell(self, info):
        self.context = warnings.catch_warnings()
        self.context.__enter__()
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", message="Some donated buffers were not usable")

    def post_run_cell(self, result):
        if self.context is not None:
            self.context.__exit__(None, None, None)
            self.context = None


_warnings_as_errors = _WarningsAsErrors()
get_ipython().events.register("pre_run_cell", _warnings_as_errors.pre_run_cell)
get_ipython().events.register("post_run_cell", _warnings_as_errors.post_run_cell)
"""

# What each notebook must have achieved, run in its namespace after its last cell.
CHECKS = {
    "quickstart": """
        assert len(losses) == 100
        assert losses[-1] < losses[0]
    """,
    "optimizers_compared": """
        import numpy as np
        names = {"SGD", "momentum", "Nesterov", "AdaGrad", "RMSprop", "Adadelta", "Adam", "AdamW", "Lion"}
        assert set(digits_curves) == set(rosenbrock_curves) == set(paths) == names
        for name in names:
            mlp_curve, rosen_curve = digits_curves[name], rosenbrock_curves[name]
            assert np.isfinite(mlp_curve).all() and np.isfinite(rosen_curve).all(), name
            assert np.isfinite(paths[name]).all(), name
            assert mlp_curve[-1] < 0.25 * mlp_curve[0], (name, mlp_curve[0], mlp_curve[-1])  # 2.41 -> 0.01..0.14
            assert rosen_curve[-1] < 1.0, (name, rosen_curve[0], rosen_curve[-1])  # 762 -> 1e-4..0.54
            assert paths[name].shape == (2001, 2), (name, paths[name].shape)
        assert rosenbrock_curves["Adam"][-1] < 1e-2  # 1.5e-3
    """,
    "flax_and_equinox": """
        for losses, accuracy in [(flax_losses, flax_accuracy), (eqx_losses, eqx_accuracy)]:
            assert len(losses) == 100
            assert losses[-1] < 0.1 * losses[0], (losses[0], losses[-1])  # 2.30 -> 0.04
            assert accuracy > 0.9, accuracy  # 0.98
    """,
}
# Figures each notebook shows inline (as image/png display data).
FIGURES = {"quickstart": 1, "optimizers_compared": 3, "flax_and_equinox": 0}

# The last unstored cell reports the kernel's interpreter, environment and working directory.
REPORT = """
import json, os, sys
print(json.dumps({"executable": sys.executable, "prefix": sys.prefix, "cwd": os.getcwd()}))
"""


class _ThisInterpreter(KernelSpecManager):
  """Every kernel name resolves to ipykernel on `sys.executable`.

  The notebooks name the kernel `python3`; jupyter would take a `python3` kernelspec installed for the
  user or system-wide (possibly another interpreter, without gradxform) over this environment's own.
  """

  def get_kernel_spec(self, kernel_name):
    return KernelSpec(resource_dir=ipykernel_kernelspec.RESOURCES, **ipykernel_kernelspec.get_kernel_dict())


def _read(name):
  return nbformat.read(str(NOTEBOOKS / f"{name}.ipynb"), as_version=4)


def _code_cell(source):
  return nbformat.v4.new_code_cell(textwrap.dedent(source).strip())


def _text(outputs, name="stdout"):
  return "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream" and o.get("name") == name)


def test_every_notebook_is_tested():
  assert sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")) == sorted(CHECKS)


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_notebook_is_stored_for_colab(name):
  notebook = _read(name)
  nbformat.validate(notebook)
  assert notebook.metadata.kernelspec.name == "python3"

  first = notebook.cells[0]
  assert first.cell_type == "markdown"
  assert BADGE.format(name=name) in first.source

  install = notebook.cells[1]
  assert install.cell_type == "code"
  assert install.source.startswith("!pip install -q gradxform")
  assert SKIP_TAG in install.metadata.get("tags", [])
  # Every other cell runs: the install cell is the only one a test run skips.
  assert [i for i, c in enumerate(notebook.cells) if SKIP_TAG in c.metadata.get("tags", [])] == [1]

  for cell in notebook.cells:
    if cell.cell_type == "code":
      assert cell.outputs == [] and cell.execution_count is None, "notebooks are stored without outputs"


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_notebook_runs(name, tmp_path):
  notebook = _read(name)
  stored = len(notebook.cells)
  notebook.cells = [_code_cell(PRELUDE), *notebook.cells, _code_cell(CHECKS[name]), _code_cell(REPORT)]

  workdir = tmp_path / "cwd"
  workdir.mkdir()
  env = dict(os.environ)
  env["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"  # inline figures even if CI sets Agg
  env["IPYTHONDIR"] = str(tmp_path / "ipython")  # the kernel's profile directory, not ~/.ipython
  env["PYDEVD_DISABLE_FILE_VALIDATION"] = "1"  # debugpy's frozen-modules note on stderr
  client = nbclient.NotebookClient(
      notebook,
      km=AsyncKernelManager(kernel_name="python3", kernel_spec_manager=_ThisInterpreter()),
      timeout=CELL_TIMEOUT_S,
      skip_cells_with_tag=SKIP_TAG,
      allow_errors=False,
  )
  try:
    client.execute(cwd=str(workdir), env=env, cleanup_kc=True)
  except nbclient.exceptions.CellExecutionError as error:
    plain = re.sub(r"\x1b\[[0-9;]*m", "", str(error))  # IPython colours its tracebacks
    pytest.fail(f"{name}.ipynb failed:\n{plain}", pytrace=False)

  report = json.loads(_text(notebook.cells[-1].outputs).strip().splitlines()[-1])
  # Not resolved through symlinks: a venv's python links to the base interpreter, whose sys.prefix differs.
  assert (report["executable"], report["prefix"]) == (sys.executable, sys.prefix)
  assert os.path.realpath(report["cwd"]) == os.path.realpath(workdir)
  assert list(workdir.iterdir()) == [], "notebooks write no files"

  cells = notebook.cells[1:1 + stored]  # the stored cells, executed
  assert all(not cell.get("outputs") for cell in cells if SKIP_TAG in cell.metadata.get("tags", []))
  figures = sum("image/png" in o.get("data", {}) for c in cells if c.cell_type == "code" for o in c.outputs)
  assert figures == FIGURES[name], "figures are shown inline"
