"""FluxLab policies: trajectory optimization, RL and CMA-ES on FluxLab envs, whole runs, the demo and the CLI."""
