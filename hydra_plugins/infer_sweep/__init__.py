"""infer-sweep's Hydra sweeper plugin (``hydra/sweeper=infer``)."""
