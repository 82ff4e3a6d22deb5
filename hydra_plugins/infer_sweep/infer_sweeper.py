"""The ``infer`` sweeper: Hydra's basic sweeper plus up-front validation, resume, and a full
failure list. The logic lives in :mod:`experiments.sweeping`, imported only when a sweep runs:
Hydra imports every plugin at start-up, so this module must stay light and unbreakable.
"""

# No ``from __future__ import annotations`` here: Hydra executes plugin modules before they are
# in sys.modules, and dataclasses then cannot resolve string annotations.
from dataclasses import dataclass
from typing import Any, Dict, List, Optional  # noqa: UP035 - evaluated at import, see above

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore


@dataclass
class InferSweeperConf:
    _target_: str = "hydra_plugins.infer_sweep.infer_sweeper.InferSweeper"
    max_batch_size: Optional[int] = None  # noqa: UP045
    params: Optional[Dict[str, str]] = None  # noqa: UP006, UP045


ConfigStore.instance().store(group="hydra/sweeper", name="infer", node=InferSweeperConf, provider="infer-sweep")


class InferSweeper(BasicSweeper):
    """Cartesian sweeps like Hydra's basic sweeper, validated first, resumable, failures listed."""

    def sweep(self, arguments: List[str]) -> Any:  # noqa: UP006
        from experiments.sweeping import run_sweep

        return run_sweep(self, arguments)
