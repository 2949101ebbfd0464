"""The doc runner: every command in the walkthroughs runs, and prints what they say.

A walkthrough shows a terminal session in ```console blocks:

    $ sudo ./minidocker.py run busybox sh -c 'echo $$'
    1

Each `$ ` line is run, in the walkthrough's order, as root inside the
sandbox host (so `ip` and `iptables` show the sandbox's, never the
machine's).  The lines after it are what it must print (stdout and stderr
together, as a terminal shows them; runs of spaces count as one).  The
whole output must match, line for line: a line the page does not show, a
traceback after the last expected line included, fails.  In expected lines

    <id>   a container or image ID (12 to 64 hex digits)
    <ip>   an IPv4 address
    <n>    a number
    <*>    anything on the rest of the line
    ...    (a line of its own) any number of lines; as the last line, it is
           the one place where more output than shown is allowed
    [exit N]  (last line) the command exits N; otherwise it must exit 0

Where cgroup v1 and v2 differ (paths, and what a container may do), a page
shows both, each in a block tagged with its version:

    ```console cgroup-v2
    $ cat /sys/fs/cgroup/minidocker/$ID/pids.max

Only the blocks of this host's version run; the other's are counted apart.
A walkthrough whose command stopped working fails CI: teaching cannot rot.
"""

from __future__ import annotations

import glob
import os
import re
import shlex
import subprocess

import pytest
from conftest import PYTHON, SANDBOX, SUMMARY, TOP, cgroup_v2, md

pytestmark = pytest.mark.order(8)

DOCS = [*sorted(glob.glob(os.path.join(TOP, "docs", "**", "*.md"), recursive=True)), os.path.join(TOP, "README.md")]
_PLACEHOLDERS = {"<id>": "[0-9a-f]{12,64}", "<ip>": r"\d+\.\d+\.\d+\.\d+", "<n>": r"-?\d+(?:\.\d+)?",
                 "<*>": ".*"}
COUNTED: dict[str, int] = {}
OTHER_CGROUP = "cgroup-v1" if cgroup_v2() else "cgroup-v2"


def for_this_host(fence: str) -> bool:
    """Whether a block's opening fence (```console cgroup-v1, say) holds for this host."""
    return OTHER_CGROUP not in fence.split()


def sessions(path: str) -> list[tuple[int, str, list[str]]]:
    """(line number, command, expected lines) for each `$ ` of a file."""
    found = []
    with open(path) as f:
        lines = f.read().splitlines()
    inside = False
    for number, line in enumerate(lines, 1):
        if line.strip().startswith("```"):
            inside = line.strip().split()[:1] == ["```console"] and for_this_host(line)
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
    """The whole of `actual`, line for line; `...` stands for any lines."""
    if not expected:
        return not actual
    head, rest = expected[0], expected[1:]
    if head.strip() == "...":
        return any(matches(rest, actual[i:]) for i in range(len(actual) + 1))
    return bool(actual) and line_pattern(head).fullmatch(" ".join(actual[0].split())) is not None \
        and matches(rest, actual[1:])


def run_page(path: str) -> int:
    """Run every command of a page in order; fail at the first that differs.  How many ran."""
    env = dict(os.environ, MINIDOCKER_CGROUP_PARENT="minidocker")  # the paths the docs show
    count = 0
    try:
        for number, command, expected in sessions(path):
            code = 0
            if expected and re.fullmatch(r"\[exit \d+\]", expected[-1].strip()):
                code = int(expected.pop().strip()[6:-1])
            # The subshell sends every command's stderr to the terminal's
            # stream, not only the last one's of a `;` chain.
            command = command.replace("sudo ", "").replace("./minidocker.py", shlex.join(PYTHON) + " ./minidocker.py")
            shell = "( " + command + "\n) 2>&1"
            done = subprocess.run(["nsenter", f"--net=/run/netns/{SANDBOX}", "sh", "-c", shell],
                                  cwd=TOP, env=env, capture_output=True, text=True, timeout=120)
            where = f"{os.path.relpath(path, TOP)}:{number}: $ {command}"
            assert done.returncode == code, f"{where}\nexited {done.returncode}, not {code}:\n{done.stdout}"
            actual = done.stdout.rstrip("\n").split("\n") if done.stdout.strip() else []
            assert matches(expected, actual), f"{where}\nexpected:\n" + "\n".join(expected) + \
                "\ngot:\n" + done.stdout
            count += 1
    finally:
        ids = md("ps", "-aq", "--no-trunc", check=False, env=env).stdout.split()
        if ids:
            md("rm", "-f", *ids, check=False, env=env)
    return count


@pytest.mark.parametrize("path", DOCS, ids=[os.path.relpath(d, TOP) for d in DOCS])
def test_walkthrough(path):
    COUNTED[os.path.relpath(path, TOP)] = run_page(path)


@pytest.mark.parametrize("shown, strict", [
    ("$ printf 'one\\ntwo\\n'\none\n", True),  # a line more than the page shows
    ("$ echo surprise\n", True),  # output where the page shows none
    ("$ echo oops >&2; echo out\nout\n", True),  # stderr of the first command of a chain
    ("$ echo out; python3 -c 'raise SystemExit(\"Traceback\")'\nout\n[exit 1]\n", True),
    ("$ printf 'one\\ntwo\\n'\none\n...\n", False),  # a trailing `...` allows more
    ("$ printf 'one\\ntwo\\n'\none\ntwo\n", False),
], ids=["extra-line", "unexpected-output", "stderr-in-a-chain", "traceback-after", "trailing-dots", "exact"])
def test_the_runner_is_strict(tmp_path, shown, strict):
    """The runner itself: output the page does not show fails it."""
    page = tmp_path / "page.md"
    page.write_text(f"```console\n{shown}```\n")
    if strict:
        with pytest.raises(AssertionError, match="expected:"):
            run_page(str(page))
    else:
        assert run_page(str(page)) == 1


def test_a_block_runs_on_its_own_cgroup_version(tmp_path):
    """A block tagged for this host's cgroup version runs; the other's does not."""
    here = "cgroup-v2" if OTHER_CGROUP == "cgroup-v1" else "cgroup-v1"
    page = tmp_path / "page.md"
    page.write_text(f"```console {OTHER_CGROUP}\n$ false\n```\n```console {here}\n$ echo here\nhere\n```\n")
    assert run_page(str(page)) == 1
    assert shown_commands(str(page)) == (1, 1)
    page.write_text(f"```console {here}\n$ false\n```\n")
    with pytest.raises(AssertionError, match="exited 1"):
        run_page(str(page))


def shown_commands(path: str) -> tuple[int, int]:
    """Every `$ ` line in any fenced block, counted apart from the runner's parser:
    (for this host, for the other cgroup version).

    A command in a block the runner does not read (```sh, say) is one the
    page shows as run but nothing runs: the count tells.
    """
    fence, here, other = "", 0, 0
    with open(path) as f:
        for line in f:
            if line.lstrip().startswith("```"):
                fence = "" if fence else line
            elif fence and line.startswith("$ "):
                if for_this_host(fence):
                    here += 1
                else:
                    other += 1
    return here, other


def test_every_walkthrough_command_ran():
    """100% of walkthrough commands are executed: the count is reported."""
    counts = [shown_commands(d) for d in DOCS]
    total, other = sum(here for here, _ in counts), sum(there for _, there in counts)
    ran = sum(COUNTED.values())
    SUMMARY.append(f"walkthrough commands executed: {ran} of {total}, and {other} shown for {OTHER_CGROUP} "
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
