"""Confinement: what root inside a container may still do, as `docker run` allows.

Namespaces hide the host; they do not take root's powers away.  A root
process with every capability could mount the host's disk, load a kernel
module or setns() back into the host.  So, by default, like Docker:

* **capabilities**: root's powers, split into ~40 bits.  The container keeps
  Docker's 14 (CHOWN, KILL, NET_BIND_SERVICE, ...) in every set; not
  SYS_ADMIN (mount, setns), SYS_MODULE, SYS_TIME, NET_ADMIN, SYS_PTRACE.
  /proc/1/status then reads CapBnd = CapEff = CapPrm = 00000000a80425fb.
* **seccomp**: a filter on system calls, checked by the kernel on every call.
  Some calls are refused even to a process that holds the capability:
  mount, unshare, setns, keyctl, bpf, reboot, ...  The filter is
  compiled by libseccomp (through ctypes), which knows each architecture's
  syscall numbers and its compat ABIs; writing the BPF by hand means getting
  x32 and i386 calls through int 0x80 right, or being bypassed by them.
* **masked and read-only paths**: /proc/kcore and friends are covered with
  /dev/null or an empty tmpfs; /proc/sys, /proc/sysrq-trigger are read-only.
* **devices**: on cgroup v1 a devices cgroup allows only the harmless
  character devices, so `mknod /dev/sda` gives a node that cannot be opened.
  cgroup v2 has no devices file (its equivalent is a BPF program), so there
  the container gets no CAP_MKNOD instead.

`--privileged` lifts all of it; `--cap-add/--cap-drop`, `--security-opt
seccomp=...|no-new-privileges`, `--read-only` and `--user` adjust it.
"""

from __future__ import annotations

import os

from lib import host
from lib.host import MinidockerError

CAPS = ["CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID", "SETPCAP",
        "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER",
        "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE",
        "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP",
        "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF",
        "CHECKPOINT_RESTORE"]  # in bit order: CAP_CHOWN is bit 0
DOCKER_CAPS = ["CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID", "SETFCAP",
               "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE"]
MASKED = ["/proc/asound", "/proc/acpi", "/proc/interrupts", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
          "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware",
          "/sys/devices/virtual/powercap"]  # Docker's list, in its order
READONLY = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
DEVICES_ALLOWED = ["c *:* m", "b *:* m", "c 1:3 rwm", "c 1:5 rwm", "c 1:7 rwm", "c 1:8 rwm", "c 1:9 rwm",
                   "c 5:0 rwm", "c 5:1 rwm", "c 5:2 rwm", "c 136:* rwm", "c 10:200 rwm"]


def capabilities(add: list[str], drop: list[str], privileged: bool, mknod_safe: bool) -> list[str]:
    """The capability names a container keeps, as the OCI spec writes them."""
    def names(values: list[str]) -> set[str]:
        out = set()
        for value in values:
            cap = value.upper().removeprefix("CAP_")
            if cap == "ALL":
                out |= set(CAPS)
            elif cap in CAPS:
                out.add(cap)
            else:
                raise MinidockerError(f"invalid capability: {value}")
        return out

    keep = set(CAPS) if privileged else set(DOCKER_CAPS) - (set() if mknod_safe else {"MKNOD"})
    keep = (keep - names(drop)) | names(add)  # as Docker: --cap-drop ALL --cap-add X keeps X
    return ["CAP_" + c for c in CAPS if c in keep]


# ------------------------------------------------- in the container init
def mask_paths(masked: list[str], readonly: list[str]) -> None:
    """Cover masked paths; make read-only ones read-only.

    After pivot_root: each path is looked up in the container's own tree,
    where /proc is the procfs just mounted (rootfs.py refuses an image whose
    /proc is not a plain directory), never the host's."""
    for path in masked:
        if os.path.isdir(path):
            host.mount("tmpfs", path, "tmpfs", host.MS_RDONLY, "size=0", step="security")
        elif os.path.exists(path):
            host.mount("/dev/null", path, None, host.MS_BIND, step="security")
    for path in readonly:
        if os.path.exists(path):
            host.mount(path, path, None, host.MS_BIND | host.MS_REC, step="security")
            host.mount("", path, None, host.MS_BIND | host.MS_REMOUNT | host.MS_RDONLY | host.MS_NOSUID
                       | host.MS_NODEV | host.MS_NOEXEC, step="security")


