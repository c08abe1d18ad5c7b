"""The container tests run only when asked for (`-m containers`, as .ci/containers.sh does).

They build images and start containers for minutes, so a plain `pytest` (the `make test`
step) leaves them out; CI runs them in a step of their own.
"""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.option.markexpr:
        return
    keep, drop = [], []
    for item in items:
        (drop if item.get_closest_marker("containers") else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
