"""OCI hooks: programs an engine asks the runtime to run at fixed points.

podman uses them for its own hooks directory, NVIDIA's container toolkit to
bring a GPU in, and network plugins to plumb a namespace before the command
runs.  Each hook gets the container's state as JSON on its stdin (id, pid,
status, bundle, annotations), so it can find /proc/<pid>/ns/*.  The runtime
spec fixes when each kind runs, and where:

    createRuntime, prestart  during create, before pivot_root   the runtime's namespaces
    createContainer          during create, before pivot_root   the container's
    poststart                after the command started          the runtime's
    poststop                 after the container is deleted     the runtime's

A failing hook before the command runs fails the operation; a failing
poststart or poststop hook is only a warning, as the container already ran.
startContainer hooks are refused (bundle.py): runc runs them in the
container's init, after pivot_root, and the file is the image's; run from
here they would run outside the container's pid namespace and cgroup, with
every capability, which is a way out for a hostile image.
"""

from __future__ import annotations

import json
import sys

from lib import host, namespaces
from lib.host import MinidockerError

BEFORE_PIVOT = ("prestart", "createRuntime", "createContainer")  # the init waits for these


def run(all_hooks: dict, kind: str, st: dict, status: str, inside: int = 0, fatal: bool = True) -> None:
    """Run the config's hooks of one kind, in order, each told the state `st`
    with this `status`; `inside` is the PID whose namespaces (and root) they
    run in, 0 for the runtime's own."""
    hooks = all_hooks.get(kind) or []
    if not hooks:
        return
    import subprocess
    import tempfile

    state = json.dumps({"ociVersion": st["ociVersion"], "id": st["id"], "status": status, "pid": st["pid"],
                        "bundle": st["bundle"], "annotations": st.get("annotations") or {}})
    for hook in hooks:
        path = hook["path"]
        argv = hook.get("args") or [path]
        host.explain("hooks", f"{kind}: {host.quote(argv)}" + ("  # in the container's namespaces" if inside else ""))
        # Its output goes to a file, not a pipe: a hook that leaves a child
        # holding a pipe would hold `create` for as long as that child lives.
        with tempfile.TemporaryFile() as errors:
            try:
                done = subprocess.run(argv, executable=path, input=state.encode(), stdout=subprocess.DEVNULL,
                                      stderr=errors, timeout=hook.get("timeout"),
                                      env=dict(e.split("=", 1) for e in hook.get("env") or [] if "=" in e),
                                      preexec_fn=(lambda: namespaces.join_all(inside)) if inside else None)
                errors.seek(0)
                problem = "" if done.returncode == 0 else \
                    f"exit {done.returncode}: {errors.read(4096).decode(errors='replace').strip()[-300:]}"
            except subprocess.TimeoutExpired:
                problem = f"still running after its timeout of {hook['timeout']} s"
            except (OSError, ValueError, subprocess.SubprocessError) as e:
                problem = str(e)
        if problem:
            message = f"{kind} hook {path}: {problem}"
            if fatal:
                raise MinidockerError(message, 1)
            print(f"minidocker-runc: warning: {message}", file=sys.stderr)
