"""Users: which uid, gids and HOME a container's process gets from `-u` or USER.

The kernel knows only numbers.  Names live in the container's own
/etc/passwd and /etc/group, which may differ from the host's (the host's
"nobody" may be another number, or missing), so `-u nobody` must be looked
up in the container's files, and only after pivot_root: read before it,
through <rootfs>/etc/passwd, an image whose /etc is a symlink to an absolute
path would make us read the host's files instead.

The rules are runc's and Docker's (libcontainer/user):
* `NAME|UID[:GROUP|GID]`; a number that passwd does not list is used as it
  is, a name that it does not list is an error (exit 125).
* Without a group, the primary group is passwd's, and every group in
  /etc/group that lists the user as a member is added (supplementary).
* HOME, unless the environment sets it, is passwd's home, or "/".
"""

from __future__ import annotations

import os

from lib.host import MinidockerError


def _entries(path: str, fields: int) -> list[list[str]]:
    """colon-separated lines, as getpwent(3) reads them; a missing file is empty."""
    import stat

    # Not blocking, and a regular file only: an image's /etc/passwd may be a
    # FIFO (open would wait forever, with the container's lock held) or a
    # device; either reads as no file.  And not endless: 1 MiB.
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError:
        return []
    with open(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return []
        lines = f.read(1 << 20).decode(errors="replace").splitlines()
    rows = []
    for line in lines:
        parts = line.split(":")
        if line and not line.startswith("#") and len(parts) >= fields:
            rows.append(parts)
    return rows


def _number(value: str) -> int | None:
    return int(value) if value.isdigit() and int(value) < 2**32 - 1 else None


def home(uid: int) -> str:
    """HOME for a process given by number (an engine's bundle): passwd's, or "/"."""
    return next((p[5] or "/" for p in _entries("/etc/passwd", 7) if _number(p[2]) == uid), "/")


def resolve(spec: str) -> tuple[int, int, list[int], str]:
    """`-u` or USER, read in the container's files: (uid, gid, groups, home)."""
    user, _, group = spec.partition(":")
    passwd = _entries("/etc/passwd", 7)
    uid, gid, home, name = _number(user), 0, "/", ""
    match = next((p for p in passwd if (p[0] == user if uid is None else _number(p[2]) == uid)), None)
    if match is not None:
        name, uid, gid, home = match[0], _number(match[2]), _number(match[3]) or 0, match[5] or "/"
        if uid is None:
            raise MinidockerError(f"unable to find user {user}: invalid uid in passwd file")
    elif uid is None:
        raise MinidockerError(f"unable to find user {user}: no matching entries in passwd file")
    groups = _entries("/etc/group", 4)
    if group:
        gid = _number(group)
        found = next((g for g in groups if (g[0] == group if gid is None else _number(g[2]) == gid)), None)
        if found is not None:
            gid = _number(found[2])
        if gid is None:
            raise MinidockerError(f"unable to find group {group}: no matching entries in group file")
        extra = []
    else:
        extra = [_number(g[2]) for g in groups if name and name in g[3].split(",") and _number(g[2]) is not None]
    return uid, gid, extra, home
