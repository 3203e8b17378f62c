"""Throughput of FluxLab on Ray against one process at equal cores: CMA-ES populations and RL env steps. Prints JSON.

CMA-ES: a population of ``--population`` random candidates (tanh-squashed linear knots, the cpu
preset of ``--task`` at its full horizon) scored by full-horizon rollouts
(:mod:`policies.dist.batch`), as rollouts per second. The configurations take turns, one
population each per round, over ``--repeats`` rounds after a warm-up (worker start and kernel
compilation excluded); the overhead of each against ``single`` is the median of the per-round
ratios, so load from other processes that changes between rounds cancels out:

* ``single``: one process, one batched env of all candidates, Taichi on ``--cores`` threads;
* ``ray WxC``: :class:`policies.dist.population.PopulationEvaluator`, W actors of C CPUs each
  (W x C = ``--cores``), the population split into W batches;
* ``cluster 2+2``: a simulated two-node cluster (``ray.cluster_utils.Cluster``, two nodes of
  ``--cores`` CPUs on this machine) with 2 x ``--cores`` one-CPU actors, the way a second machine
  would join; on one machine its logical CPUs outnumber the cores, so it shows placement and
  the cost of oversubscription, not a speed-up.

RL: env steps per second of SB3's ``VecEnv`` API under random actions over ``--scenes`` scenes
(``--steps`` vector steps per repeat): one batched env in this process (``single``) against
:class:`policies.dist.vec_env.RayVecEnv` with the same splits.

The overhead Ray adds at equal cores is ``1 - rate / single rate`` (target: <= 15 % for CMA-ES
populations of >= 16 rollouts). Losses of every configuration are compared with the single
process's (multi-threaded atomics: equal to rounding, see :mod:`engine.runtime`).

Usage: python benchmarks/dist_throughput.py [--task Pouring] [--horizon T] [--population 16] [--cores 2]
       [--scenes 8] [--steps 20] [--repeats 3] [--out benchmarks/results/dist_throughput.json]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time


def _cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _paired(runners: dict, repeats: int, per_call: int) -> list[dict]:
    """Time every runner once per round, the order rotated each round, after one warm-up call each
    (worker start, kernel compilation). Rates are medians over rounds; a configuration's overhead
    is the median over rounds of 1 - (its rate / the rate of ``single`` in the same round), so a
    change of the machine's load between rounds cancels."""
    names = list(runners)
    for fn in runners.values():
        fn()
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            t0 = time.perf_counter()
            runners[name]()
            times[name].append(time.perf_counter() - t0)
    rows = []
    for name in names:
        rate = per_call / statistics.median(times[name])
        row = {"config": name, "rate": round(rate, 3), "times_s": [round(t, 3) for t in times[name]]}
        if name != "single":
            ratios = [b / t for t, b in zip(times[name], times["single"], strict=True)]
            row["overhead_vs_single"] = round(1.0 - statistics.median(ratios), 4)
        print(f"{name}: {rate:.3g}/s", file=sys.stderr, flush=True)
        rows.append(row)
    return rows


