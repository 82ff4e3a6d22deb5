"""The ``infer`` sweeper (``hydra/sweeper=infer``): Hydra's basic sweeper, plus each point composed
once, checked up front, resumed and its failures listed, for any Hydra app. The logic lives in
:mod:`experiments.framework.sweep`, imported only when a sweep runs: Hydra imports every plugin at
start-up, so this module must stay light and unbreakable.
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
    # name each point's folder after its overrides (stable, so a re-run can resume); false: hydra.sweep.subdir
    subdir_from_overrides: bool = False


ConfigStore.instance().store(group="hydra/sweeper", name="infer", node=InferSweeperConf, provider="infer-sweep")


class InferSweeper(BasicSweeper):
    """Cartesian sweeps like Hydra's basic sweeper, each point composed once, checked, resumable."""

    def __init__(self, max_batch_size: Optional[int] = None, params: Optional[Dict[str, str]] = None,  # noqa: UP006, UP045
                 subdir_from_overrides: bool = False) -> None:
        super().__init__(max_batch_size=max_batch_size, params=params)
        self.subdir_from_overrides = subdir_from_overrides
        self.task_function: Any = None

    def setup(self, *, hydra_context: Any, task_function: Any, config: Any) -> None:
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        self.task_function = task_function  # an app registers its hooks for it (experiments.framework.sweep)

    def sweep(self, arguments: List[str]) -> Any:  # noqa: UP006
        from experiments.framework.sweep import run_sweep

        return run_sweep(self, arguments)
