"""What every verb's output shares: Docker's plain tables, its human
durations and sizes, and one parser class with Docker's answer to a bad flag."""

import argparse
import sys

from lib import state
from lib.host import MinidockerError


def table(headers: list[str], rows: list[list[str]]) -> None:
    """Docker's plain columns: each as wide as its widest cell, three spaces
    apart, as Go's tabwriter prints them for `docker ps`.

    Not tabulate: its per-cell type inference costs 0.15 ms a cell here,
    150 ms of `ps -a` at 1000 containers (docs/performance.md).
    """
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    print("\n".join("   ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
                    for line in [headers, *rows]))


def ago(stamp: str) -> str:
    return human_duration(stamp) + " ago"


def human_duration(stamp: str) -> str:
    """Docker's HumanDuration: "Less than a second", "About a minute", "5 hours"."""
    import time

    seconds = max(0, int(time.time() - state.parse_time(stamp)))
    if seconds < 1:
        return "Less than a second"
    if seconds == 1:
        return "1 second"
    if seconds < 60:
        return f"{seconds} seconds"
    minutes = seconds // 60
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = round(seconds / 3600)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{hours // 24 // 365} years"


def size(n: float, binary: bool = False) -> str:
    """Docker's HumanSize (decimal units, 3 digits: images) or BytesSize
    (binary units, 4 digits: stats, 100MiB)."""
    base, digits = (1024, 4) if binary else (1000, 3)
    units = ("B", "KiB", "MiB", "GiB", "TiB", "PiB") if binary else ("B", "kB", "MB", "GB", "TB", "PB")
    for unit in units[:-1]:
        if n < base:
            return f"{n:.{digits}g}{unit}"
        n /= base
    return f"{n:.{digits}g}{units[-1]}"


def each(refs: list[str], action, show: bool = True) -> int:
    """Apply to several containers, going on past failures: exit 1 at the end."""
    failed = 0
    for ref in refs:
        try:
            action(ref)
            if show:
                print(ref)
        except MinidockerError as e:
            print(f"minidocker: {e}", file=sys.stderr)
            failed = 1
    return failed


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:
        # Docker's answer to a bad flag is exit 125 and one line.
        raise MinidockerError(f"{self.prog}: {message}. See '{self.prog} --help'.", 125)



def filter_pairs(given: list[str]) -> list[tuple[str, str]]:
    """-f/--filter values as (key, value): Docker's CLI refuses one without "=" itself (125)."""
    pairs = []
    for f in given:
        key, eq, value = f.partition("=")
        if not eq:
            raise MinidockerError(f'invalid argument "{f}" for "-f, --filter" flag: bad format of filter '
                                  "(expected name=value)")
        pairs.append((key, value))
    return pairs


def formatted(template: str, record: object) -> str:
    """--format and `inspect -f`: a Go template (cli/template.py) run on one
    record; a bad template or a missing field is one line, exit 1."""
    from cli.template import TemplateError, render

    try:
        return render(template, record)
    except TemplateError as e:
        raise MinidockerError(f"template: {e}", 1) from None


def formatted_table(template: str, records: list[dict], headers: dict[str, str]) -> None:
    """A listing's --format: one line per record or, after "table ", Docker's
    columns, each heading the field's name as the plain listing has it."""
    # As Docker's CLI: a written \t or \n (as a shell's single quotes keep them) is a tab or a newline.
    template = template.replace("\\t", "\t").replace("\\n", "\n")
    if not template.startswith("table"):
        for record in records:
            print(formatted(template, record))
        return
    template = template.removeprefix("table").strip() or "\t".join(f"{{{{.{k}}}}}" for k in headers)
    rows = [formatted(template, r).split("\t") for r in records]
    head = formatted(template, {**dict.fromkeys(records[0] if records else {}, ""), **headers}).split("\t")
    width = max(len(line) for line in [head, *rows])  # a row's own tabs (or an {{if}}) may make more or fewer cells
    table([*head, *[""] * (width - len(head))], [[*r, *[""] * (width - len(r))] for r in rows])
