"""Last: the machine is as the suite found it, and nothing of ours is left."""

from __future__ import annotations

import os
import subprocess

import pytest
from conftest import HOST_BEFORE, PHASES, cgroup_hierarchies, host_network_state, leftovers, md, minidocker_cgroups

pytestmark = pytest.mark.order(-1)


@pytest.mark.row("2C", "Host network", "links, routes, addresses, iptables, ip_forward unchanged")
def test_host_network_unchanged(row):
    now = host_network_state()
    for key, before in HOST_BEFORE.items():
        if key != "cgroups":
            assert now[key] == before, f"the host's {key} changed"
    row.result = "identical before and after the suite"


def plant_leaks() -> tuple[subprocess.Popen, list[str], str]:
    """One of each leak the check must see: a cgroup, a mount held in a
    namespace of its own, a container's record."""
    root, parent = os.environ["MINIDOCKER_ROOT"], os.environ["MINIDOCKER_CGROUP_PARENT"]
    cgroups = [os.path.join(h, parent, "planted-leak") for h in cgroup_hierarchies()]
    for d in cgroups:
        os.makedirs(d)
    point = os.path.join(root, "planted-leak")
    os.makedirs(point, exist_ok=True)
    # A private mount namespace, as a container's is: its mount never shows
    # in this process's mountinfo, only in that of the process holding it.
    holder = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                               f"mount -t tmpfs planted-leak {point} && echo mounted && exec sleep 600"],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline() == "mounted\n"
    cid = md("create", "busybox", "true").stdout.strip()
    return holder, cgroups, cid


@pytest.mark.cgroupv2  # the walk of v2's tree, proven on a pure v2 kernel too
@pytest.mark.row("2C", "Leaks", "no container, mount or cgroup of ours left; a planted one is seen")
def test_nothing_of_ours_is_left(row):
    left = leftovers()  # as the suite left it: nothing removed first
    listed = md("ps", "-aq").stdout.split()
    ours = os.path.basename(os.environ["MINIDOCKER_CGROUP_PARENT"])
    new = {d for d in minidocker_cgroups() - HOST_BEFORE["cgroups"] if os.path.basename(d) != ours}

    # The positive control: the same check, on leaks made on purpose.
    holder, cgroups, cid = plant_leaks()
    try:
        seen = leftovers()
    finally:
        holder.kill()
        holder.wait()
        for d in cgroups:
            os.rmdir(d)
        os.rmdir(os.path.join(os.environ["MINIDOCKER_ROOT"], "planted-leak"))
        md("rm", cid)
    assert f"record {cid}" in seen, seen
    assert {f"cgroup {d}" for d in cgroups} <= set(seen), seen
    assert any(m.startswith(f"mount pid {holder.pid}: ") and "planted-leak" in m for m in seen), seen

    assert listed == [], f"containers left: {listed}"
    assert left == [], "left behind:\n" + "\n".join(left)
    assert new == set(), f"cgroups left behind: {sorted(new)}"
    assert PHASES  # the tables print after this
    row.result = (f"0 containers, 0 mounts, 0 cgroups; planted ones seen in {len(cgroups)} hierarchies"
                  " and a private mount namespace")