def _prctl(option: int, arg: int, arg3: int = 0) -> None:
    host._call("prctl", option, arg, arg3, 0, 0)


def load_seccomp(seccomp_filter) -> None:
    host.explain("security", "seccomp(SECCOMP_SET_MODE_FILTER)  # Docker's default profile: an allowlist; "
                             "mount, unshare, setns, keyctl, bpf, reboot, ... refused")
    seccomp_filter.load()


def drop_to(process: dict, seccomp_filter) -> None:
    """The last steps before execve: no_new_privs, seccomp, user, capabilities.

    In runc's order: the bounding set first (dropping needs CAP_SETPCAP),
    then the user with PR_SET_KEEPCAPS (setuid(2) to a non-zero uid would
    otherwise empty the permitted set), then the five sets.  Only the
    ambient set survives a non-root user's execve(2) of an ordinary file:
    it is how an engine gives such a user a capability."""
    import ctypes

    caps = process.get("capabilities")
    if process.get("noNewPrivileges"):
        host.explain("security", "prctl(PR_SET_NO_NEW_PRIVS, 1)  # setuid binaries no longer gain anything")
        _prctl(38, 1)
    if seccomp_filter is not None:
        load_seccomp(seccomp_filter)
    if caps is not None:
        caps = {k: caps.get(k) or [] for k in ("bounding", "effective", "permitted", "inheritable", "ambient")}
        host.explain("security", f"setpriv --bounding-set -all,+{',+'.join(c[4:].lower() for c in caps['bounding'])}"
                                 " --inh-caps ... --ambient-caps ...")
        keep = _bits(caps["bounding"])
        for cap in range(int(host.read("/proc/sys/kernel/cap_last_cap")) + 1):
            if not keep & (1 << cap):
                _prctl(24, cap)  # PR_CAPBSET_DROP
        _prctl(47, 4)  # PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL
        _prctl(8, 1)  # PR_SET_KEEPCAPS: the permitted set outlives setuid below
    # Groups before capabilities are cut: setgroups(2) needs CAP_SETGID, which
    # the container may not keep.  The host's own groups never go in.
    user = process.get("user", {})
    uid, gid = user.get("uid", 0), user.get("gid", 0)
    host.explain("security", f"setpriv --reuid={uid} --regid={gid} --groups="
                             f"{','.join(map(str, user.get('additionalGids') or [gid]))}")
    os.setgroups(user.get("additionalGids") or [gid])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    if caps is None:
        return  # for any uid but 0 the kernel has now cleared CapEff and CapPrm
    _prctl(8, 0)
    # Nobody can grant what they do not hold: --privileged means every
    # capability of ours (a host may withhold some from root itself).
    with open("/proc/self/status") as f:
        held = int(next(line for line in f if line.startswith("CapPrm:")).split()[1], 16)
    eff, prm, inh = (_bits(caps[k]) & held for k in ("effective", "permitted", "inheritable"))
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
    data = (ctypes.c_uint32 * 6)(eff & 0xFFFFFFFF, prm & 0xFFFFFFFF, inh & 0xFFFFFFFF,
                                 eff >> 32, prm >> 32, inh >> 32)
    host._call("capset", header, data)
    # The kernel raises an ambient capability only if it is both permitted
    # and inheritable: the ambient set can never exceed what those allow.
    ambient = _bits(caps["ambient"]) & prm & inh
    for cap in range(ambient.bit_length()):
        if ambient & (1 << cap):
            _prctl(47, 2, cap)  # PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE


def _bits(names: list[str]) -> int:
    """A capability set from names such as CAP_CHOWN; names this kernel's
    list does not know are left out, as runc leaves them."""
    bits = 0
    for c in names:
        if c.removeprefix("CAP_") in CAPS:
            bits |= 1 << CAPS.index(c.removeprefix("CAP_"))
    return bits
