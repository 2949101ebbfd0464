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
          "strictatime": 1 << 24, "relatime": 1 << 21}


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


def _inside(rootfs: str, path: str) -> str:
    return os.path.join(rootfs, path.lstrip("/"))


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


def mount_all(rootfs: str, mounts: list[dict]) -> None:
    for m in mounts:
        target = secure_join(rootfs, m["destination"])
        flags, data = 0, []
        for opt in m.get("options", []):
            if opt in _FLAGS:
                flags |= _FLAGS[opt]
            else:
                data.append(opt)
        if m.get("type") == "bind" or flags & host.MS_BIND:
            _make_target(target, os.path.isdir(m["source"]))
            host.mount(m["source"], target, None, flags & (host.MS_BIND | host.MS_REC))
            if flags & ~(host.MS_BIND | host.MS_REC):
                # A bind mount ignores its other flags: read-only takes a remount.
                host.mount("", target, None, flags | host.MS_REMOUNT | host.MS_BIND)
            continue
        _make_target(target, True)
        host.mount(m["source"], target, m["type"], flags, ",".join(data))


def _make_target(target: str, directory: bool) -> None:
    if directory:
        os.makedirs(target, exist_ok=True)
    elif not os.path.exists(target):
        os.makedirs(os.path.dirname(target), exist_ok=True)
        open(target, "a").close()


def make_devices(rootfs: str, devices: list[dict]) -> None:
    for dev in devices:
        kind = stat.S_IFCHR if dev["type"] == "c" else stat.S_IFBLK
        path = _inside(rootfs, dev["path"])
        host.explain("rootfs", f"mknod -m {dev['fileMode']:o} {path} {dev['type']} {dev['major']} {dev['minor']}")
        os.mknod(path, kind | dev["fileMode"], os.makedev(dev["major"], dev["minor"]))
        os.chmod(path, dev["fileMode"])  # mknod's mode is cut by the umask
    for link, target in _DEV_LINKS.items():
        if not os.path.lexists(_inside(rootfs, link)):
            os.symlink(target, _inside(rootfs, link))


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
