#!/usr/bin/env python3
"""Time a container start against the raw kernel, and against other engines.

    sudo bench/bench.py [--runs 21] [--quick]

Runs side by side, in one run:
* the raw baseline: unshare(1) + chroot, the least a container can cost;
* minidocker: run --rm (bridge network and --network none), run -d, exec,
  the host-side memory of a detached container's monitor, ps -a at 10 and
  at 1000 containers (--quick skips the 1000);
* podman, docker and crun, where installed and working.

minidocker runs in a network namespace and state root made for the bench and
removed after it, so its bridge and NAT rules never touch this machine's own
network.  Prints medians and ratios as a Markdown table (docs/performance.md).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NETNS = f"mdbench-{os.getpid()}"


def median_ms(argv: list[str], runs: int, setup=None) -> float:
    times = []
    for _ in range(runs):
        if setup:
            setup()
        start = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def uss_kib(pid: int) -> int:
    """Unique set size: the memory that would be freed if the process died."""
    with open(f"/proc/{pid}/smaps_rollup") as f:
        fields = dict(line.split(":", 1) for line in f if ":" in line)
    return sum(int(fields[k].split()[0]) for k in ("Private_Clean", "Private_Dirty"))


def works(argv: list[str]) -> bool:
    try:
        return subprocess.run(argv, capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=21)
    parser.add_argument("--quick", action="store_true", help="skip ps -a with 1000 containers")
    args = parser.parse_args()

    root = tempfile.mkdtemp(prefix="minidocker-bench-")
    rootfs = os.path.join(root, "busybox-rootfs")
    subprocess.run([os.path.join(TOP, "fixtures", "busybox-rootfs.sh"), rootfs], check=True)
    subprocess.run(["ip", "netns", "add", NETNS], check=True)
    subprocess.run(["ip", "-n", NETNS, "link", "set", "lo", "up"], check=True)
    os.environ["MINIDOCKER_ROOT"] = os.path.join(root, "state")
    md = ["nsenter", f"--net=/run/netns/{NETNS}", os.path.join(TOP, "minidocker.py")]
    rows: list[tuple[str, float, str]] = []
    try:
        subprocess.run([*md, "run", "--rm", "busybox", "true"], check=True)  # image and bridge made once
        base = median_ms(["unshare", "--pid", "--fork", "--mount", "--uts", "--ipc", "--net", "--mount-proc",
                          "chroot", rootfs, "/bin/true"], args.runs)
        rows.append(("raw baseline: unshare + chroot /bin/true", base, "1.0×"))

        def add(label: str, ms: float) -> None:
            rows.append((label, ms, f"{ms / base:.1f}×"))

        add("minidocker run --rm busybox true (bridge)", median_ms([*md, "run", "--rm", "busybox", "true"], args.runs))
        add("minidocker run --rm --network none busybox true",
            median_ms([*md, "run", "--rm", "--network", "none", "busybox", "true"], args.runs))
        add("minidocker run -d busybox sleep", median_ms([*md, "run", "-d", "busybox", "sleep", "600"], args.runs))
        ids = subprocess.run([*md, "ps", "-aq"], capture_output=True, text=True).stdout.split()
        subprocess.run([*md, "rm", "-f", *ids], capture_output=True, check=False)
        # A detached container's host-side memory is its monitor's (conmon's)
        # USS.  Alone, conmon's pages of its libraries (glib) count as its
        # own; from the second container on they are shared, and each costs
        # only its private dirty memory.
        monitors = []
        for _ in range(3):
            cid = subprocess.run([*md, "run", "-d", "busybox", "sleep", "600"], capture_output=True, text=True,
                                 check=True).stdout.strip()
            with open(os.path.join(root, "state", "containers", cid, "container.json")) as f:
                import json

                monitors.append(json.load(f)["Minidocker"]["MonitorPid"])
            if len(monitors) == 1:
                alone_kib = uss_kib(monitors[0])
        each_kib = statistics.median(uss_kib(m) for m in monitors)
        add("minidocker exec CONTAINER true", median_ms([*md, "exec", cid, "true"], args.runs))
        ids = subprocess.run([*md, "ps", "-aq"], capture_output=True, text=True).stdout.split()
        subprocess.run([*md, "rm", "-f", *ids], capture_output=True, check=False)
        for _ in range(10):
            subprocess.run([*md, "create", "busybox", "true"], capture_output=True, check=True)
        ps10 = median_ms([*md, "ps", "-a"], args.runs)
        add("minidocker ps -a, 10 containers", ps10)
        if not args.quick:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(4) as pool:
                list(pool.map(lambda _: subprocess.run([*md, "create", "busybox", "true"], capture_output=True),
                              range(990)))
            ps1000 = median_ms([*md, "ps", "-a"], max(5, args.runs // 4))
            add("minidocker ps -a, 1000 containers", ps1000)
        for name, argv in (("podman", ["podman", "run", "--rm", "busybox", "true"]),
                           ("docker", ["docker", "run", "--rm", "busybox", "true"])):
            if shutil.which(name) and works(argv):
                add(f"{name} run --rm busybox true", median_ms(argv, max(5, args.runs // 3)))
        if shutil.which("podman"):  # podman with minidocker-runc as its OCI runtime
            image = f"minidocker-bench-{os.getpid()}"
            podman = ["nsenter", f"--net=/run/netns/{NETNS}", "podman", "--cgroup-manager", "cgroupfs",
                      "--runtime", os.path.join(TOP, "minidocker-runc")]
            tar = subprocess.run(["tar", "-C", rootfs, "-c", "."], capture_output=True, check=True).stdout
            subprocess.run([*podman, "import", "-", image], input=tar, capture_output=True, check=False)
            argv = [*podman, "run", "--rm", "--network", "none", "--ulimit", "nofile=1024:1024",
                    "--ulimit", "nproc=4096:4096", image, "true"]
            if works(argv):
                add("podman --runtime minidocker-runc run --rm --network none true",
                    median_ms(argv, max(5, args.runs // 3)))
            subprocess.run([*podman, "rmi", "-f", image], capture_output=True, check=False)
        print(f"\n{os.uname().machine}, {os.cpu_count()} CPUs, kernel {os.uname().release}, "
              f"median of {args.runs} runs\n")
        print("| what | median | × baseline |\n|---|---:|---:|")
        for label, ms, ratio in rows:
            print(f"| {label} | {ms:.1f} ms | {ratio} |")
        print(f"| host-side memory of a detached container (monitor USS), alone | {alone_kib} KiB | |")
        print(f"| host-side memory of a detached container (monitor USS), each of 3 | {each_kib:.0f} KiB | |")
        if not args.quick:
            print(f"\nps -a at 1000 containers / at 10: {ps1000 / ps10:.2f}×")
    finally:
        ids = subprocess.run([*md, "ps", "-aq", "--no-trunc"], capture_output=True, text=True).stdout.split()
        for chunk in range(0, len(ids), 100):
            subprocess.run([*md, "rm", "-f", *ids[chunk:chunk + 100]], capture_output=True, check=False)
        subprocess.run([*md, "network", "prune"], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", NETNS], check=False)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
