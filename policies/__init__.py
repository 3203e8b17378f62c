"""FluxLab policies: trajectory optimization, RL and CMA-ES on FluxLab envs, and the CLI."""
