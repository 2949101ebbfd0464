"""Container logs, kept in the CRI's "k8s-file" format, as conmon writes them.

A container's stdout and stderr are pipes (or, with -t, a pty) read by its
monitor: conmon for a container in the background (monitor.py), the CLI
itself for a `run` in the foreground.  Both write each line with the time it
arrived, the stream it came from, and F for a full line or P for part of
one, which is what `logs -t`, `--since` and `--until` read back:

    2026-11-29T18:40:01.123456789+00:00 stdout F hello
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Callable, Iterator

from lib import state, stdio
from lib.host import MinidockerError

# conmon writes its local time with an offset; we write UTC.
_LINE = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:?\d\d) (stdout|stderr) ([FP]) ?")


# Where no --log-opt says otherwise: a bound, so that a chatty container
# cannot fill the disk.  Docker's json-file has none by default; its docs
# recommend setting one in daemon.json, which is where ours can change it.
DEFAULT_OPTIONS = {"max-size": "10m", "max-file": "1"}
CONFIG = "/etc/minidocker/daemon.json"


def options(log_opts: list[str]) -> dict[str, str]:
    """--log-opt KEY=VALUE over daemon.json's "log-opts" over the default,
    checked as Docker checks json-file's."""
    import json

    chosen = dict(DEFAULT_OPTIONS)
    try:
        with open(os.environ.get("MINIDOCKER_CONFIG", CONFIG)) as f:
            configured = json.load(f).get("log-opts", {})
    except FileNotFoundError:
        configured = {}
    except (OSError, ValueError, AttributeError) as e:
        raise MinidockerError(f"{os.environ.get('MINIDOCKER_CONFIG', CONFIG)}: {e}") from None
    for item in [f"{k}={v}" for k, v in configured.items()] + log_opts:
        key, sep, value = item.partition("=")
        if not sep or key not in DEFAULT_OPTIONS:
            raise MinidockerError(f"unknown log opt '{key}' for k8s-file log driver")
        chosen[key] = value
    size_bytes(chosen["max-size"])
    if not re.fullmatch(r"[0-9]+", chosen["max-file"]) or int(chosen["max-file"]) < 1:
        raise MinidockerError("max-file cannot be less than 1")
    return chosen


