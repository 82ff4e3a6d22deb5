"""The sweep framework: it knows experiments only through :class:`~experiments.framework.spec.Experiment`.

- ``spec``: the types an experiment is made of (schema base, columns, results, report part).
- ``bench``: the shared measurement knobs (``bench.*``) and how a variant is timed.
- ``plan``: a sweep's points: expand the overrides, compose each point once, name its folder.
- ``point``: run one point: validate, run, write its files, then its manifest.
- ``store``: every file a point writes or a resume reads (CSV rows, sidecars, the manifest).
- ``sweep``: the sweep behind the ``infer`` Hydra sweeper: check, resume, launch, list failures.
- ``knobs``: the knob and column tables (``--help``, README and docs) made from the schemas.

Nothing here imports an experiment: the app passes its registry in.
"""
