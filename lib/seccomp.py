"""seccomp: a filter on system calls, checked by the kernel on every call.

Namespaces hide the host and capabilities split root's powers, but the
kernel's system-call surface stays whole: a bug in any of ~450 calls is a
way out.  A seccomp filter (a small BPF program the kernel runs on each
call) lets a container make only the calls it needs.

The default profile is Docker's, call for call: an allowlist (anything not
named fails with EPERM), arguments checked where one call does both safe and
dangerous things (clone, socket, personality), and groups that open only when
the container holds the capability that makes them meaningful (chroot with
CAP_SYS_CHROOT, mount and unshare with CAP_SYS_ADMIN).  Profiles given with
--security-opt seccomp=FILE are in Docker's JSON format, Docker's own
default.json included.

The filter is compiled by libseccomp (loaded with ctypes), which knows each
architecture's syscall numbers and its compat ABIs; writing the BPF by hand
means getting x32 and i386 calls through int 0x80 right, or being bypassed
by them.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable

from lib import host
from lib.host import MinidockerError

EPERM, ENOSYS = 1, 38
AF_ALG, AF_VSOCK = 38, 40
# The clone(2) flags that make a namespace: NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET.
CLONE_NEWFLAGS = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000
ALLOW = "SCMP_ACT_ALLOW"

# Docker's default seccomp profile, as Docker 29.7.2 ships it (github.com/moby/profiles/seccomp v0.2.3:
# default_linux.go, from which default.json is generated).  It is written here in Docker's own JSON
# shape, rule for rule and in Docker's order, so that json.dumps(DEFAULT) can be compared with
# Docker's default.json.  Which rules apply to one container is decided by for_container() below.
DEFAULT: dict = {
    "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": EPERM,
    # Each native architecture with the compat ABIs its kernel also runs: an x86_64 process can make
    # i386 calls (int 0x80) and x32 calls, with other numbers.  A filter that knew only x86_64 would
    # kill them (libseccomp's "bad architecture" action); one that allowed them unfiltered would be
    # a way round every rule.  So the filter holds the same rules for each ABI.
    "archMap": [
        {"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]},
        {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]},
        {"architecture": "SCMP_ARCH_MIPS64", "subArchitectures": ["SCMP_ARCH_MIPS", "SCMP_ARCH_MIPS64N32"]},
        {"architecture": "SCMP_ARCH_MIPS64N32", "subArchitectures": ["SCMP_ARCH_MIPS", "SCMP_ARCH_MIPS64"]},
        {"architecture": "SCMP_ARCH_MIPSEL64", "subArchitectures": ["SCMP_ARCH_MIPSEL", "SCMP_ARCH_MIPSEL64N32"]},
        {"architecture": "SCMP_ARCH_MIPSEL64N32", "subArchitectures": ["SCMP_ARCH_MIPSEL", "SCMP_ARCH_MIPSEL64"]},
        {"architecture": "SCMP_ARCH_S390X", "subArchitectures": ["SCMP_ARCH_S390"]},
        {"architecture": "SCMP_ARCH_RISCV64", "subArchitectures": None},
        {"architecture": "SCMP_ARCH_LOONGARCH64", "subArchitectures": None},
    ],
    "syscalls": [
        # What ordinary programs need: files, memory, signals, sockets, time, ids, IPC in the
        # container's own namespaces.  Not here, so refused: io_uring_* (a kernel attack surface of
        # its own, and it would run calls past this filter), keyctl/add_key/request_key (the keyring
        # is not namespaced), userfaultfd, kexec_*, swapon, pivot_root, uselib, ustat, sysfs, ...
        # Deviation: the newest names (getxattrat, listmount, listxattrat, mseal, removexattrat,
        # setxattrat, statmount, uretprobe, riscv_hwprobe, and lsm_* below) are unknown to the
        # libseccomp of Debian 12 (2.5.4); compile_filter skips them, so they fail with EPERM, where
        # runc's own stub answers ENOSYS for calls newer than its libseccomp.
        {"names": [
            "accept", "accept4", "access", "adjtimex", "alarm", "bind", "brk", "cachestat", "capget", "capset",
            "chdir", "chmod", "chown", "chown32", "clock_adjtime", "clock_adjtime64", "clock_getres",
            "clock_getres_time64", "clock_gettime", "clock_gettime64", "clock_nanosleep", "clock_nanosleep_time64",
            "close", "close_range", "connect", "copy_file_range", "creat", "dup", "dup2", "dup3", "epoll_create",
            "epoll_create1", "epoll_ctl", "epoll_ctl_old", "epoll_pwait", "epoll_pwait2", "epoll_wait",
            "epoll_wait_old", "eventfd", "eventfd2", "execve", "execveat", "exit", "exit_group", "faccessat",
            "faccessat2", "fadvise64", "fadvise64_64", "fallocate", "fanotify_mark", "fchdir", "fchmod", "fchmodat",
            "fchmodat2", "fchown", "fchown32", "fchownat", "fcntl", "fcntl64", "fdatasync", "fgetxattr",
            "flistxattr", "flock", "fork", "fremovexattr", "fsetxattr", "fstat", "fstat64", "fstatat64", "fstatfs",
            "fstatfs64", "fsync", "ftruncate", "ftruncate64", "futex", "futex_requeue", "futex_time64",
            "futex_wait", "futex_waitv", "futex_wake", "futimesat", "getcpu", "getcwd", "getdents", "getdents64",
            "getegid", "getegid32", "geteuid", "geteuid32", "getgid", "getgid32", "getgroups", "getgroups32",
            "getitimer", "getpeername", "getpgid", "getpgrp", "getpid", "getppid", "getpriority", "getrandom",
            "getresgid", "getresgid32", "getresuid", "getresuid32", "getrlimit", "get_robust_list", "getrusage",
            "getsid", "getsockname", "getsockopt", "get_thread_area", "gettid", "gettimeofday", "getuid",
            "getuid32", "getxattr", "getxattrat", "inotify_add_watch", "inotify_init", "inotify_init1",
            "inotify_rm_watch", "io_cancel", "ioctl", "io_destroy", "io_getevents", "io_pgetevents",
            "io_pgetevents_time64", "ioprio_get", "ioprio_set", "io_setup", "io_submit", "ipc", "kill",
            "landlock_add_rule", "landlock_create_ruleset", "landlock_restrict_self", "lchown", "lchown32",
            "lgetxattr", "link", "linkat", "listen", "listmount", "listxattr", "listxattrat", "llistxattr",
            "_llseek", "lremovexattr", "lseek", "lsetxattr", "lstat", "lstat64", "madvise", "map_shadow_stack",
            "membarrier", "memfd_create", "memfd_secret", "mincore", "mkdir", "mkdirat", "mknod", "mknodat",
            "mlock", "mlock2", "mlockall", "mmap", "mmap2", "mprotect", "mq_getsetattr", "mq_notify", "mq_open",
            "mq_timedreceive", "mq_timedreceive_time64", "mq_timedsend", "mq_timedsend_time64", "mq_unlink",
            "mremap", "mseal", "msgctl", "msgget", "msgrcv", "msgsnd", "msync", "munlock", "munlockall", "munmap",
            "name_to_handle_at", "nanosleep", "newfstatat", "_newselect", "open", "openat", "openat2", "pause",
            "pidfd_open", "pidfd_send_signal", "pipe", "pipe2", "pkey_alloc", "pkey_free", "pkey_mprotect", "poll",
            "ppoll", "ppoll_time64", "prctl", "pread64", "preadv", "preadv2", "prlimit64", "process_mrelease",
            "pselect6", "pselect6_time64", "pwrite64", "pwritev", "pwritev2", "read", "readahead", "readlink",
            "readlinkat", "readv", "recv", "recvfrom", "recvmmsg", "recvmmsg_time64", "recvmsg", "remap_file_pages",
            "removexattr", "removexattrat", "rename", "renameat", "renameat2", "restart_syscall", "riscv_hwprobe",
            "rmdir", "rseq", "rt_sigaction", "rt_sigpending", "rt_sigprocmask", "rt_sigqueueinfo", "rt_sigreturn",
            "rt_sigsuspend", "rt_sigtimedwait", "rt_sigtimedwait_time64", "rt_tgsigqueueinfo", "sched_getaffinity",
            "sched_getattr", "sched_getparam", "sched_get_priority_max", "sched_get_priority_min",
            "sched_getscheduler", "sched_rr_get_interval", "sched_rr_get_interval_time64", "sched_setaffinity",
            "sched_setattr", "sched_setparam", "sched_setscheduler", "sched_yield", "seccomp", "select", "semctl",
            "semget", "semop", "semtimedop", "semtimedop_time64", "send", "sendfile", "sendfile64", "sendmmsg",
            "sendmsg", "sendto", "setfsgid", "setfsgid32", "setfsuid", "setfsuid32", "setgid", "setgid32",
            "setgroups", "setgroups32", "setitimer", "setpgid", "setpriority", "setregid", "setregid32",
            "setresgid", "setresgid32", "setresuid", "setresuid32", "setreuid", "setreuid32", "setrlimit",
            "set_robust_list", "setsid", "setsockopt", "set_thread_area", "set_tid_address", "setuid", "setuid32",
            "setxattr", "setxattrat", "shmat", "shmctl", "shmdt", "shmget", "shutdown", "sigaltstack", "signalfd",
            "signalfd4", "sigprocmask", "sigreturn", "socketcall", "socketpair", "splice", "stat", "stat64",
            "statfs", "statfs64", "statmount", "statx", "symlink", "symlinkat", "sync", "sync_file_range", "syncfs",
            "sysinfo", "tee", "tgkill", "time", "timer_create", "timer_delete", "timer_getoverrun", "timer_gettime",
            "timer_gettime64", "timer_settime", "timer_settime64", "timerfd_create", "timerfd_gettime",
            "timerfd_gettime64", "timerfd_settime", "timerfd_settime64", "times", "tkill", "truncate", "truncate64",
            "ugetrlimit", "umask", "uname", "unlink", "unlinkat", "uretprobe", "utime", "utimensat",
            "utimensat_time64", "utimes", "vfork", "vmsplice", "wait4", "waitid", "waitpid", "write", "writev"
        ], "action": ALLOW},
        # Before kernel 4.8 a tracer could change a call after seccomp had checked it, so
        # ptrace was a way round the filter; from 4.8 the filter runs again after the tracer.
        {"names": ["process_vm_readv", "process_vm_writev", "ptrace"], "action": ALLOW,
         "includes": {"minKernel": "4.8"}},
        # socket(2) for every address family but AF_ALG (38, the kernel's crypto API: a long line of
        # kernel bugs) and AF_VSOCK (40, sockets to the hypervisor: not the container's to reach).
        # Docker's own note: i386 programs open sockets through socketcall(2), whose arguments are in
        # memory the filter cannot read, so there these two stay reachable.
        {"names": ["socket"], "action": ALLOW, "args": [{"index": 0, "value": AF_ALG, "op": "SCMP_CMP_LT"}]},
        {"names": ["socket"], "action": ALLOW, "args": [{"index": 0, "value": AF_ALG + 1, "op": "SCMP_CMP_EQ"}]},
        {"names": ["socket"], "action": ALLOW, "args": [{"index": 0, "value": AF_VSOCK, "op": "SCMP_CMP_GT"}]},
        # personality(2) only for what programs use: PER_LINUX, PER_LINUX32, UNAME26, both, and
        # 0xffffffff to read the current one.  Others would turn off protections such as ASLR
        # (ADDR_NO_RANDOMIZE) or make data executable (READ_IMPLIES_EXEC).
        *[{"names": ["personality"], "action": ALLOW, "args": [{"index": 0, "value": persona, "op": "SCMP_CMP_EQ"}]}
          for persona in (0x0, 0x0008, 0x20000, 0x20008, 0xFFFFFFFF)],
        # Calls that exist on one architecture only ("arches" are libseccomp's names, as Go spells them).
        {"names": ["sync_file_range2", "swapcontext"], "action": ALLOW, "includes": {"arches": ["ppc64le"]}},
        {"names": ["arm_fadvise64_64", "arm_sync_file_range", "sync_file_range2", "breakpoint", "cacheflush",
                   "set_tls"], "action": ALLOW, "includes": {"arches": ["arm", "arm64"]}},
        {"names": ["arch_prctl"], "action": ALLOW, "includes": {"arches": ["amd64", "x32"]}},
        {"names": ["modify_ldt"], "action": ALLOW, "includes": {"arches": ["amd64", "x32", "x86"]}},
        {"names": ["s390_pci_mmio_read", "s390_pci_mmio_write", "s390_runtime_instr"], "action": ALLOW,
         "includes": {"arches": ["s390", "s390x"]}},
        {"names": ["riscv_flush_icache"], "action": ALLOW, "includes": {"arches": ["riscv64"]}},
        # From here on, calls that only a capability makes useful, allowed only with it: without it
        # the kernel would refuse them anyway, and the filter keeps their code out of reach.
        # open_by_handle_at reads any file of the filesystem by its handle, past the container's
        # root: the 2014 "shocker" escape.  Only with CAP_DAC_READ_SEARCH, which Docker never gives.
        {"names": ["open_by_handle_at"], "action": ALLOW, "includes": {"caps": ["CAP_DAC_READ_SEARCH"]}},
        # Mounts, namespaces and the rest of CAP_SYS_ADMIN's calls.
        {"names": ["bpf", "clone", "clone3", "fanotify_init", "fsconfig", "fsmount", "fsopen", "fspick",
                   "lookup_dcookie", "lsm_get_self_attr", "lsm_list_modules", "lsm_set_self_attr", "mount",
                   "mount_setattr", "move_mount", "open_tree", "perf_event_open", "quotactl", "quotactl_fd",
                   "setdomainname", "sethostname", "setns", "syslog", "umount", "umount2", "unshare"],
         "action": ALLOW, "includes": {"caps": ["CAP_SYS_ADMIN"]}},
        # Without CAP_SYS_ADMIN, clone(2) makes processes and threads but no namespace: a new user
        # namespace would hand the container a full set of capabilities over its own copies.
        # s390 passes clone's flags second.
        {"names": ["clone"], "action": ALLOW,
         "args": [{"index": 0, "value": CLONE_NEWFLAGS, "op": "SCMP_CMP_MASKED_EQ"}],
         "excludes": {"caps": ["CAP_SYS_ADMIN"], "arches": ["s390", "s390x"]}},
        {"names": ["clone"], "action": ALLOW,
         "args": [{"index": 1, "value": CLONE_NEWFLAGS, "op": "SCMP_CMP_MASKED_EQ"}],
         "comment": "s390 parameter ordering for clone is different",
         "includes": {"arches": ["s390", "s390x"]}, "excludes": {"caps": ["CAP_SYS_ADMIN"]}},
        # clone3(2) takes its flags in a struct in memory, which a filter cannot read: it is refused
        # with ENOSYS, "no such call", so that glibc falls back to clone(2), which can be checked.
        {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS,
         "excludes": {"caps": ["CAP_SYS_ADMIN"]}},
        {"names": ["reboot"], "action": ALLOW, "includes": {"caps": ["CAP_SYS_BOOT"]}},
        # chroot is harmless in a container that holds CAP_SYS_CHROOT (Docker's default set): the
        # classic chroot escape leads only to the container's own root, after pivot_root.
        {"names": ["chroot"], "action": ALLOW, "includes": {"caps": ["CAP_SYS_CHROOT"]}},
        {"names": ["delete_module", "init_module", "finit_module"], "action": ALLOW,
         "includes": {"caps": ["CAP_SYS_MODULE"]}},
        {"names": ["acct"], "action": ALLOW, "includes": {"caps": ["CAP_SYS_PACCT"]}},
        {"names": ["kcmp", "pidfd_getfd", "process_madvise", "process_vm_readv", "process_vm_writev", "ptrace"],
         "action": ALLOW, "includes": {"caps": ["CAP_SYS_PTRACE"]}},
        {"names": ["iopl", "ioperm"], "action": ALLOW, "includes": {"caps": ["CAP_SYS_RAWIO"]}},
        # The clock is not namespaced: setting it sets the host's.
        {"names": ["settimeofday", "stime", "clock_settime", "clock_settime64"], "action": ALLOW,
         "includes": {"caps": ["CAP_SYS_TIME"]}},
        {"names": ["vhangup"], "action": ALLOW, "includes": {"caps": ["CAP_SYS_TTY_CONFIG"]}},
        {"names": ["get_mempolicy", "mbind", "set_mempolicy", "set_mempolicy_home_node"], "action": ALLOW,
         "includes": {"caps": ["CAP_SYS_NICE"]}},
        {"names": ["syslog"], "action": ALLOW, "includes": {"caps": ["CAP_SYSLOG"]}},
        {"names": ["bpf"], "action": ALLOW, "includes": {"caps": ["CAP_BPF"]}},
        {"names": ["perf_event_open"], "action": ALLOW, "includes": {"caps": ["CAP_PERFMON"]}},
    ],
}

# The vocabulary of a profile, as libseccomp's Python names it.
# libseccomp's action values (seccomp.h); ERRNO and TRACE carry a number in their low 16 bits.
ACTIONS = {"SCMP_ACT_ALLOW": 0x7FFF0000, "SCMP_ACT_ERRNO": 0x00050000, "SCMP_ACT_KILL": 0x00000000,
           "SCMP_ACT_KILL_THREAD": 0x00000000, "SCMP_ACT_KILL_PROCESS": 0x80000000, "SCMP_ACT_TRAP": 0x00030000,
           "SCMP_ACT_TRACE": 0x7FF00000, "SCMP_ACT_LOG": 0x7FFC0000}
# enum scmp_compare
OPS = {"SCMP_CMP_NE": 1, "SCMP_CMP_LT": 2, "SCMP_CMP_LE": 3, "SCMP_CMP_EQ": 4, "SCMP_CMP_GE": 5,
       "SCMP_CMP_GT": 6, "SCMP_CMP_MASKED_EQ": 7}
# This machine as Docker's "arches" name it (Go's GOARCH, in libseccomp's spelling), and as the OCI spec does.
MACHINES = {"x86_64": ("amd64", "SCMP_ARCH_X86_64"), "aarch64": ("arm64", "SCMP_ARCH_AARCH64")}


def default_profile(capabilities: Iterable[str]) -> dict:
    """The default filter of a container that holds these capabilities, in the OCI spec's form."""
    return for_container(DEFAULT, capabilities)