def size_bytes(value: str) -> int:
    """max-size: a number of bytes, or with k, m, g (1024s), as Docker reads it; -1: no bound."""
    if value == "-1":
        return 0
    match = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)\s*([kmg]?)i?b?", value.strip().lower())
    size = int(float(match[1]) * {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[match[2]]) if match else 0
    if not 0 < size < 1 << 62:  # 0 would mean no bound; past 2^62, conmon cannot read it
        raise MinidockerError(f"invalid value for max-size: {value}")
    return size


def files(path: str) -> list[str]:
    """The log and its rotated predecessors, oldest first: path.N ... path.1, path."""
    older = []
    n = 1
    while os.path.exists(f"{path}.{n}"):
        older.insert(0, f"{path}.{n}")
        n += 1
    return [*older, path]


class LogWriter:
    """Cuts each stream's bytes into lines and appends them to the log; at
    `max_size` it starts the log again, as conmon does without rotation."""

    def __init__(self, path: str, max_size: int = 0) -> None:
        self.path, self.max_size = path, max_size
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        self.written = os.fstat(self.fd).st_size

    def feed(self, stream: str, data: bytes) -> None:
        *lines, rest = data.split(b"\n")
        stamp = state.now()
        records = [self._record(line, stream, stamp, b"F") for line in lines]
        if rest:  # as conmon: what has come of a line so far is written now, marked partial
            records.append(self._record(rest, stream, stamp, b"P"))
        out: list[bytes] = []
        for record in records:  # line by line, as conmon: the log never passes max-size
            if self.max_size and self.written + len(record) > self.max_size:
                stdio.write_all(self.fd, b"".join(out))
                out = []
                self._start_again()
            out.append(record)
            self.written += len(record)
        stdio.write_all(self.fd, b"".join(out))

    def _start_again(self) -> None:
        """A new, empty file in the old one's place (rename: a `logs -f`
        holding the old one sees the inode change and follows)."""
        os.close(self.fd)
        self.fd = os.open(self.path + ".tmp", os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_TRUNC, 0o640)
        os.rename(self.path + ".tmp", self.path)
        self.written = 0

    def close(self) -> None:
        os.close(self.fd)

    @staticmethod
    def _record(line: bytes, stream: str, stamp: str, tag: bytes) -> bytes:
        return b"%s %s %s %s\n" % (stamp.encode(), stream.encode(), tag, line)


def parse_line(line: str) -> dict | None:
    """One line of the log as {"time": UTC stamp, "stream", "log"}; None if it is not one."""
    match = _LINE.match(line)
    if not match:
        return None
    whole, frac, offset, stream, tag = match.groups()
    try:
        seconds = int(state.parse_time(whole + "Z"))
    except ValueError:  # a month 13: not a line any writer of ours made
        return None
    if offset != "Z":
        sign = 1 if offset[0] == "+" else -1
        seconds -= sign * (int(offset[1:3]) * 3600 + int(offset[-2:]) * 60)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{(frac or '').ljust(9, '0')}Z"
    text = line[match.end():].removesuffix("\n")
    return {"time": stamp, "stream": stream, "log": text + ("\n" if tag == "F" else "")}


def parse_moment(value: str) -> float:
    """A --since/--until value: RFC 3339, a Unix time, or a duration ago."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ns|us|ms|s|m|h)", value)
    if match:
        scale = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}[match[2]]
        return time.time() - float(match[1]) * scale
    if re.fullmatch(r"\d+(\.\d+)?", value):
        return float(value)
    try:
        if "T" not in value:
            value += "T00:00:00"
        return state.parse_time(value if value.endswith("Z") else value + "Z")
    except ValueError:
        raise MinidockerError(f'invalid value for --since/--until: "{value}"', 1) from None


def read(path: str, follow: bool, still_running: Callable[[], bool], tail: int | None = None,
         since: float = 0.0, until: float = 0.0) -> Iterator[dict]:
    """The log's records, oldest first, across its rotated files; with
    follow, new ones as they come, into the next file when it rotates.
    --tail counts lines as the user sees them: a line's parts count once."""
    while not os.path.exists(path):  # nothing written yet
        if not (follow and still_running()):
            return
        time.sleep(0.05)
    data = b""
    for name in files(path)[:-1]:
        with contextlib.suppress(FileNotFoundError), open(name, "rb") as f:
            data += f.read()
    current = open(path, "rb")  # noqa: SIM115 -- followed below, and replaced when rotated
    try:
        data += current.read()
        complete = data[:data.rfind(b"\n") + 1]
        pending = data[len(complete):]
        # Records end at "\n" only, as conmon frames them: str.splitlines()
        # would also cut at \r, \f or U+2028, which a container may print,
        # and what followed would read as a record of its own, of its
        # choosing (another stream, another time).
        lines = complete.decode(errors="replace").split("\n")[:-1]
        records = [r for r in map(parse_line, lines) if r]
        if tail is not None:
            ends = [i for i, r in enumerate(records) if r["log"].endswith("\n")]
            keep = ends[-tail - 1] + 1 if 0 < tail < len(ends) else (len(records) if tail == 0 else 0)
            records = records[keep:]
        for record in records:
            moment = state.parse_time(record["time"])
            if moment >= since and (not until or moment <= until):
                yield record
        while follow:
            running = still_running()
            pending += current.read()
            if _rotated(path, current):  # what is left of the old file is read; on to the new one
                current.close()
                current = open(path, "rb")  # noqa: SIM115
                continue
            *lines, pending = pending.split(b"\n")
            for line in lines:
                if record := parse_line(line.decode(errors="replace")):
                    yield record
            if not running:  # that read came after the exit: nothing is lost
                return
            if not lines:
                time.sleep(0.05)
    finally:
        current.close()


def _rotated(path: str, current) -> bool:
    try:
        return os.stat(path).st_ino != os.fstat(current.fileno()).st_ino
    except FileNotFoundError:
        return False
