#!/usr/bin/env python3
"""Instructions per operation of a build older than `cargo xtask bench --instructions`.

Why this exists: builds from before `--instructions` (and before the config
keys today's `cluster up` writes, which they refuse) can only be measured with
their own `xtask bench`. This script runs that old bench unchanged, with the
old build's `shoal-node` and `shoal-gateway` replaced by wrappers that start
them under callgrind (anti-entropy off, as `--instructions` does), zeroes the
servers' counters when the bench has preloaded its keys, and reads the dumps
callgrind writes as the bench stops the servers after the phase (the phase
plus a graceful stop; the bench stops them too soon after its summary for a
dump to be asked for). One phase per run: `--read-ratio 0` for
writes, `--read-ratio 1` for reads. Nothing is subtracted (the old bench has no
idle pause), so compare builds of one era with each other.

Usage (TARGET holds the old build's release binaries, xtask included):
    old-build-instructions.py WORKTREE TARGET {writes|reads}
"""

import os
import re
import shutil
import subprocess
import sys
import time

WRAPPER = """#!/bin/sh
export SHOAL_ANTI_ENTROPY__ENABLED=false
exec valgrind --tool=callgrind --callgrind-out-file={out}/callgrind.%p "$0.real" "$@"
"""


def wrap(release, out):
    for name in ("shoal-node", "shoal-gateway"):
        path = os.path.join(release, name)
        real = path + ".real"
        if not os.path.exists(real):
            shutil.move(path, real)
        with open(path, "w") as f:
            f.write(WRAPPER.format(out=out))
        os.chmod(path, 0o755)


def server_pids():
    out = subprocess.run(
        ["pgrep", "-f", r"shoal-(node|gateway)\.real"], capture_output=True, text=True
    ).stdout
    return [int(p) for p in out.split()]


def control(pids, arg):
    for pid in pids:
        r = subprocess.run(["callgrind_control", arg, str(pid)], capture_output=True,
                           text=True, timeout=60)
        if r.returncode != 0 or "OK" not in r.stdout:
            sys.exit(f"callgrind_control {arg} {pid} failed: {r.stdout} {r.stderr}")


def totals(out, pids):
    """Each process's final dump (written as the bench stops it): its counts
    since the zeroing, so the phase plus a graceful stop."""
    total = 0
    for pid in pids:
        with open(f"{out}/callgrind.{pid}") as f:
            total += next(int(l.split()[1]) for l in f if l.startswith("totals:"))
    return total


def main():
    worktree, target, phase = sys.argv[1], os.path.abspath(sys.argv[2]), sys.argv[3]
    ratio = {"writes": "0", "reads": "1"}[phase]
    out = os.path.join(target, "callgrind-old")
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    wrap(os.path.join(target, "release"), out)
    env = dict(os.environ, CARGO_TARGET_DIR=target, XTASK_BENCH_RELEASE="1")
    cmd = [os.path.join(target, "release", "xtask"), "bench", "--no-build", "--keys", "1000",
           "--clients", "10", "--idle-samples", "0", "--duration", "20", "--read-ratio", ratio]
    bench = subprocess.Popen(cmd, cwd=worktree, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    pids, started, ops = [], None, None
    log = open(os.path.join(out, "bench.log"), "w")
    op = "writes" if phase == "writes" else "reads"
    for line in bench.stdout:
        if "preloaded" in line and not pids:
            pids = server_pids()
            control(pids, "--zero")
            started = time.time()
        m = re.match(rf"\s+\S+: {op} \S+/s .*\((\d+) ops\)", line)
        if m and pids and ops is None:
            ops = int(m.group(1))
            wall = time.time() - started
        if re.search(r"error \d", line):
            sys.stdout.write(line)
        log.write(line)
    bench.wait()
    if ops is None:
        sys.exit("the bench printed no phase summary")
    n = totals(out, pids)
    print(f"{phase}: {ops} ops in {wall:.1f} s, {len(pids)} server processes: "
          f"{n / ops / 1e3:.0f} k instructions per op (raw)")


if __name__ == "__main__":
    main()