def load_profile(path: str, capabilities: Iterable[str] = ()) -> dict:
    """A profile in Docker's JSON format (--security-opt seccomp=FILE), for a container that holds
    these capabilities (a rule that needs one the caller did not name is left out: the safe side)."""
    import json

    try:
        with open(path) as f:
            profile = json.load(f)
    except OSError as e:
        raise MinidockerError(f"opening seccomp profile ({path}) failed: {e.strerror}") from None
    except ValueError as e:  # not JSON, or not text
        raise MinidockerError(f"decoding seccomp profile {path} failed: {e}") from None
    problem = _problem(profile)
    if problem:
        raise MinidockerError(f"decoding seccomp profile {path} failed: {problem}")
    return for_container(profile, capabilities)


def for_container(profile: dict, capabilities: Iterable[str]) -> dict:
    """The rules of a profile in Docker's format that apply to this container on this machine, as the
    OCI spec carries them (Docker's setupSeccomp).  A rule's "includes" must all hold: each listed
    capability held (Docker tests the bounding set), this architecture listed, the kernel at least
    minKernel.  Any one of its "excludes" that holds drops it."""
    caps = set(capabilities)
    machine = os.uname().machine
    arch, scmp_arch = MACHINES.get(machine, (machine, "SCMP_ARCH_" + machine.upper()))
    spec = {key: profile[key] for key in ("defaultAction", "defaultErrnoRet", "architectures", "flags")
            if profile.get(key) is not None}
    for entry in profile.get("archMap") or []:
        if entry["architecture"] == scmp_arch:
            spec["architectures"] = [scmp_arch, *(entry.get("subArchitectures") or [])]
    spec["syscalls"] = []
    for rule in profile.get("syscalls") or []:
        includes, excludes = rule.get("includes") or {}, rule.get("excludes") or {}
        if (arch in (excludes.get("arches") or []) or caps & set(excludes.get("caps") or [])
                or _kernel_at_least(excludes.get("minKernel"), default=False)):
            continue
        if ((includes.get("arches") and arch not in includes["arches"]) or not caps >= set(includes.get("caps") or [])
                or not _kernel_at_least(includes.get("minKernel"), default=True)):
            continue
        spec["syscalls"].append({"names": rule.get("names") or [rule["name"]], "action": rule["action"],
                                 **{key: rule[key] for key in ("errnoRet", "args") if rule.get(key) is not None}})
    return spec


