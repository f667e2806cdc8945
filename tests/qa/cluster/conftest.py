"""One real Dask cluster per test module (starting one costs seconds): a scheduler and two workers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.qa.cluster.dask_processes import DaskProcesses, start_cluster


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaskProcesses]:
    """A scheduler and two one-thread workers on 127.0.0.1, shared by the tests of a module."""
    cluster = start_cluster(tmp_path_factory.mktemp("dask"), workers=2)
    yield cluster
    cluster.stop()
