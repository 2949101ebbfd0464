"""Last: the machine is as the suite found it, and nothing of ours is left."""

from __future__ import annotations

import os

import pytest
from conftest import HOST_BEFORE, PHASES, host_network_state, md, minidocker_cgroups, our_mounts

pytestmark = pytest.mark.order(-1)


@pytest.mark.row("2C", "Host network", "links, routes, addresses, iptables, ip_forward unchanged")
def test_host_network_unchanged(row):
    now = host_network_state()
    for key, before in HOST_BEFORE.items():
        if key != "cgroups":
            assert now[key] == before, f"the host's {key} changed"
    row.result = "identical before and after the suite"


@pytest.mark.row("2C", "Leaks", "no container, mount or cgroup of ours left")
def test_nothing_of_ours_is_left(row):
    md("rm", "-f", *md("ps", "-aq").stdout.split(), check=False)
    assert our_mounts() == []
    parent = os.environ["MINIDOCKER_CGROUP_PARENT"]
    left = [f"/sys/fs/cgroup/{c}/{parent}/{d}" for c in os.listdir("/sys/fs/cgroup")
            if os.path.isdir(f"/sys/fs/cgroup/{c}/{parent}") for d in os.listdir(f"/sys/fs/cgroup/{c}/{parent}")
            if os.path.isdir(f"/sys/fs/cgroup/{c}/{parent}/{d}")]
    assert left == []
    ours = os.path.basename(parent)
    new = {d for d in minidocker_cgroups() - HOST_BEFORE["cgroups"] if os.path.basename(d) != ours}
    assert new == set(), f"cgroups left behind: {sorted(new)}"
    assert PHASES  # the tables print after this
    row.result = "0 containers, 0 mounts, 0 cgroups"
