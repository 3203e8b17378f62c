"""A sweep on a simulated two-node Ray cluster (``ray.cluster_utils.Cluster``, one CPU per node, on
this machine): the 2x2 trials are spread over both nodes, and a sweep whose trial needs more
than any node has is refused before any trial starts."""

from __future__ import annotations

import pytest

pytest.importorskip("ray")

from ray.cluster_utils import Cluster  # noqa: E402

from policies.dist.config import load_sweep  # noqa: E402
from policies.dist.sweep import run_sweep  # noqa: E402

pytestmark = [pytest.mark.ray, pytest.mark.slow]

SWEEP = """
name: two-nodes
storage: {storage}
command: optimize
task: Pouring-v0
precision: f64
deterministic: true
overrides: {{horizon: 2}}
settings: {{iters: 2, param: linear, knots: 2}}
grid:
  seed: [0, 1]
  settings.lr: [0.05, 0.1]
resources: {{CPU: {cpus}}}
"""


@pytest.fixture(scope="module")
def two_nodes(runtime):
    import ray

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def test_sweep_spreads_over_two_nodes(two_nodes, tmp_path):
    path = tmp_path / "sweep.yaml"
    path.write_text(SWEEP.format(storage=tmp_path / "store", cpus=1))
    result = run_sweep(load_sweep(path), verbose=0)
    assert len(result.rows) == 4 and all(r["status"] == "ok" for r in result.rows), result.rows
    assert len({r["node"] for r in result.rows}) == 2
    assert all(r["loss"] <= r["initial_loss"] + 1e-12 for r in result.rows)


def test_trial_larger_than_every_node_is_refused(two_nodes, tmp_path):
    """Two CPUs in all, one per node: a trial of two CPUs could never be placed."""
    path = tmp_path / "big.yaml"
    path.write_text(SWEEP.format(storage=tmp_path / "store", cpus=2))
    with pytest.raises(ValueError, match=r"resources \{'CPU': 2.0\} fit on no node"):
        run_sweep(load_sweep(path), verbose=0)
    assert not (tmp_path / "store").exists()
