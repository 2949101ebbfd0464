"""The doc runner: every command in the walkthroughs runs, and prints what they say.

A walkthrough shows a terminal session in ```console blocks:

    $ sudo ./minidocker.py run busybox sh -c 'echo $$'
    1

Each `$ ` line is run, in the walkthrough's order, as root inside the
sandbox host (so `ip` and `iptables` show the sandbox's, never the
machine's).  The lines after it are what it must print (stdout and stderr
together, as a terminal shows them; runs of spaces count as one), where

    <id>   a container or image ID (12 to 64 hex digits)
    <ip>   an IPv4 address
    <n>    a number
    <*>    anything on the rest of the line
    ...    (a line of its own) any number of lines
    [exit N]  (last line) the command exits N; otherwise it must exit 0

A walkthrough whose command stopped working fails CI: teaching cannot rot.
"""

from __future__ import annotations

import glob
import os
import re
import subprocess

import pytest
from conftest import SANDBOX, SUMMARY, TOP, md

pytestmark = pytest.mark.order(8)

DOCS = [*sorted(glob.glob(os.path.join(TOP, "docs", "**", "*.md"), recursive=True)), os.path.join(TOP, "README.md")]
_PLACEHOLDERS = {"<id>": "[0-9a-f]{12,64}", "<ip>": r"\d+\.\d+\.\d+\.\d+", "<n>": r"-?\d+(?:\.\d+)?",
                 "<*>": ".*"}
COUNTED: dict[str, int] = {}


def sessions(path: str) -> list[tuple[int, str, list[str]]]:
    """(line number, command, expected lines) for each `$ ` of a file."""
    found = []
    with open(path) as f:
        lines = f.read().splitlines()
    inside = False
    for number, line in enumerate(lines, 1):
        if line.strip().startswith("```"):
            inside = line.strip() == "```console"
            continue
        if not inside:
            continue
        if line.startswith("$ "):
            found.append((number, line[2:], []))
        elif found and found[-1][1].endswith("\\"):
            found[-1] = (found[-1][0], found[-1][1][:-1] + line.strip(), [])
        elif found:
            found[-1][2].append(line)
    return found


def line_pattern(expected: str) -> re.Pattern:
    parts = re.split(r"(<id>|<ip>|<n>|<\*>)", " ".join(expected.split()))
    return re.compile("".join(_PLACEHOLDERS.get(p, re.escape(p)) for p in parts))


def matches(expected: list[str], actual: list[str]) -> bool:
    if not expected:
        return True
    head, rest = expected[0], expected[1:]
    if head.strip() == "...":
        return any(matches(rest, actual[i:]) for i in range(len(actual) + 1))
    return bool(actual) and line_pattern(head).fullmatch(" ".join(actual[0].split())) is not None \
        and matches(rest, actual[1:])


@pytest.mark.parametrize("path", DOCS, ids=[os.path.relpath(d, TOP) for d in DOCS])
def test_walkthrough(path):
    env = dict(os.environ, MINIDOCKER_CGROUP_PARENT="minidocker")  # the paths the docs show
    count = 0
    try:
        for number, command, expected in sessions(path):
            code = 0
            if expected and re.fullmatch(r"\[exit \d+\]", expected[-1].strip()):
                code = int(expected.pop().strip()[6:-1])
            shell = command.replace("sudo ", "")
            done = subprocess.run(["nsenter", f"--net=/run/netns/{SANDBOX}", "sh", "-c", shell + " 2>&1"],
                                  cwd=TOP, env=env, capture_output=True, text=True, timeout=120)
            where = f"{os.path.relpath(path, TOP)}:{number}: $ {command}"
            assert done.returncode == code, f"{where}\nexited {done.returncode}, not {code}:\n{done.stdout}"
            actual = [line for line in done.stdout.rstrip("\n").split("\n")] if done.stdout.strip() else []
            assert matches(expected, actual), f"{where}\nexpected:\n" + "\n".join(expected) + \
                "\ngot:\n" + done.stdout
            count += 1
    finally:
        ids = md("ps", "-aq", "--no-trunc", check=False, env=env).stdout.split()
        if ids:
            md("rm", "-f", *ids, check=False, env=env)
    COUNTED[os.path.relpath(path, TOP)] = count


def test_every_walkthrough_command_ran():
    """100% of walkthrough commands are executed: the count is reported."""
    total = sum(len(sessions(d)) for d in DOCS)
    ran = sum(COUNTED.values())
    SUMMARY.append(f"walkthrough commands executed: {ran} of {total} "
                   f"({', '.join(f'{doc}: {n}' for doc, n in COUNTED.items())})")
    assert ran == total


def test_vagrantfile_validates():
    """The Vagrantfile a learner boots is at least a valid one (it is not booted here)."""
    import shutil

    if not shutil.which("vagrant"):
        pytest.skip("needs Debian's vagrant package (.ci/setup-host installs it)")
    done = subprocess.run(["vagrant", "validate", "--ignore-provider"], cwd=TOP, capture_output=True, text=True,
                          env=dict(os.environ, VAGRANT_CHECKPOINT_DISABLE="1"))
    assert done.returncode == 0 and "validated successfully" in done.stdout, done.stdout + done.stderr
