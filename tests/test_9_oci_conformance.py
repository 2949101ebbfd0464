"""The OCI runtime conformance suite (opencontainers/runtime-tools) against
minidocker-runc: the validation programs runc 1.1.5 passes on this kind of
machine.  tests/oci/validate.sh builds and runs them; docs/oci-runtime.md
has the whole table, runc's beside ours.

It needs a clone of runtime-tools at the commit validate.sh names, in
MINIDOCKER_RUNTIME_TOOLS (default /var/cache/minidocker-test/runtime-tools),
and Go to build it once.  A machine without the clone skips this tier and
says so: the suite comes from GitHub, which CI machines cannot reach.
"""

from __future__ import annotations

import os
import subprocess

import pytest
from conftest import TOP

pytestmark = pytest.mark.order(9)

CHECKOUT = os.environ.get("MINIDOCKER_RUNTIME_TOOLS", "/var/cache/minidocker-test/runtime-tools")
# The groups runc passes here.
REQUIRED = [
    # the lifecycle and what a container is made of
    "create", "state", "kill", "killsig", "kill_no_effect", "delete_only_create_resources",
    "config_updates_without_affect", "hostname", "default", "process", "mounts", "linux_ns_nopath",
    "linux_ns_itype",
    # what a process sees inside
    "process_user", "root_readonly_true", "linux_masked_paths", "linux_readonly_paths", "linux_devices",
    "linux_sysctl", "process_oom_score_adj", "linux_ns_path", "linux_uid_mappings",
    # the cgroups this kernel gives a container
    "linux_cgroups_pids", "linux_cgroups_cpus", "linux_cgroups_relative_pids", "linux_cgroups_relative_cpus",
    "delete_resources",
]


@pytest.mark.row("oci", "runtime-tools validation", f"the {len(REQUIRED)} programs runc passes here")
def test_runtime_tools_validation(row):
    if not CHECKOUT:
        pytest.skip("MINIDOCKER_RUNTIME_TOOLS is empty: the conformance tier is left out here")
    if not os.path.isdir(os.path.join(CHECKOUT, "validation")):
        pytest.skip(f"needs opencontainers/runtime-tools cloned at {CHECKOUT} (commit 260e151) and golang-go; "
                    "docs/oci-runtime.md says how")
    done = subprocess.run([os.path.join(TOP, "tests", "oci", "validate.sh"), CHECKOUT, *REQUIRED],
                          capture_output=True, text=True, timeout=1800)
    print(done.stdout)
    assert done.returncode == 0, done.stdout + done.stderr
    row.result = f"{len(REQUIRED)} of {len(REQUIRED)} pass (validate.sh)"
