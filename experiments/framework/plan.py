"""A sweep's points: the cartesian product of its overrides, each composed once, each with a folder name.

Composing a point from scratch costs tens of milliseconds, most of it reading and merging the
config tree. :class:`Composer` composes the tree once per distinct choice of config groups
(``experiment=``, ``qmethod=`` ...) with Hydra's own loader, then applies each point's value
overrides with Hydra's own code and records its overrides as Hydra does. :class:`PlannedLoader`
hands those configs to the launcher, so the launcher does not compose the point again.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import pickle
import re
from typing import Any
from urllib.parse import quote

from hydra._internal.config_loader_impl import ConfigLoaderImpl, get_overrides_dirname
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf, open_dict

#: Overrides that steer the sweep itself: left out of folder names and of a result's identity.
RUN_CONTROL = ("sweep.",)
MAX_DIR_NAME = 120


def point_dir_name(overrides: list[str]) -> str:
    """A folder name derived from a point's overrides, stable across runs and safe for any value.

    Each ``key=value`` is percent-quoted (so ``/`` cannot make sub-folders), run-control and
    ``hydra.*`` overrides are left out, and long names keep a prefix plus a hash of the whole.
    """
    kept = [o for o in overrides if not o.lstrip("+~").startswith(("hydra.", "hydra/", *RUN_CONTROL))]
    # Hydra's escapes (``\\:`` in a URL) are not part of the value; only what a folder name cannot hold is quoted
    items = [quote(re.sub(r"\\(.)", r"\1", o), safe="=+-._@:[]") for o in kept]
    name = ",".join(items) or "defaults"
    if len(name) > MAX_DIR_NAME:
        digest = hashlib.sha1(name.encode()).hexdigest()[:12]
        room, head = MAX_DIR_NAME - 13, ""
        for item in items:  # whole overrides, not one cut mid-word (unless the first alone is too long)
            if len(head) + len(item) + bool(head) > room:
                break
            head = f"{head},{item}" if head else item
        name = f"{head or items[0][:room]}-{digest}"
    return name


def expand(overrides: list[Override]) -> list[list[str]]:
    """The cartesian product of the sweep overrides, as override strings, in Hydra's order.

    As in Hydra's basic sweeper, a later override of the same key replaces an earlier one, so a
    command-line value wins over a preset's ``hydra.sweeper.params``.
    """
    axes: dict[str, list[str]] = {}
    for o in overrides:
        key = o.get_key_element()
        if o.is_sweep_override():
            if not o.is_discrete_sweep():
                raise HydraException(f"the infer sweeper does not support the sweep {o.input_line}")
            axes[key] = [f"{key}={v}" for v in o.sweep_string_iterator()]
        else:
            axes[key] = [f"{key}={o.get_value_element_as_str()}"]
    return [list(combo) for combo in itertools.product(*axes.values())]


class Composer:
    """Composes each point's full config (``hydra`` node included) exactly as Hydra's loader would."""

    def __init__(self, loader: Any, master: DictConfig) -> None:
        self.loader, self.master = loader, master
        self.parser = OverridesParser.create(config_loader=loader)
        self.trees: dict[tuple[str, ...], bytes | Exception] = {}  # pickled: loading is faster than deepcopy
        self.groups: dict[str, bool] = {}  # key -> whether it names a config group (asked of the repository once)
        self.compositions = 0  # full compositions of the config tree (one per choice of groups)

    def _structural(self, o: Override) -> bool:
        group = o.key_or_group
        if group not in self.groups:
            self.groups[group] = group.startswith("hydra/") or self.loader.repository.group_exists(group)
        return o.package is not None or self.groups[group]

    def _tree(self, groups: tuple[str, ...]) -> DictConfig:
        if groups not in self.trees:
            try:
                self.compositions += 1
                self.trees[groups] = pickle.dumps(self.loader.load_sweep_config(self.master, list(groups)))
            except Exception as exc:  # remembered: every point with these groups fails the same way
                self.trees[groups] = exc
        tree = self.trees[groups]
        if isinstance(tree, Exception):
            raise tree
        return pickle.loads(tree)

    def compose(self, overrides: list[str]) -> DictConfig:
        """The point's config; raises what Hydra would raise composing it."""
        parsed = self.parser.parse_overrides(overrides)
        structural = [self._structural(o) for o in parsed]
        cfg = self._tree(tuple(o.input_line for o, s in zip(parsed, structural, strict=True) if s))
        ConfigLoaderImpl._apply_overrides_to_config([o for o, s in zip(parsed, structural, strict=True) if not s], cfg)
        task = [o for o in parsed if not o.is_hydra_override()]
        dirname = cfg.hydra.job.config.override_dirname
        with open_dict(cfg.hydra):
            cfg.hydra.overrides.task = [o.input_line for o in task]
            cfg.hydra.overrides.hydra = [*self.master.hydra.overrides.hydra,
                                         *(o.input_line for o in parsed if o.is_hydra_override())]
            cfg.hydra.job.override_dirname = get_overrides_dirname(
                overrides=task, kv_sep=dirname.kv_sep, item_sep=dirname.item_sep, exclude_keys=dirname.exclude_keys)
        OmegaConf.copy_cache(from_config=self.master, to_config=cfg)
        return cfg

    def knobs(self, overrides: list[str]) -> list[str]:
        """Every key a point with these overrides may set (its config groups chosen, no values applied)."""
        parsed = self.parser.parse_overrides(overrides)
        cfg = self._tree(tuple(o.input_line for o in parsed if self._structural(o)))
        return [k for k in _keys(cfg) if not k.startswith("hydra.")]

    def add(self, cfg: DictConfig, overrides: list[str]) -> DictConfig:
        """A copy of a composed point with more value overrides (the sweeper's runtime ``hydra.*`` ones)."""
        parsed = self.parser.parse_overrides(overrides)
        cfg = copy.deepcopy(cfg)
        ConfigLoaderImpl._apply_overrides_to_config(parsed, cfg)
        with open_dict(cfg.hydra):
            for o in parsed:
                (cfg.hydra.overrides.hydra if o.is_hydra_override() else cfg.hydra.overrides.task).append(o.input_line)
        return cfg


class PlannedLoader:
    """A config loader that returns the configs a plan composed, by override list; any other
    request goes to the real loader. A launcher that ships jobs to other processes (joblib,
    submitit) pickles it without the plan: a worker composes its own point, Hydra's way, rather
    than receive every point's config with every job."""

    def __init__(self, real: Any, planned: dict[tuple[str, ...], DictConfig]) -> None:
        self.real, self.planned = real, planned

    def __getstate__(self) -> dict[str, Any]:
        return {"real": self.real, "planned": {}}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def load_sweep_config(self, master_config: DictConfig, sweep_overrides: list[str]) -> DictConfig:
        cfg = self.planned.get(tuple(sweep_overrides))
        if cfg is None:
            return self.real.load_sweep_config(master_config, sweep_overrides)
        return copy.deepcopy(cfg)

    def __getattr__(self, name: str) -> Any:
        if name in ("real", "planned") or name.startswith("__"):  # unpickling: not set yet
            raise AttributeError(name)
        return getattr(self.real, name)


def _keys(node: Any, prefix: str = "") -> list[str]:
    """The dotted keys of a config's leaves."""
    if not isinstance(node, DictConfig):
        return [prefix[:-1]]
    return [k for name in node for k in _keys(node._get_node(name), f"{prefix}{name}.")]