def _kernel_at_least(version: str | None, default: bool) -> bool:
    """Is the running kernel at least "major.minor"?  (Docker's minKernel ignores the rest.)"""
    if not version:
        return default
    import re

    running = re.match(r"(\d+)\.(\d+)", os.uname().release)
    return bool(running) and tuple(map(int, running.groups())) >= tuple(map(int, version.split(".")))


def _problem(profile: object) -> str:
    """What is wrong with a profile (Docker's format, or the OCI spec's subset of it); "" if nothing.
    Checked before use, so that a bad file is one clear line rather than a failure halfway."""
    def number(value: object) -> bool:
        return value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 0)

    def names(value: object) -> bool:
        return value is None or (isinstance(value, list) and all(isinstance(v, str) for v in value))

    if not isinstance(profile, dict):
        return "a profile is a JSON object"
    if profile.get("defaultAction") not in ACTIONS:
        return f"defaultAction {profile.get('defaultAction')!r} is not one of {', '.join(ACTIONS)}"
    if profile.get("architectures") and profile.get("archMap"):
        return "both 'architectures' and 'archMap' are specified, use either"
    if not number(profile.get("defaultErrnoRet")):
        return "defaultErrnoRet is not an errno number"
    if not names(profile.get("architectures")) or not names(profile.get("flags")):
        return "architectures and flags are lists of names"
    if set(profile.get("flags") or []) - {"SECCOMP_FILTER_FLAG_TSYNC"}:  # TSYNC: there is one thread to filter
        return f"flags {profile['flags']}: only SECCOMP_FILTER_FLAG_TSYNC is supported"
    arch_map = profile.get("archMap") or []
    if not isinstance(arch_map, list) or not all(
            isinstance(a, dict) and isinstance(a.get("architecture"), str) and names(a.get("subArchitectures"))
            for a in arch_map):
        return 'archMap entries are {"architecture": "SCMP_ARCH_...", "subArchitectures": [...]}'
    rules = profile.get("syscalls") or []
    if not isinstance(rules, list):
        return "syscalls is a list of rules"
    for i, rule in enumerate(rules):
        where = f"syscalls[{i}]"
        if not isinstance(rule, dict):
            return f"{where} is not an object"
        if rule.get("name") and rule.get("names"):
            return f"{where}: both 'name' and 'names' are specified, use either"
        if not (rule.get("names") or isinstance(rule.get("name"), str)) or not names(rule.get("names")):
            return f"{where}: names is a list of system call names"
        if rule.get("action") not in ACTIONS:
            return f"{where}: action {rule.get('action')!r} is not one of {', '.join(ACTIONS)}"
        if not number(rule.get("errnoRet")):
            return f"{where}: errnoRet is not an errno number"
        args = rule.get("args") or []
        if not isinstance(args, list) or not all(
                isinstance(a, dict) and a.get("index") in range(6) and a.get("op") in OPS
                and number(a.get("value")) and number(a.get("valueTwo")) for a in args):
            return f"{where}: args are {{index 0-5, value, valueTwo, op}} with op one of {', '.join(OPS)}"
        for key in ("includes", "excludes"):
            condition = rule.get(key) or {}
            if not isinstance(condition, dict) or not names(condition.get("caps")) \
                    or not names(condition.get("arches")) or not (
                    condition.get("minKernel") is None or _is_version(condition["minKernel"])):
                return f'{where}: {key} takes "caps", "arches" and "minKernel": "<kernel>.<major>"'
    return ""


