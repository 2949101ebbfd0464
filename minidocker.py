#!/usr/bin/python3 -IS
"""minidocker: a Docker-like container runtime built from the kernel's own parts.

    sudo ./minidocker.py run busybox echo hi
    sudo ./minidocker.py --explain run busybox true     # every host step, as it happens

This file only starts the command line (cli/) or, under the name
minidocker-runc, the OCI runtime (lib/oci.py).  It is kept short because
Python compiles a script it runs afresh every time, and caches the
bytecode of the modules it imports (__pycache__): 800 lines here were
6 ms of every start.
"""

import _signal  # the C module: `signal` would import enum (4 ms)

# Ctrl-C before main() has nothing to undo: die of it quietly (exit 130 to
# the shell) rather than print a KeyboardInterrupt traceback from an import.
# First of all, and so no `from __future__` here: that is an import too.
_signal.signal(_signal.SIGINT, _signal.SIG_DFL)

import time  # noqa: E402

STARTED = time.monotonic()  # --explain counts milliseconds from here

import os  # noqa: E402 -- after STARTED, so that imports count too
import sys  # noqa: E402

# -I (isolated mode, in the #! line) keeps the caller's PYTHONPATH and user
# site-packages out of a program that runs as root; it also leaves this
# directory off sys.path, so put it back for `lib`.  -S skips `site` (7 ms
# a start here): minidocker needs nothing beyond Python's standard library.
sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))

if __name__ == "__main__" and os.path.basename(sys.argv[0]) == "minidocker-runc":
    # The OCI runtime face, as busybox dispatches: before importing the
    # engine's modules (images, networks...), which a runtime never uses and
    # conmon would wait 15 ms a start for.
    from lib import oci

    sys.exit(oci.main(sys.argv[1:]))

if __name__ == "__main__":
    from cli import main

    sys.exit(main(sys.argv[1:], STARTED))
