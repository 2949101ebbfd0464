"""The command line: one module per management group, as Docker's CLI has
(cli/container.py, image.py, network.py, volume.py), each with one short
function per verb calling into lib/, where every module is named for the
kernel feature it teaches (namespaces, rootfs, cgroups, network, ...).
"""

import _signal
import argparse
import os
import sys

from cli.common import Parser
from lib import state
from lib.cmdline import Formatter
from lib.host import MinidockerError

# One table of verbs: name, the module that has it, help.  Only that module
# is imported, and only the verb being run has its parser built: building
# all of them costs 20 ms a call here.
VERBS = {
    "run": ("container", "create and start a container"),
    "create": ("container", "create a container without starting it"),
    "start": ("container", "start created or stopped containers"),
    "attach": ("container", "attach to a running container's input and output"),
    "stop": ("container", "stop containers: SIGTERM, then SIGKILL"),
    "restart": ("container", "stop and start containers"),
    "kill": ("container", "send a signal to containers"),
    "rm": ("container", "remove containers"),
    "wait": ("container", "wait for containers to exit, print their exit codes"),
    "prune": ("container", "remove all stopped containers"),
    "ps": ("container", "list containers"),
    "inspect": ("container", "show containers' records as JSON"),
    "logs": ("container", "show a container's output"),
    "exec": ("container", "run a command in a running container"),
    "stats": ("container", "show containers' CPU, memory and process counts"),
    "network": ("network", "manage networks: create, ls, inspect, rm, prune"),
    "volume": ("volume", "manage named volumes: create, ls, inspect, rm"),
    "images": ("image", "list images"),
    "pull": ("image", "fetch an image from a registry"),
    "tag": ("image", "give an image another name"),
    "rmi": ("image", "remove images (and layers no image uses)"),
    "save": ("image", "write images to a tar archive (docker save and OCI layout at once)"),
    "load": ("image", "read images from a docker save or OCI layout tar archive"),
    "import": ("image", "make an image from a root filesystem directory or tarball"),
}
# Docker's management command forms, `container ls` for `ps`: the long
# names of the same verbs (network and volume are groups of their own).
GROUPS = {
    "container": {**{v: v for v in ("run", "create", "start", "attach", "stop", "restart", "kill", "rm", "wait",
                                    "prune", "inspect", "logs", "exec", "stats")},
                  "ls": "ps", "list": "ps", "ps": "ps"},
    "image": {"ls": "images", "list": "images", "pull": "pull", "tag": "tag", "rm": "rmi", "remove": "rmi",
              "save": "save", "load": "load", "import": "import"},
    # Its -f is --force, where the other volume commands' -f is --filter: a verb of its own.
    "volume": {"prune": "volume-prune"},
}
# conmon runs this when a container it watches has exited (monitor.py).
HIDDEN = {"container-exited": ("container", "record a container's exit"),
          "volume-prune": ("volume", "remove volumes no container uses")}
_NO_HELP_FLAG = {"run", "create"}  # -h is --hostname there, as in Docker

USAGE = """usage: minidocker [--explain] [--debug] VERB [ARGS...]

minidocker: a Docker-like container runtime built from the kernel's own parts.

global flags:
  --explain   print every host command, kernel write and mount as it happens
  --debug     show a traceback on internal errors

verbs:
"""


def parse(argv: list[str]) -> tuple[argparse.Namespace, bool, bool]:
    """Global flags, then the verb's own flags: (args, explain, debug)."""
    explain = debug = False
    while argv and argv[0].startswith("-"):
        flag, argv = argv[0], argv[1:]
        if flag == "--explain":
            explain = True
        elif flag == "--debug":
            debug = True
        elif flag in ("-h", "--help"):
            print(USAGE + "\n".join(f"  {name:<9} {v[1]}" for name, v in VERBS.items())
                  + "\n\nmanagement commands, Docker's long forms of the verbs above:\n"
                  + "\n".join(f"  {group:<9} {', '.join(verbs)}" for group, verbs in GROUPS.items()))
            raise SystemExit(0)
        else:
            raise MinidockerError(f"unknown flag: {flag}. See 'minidocker --help'.")
    if argv and argv[0] in GROUPS and (argv[0] not in VERBS or (argv[1:2] and argv[1] in GROUPS[argv[0]])):
        if len(argv) < 2 or argv[1] not in GROUPS[argv[0]]:
            what = f"'{' '.join(argv[:2])}' is not a minidocker command" if len(argv) > 1 else \
                f"'{argv[0]}' needs a command: {', '.join(GROUPS[argv[0]])}"
            raise MinidockerError(f"{what}. See 'minidocker --help'.", 1)
        argv = [GROUPS[argv[0]][argv[1]], *argv[2:]]
    if not argv or argv[0] not in VERBS | HIDDEN:
        what = f"'{argv[0]}' is not a minidocker command" if argv else "a verb is needed"
        raise MinidockerError(f"{what}. See 'minidocker --help'.", 1)
    verb = argv[0]
    group, help = (VERBS | HIDDEN)[verb]
    # __import__, not importlib.import_module: `importlib` imports `warnings` (8 ms).
    func, flags = __import__(f"cli.{group}", fromlist=["VERBS"]).VERBS[verb]
    p = Parser(prog=f"minidocker {verb}", description=help, add_help=verb not in _NO_HELP_FLAG,
               formatter_class=Formatter)
    flags(p)
    p.set_defaults(func=func, verb=verb)
    # `network create --subnet X NAME`: names may follow flags there.
    parse_args = p.parse_intermixed_args if verb in ("network", "volume") else p.parse_args
    return parse_args(argv[1:]), explain, debug


def main(argv: list[str], started: float) -> int:
    """Run one verb; `started` is when the interpreter began (--explain counts from it)."""
    debug = False
    _signal.signal(_signal.SIGINT, _signal.default_int_handler)  # from here on, Ctrl-C undoes what was done
    try:
        args, explain, debug = parse(argv)
        if explain:
            os.environ["MINIDOCKER_EXPLAIN"] = "2"
            os.environ["MINIDOCKER_T0"] = str(started)
        if os.geteuid() != 0:
            raise MinidockerError("minidocker needs root: it creates namespaces, mounts and cgroups "
                                  "(try: sudo ./minidocker.py ...)")
        if args.verb == "exec" and not args.command:
            raise MinidockerError('"exec" requires at least 2 arguments', 1)
        state.secure_root()
        return args.func(args)
    except MinidockerError as e:
        print(f"minidocker: {e}", file=sys.stderr)
        return e.code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `logs | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # and the exit's flush of stdout must not fail again
        return 141
    except Exception as e:  # a bug of ours: one line, unless --debug asks for more
        if debug:
            raise
        print(f"minidocker: internal error: {type(e).__name__}: {e} (run with --debug for details)",
              file=sys.stderr)
        return 125