def cmaes_rows(spec, population: int, cores: int, repeats: int, splits) -> list[dict]:
    """Rollouts/s of one population: this process (``single``) against PopulationEvaluator splits."""
    import numpy as np

    from policies.dist.batch import BatchEvaluator
    from policies.dist.population import PopulationEvaluator
    from policies.trajopt import ActionParameterization

    cfg = spec.task_config()
    param = ActionParameterization(cfg.horizon, cfg.action_dim, "linear", min(8, cfg.horizon), "tanh")
    rng = np.random.default_rng(0)
    candidates = [rng.normal(scale=0.5, size=param.size) for _ in range(population)]
    evaluators = {"single": BatchEvaluator(spec, param, population)}
    for name, workers, cpus in splits:
        batch = -(-population // workers)
        evaluators[name] = PopulationEvaluator(spec, param, workers=workers, batch_size=batch, cpus_per_worker=cpus)
    losses: dict[str, list[float]] = {}

    def runner(name):
        return lambda: losses.__setitem__(name, evaluators[name](candidates))

    rows = _paired({name: runner(name) for name in evaluators}, repeats, population)
    rows[0].update(workers=1, cpus_per_worker=cores)
    for row, (name, workers, cpus) in zip(rows[1:], splits, strict=True):
        diff = np.abs(np.subtract(losses[name], losses["single"])) / np.abs(losses["single"])
        row.update(workers=workers, cpus_per_worker=cpus, nodes=len(set(evaluators[name].node_ids())))
        row["max_rel_loss_diff"] = float(diff.max())
    for evaluator in evaluators.values():
        evaluator.close()
    return rows


def rl_rows(spec, scenes: int, cores: int, steps: int, repeats: int, splits) -> list[dict]:
    """Env steps/s of SB3's VecEnv API: one batched env here (``single``) against RayVecEnv splits."""
    import numpy as np

    from policies.dist.vec_env import RayVecEnv
    from policies.rl import GymnasiumVecEnv

    venvs = {"single": GymnasiumVecEnv(spec.make_vec(scenes))}
    for name, workers, cpus in splits:
        venvs[name] = RayVecEnv(spec, workers=workers, envs_per_worker=scenes // workers, cpus_per_worker=cpus)

    def runner(venv):
        venv.seed(0)
        venv.reset()
        rng = np.random.default_rng(0)
        shape = (venv.num_envs, *venv.action_space.shape)

        def run():
            for _ in range(steps):
                venv.step(rng.uniform(-1, 1, size=shape).astype(np.float32))

        return run

    rows = _paired({name: runner(v) for name, v in venvs.items()}, repeats, scenes * steps)
    rows[0].update(workers=1, cpus_per_worker=cores)
    for row, (_, workers, cpus) in zip(rows[1:], splits, strict=True):
        row.update(workers=workers, cpus_per_worker=cpus)
    for venv in venvs.values():
        venv.close()
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="Pouring")
    parser.add_argument("--horizon", type=int, default=None, help="shorter episodes (default: the preset's)")
    parser.add_argument("--population", type=int, default=16)
    parser.add_argument("--cores", type=int, default=2, help="cores of the single process and of the Ray instance")
    parser.add_argument("--scenes", type=int, default=8, help="RL scenes in all")
    parser.add_argument("--steps", type=int, default=20, help="RL vector steps per repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-cluster", action="store_true", help="skip the simulated two-node cluster")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args(argv)

    import ray
    from ray.cluster_utils import Cluster

    from envs import EnvSpec
    from policies.dist.worker import WorkerRuntime

    WorkerRuntime("f32", "cpu", False, args.cores).start()
    overrides = {} if args.horizon is None else {"horizon": args.horizon}
    spec = EnvSpec(args.task, "cpu", overrides, precision="f32")
    c = args.cores
    splits = [(f"ray 1x{c}", 1, c), (f"ray {c}x1", c, 1)]
    # Logical CPUs for both splits' actors at once (each configuration runs alone in its turn).
    ray.init(num_cpus=2 * c, include_dashboard=False, log_to_driver=False)
    print("CMA-ES populations ...", file=sys.stderr, flush=True)
    cmaes = cmaes_rows(spec, args.population, c, args.repeats, splits)
    print("RL env steps ...", file=sys.stderr, flush=True)
    rl = rl_rows(spec, args.scenes, c, args.steps, args.repeats, splits)
    ray.shutdown()
    if not args.no_cluster:
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": c, "include_dashboard": False})
        cluster.add_node(num_cpus=c)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False)
        two = [(f"cluster 2+2 ({2 * c}x1)", 2 * c, 1)]
        print("two-node cluster ...", file=sys.stderr, flush=True)
        cmaes += [dict(r, phase="cluster") for r in cmaes_rows(spec, args.population, c, args.repeats, two)]
        rl += [dict(r, phase="cluster") for r in rl_rows(spec, args.scenes, c, args.steps, args.repeats, two)]
        ray.shutdown()
        cluster.shutdown()
    report = {
        "benchmark": "dist_throughput",
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "command": " ".join([sys.executable.split("/")[-1], *sys.argv]),
        "machine": {
            "cpu_model": _cpu_model(),
            "logical_cpus": os.cpu_count(),
            "platform": platform.platform(),
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        },
        "ray": ray.__version__,
        "task": spec.task,
        "preset": "cpu",
        "horizon": spec.horizon,
        "precision": "f32",
        "target": "Ray overhead <= 15 % at equal cores for CMA-ES populations of >= 16 rollouts",
        "cmaes": {"population": args.population, "unit": "rollouts/s", "results": cmaes},
        "rl": {"scenes": args.scenes, "steps_per_repeat": args.steps, "unit": "env steps/s", "results": rl},
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
