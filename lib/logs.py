"""Container logs, kept in Docker's json-file format.

The container's stdout and stderr are pipes read by its monitor; each line
is stored as one JSON object with the stream it came from and the time it
arrived, which is what `logs -t`, `--since` and `--until` read back:

    {"log":"hello\\n","stream":"stdout","time":"2026-11-29T18:40:01.123456789Z"}
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterator

from lib import state
from lib.host import MinidockerError


class LogWriter:
    """Cuts each stream's bytes into lines and appends them to the log."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        self.partial: dict[str, bytes] = {}

    def feed(self, stream: str, data: bytes) -> None:
        data = self.partial.pop(stream, b"") + data
        *lines, rest = data.split(b"\n")
        stamp = state.now()
        records = [self._record(line + b"\n", stream, stamp) for line in lines]
        if rest:
            if len(rest) >= 16384:  # Docker, too, cuts a line this long
                records.append(self._record(rest, stream, stamp))
            else:
                self.partial[stream] = rest
        if records:
            os.write(self.fd, "".join(records).encode())

    def close(self) -> None:
        for stream, rest in self.partial.items():
            os.write(self.fd, self._record(rest, stream, state.now()).encode())
        self.partial.clear()
        os.close(self.fd)

    @staticmethod
    def _record(line: bytes, stream: str, stamp: str) -> str:
        return json.dumps({"log": line.decode(errors="replace"), "stream": stream, "time": stamp},
                          separators=(",", ":")) + "\n"


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
    """The log's records, oldest first; with follow, new ones as they come."""
    with open(path) as f:
        lines = f.readlines()
        if lines and not lines[-1].endswith("\n"):
            f.seek(f.tell() - len(lines.pop()))
        if tail is not None:
            lines = lines[-tail:] if tail > 0 else []
        for line in lines:
            record = json.loads(line)
            moment = state.parse_time(record["time"])
            if moment >= since and (not until or moment <= until):
                yield record
        while follow:
            running = still_running()
            line = f.readline()
            if line.endswith("\n"):
                yield json.loads(line)
                continue
            if line:
                f.seek(f.tell() - len(line))
            if not running:  # read once more after the exit: nothing is lost
                rest = f.read()
                for extra in rest.splitlines():
                    yield json.loads(extra)
                return
            time.sleep(0.05)
