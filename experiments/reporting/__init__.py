"""The report: gather the rows of sweeps (``gather``), then Markdown tables (``tables``), figures
(``plotting``) and the roofline over every experiment (``roofline``). Each experiment adds its own
part through its :class:`~experiments.framework.spec.Report`; nothing here imports an experiment."""
