"""The state root: where containers and images are remembered between commands.

Layout (the seed's `containers/` and `images/`, grown up):

    $MINIDOCKER_ROOT (default /var/lib/minidocker)
    ├── containers/<64-hex id>/
    │   ├── container.json     what `inspect` shows: config, state, network
    │   ├── config.json        the OCI runtime spec the container runs from
    │   ├── container.log      its output, a line a line (logs.py)
    │   ├── attach, ctl        conmon's attach socket and control FIFO (monitor.py)
    │   └── upper/ work/ rootfs/   the container's overlay layers
    ├── exits/<id>             the exit code conmon saw, until it is recorded
    ├── runc/<id>/             minidocker-runc's state of a container conmon watches
    ├── names/<name> -> <id>   a symlink: creating it is the atomic name claim
    ├── images/                see images.py
    └── network/               see network.py

Every change to a container record happens under flock(2) on its directory,
and every file is written whole to a temporary name and renamed over the old
one, so a crash or two commands at once never leave half a record.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator

from lib.host import MinidockerError

EXIT_NO_SUCH = 1  # Docker: "No such container", "ambiguous" and friends


class NoSuchContainer(MinidockerError):
    def __init__(self, ref: str) -> None:
        super().__init__(f"No such container: {ref}", EXIT_NO_SUCH)


def root() -> str:
    return os.environ.get("MINIDOCKER_ROOT", "/var/lib/minidocker")


def secure_root() -> None:
    """Create the state root, or close an existing one, to all but root.

    Below it lie every container's upper directory and every image layer:
    a setuid-root binary that a container (or an image) put there would be
    a root shell for any local user who can reach it by path (the
    CVE-2021-41091 class).  0710, as Docker's /var/lib/docker: nobody but
    root and its group may even traverse it."""
    top = root()
    try:
        os.makedirs(os.path.dirname(top), exist_ok=True)
        os.mkdir(top, 0o710)
    except FileExistsError:
        if os.stat(top).st_mode & 0o067:
            os.chmod(top, 0o710)


def path(*parts: str) -> str:
    return os.path.join(root(), *parts)


def containers_dir() -> str:
    return path("containers")


def container_dir(cid: str) -> str:
    return path("containers", cid)


def write_json(file: str, data: object) -> None:
    """Write a file whole or not at all: a temp file, then rename(2) over.

    Compact, not indented: `ps -a` parses every record, and `inspect` is the
    readable view.  No fsync: a crash may lose the last change, never half.
    """
    tmp = f"{file}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, separators=(",", ":"))
    os.rename(tmp, file)


def read_json(file: str) -> dict:
    with open(file, "rb") as f:
        return json.loads(f.read())


def remove_tree(top: str) -> None:
    """rm -rf, without `shutil` (5 ms of imports on every `run --rm`).

    A container's upper directory is the container's to shape: thousands of
    directories deep (a recursive walk overflows Python's stack), paths
    longer than PATH_MAX, symlinks anywhere.  So the walk keeps one directory
    fd at a time, descends with O_NOFOLLOW, climbs with "..", and never
    follows a link: it removes links, never what they point at."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
    current, names = os.open(top, flags), []
    try:
        while True:
            sub = None
            with os.scandir(current) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        sub = entry.name
                        break
                    os.unlink(entry.name, dir_fd=current)
            if sub is not None:
                child = os.open(sub, flags, dir_fd=current)
                os.close(current)
                current = child
                names.append(sub)
                continue
            if not names:
                break
            parent = os.open("..", flags, dir_fd=current)
            os.close(current)
            current = parent
            os.rmdir(names.pop(), dir_fd=current)
    finally:
        os.close(current)
    os.rmdir(top)


@contextlib.contextmanager
def locked(directory: str) -> Iterator[None]:
    """Hold an exclusive flock(2) on a directory for the duration."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def transition(cid: str) -> Iterator[None]:
    """One lifecycle change of a container at a time: start, stop, kill, rm.

    Without it two `start`s at once could both read "not running" and give
    the container two PID 1s sharing one upper directory.  A lock file of
    its own, not the directory's: the record's updates inside a transition
    take that one, and flock(2) on a second open file would wait on itself.
    """
    try:
        fd = os.open(os.path.join(container_dir(cid), "transition.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    except FileNotFoundError:
        raise NoSuchContainer(cid) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def now() -> str:
    """RFC 3339 with nanoseconds in UTC, as Docker writes times."""
    ns = time.time_ns()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 10**9)) + f".{ns % 10**9:09d}Z"


ZERO_TIME = "0001-01-01T00:00:00Z"


def parse_time(stamp: str) -> float:
    """Seconds since the epoch from an RFC 3339 stamp of ours (UTC, "Z")."""
    import datetime

    if stamp == ZERO_TIME:
        return 0.0
    whole, _, frac = stamp.rstrip("Z").partition(".")
    moment = datetime.datetime.fromisoformat(whole).replace(tzinfo=datetime.UTC)
    return moment.timestamp() + float("0." + (frac or "0"))


def new_id() -> str:
    """A container ID: 32 random bytes as 64 hex characters, as Docker's."""
    while True:
        cid = os.urandom(32).hex()  # not `secrets`: it loads OpenSSL, 5 ms a start
        # Docker avoids all-digit short IDs: they read like numbers.
        if not cid[:12].isdigit():
            return cid


# ------------------------------------------------------------------- names
_ADJECTIVES = """
admiring agitated amazing angry awesome blissful bold boring brave busy charming clever
compassionate confident cool cranky dazzling determined eager ecstatic elastic elegant
epic exciting fervent festive focused friendly frosty funny gallant gifted goofy
gracious happy hardcore hopeful hungry infallible inspiring jolly jovial keen kind
laughing loving lucid magical modest musing mystifying naughty nervous nice nifty
nostalgic objective optimistic peaceful pedantic pensive practical priceless quirky
quizzical relaxed reverent romantic sad serene sharp silly sleepy stoic strange sweet
tender thirsty trusting upbeat vibrant vigilant wizardly wonderful xenodochial youthful
zealous zen""".split()  # noqa: SIM905 -- a word list reads better as prose
_SURNAMES = """
albattani allen almeida archimedes ardinghelli babbage banach bardeen bartik bassi bell
benz bhabha booth borg bose brahmagupta brattain brown carson cerf chandrasekhar clarke
colden cori cray curie darwin davinci dijkstra dubinsky easley einstein elion engelbart
euclid euler faraday fermat fermi feynman franklin galileo gates goldberg goodall
hamilton hawking heisenberg hermann hodgkin hoover hopper hypatia jackson jang jennings
jepsen johnson joliot kalam kapitsa keller kepler khorana kilby kirch knuth kowalevski
lalande lamport leakey leavitt lewin lichterman liskov lovelace lumiere mahavira mayer
mccarthy mcclintock meitner mendel merkle minsky mirzakhani moore morse napier nash
neumann newton nobel noether northcutt noyce panini pare pascal pasteur payne perlman
pike poincare poitras ptolemy raman ramanujan ride ritchie roentgen rosalind saha
sammet shannon shaw shirley shockley sinoussi snyder spence stallman stonebraker
swanson swartz tesla thompson torvalds turing varahamihira visvesvaraya volhard wescoff
wiles williams wilson wing wozniak wright yalow yonath""".split()  # noqa: SIM905 -- a word list reads better as prose


def random_name() -> str:
    pick = int.from_bytes(os.urandom(4), "little")
    return f"{_ADJECTIVES[pick % len(_ADJECTIVES)]}_{_SURNAMES[(pick >> 16) % len(_SURNAMES)]}"


def valid_name(name: str) -> bool:
    import re

    return re.fullmatch(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*", name) is not None


def claim_name(name: str, cid: str) -> None:
    """Make `name` point at `cid`; symlink(2) fails if it exists: no race."""
    os.makedirs(path("names"), exist_ok=True)
    try:
        os.symlink(cid, path("names", name))
    except FileExistsError:
        holder = os.readlink(path("names", name))
        raise MinidockerError(
            f'Conflict. The container name "/{name}" is already in use by container '
            f'"{holder}". You have to remove (or rename) that container to be able to reuse that name.'
        ) from None


def release_name(name: str, cid: str) -> None:
    link = path("names", name)
    with contextlib.suppress(OSError):
        if os.readlink(link) == cid:
            os.unlink(link)


def resolve(ref: str) -> str:
    """A full ID from a name, a full ID, or any unique prefix of one."""
    with contextlib.suppress(OSError):
        cid = os.readlink(path("names", ref))
        if os.path.isdir(container_dir(cid)):
            return cid
    if ref:
        try:
            matches = [c for c in os.listdir(containers_dir()) if c.startswith(ref)]
        except FileNotFoundError:
            matches = []
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise MinidockerError(f"multiple IDs found with provided prefix: {ref} (ambiguous)", EXIT_NO_SUCH)
    raise NoSuchContainer(ref)


def all_ids() -> list[str]:
    try:
        return os.listdir(containers_dir())
    except FileNotFoundError:
        return []


# -------------------------------------------------------- process liveness
def process_start_time(pid: int) -> int | None:
    """The kernel's start time of a pid (field 22 of /proc/PID/stat), or None.

    A pid alone is not an identity: after a reboot or a long run the same
    number names another process.  pid + start time does not repeat.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rindex(b")") + 2:].split()
    if fields[0] == b"Z":  # a zombie has exited; only its parent's wait is left
        return None
    return int(fields[19])


def alive(pid: int, start: int | None) -> bool:
    return pid > 0 and start is not None and process_start_time(pid) == start
