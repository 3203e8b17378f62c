"""Learned multigrid preconditioner: starts as the Jacobi V-cycle, the loss falls on a tiny grid,
the shipped weights converge on a scene family and resolution not seen in training, weight files
are validated, the trainer CLI runs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.linsolve import PoissonSolver, PoissonSystem, scenes
from engine.linsolve.learned import (
    DEFAULT_WEIGHTS,
    LearnedMG,
    WeightsError,
    apply_stencil,
    load_model,
    neighbour_codes,
    save_weights,
)
from engine.linsolve.multigrid import Hierarchy, JacobiSmoother, VCycle
from engine.linsolve.operator import SOLID
from engine.linsolve.train import loss_fn, make_item


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Small grids: one torch thread avoids oversubscribing the shared 2-core CI machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_codes_and_stencil():
    f = torch.zeros(1, 3, 3, 3, dtype=torch.int8)
    f[0, 0, 1, 1] = SOLID  # -x neighbour of the centre
    f[0, 1, 1, 2] = 2  # +z neighbour is AIR
    c = neighbour_codes(f)
    assert int(c[0, 1, 1, 1]) == 1 * 3 + 2 * 729
    assert int(c[0, 0, 0, 0]) == 1 * 3 + 1 * 27 + 1 * 243  # -x, -y, -z outside: SOLID
    r = torch.randn(1, 3, 3, 3, dtype=torch.float64)
    w = torch.zeros(1, 7, 3, 3, 3, dtype=torch.float64)
    w[:, 2] = 1.0  # take the +x neighbour
    z = apply_stencil(w, r)
    assert torch.equal(z[:, :-1], r[:, 1:]) and float(z[:, -1].abs().max()) == 0.0


def test_untrained_model_is_the_jacobi_vcycle():
    flags = scenes.random_training(16, np.random.default_rng(0))
    S = PoissonSystem(flags)
    h = Hierarchy(S)
    ref = VCycle(h, JacobiSmoother(h, 0.8), 2, 2)
    f = LearnedMG(omega=0.8).double().bind(S, h).precompute()
    r = torch.randn(S.shape, dtype=torch.float64) * S.fluid
    with torch.no_grad():  # equal up to the float32 rounding of omega / diag in the base table
        a, b = f(r), ref(r)
    assert float((a - b).norm()) <= 1e-7 * float(b.norm())


def test_loss_falls_on_tiny_grid():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    item = make_item(16, 2, rng, dtype=torch.float64)
    model = LearnedMG(hidden=16).double()
    f = model.bind(item["system"], item["hierarchy"])
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    rs = item["residuals"]
    with torch.no_grad():
        first = float(sum(loss_fn(item["system"], f, r) for r in rs) / len(rs))
    for step in range(30):
        loss = loss_fn(item["system"], f, rs[step % len(rs)])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        last = float(sum(loss_fn(item["system"], f, r) for r in rs) / len(rs))
    assert last < 0.8 * first, (first, last)


@pytest.mark.skipif(not DEFAULT_WEIGHTS.is_file(), reason="shipped weights not present")
def test_shipped_weights_converge_on_unseen_scene_and_size(runtime):
    n = 40  # resolution not used in training; pipe geometry not in the training family
    flags = scenes.pipe(n)
    b = torch.from_numpy(np.random.default_rng(0).standard_normal((1, n, n, n)))
    learned = PoissonSolver(flags, "learned", rtol=1e-6).solve(b)
    mg = PoissonSolver(flags, "mgpcg", rtol=1e-6).solve(b)
    cg = PoissonSolver(flags, "cg", rtol=1e-6).solve(b)
    assert learned.converged and learned.iterations <= 30
    assert learned.iterations <= mg.iterations + 1
    assert float((learned.x - cg.x).norm() / cg.x.norm()) < 1e-4


def test_weight_file_errors(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        load_model(tmp_path / "missing.pt")
    bad = tmp_path / "corrupt.pt"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(WeightsError, match="cannot read"):
        load_model(bad)
    other = tmp_path / "other.pt"
    torch.save({"format": "something-else"}, other)
    with pytest.raises(WeightsError, match="format"):
        load_model(other)
    good = tmp_path / "good.pt"
    save_weights(LearnedMG(hidden=8), good)
    assert load_model(good).config["hidden"] == 8
    blob = torch.load(good, weights_only=True)
    blob["state_dict"]["nets.0.net.0.weight"] = torch.zeros(3, 3)
    torch.save(blob, tmp_path / "mismatch.pt")
    with pytest.raises(WeightsError, match="state_dict.nets.0.net.0.weight"):
        load_model(tmp_path / "mismatch.pt")
    blob = torch.load(good, weights_only=True)
    blob["state_dict"]["log_gamma"] = torch.tensor([float("nan"), 0.0])
    torch.save(blob, tmp_path / "nan.pt")
    with pytest.raises(WeightsError, match="NaN"):
        load_model(tmp_path / "nan.pt")


@pytest.mark.slow
def test_trainer_cli_smoke(tmp_path):
    from engine.linsolve.train import main

    out = tmp_path / "w.pt"
    rc = main(
        [
            "--out",
            str(out),
            "--steps",
            "4",
            "--pool",
            "2",
            "--sizes",
            "16",
            "--val-every",
            "2",
            "--refresh",
            "3",
            "--hidden",
            "8",
            "--no-progress",
        ]
    )
    assert rc == 0 and out.is_file()
    assert out.with_suffix(".loss.png").is_file()
    model = load_model(out)
    assert model.meta["steps"] == 4
