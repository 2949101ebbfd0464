"""seccomp: a filter on system calls, checked by the kernel on every call.

Namespaces hide the host and capabilities split root's powers, but the
kernel's system-call surface stays whole: a bug in any of ~450 calls is a
way out.  A seccomp filter (a small BPF program the kernel runs on each
call) lets a container make only the calls it needs.  Some are refused
even to a process that holds the capability: mount, unshare, setns,
keyctl, bpf, ptrace, reboot, ...

The filter is compiled by libseccomp (python3-seccomp), which knows each
architecture's syscall numbers and its compat ABIs; writing the BPF by hand
means getting x32 and i386 calls through int 0x80 right, or being bypassed
by them.  Profiles are in Docker's JSON format (--security-opt seccomp=FILE).
"""

from __future__ import annotations

from lib import host
from lib.host import MinidockerError

# Refused with EPERM by the default filter (Docker's profile refuses these and more).
DENIED = ["mount", "umount2", "unshare", "setns", "pivot_root", "chroot", "keyctl", "add_key", "request_key",
          "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module", "reboot", "swapon",
          "swapoff", "bpf", "perf_event_open", "ptrace", "process_vm_readv", "process_vm_writev", "kcmp",
          "clock_settime", "settimeofday", "clock_adjtime", "open_by_handle_at", "name_to_handle_at",
          "userfaultfd", "acct", "quotactl", "lookup_dcookie", "iopl", "ioperm", "syslog", "uselib", "ustat",
          "sysfs", "vhangup", "fsopen", "fsmount", "fsconfig", "fspick", "move_mount", "open_tree",
          "mount_setattr", "personality", "get_mempolicy", "set_mempolicy", "mbind", "move_pages"]
# clone(2) may make processes, not namespaces: refused when its flags ask for one.
CLONE_NEWFLAGS = {"CLONE_NEWNS": 0x20000, "CLONE_NEWCGROUP": 0x2000000, "CLONE_NEWUTS": 0x4000000,
                  "CLONE_NEWIPC": 0x8000000, "CLONE_NEWUSER": 0x10000000, "CLONE_NEWPID": 0x20000000,
                  "CLONE_NEWNET": 0x40000000}
EPERM, ENOSYS = 1, 38


def default_profile(capabilities: list[str]) -> dict:
    """The default filter, in the OCI spec's form (Docker's profile format)."""
    rules = [{"names": DENIED, "action": "SCMP_ACT_ERRNO", "errnoRet": EPERM},
             {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS}]  # glibc falls back to clone
    rules += [{"names": ["clone"], "action": "SCMP_ACT_ERRNO", "errnoRet": EPERM,
               "args": [{"index": 0, "value": flag, "valueTwo": flag, "op": "SCMP_CMP_MASKED_EQ"}]}
              for flag in CLONE_NEWFLAGS.values()]
    return {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": rules}


def load_profile(path: str) -> dict:
    """A seccomp profile in Docker's JSON format (--security-opt seccomp=FILE)."""
    import json

    try:
        with open(path) as f:
            profile = json.load(f)
    except (OSError, ValueError) as e:
        raise MinidockerError(f"opening seccomp profile ({path}) failed: {e}") from None
    if "defaultAction" not in profile:
        raise MinidockerError(f"seccomp profile {path}: no defaultAction")
    syscalls = []
    for rule in profile.get("syscalls", []):
        names = rule.get("names") or ([rule["name"]] if "name" in rule else [])
        syscalls.append({k: v for k, v in {**rule, "names": names}.items() if k in
                         ("names", "action", "errnoRet", "args")})
    return {"defaultAction": profile["defaultAction"], "syscalls": syscalls}


def compile_filter(profile: dict):
    """Build the filter with libseccomp; loading it waits until just before execve."""
    seccomp = host.system_module("seccomp", "python3-seccomp (or run with --security-opt seccomp=unconfined)")

    def action(rule: dict):
        name = rule["action"]
        if name == "SCMP_ACT_ERRNO":
            return seccomp.ERRNO(rule.get("errnoRet", EPERM))
        return {"SCMP_ACT_ALLOW": seccomp.ALLOW, "SCMP_ACT_KILL": seccomp.KILL, "SCMP_ACT_TRAP": seccomp.TRAP,
                "SCMP_ACT_LOG": seccomp.LOG, "SCMP_ACT_KILL_PROCESS": seccomp.KILL_PROCESS,
                "SCMP_ACT_KILL_THREAD": seccomp.KILL}.get(name, seccomp.KILL)

    ops = {"SCMP_CMP_NE": seccomp.NE, "SCMP_CMP_LT": seccomp.LT, "SCMP_CMP_LE": seccomp.LE,
           "SCMP_CMP_EQ": seccomp.EQ, "SCMP_CMP_GE": seccomp.GE, "SCMP_CMP_GT": seccomp.GT,
           "SCMP_CMP_MASKED_EQ": seccomp.MASKED_EQ}
    flt = seccomp.SyscallFilter(action({"action": profile["defaultAction"]}))
    # libseccomp sets no_new_privs before loading, by default.  Docker leaves it
    # off unless asked (--security-opt no-new-privileges); with CAP_SYS_ADMIN,
    # still ours at load time, the kernel does not require it.
    flt.set_attr(seccomp.Attr.CTL_NNP, 0)
    for rule in profile["syscalls"]:
        args = [seccomp.Arg(a["index"], ops[a["op"]], a["value"], a.get("valueTwo", 0))
                for a in rule.get("args", [])]
        for name in rule["names"]:
            try:
                flt.add_rule(action(rule), name, *args)
            except (RuntimeError, ValueError):
                continue  # a call this kernel or architecture does not have
    return flt
