"""The ``infer`` sweeper is a Hydra plugin any app can use: Hydra's own launcher and batched-sweeper test
suites (the ones Hydra's plugins run) pass with ``hydra/sweeper=infer``, on an app that has none of this
project's settings, hooks or schemas."""

from __future__ import annotations

import pytest
from hydra.core.singleton import Singleton
from hydra.test_utils.launcher_common_tests import BatchedSweeperTestSuite, LauncherTestSuite
from hydra.version import VersionBase


@pytest.fixture(autouse=True)
def unspecified_version_base(hydra_restore_singletons):
    """Hydra's suites run without a version base, as Hydra runs them; other tests of this session
    composed with version_base="1.3" (a process-wide singleton, restored after each test)."""
    Singleton._instances.pop(VersionBase, None)


@pytest.mark.parametrize("launcher_name, overrides", [("basic", ["hydra/sweeper=infer"])])
class TestInferSweeperWithHydrasSuite(LauncherTestSuite):
    pass


@pytest.mark.parametrize("launcher_name, overrides",
                         [("basic", ["hydra/sweeper=infer", "hydra.sweeper.max_batch_size=2"])])
class TestInferSweeperBatchesWithHydrasSuite(BatchedSweeperTestSuite):
    pass
