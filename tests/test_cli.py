"""Smoke tests of the ``fluxlab`` console script (CleanRL's subprocess style)."""

import subprocess
import sys

import imageio.v2 as imageio
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
