"""The container's root filesystem, built inside its own mount namespace.

Runs in the container init, after unshare(1) gave it a private copy of the
host's mount table.  Every mount made here lives only in that namespace, so
when the container's last process exits the kernel drops them all: nothing
is left on the host to clean up, even after a crash.

The sequence (docs/rootfs.md lists each mount and device as a table):
1. overlayfs: the image's layers (read-only, lower) + the container's own
   upper directory.  Writes go to upper; the image never changes.
2. The kernel filesystems a program expects: /proc (of the new pid
   namespace), /sys read-only, a small tmpfs /dev with a few device nodes,
   a private devpts for terminals, /dev/shm and /dev/mqueue.
3. pivot_root(2) makes the overlay the root, then the old root (the host's
   whole tree) is lazily unmounted so no path leads back to it.
"""

from __future__ import annotations

import os
import stat

from lib import host

# OCI mount options: the ones that are mount(2) flags; the rest is data.
_FLAGS = {"ro": host.MS_RDONLY, "nosuid": host.MS_NOSUID, "nodev": host.MS_NODEV,
          "noexec": host.MS_NOEXEC, "bind": host.MS_BIND, "rbind": host.MS_BIND | host.MS_REC,
          "strictatime": 1 << 24, "relatime": 1 << 21, "noatime": 1 << 10, "nodiratime": 1 << 11}
# Options that only undo a flag, or say what is already so: nothing to pass.
_NOOP = {"rw", "suid", "dev", "exec", "atime", "diratime", "async", "tmpcopyup", "norelatime", "nostrictatime"}
# Propagation is a separate mount(2) call after the mount itself.
PROPAGATION = {"private": host.MS_PRIVATE, "rprivate": host.MS_PRIVATE | host.MS_REC, "slave": host.MS_SLAVE,
               "rslave": host.MS_SLAVE | host.MS_REC, "shared": host.MS_SHARED,
               "rshared": host.MS_SHARED | host.MS_REC, "unbindable": host.MS_UNBINDABLE,
               "runbindable": host.MS_UNBINDABLE | host.MS_REC}


def default_mounts() -> list[dict]:
    """The mounts every container gets, as runc's spec and Docker list them."""
    return [
        {"destination": "/proc", "type": "proc", "source": "proc",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs",
         "options": ["nosuid", "noexec", "nodev", "ro"]},
    ]


def default_devices() -> list[dict]:
    """The device nodes in /dev: harmless ones only, never a disk."""
    return [{"path": f"/dev/{name}", "type": "c", "major": major, "minor": minor, "fileMode": 0o666}
            for name, major, minor in (("null", 1, 3), ("zero", 1, 5), ("full", 1, 7),
                                       ("random", 1, 8), ("urandom", 1, 9), ("tty", 5, 0))]


_DEV_LINKS = {"/dev/fd": "/proc/self/fd", "/dev/stdin": "/proc/self/fd/0",
              "/dev/stdout": "/proc/self/fd/1", "/dev/stderr": "/proc/self/fd/2",
              "/dev/ptmx": "pts/ptmx", "/dev/core": "/proc/kcore"}


def secure_join(rootfs: str, path: str) -> str:
    """rootfs + path, with every symlink followed as if rootfs were "/".

    The mounts are made before pivot_root, while the host's tree is still
    reachable: a plain join of `/data` where the image has `/data -> /etc`
    would mount a volume over the host's /etc.  Here `..` stops at rootfs
    and an absolute link starts again from it.
    """
    parts = [p for p in path.split("/") if p not in ("", ".")]
    current, links = rootfs, 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            current = rootfs if current == rootfs else os.path.dirname(current)
            continue
        candidate = os.path.join(current, part)
        if os.path.islink(candidate):
            links += 1
            if links > 40:
                raise host.MinidockerError(f"too many levels of symbolic links in {path}")
            target = os.readlink(candidate)
            parts = [p for p in target.split("/") if p not in ("", ".")] + parts
            if target.startswith("/"):
                current = rootfs
            continue
        current = candidate
    return current


def mount_overlay(rootfs: str, lower: list[str], upper: str, work: str) -> None:
    host.mount("overlay", rootfs, "overlay", 0,
               f"lowerdir={':'.join(lower)},upperdir={upper},workdir={work}")


# The kernel filesystems whose place the runtime's safety depends on: the
# masks go on /proc and /sys, the device nodes into /dev.  An image may not
# move them with a symlink (runc refuses the same, since CVE-2019-19921).
_PLAIN_DIRECTORY = {"proc": "/proc", "sysfs": "/sys", "tmpfs": "/dev"}


def _refuse_moved(rootfs: str, m: dict) -> None:
    if _PLAIN_DIRECTORY.get(m.get("type", "")) != os.path.normpath(m["destination"]):
        return
    place = os.path.join(rootfs, m["destination"].lstrip("/"))
    if os.path.islink(place) or (os.path.lexists(place) and not os.path.isdir(place)):
        raise host.MinidockerError(f"the image's {m['destination']} is not a directory (a symlink or a file): "
                                   f"refusing to mount {m['type']} there")


