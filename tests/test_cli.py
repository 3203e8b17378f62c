"""Smoke tests of the ``fluxlab`` console script (CleanRL's subprocess style)."""

import subprocess
import sys

import imageio.v2 as imageio
import numpy as np
import pytest

from policies import cli


def test_demo_writes_a_video(tmp_path):
    out = tmp_path / "demo.gif"
    cmd = [sys.executable, "-m", "policies.cli", "demo", "--out", str(out), "--steps", "3"]
    cmd += ["--precision", "f64", "--small", "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert str(out) in proc.stdout
    with imageio.get_reader(out) as reader:
        frames = list(reader.iter_data())
    assert len(frames) >= 3
    assert frames[0].ndim == 3 and frames[0].shape[2] in (3, 4)
    assert frames[0].std() > 5.0


@pytest.mark.slow
def test_demo_press_shows_an_imprint(runtime):
    """The demo's tactile press: the gel pad's tactile image is uniform before the finger comes
    down and shows a coloured imprint of the jelly ball at the deepest press."""
    from policies import demo

    class Bar:
        def update(self, n=1):
            pass

    size = 64
    frames = demo._press(demo.PRESS_STEPS, size, 2 * size + 2, Bar())["frames"]
    assert len(frames) == demo.PRESS_STEPS and frames[0].shape == (size, 2 * size + 2, 3)
    rest, deepest = (frames[k][:, size + 2 :].astype(float) for k in (0, round(0.6 * demo.PRESS_STEPS) - 1))
    change = np.abs(deepest - rest).max(-1)
    assert change.max() > 40, change.max()
    assert (change > 15).mean() > 0.01, (change > 15).mean()


def test_demo_rejects_bad_arguments(tmp_path, capsys):
    assert cli.main(["demo", "--out", str(tmp_path / "demo.avi"), "--steps", "2"]) == 2
    assert cli.main(["demo", "--out", str(tmp_path / "demo.gif"), "--steps", "0"]) == 2
    with pytest.raises(SystemExit):
        cli.main(["no-such-command"])


def test_train_preconditioner_forwards_argv(monkeypatch):
    from engine.linsolve import train

    seen = {}

    def fake_main(argv):
        seen["argv"] = argv
        return 0

    monkeypatch.setattr(train, "main", fake_main)
    assert cli.main(["train-preconditioner", "--minutes", "0.1", "--help"]) == 0
    assert seen["argv"] == ["--minutes", "0.1", "--help"]
