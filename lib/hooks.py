"""OCI hooks: programs an engine asks the runtime to run at fixed points.

podman uses them for its own hooks directory, NVIDIA's container toolkit to
bring a GPU in, and network plugins to plumb a namespace before the command
runs.  Each hook gets the container's state as JSON on its stdin (id, pid,
status, bundle, annotations), so it can find /proc/<pid>/ns/*.  The runtime
spec fixes when each kind runs, and where:

    createRuntime, prestart  during create, before pivot_root   the runtime's namespaces
    createContainer          during create, before pivot_root   the container's
    startContainer           at start, just before the command  the container's init, after pivot_root
    poststart                after the command started          the runtime's
    poststop                 after the container is deleted     the runtime's

A failing hook before the command runs fails the operation; a failing
poststart or poststop hook is only a warning, as the container already ran.
A startContainer hook's path is a file of the container's root, the
image's: it is run by the init itself (run_in_init), inside every
namespace and the cgroup, and only after the init has taken on the
command's user, capabilities and seccomp filter, as runc does.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time  # now: the init needs it after pivot_root, when no module file can be found

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


def run_in_init(hooks: list[dict], state: dict) -> None:
    """startContainer: the init, after `start`, runs each hook as its child,
    just before its own execve and as confined as the command will be (the
    caller has dropped to its user, capabilities and seccomp filter).  After
    pivot_root nothing can be imported: fork, execve and a pipe, from os."""
    for hook in hooks:
        path = hook["path"]
        if host.explaining():  # quote() needs shlex, which the init imports only then
            host.explain("hooks", f"startContainer: {host.quote(hook.get('args') or [path])}  # in the container")
        stdin_r, stdin_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                os.dup2(stdin_r, 0)
                os.execve(path, hook.get("args") or [path],
                          dict(e.split("=", 1) for e in hook.get("env") or [] if "=" in e))
            finally:
                os._exit(127)
        os.close(stdin_r)
        # The state goes in as the hook reads it: a hook that never reads must
        # not hold us past its timeout once the pipe is full.
        os.set_blocking(stdin_w, False)
        pending = json.dumps({**state, "pid": os.getpid()}).encode()
        deadline = time.monotonic() + (hook.get("timeout") or 1e9)
        while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
            if pending:
                with contextlib.suppress(BlockingIOError, BrokenPipeError):
                    pending = pending[os.write(stdin_w, pending):]
                if not pending:
                    os.close(stdin_w)
                    stdin_w = -1
            time.sleep(0.01)
        if stdin_w >= 0:
            os.close(stdin_w)
        if done[0] == 0:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            raise MinidockerError(f"startContainer hook {path}: still running after its timeout of "
                                  f"{hook['timeout']} s", 1)
        if done[1] != 0:
            code = os.waitstatus_to_exitcode(done[1])
            raise MinidockerError(f"startContainer hook {path}: exit {code}" if code != 127 else
                                  f"startContainer hook {path}: not found in the container, or not executable", 1)
