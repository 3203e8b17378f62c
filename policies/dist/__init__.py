"""FluxLab on Ray: parameter sweeps as Ray Tune trials, CMA-ES populations and RL env workers in
Ray actors (the optional ``fluxlab[dist]`` extra).

Ray (Moritz et al., "Ray: A Distributed Framework for Emerging AI Applications", OSDI 2018)
schedules the worker processes and actors; Ray Tune (Liaw et al., "Tune: A Research Platform for
Distributed Model Selection and Training", 2018) runs, retries and restores sweep trials; Optuna's
TPE sampler (Akiba et al., KDD 2019) is the optional searcher.

Modules: :mod:`~policies.dist.config` (sweep files), :mod:`~policies.dist.sweep` (Tune trials,
resume), :mod:`~policies.dist.results` (the table and plots), :mod:`~policies.dist.cluster`
(connecting, resource checks), :mod:`~policies.dist.worker` (one Taichi runtime per worker
process), :mod:`~policies.dist.batch` and :mod:`~policies.dist.population` (CMA-ES populations on
batched envs and actors), :mod:`~policies.dist.vec_env` (an SB3 VecEnv of Ray actors). Nothing in
``engine``, ``tasks`` or ``envs`` imports Ray.
"""