def _is_version(value: object) -> bool:
    parts = value.split(".") if isinstance(value, str) else []
    return len(parts) == 2 and all(part.isdigit() for part in parts)


class Program:
    """A seccomp filter as the kernel takes it: classic BPF, 8 bytes an instruction."""

    def __init__(self, code: bytes) -> None:
        self.code = code

    def load(self) -> None:
        """prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER): from here on, every call of this process and of
        what it execs is checked.  Docker leaves no_new_privs off unless asked (--security-opt
        no-new-privileges); without it the kernel wants CAP_SYS_ADMIN, which is still ours here."""
        import ctypes

        class SockFprog(ctypes.Structure):
            _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]

        program = SockFprog(len(self.code) // 8, self.code)
        try:
            host._call("prctl", 22, 2, ctypes.byref(program), 0, 0)
        except OSError as e:
            raise host.HostError("prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER)", e.strerror) from None


def compile_filter(profile: dict) -> Program:
    """The profile (the OCI spec's form) as a BPF program, loaded just before execve.

    libseccomp writes the program, as for runc.  For Docker's profile on three ABIs that takes it
    ~14 ms, more than the rest of a container start's security, so each program is kept in the state
    root and read back at the next start with the same profile (~0.3 ms).
    runc too loads libseccomp's program itself, after patching it (its patchbpf)."""
    problem = _problem(profile)  # a bundle's config.json reaches here unchecked
    if problem:
        raise MinidockerError(f"seccomp profile: {problem}")
    import json
    import zlib

    from lib import state

    libseccomp = _libseccomp()
    version = libseccomp.seccomp_version().contents
    # The program depends on the profile, on this file and on libseccomp's version: a change to any
    # of them is a new key.
    writers = [os.stat(__file__).st_size, os.stat(__file__).st_mtime_ns, version.major, version.minor, version.micro]
    key = json.dumps([profile, writers], sort_keys=True).encode()
    cached = os.path.join(state.root(), "seccomp", f"{zlib.crc32(key):08x}.bpf")
    try:
        with open(cached, "rb") as f:
            text = f.read()
        if text.startswith(key + b"\n"):  # the whole key, not only its checksum
            host.explain("security", f"seccomp: the profile's BPF, as libseccomp wrote it before: {cached}")
            return Program(text[len(key) + 1:])
    except OSError:
        pass
    code = _generate(libseccomp, profile)
    host.explain("security", f"seccomp: libseccomp compiles the profile: {len(code) // 8} BPF instructions")
    if os.path.isdir(state.root()):  # a cache, never a reason to create a state root (minidocker-runc)
        tmp = f"{cached}.{os.getpid()}.tmp"
        try:
            os.makedirs(os.path.dirname(cached), 0o700, exist_ok=True)
            with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as f:
                f.write(key + b"\n" + code)
            os.rename(tmp, cached)
        except OSError:  # a read-only state root, a full disk: the next start compiles again
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    return Program(code)


class _ArgCmp:  # struct scmp_arg_cmp, made by _libseccomp() once ctypes is loaded
    pass


def _libseccomp():
    """libseccomp itself, through ctypes: every Python can load it (Debian's
    python3-seccomp is built for the system's Python only), and minidocker
    needs eight of its functions."""
    import ctypes

    global _ArgCmp
    try:
        lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
    except OSError:
        raise MinidockerError("seccomp needs libseccomp: apt-get install libseccomp2 "
                              "(or run with --security-opt seccomp=unconfined)") from None

    class Version(ctypes.Structure):
        _fields_ = [("major", ctypes.c_uint), ("minor", ctypes.c_uint), ("micro", ctypes.c_uint)]

    class ArgCmp(ctypes.Structure):
        _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("datum_a", ctypes.c_uint64),
                    ("datum_b", ctypes.c_uint64)]

    _ArgCmp = ArgCmp
    u32, ctx = ctypes.c_uint32, ctypes.c_void_p
    for name, restype, argtypes in (
            ("seccomp_version", ctypes.POINTER(Version), []),
            ("seccomp_init", ctx, [u32]), ("seccomp_release", None, [ctx]),
            ("seccomp_arch_resolve_name", u32, [ctypes.c_char_p]), ("seccomp_arch_exist", ctypes.c_int, [ctx, u32]),
            ("seccomp_arch_add", ctypes.c_int, [ctx, u32]),
            ("seccomp_attr_set", ctypes.c_int, [ctx, ctypes.c_int, u32]),
            ("seccomp_syscall_resolve_name", ctypes.c_int, [ctypes.c_char_p]),
            ("seccomp_rule_add_array", ctypes.c_int, [ctx, u32, ctypes.c_int, ctypes.c_uint, ctypes.POINTER(ArgCmp)]),
            ("seccomp_export_bpf", ctypes.c_int, [ctx, ctypes.c_int])):
        function = getattr(lib, name)
        function.restype, function.argtypes = restype, argtypes
    return lib


