"""The sweep framework: it knows experiments only through :class:`~experiments.framework.spec.Experiment`.

- ``spec``: the types an experiment is made of (schema base, columns, results, report part).
- ``bench``: the shared measurement knobs (``bench.*``) and how a variant is timed.
- ``plan``: a sweep's points: expand the overrides, compose each once, name its folder.
- ``validate``: a composed config into a typed, checked point (the one validation).
- ``point``: run one point: validate, run, write its files, then its manifest.
- ``store``: every file a point writes or a resume reads (CSV rows, sidecars, the manifest).
- ``sweep``: the sweep behind the ``infer`` Hydra sweeper: check, resume, lock, launch, list failures.
- ``launch``: hand the points to Hydra's launcher; outcomes from ``JobReturn``; a dead launcher's points.
- ``lock``: one sweep per folder at a time.
- ``knobs``: the knob and column tables (``--help``, README and docs) made from the schemas.
- ``app``: the Hydra side of an app: schemas in the config store, a job's identity, the command line.

Nothing here imports an experiment: the app passes its registry in.
"""
