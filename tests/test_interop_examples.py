"""The interop examples (flax NNX, equinox) and the learning-rate finder run, and learn.

Short runs, in-process, under the suite's strict dtype promotion and warnings-as-errors, as in
test_examples.py. The flax and equinox examples skip when the `interop` extra is not installed.
"""

import pytest

pytest.importorskip("sklearn", reason="the examples need the `examples` extra")
pytest.importorskip("tqdm", reason="the examples need the `examples` extra")
pytest.importorskip("matplotlib", reason="the examples need the `examples` extra")

from tests.test_examples import _load_example  # noqa: E402  (one loader for every example)


def _last_line(capsys):
  return capsys.readouterr().out.strip().splitlines()[-1]


def test_flax_nnx_mlp_learns(capsys):
  pytest.importorskip("flax", reason="needs the `interop` extra")
  # Two epochs reach 0.947-0.956 for seeds 0-2 (one epoch: 0.91-0.93); the floor leaves room for
  # other platforms' numerics.
  accuracy = _load_example("flax_nnx_mlp").main(["--epochs", "2", "--seed", "1", "--quiet"])
  assert accuracy >= 0.88
  assert _last_line(capsys) == f"test accuracy: {accuracy:.3f}"


def test_equinox_mlp_learns(capsys):
  pytest.importorskip("equinox", reason="needs the `interop` extra")
  # Two epochs reach 0.936-0.961 for seeds 0-2 (one epoch: 0.90-0.92).
  accuracy = _load_example("equinox_mlp").main(["--epochs", "2", "--seed", "1", "--quiet"])
  assert accuracy >= 0.88
  assert _last_line(capsys) == f"test accuracy: {accuracy:.3f}"


def test_lr_finder_suggests_a_sane_learning_rate(tmp_path, capsys):
  out = tmp_path / "lr_finder.png"
  # The default sweep (100 steps, 1e-5 to 1): the suggestion is 2.7e-3..6e-3 for seeds 0-2, next to the
  # 3e-3..1e-2 the other digits examples train Adam with.
  suggestion = _load_example("lr_finder").main(["--quiet", "--out", str(out)])
  assert 1e-3 <= suggestion <= 2e-2
  assert out.is_file() and out.read_bytes().startswith(b"\x89PNG")
  printed = capsys.readouterr().out
  assert "traces of the train step: 1)" in printed  # set_hyperparams every step, one compilation
  assert printed.strip().splitlines()[-1] == f"suggested learning rate: {suggestion:.2e}"
