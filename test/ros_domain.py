"""A private DDS domain per test module, set for its tests only.

Setting ROS_DOMAIN_ID at import time would not do: pytest imports every module before running
any, so the last module imported would choose the domain of all of them.
"""
from __future__ import annotations

import os
from typing import Iterator

import pytest


def domain_fixture(domain_id: int):
    """An autouse module fixture: ROS_DOMAIN_ID is `domain_id` (for rclpy.init and the nodes the tests
    start) while the module's tests run, and what it was before after them."""

    @pytest.fixture(scope="module", autouse=True)
    def ros_domain() -> Iterator[int]:
        before = os.environ.get("ROS_DOMAIN_ID")
        os.environ["ROS_DOMAIN_ID"] = str(domain_id)
        yield domain_id
        if before is None:
            del os.environ["ROS_DOMAIN_ID"]
        else:
            os.environ["ROS_DOMAIN_ID"] = before

    return ros_domain