def _generate(lib, profile: dict) -> bytes:
    """libseccomp's BPF for a profile, built rule by rule as runc builds it."""
    def action(name: str, errno: int | None) -> int:
        if name in ("SCMP_ACT_ERRNO", "SCMP_ACT_TRACE"):
            return ACTIONS[name] | ((EPERM if errno is None else errno) & 0xFFFF)
        return ACTIONS[name]

    def check(rc: int, what: str) -> None:
        if rc < 0:
            raise MinidockerError(f"seccomp: {what}: {os.strerror(-rc)}")

    default = action(profile["defaultAction"], profile.get("defaultErrnoRet"))
    flt = lib.seccomp_init(default)
    if not flt:
        raise MinidockerError("seccomp: libseccomp could not start a filter")
    try:
        for name in profile.get("architectures") or []:
            arch = lib.seccomp_arch_resolve_name(name.removeprefix("SCMP_ARCH_").lower().encode())
            if arch == 0:
                raise MinidockerError(f"seccomp: this machine's libseccomp does not know {name}")
            if lib.seccomp_arch_exist(flt, arch) != 0:
                check(lib.seccomp_arch_add(flt, arch), f"add architecture {name}")
        rules = profile["syscalls"]
        if sum(len(rule["names"]) for rule in rules) > 32:
            # runc's choice too: a binary search over the syscall numbers rather than one test after
            # another (SCMP_FLTATR_CTL_OPTIMIZE = 8, level 2).
            check(lib.seccomp_attr_set(flt, 8, 2), "optimize")
        for rule in rules:
            act = action(rule["action"], rule.get("errnoRet"))
            if act == default:
                continue  # libseccomp refuses a rule that changes nothing; runc skips it too
            args = rule.get("args") or []
            conditions = [_ArgCmp(a["index"], OPS[a["op"]], a.get("value", 0), a.get("valueTwo", 0)) for a in args]
            # Conditions on different arguments must all hold.  libseccomp cannot put two on one
            # argument: runc then makes each its own rule, any one of which matches.
            indexes = [a["index"] for a in args]
            groups = [[c] for c in conditions] if len(set(indexes)) < len(indexes) else [conditions]
            for syscall in rule["names"]:
                number = lib.seccomp_syscall_resolve_name(syscall.encode())
                if number == -1:  # __NR_SCMP_ERROR: a name this libseccomp does not know (newer than it):
                    continue      # skipped, as runc does
                for group in groups:
                    array = (_ArgCmp * len(group))(*group)
                    check(lib.seccomp_rule_add_array(flt, act, number, len(group), array), f"rule for {syscall}")
        with open(os.memfd_create("seccomp"), "wb+") as f:
            check(lib.seccomp_export_bpf(flt, f.fileno()), "export")
            f.seek(0)
            return f.read()
    finally:
        lib.seccomp_release(flt)
