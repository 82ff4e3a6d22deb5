"""infer-sweep's Hydra side: the runner, the experiments, the report."""