def mount_all(rootfs: str, mounts: list[dict]) -> None:
    for m in mounts:
        _refuse_moved(rootfs, m)
        target = secure_join(rootfs, m["destination"])
        flags, data, propagation = 0, [], 0
        for opt in m.get("options", []):
            if opt in _FLAGS:
                flags |= _FLAGS[opt]
            elif opt in PROPAGATION:
                propagation = PROPAGATION[opt]
            elif opt not in _NOOP:
                data.append(opt)
        if m.get("type") in ("cgroup", "cgroup2"):
            _mount_cgroupfs(target, flags)
            continue
        if m.get("type") == "bind" or flags & host.MS_BIND:
            _make_target(target, os.path.isdir(m["source"]))
            host.mount(m["source"], target, None, flags & (host.MS_BIND | host.MS_REC))
            if flags & ~(host.MS_BIND | host.MS_REC):
                host.restrict_bind(target, flags & ~(host.MS_BIND | host.MS_REC), bool(flags & host.MS_REC))
        else:
            _make_target(target, True)
            host.mount(m["source"], target, m["type"], flags, ",".join(data))
        if propagation:
            host.mount("", target, None, propagation)


def _mount_cgroupfs(target: str, flags: int) -> None:
    """/sys/fs/cgroup as the spec asks: the unified hierarchy where the host
    has one with controllers (in the container's cgroup namespace, it shows
    the container's own subtree); on a v1 or hybrid host, an empty read-only
    tmpfs, for the per-controller view is not built here."""
    _make_target(target, True)
    with open("/proc/self/mountinfo") as f:
        unified = any(" - cgroup2 " in line and "/sys/fs/cgroup " in line for line in f)
    if unified:
        host.mount("cgroup2", target, "cgroup2", flags | host.MS_NOSUID | host.MS_NODEV | host.MS_NOEXEC)
    else:
        host.mount("tmpfs", target, "tmpfs", host.MS_RDONLY | host.MS_NOSUID | host.MS_NODEV | host.MS_NOEXEC,
                   "mode=755")


def _make_target(target: str, directory: bool) -> None:
    if directory:
        os.makedirs(target, exist_ok=True)
    elif not os.path.exists(target):
        os.makedirs(os.path.dirname(target), exist_ok=True)
        open(target, "a").close()


# The spec's device types: c and u (unbuffered) are character devices.
DEVICE_KINDS = {"c": stat.S_IFCHR, "u": stat.S_IFCHR, "b": stat.S_IFBLK, "p": stat.S_IFIFO}


def make_devices(devices: list[dict]) -> None:
    """The spec's device nodes, and the few every container gets (as runc).

    Called after pivot_root, so each path is the container's own: no image
    symlink can lead a 0666 device node into a host directory."""
    listed = {d["path"] for d in devices}
    for dev in [*devices, *(d for d in default_devices() if d["path"] not in listed)]:
        path = os.path.normpath("/" + dev["path"].lstrip("/"))
        if os.path.lexists(path):
            continue
        kind = DEVICE_KINDS[dev["type"]]
        mode = dev.get("fileMode", 0o666)
        numbers = "" if dev["type"] == "p" else f" {dev['major']} {dev['minor']}"  # a FIFO has none
        host.explain("rootfs", f"mknod -m {mode:o} {path} {dev['type']}{numbers}")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        os.mknod(path, kind | mode, 0 if dev["type"] == "p" else os.makedev(dev["major"], dev["minor"]))
        os.chmod(path, mode)  # mknod's mode is cut by the umask
        if dev.get("uid") or dev.get("gid"):
            os.chown(path, dev.get("uid", 0), dev.get("gid", 0))
    for link, target in _DEV_LINKS.items():
        if not os.path.lexists(link):
            os.symlink(target, link)


def pivot(rootfs: str) -> None:
    """Make rootfs the root of this mount namespace and forget the old one.

    pivot_root(".", ".") stacks the old root on top of the new one at "/";
    the lazy unmount then drops it.  Unlike chroot, no `cd ..` and no open
    directory leads back out, because the old tree is no longer mounted here.
    pivot_root fails with EINVAL when the new root's mount is shared, which
    is why the namespace was made private first.
    """
    os.chdir(rootfs)
    host.pivot_root(".", ".")
    host.umount(".", host.MNT_DETACH)
    os.chdir("/")


def chroot(rootfs: str) -> None:
    """Enter rootfs without a mount namespace of one's own.

    A spec may leave the mount namespace out: the container then shares the
    runtime's, where pivot_root would swap the caller's own root.  runc
    uses chroot(2) there, and so do we; the container's mounts stay in the
    caller's namespace, as the spec's choice implies."""
    os.chdir(rootfs)
    host.explain("rootfs", "chroot .  # no mount namespace of its own: pivot_root would move the caller's root")
    os.chroot(".")
    os.chdir("/")
