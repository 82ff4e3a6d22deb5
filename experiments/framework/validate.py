"""Turn a composed config into a typed, checked :class:`Point`: the one validation of a point."""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from experiments.framework import store
from experiments.framework.bench import BenchConfig
from experiments.framework.spec import ConfigError, Experiment, Knobs, acting_knobs

NOT_KNOBS = ("experiment", "sweep", "hydra")  # run control: not part of a result's identity


@dataclass(frozen=True)
class Point:
    """A validated point: its experiment, typed knobs, bench settings and seed."""

    experiment: Experiment
    knobs: Knobs
    bench: BenchConfig
    seed: int

    def flat_config(self) -> dict[str, Any]:
        """The effective config as row columns: seed, ``bench.*``, then the knobs that act."""
        return store.flatten({"seed": self.seed, "bench": dataclasses.asdict(self.bench),
                              self.experiment.key: acting_knobs(self.knobs)})

    @property
    def config_hash(self) -> str:
        return config_hash(self.flat_config(), self.experiment.name)


def config_hash(flat: Mapping[str, Any], experiment: str) -> str:
    """A short, stable hash of the experiment name and its effective config."""
    text = json.dumps({"experiment": experiment, **flat}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _typed(schema: type, node: Any, key: str) -> Any:
    """Merge ``node`` (resolved against its whole config) into ``schema``; run its checks."""
    try:
        names = [f"{key}.{f.name}" for f in dataclasses.fields(schema)]
        unknown = [f"{key}.{k}" for k in node if f"{key}.{k}" not in names]
        if unknown:
            raise ConfigError(_not_a_knob(unknown[0], names))
        if isinstance(node, DictConfig) and OmegaConf.get_type(node) is schema:  # composed on the schema: typed
            return OmegaConf.to_object(node)
        values = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), values))
    except OmegaConfBaseException as exc:
        full_key = getattr(exc, "full_key", None)
        where = f"{key}.{full_key}" if full_key and not str(full_key).startswith(key) else (full_key or key)
        raise ConfigError(f"{where}: {str(exc).splitlines()[0]}") from None


def _not_a_knob(name: str, knobs: list[str]) -> str:
    close = difflib.get_close_matches(name, knobs, n=1)
    hint = f": did you mean {close[0]}?" if close else f"; the knobs here are {', '.join(knobs)}"
    return f"{name} is not a knob{hint}"


KINDS = {"Integer": "an integer", "Float": "a number", "Boolean": "true or false"}


def composition_error(exc: Exception, knobs: Callable[[], list[str]]) -> str:
    """Hydra's error composing a point, as the rule it broke in one line: an unknown key names the nearest knob
    (``knobs()`` lists them), a value of the wrong type says which type the knob takes."""
    text = " ".join(str(exc).split("Config search path:")[0].split())
    unknown = re.match(r"Could not override '([^']+)'", text)
    if unknown:
        return _not_a_knob(unknown.group(1), knobs())
    merging = re.match(r"Error merging override ([^=\s]+)=(.*)", text)
    if merging and exc.__cause__ is not None:
        key, value = merging.groups()
        cause = str(exc.__cause__).splitlines()[0]
        kind = re.search(r"could not be converted to (\w+)", cause)
        if kind and kind.group(1) in KINDS:
            return f"{key}={value} is not {KINDS[kind.group(1)]}"
        return f"{key}={value}: {cause}"
    return text


def validate(cfg: DictConfig, experiments: Mapping[str, Experiment]) -> Point:
    """Check a composed config: experiment, types, cross-field rules, seed. Raises :class:`ConfigError`."""
    name = cfg.get("experiment")
    if name not in experiments:
        raise ConfigError(f"experiment={name} is unknown: choose one of {', '.join(experiments)}")
    exp = experiments[name]
    if exp.key not in cfg:
        raise ConfigError(f"experiment={exp.name} needs its knobs under '{exp.key}'")
    stray = [k for k in cfg if k not in (*NOT_KNOBS, "seed", "bench", exp.key)]
    if stray:
        owner = next((e.name for e in experiments.values() if e.key == stray[0]), None)
        why = f"holds the knobs of experiment={owner}" if owner else "is not a setting of this app"
        raise ConfigError(f"{stray[0]}.* {why}, but this point runs experiment={exp.name} (its knobs are "
                          f"{exp.key}.*): drop those keys or choose experiment={owner or '...'}")
    seed = cfg.get("seed")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed={seed} must be a non-negative integer")
    check_rounds(cfg, exp, experiments)
    return Point(exp, _typed(exp.schema, cfg[exp.key], exp.key), _typed(BenchConfig, cfg.get("bench", {}), "bench"),
                 seed)


def check_rounds(cfg: DictConfig, exp: Experiment, experiments: Mapping[str, Experiment]) -> None:
    """``sweep.rounds`` (run control, not part of a point's identity): at least 1, and above 1 only for a timed
    experiment (one whose figures come from the harness's samples)."""
    rounds = (cfg.get("sweep") or {}).get("rounds", 1)
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ConfigError(f"sweep.rounds={rounds} must be an integer >= 1")
    if rounds > 1 and not exp.timed:
        timed = ", ".join(e.name for e in experiments.values() if e.timed)
        raise ConfigError(f"sweep.rounds={rounds} applies to the timed experiments ({timed}); experiment={exp.name} "
                          "is measured once per point (its comparison uses its own samples): leave sweep.rounds=1")


def raw_config(cfg: DictConfig | None) -> dict[str, Any]:
    """The config as composed, for the row of a point that did not validate (seed and bench first)."""
    if cfg is None:
        return {}
    try:
        tree = OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException:
        tree = OmegaConf.to_container(cfg, resolve=False)
    for key in NOT_KNOBS:
        tree.pop(key, None)
    first = {k: tree.pop(k) for k in ("seed", "bench") if k in tree}
    return store.flatten({**first, **tree})
