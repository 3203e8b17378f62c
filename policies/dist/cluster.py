"""Connecting to Ray and checking that a cluster can give what a sweep's trials ask for.

``connect()`` starts a local Ray instance on this machine (``ray.init()``, optionally limited to
``num_cpus``) or joins a running cluster (``address="auto"`` or ``"HOST:6379"``, as started by
``ray start --head`` and ``ray start --address=HOST:6379`` on the other machines).

A trial reserves a placement group: one bundle for the trial process (``resources``) and one
per Ray actor it starts (``worker_resources``); Ray places each bundle on one node. A sweep
whose trial needs a bundle larger than every node, or more in total than the whole cluster,
would wait forever, so :func:`check_resources` refuses it before any trial starts.
"""

from __future__ import annotations

from policies.dist.config import SweepConfig


def connect(address: str | None = None, num_cpus: int | None = None) -> None:
    """``ray.init`` unless Ray is already initialized in this process.

    Args:
        address: None for a new local instance, else a running cluster (``auto``, ``HOST:PORT``).
        num_cpus: CPUs of the local instance (default: all); only without ``address``.
    """
    import ray

    if ray.is_initialized():
        return
    if address is not None and num_cpus is not None:
        raise ValueError("num_cpus applies to a local Ray instance, not with an address")
    ray.init(address=address, num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)


def node_resources() -> list[dict[str, float]]:
    """Total resources of each live node of the connected cluster."""
    import ray

    return [dict(node["Resources"]) for node in ray.nodes() if node["Alive"]]


def check_resources(cfg: SweepConfig, nodes: list[dict[str, float]] | None = None) -> None:
    """Raise if a trial of ``cfg`` could never be scheduled on the cluster (``nodes``: each node's
    resources; default: the connected cluster's).

    Raises:
        ValueError: naming the sweep file, the bundle and what the largest node or the cluster has.
    """
    nodes = node_resources() if nodes is None else nodes
    bundles = cfg.bundles(cfg.max_workers())
    for where, bundle in (("resources", bundles[0]), ("worker_resources", bundles[-1])):
        if not any(all(node.get(k, 0.0) >= v for k, v in bundle.items()) for node in nodes):
            have = [{k: node.get(k, 0.0) for k in bundle} for node in nodes]
            raise ValueError(
                f"sweep config {cfg.path}: {where} {bundle} fit on no node of the Ray cluster (its nodes have {have})"
            )
    total = {k: sum(b.get(k, 0.0) for b in bundles) for b in bundles for k in b}
    cluster = {k: sum(node.get(k, 0.0) for node in nodes) for k in total}
    if any(cluster[k] < v for k, v in total.items()):
        raise ValueError(
            f"sweep config {cfg.path}: a trial with {len(bundles) - 1} workers needs {total} in all, "
            f"but the Ray cluster has {cluster}"
        )
