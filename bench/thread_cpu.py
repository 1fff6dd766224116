#!/usr/bin/env python3
"""Where a running engine's CPU goes, per thread, while a command (a load) runs.

usage: bench/thread_cpu.py PID -- COMMAND [ARGS...]

Reads /proc/PID/task/*/{comm,stat,status} before and after COMMAND and prints, for each
thread that ran, its user and system CPU seconds and its voluntary and involuntary
context switches; then the totals and, when COMMAND printed `ringpay load --json`'s
summary as its last line, the CPU and context switches per answered request and the
load's own summary (rps, latency). Threads of the engine are named: rp-reactor-N,
rp-shard-N, rp-wal (the log's syncer), rp-ckpt (the checkpointer); kernel io_uring
workers appear as iou-wrk-TID. The load generator's own CPU is not counted.

Example (docs/benchmarks.md section 8, "Where the CPU goes"):
  ringpay serve --data /tmp/d --listen 127.0.0.1:18080 --access-log off &
  bench/thread_cpu.py $! -- ringpay load --target 127.0.0.1:18080 --connections 64 \\
      --duration-s 10 --keys-data /tmp/d --merchants 1000 --json
"""
import json
import os
import subprocess
import sys
import time


def snapshot(pid):
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            base = f"/proc/{pid}/task/{tid}"
            comm = open(f"{base}/comm").read().strip()
            stat = open(f"{base}/stat").read()
            fields = stat[stat.rfind(")") + 2:].split()
            vol = invol = 0
            for line in open(f"{base}/status"):
                if line.startswith("voluntary_ctxt_switches"):
                    vol = int(line.split()[1])
                elif line.startswith("nonvoluntary_ctxt_switches"):
                    invol = int(line.split()[1])
            out[tid] = (comm, int(fields[11]), int(fields[12]), vol, invol)
        except (FileNotFoundError, ProcessLookupError):
            pass  # a thread that ended meanwhile
    return out


def main():
    if len(sys.argv) < 4 or sys.argv[2] != "--":
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    pid, cmd = int(sys.argv[1]), sys.argv[3:]
    hz = os.sysconf("SC_CLK_TCK")
    before = snapshot(pid)
    t0 = time.monotonic()
    r = subprocess.run(cmd, capture_output=True, text=True)
    after = snapshot(pid)
    wall = time.monotonic() - t0
    summary = None
    lines = r.stdout.strip().splitlines()
    if lines:
        try:
            summary = json.loads(lines[-1])
        except ValueError:
            pass
    print(f"{'thread':16s} {'tid':>8s} {'user s':>8s} {'sys s':>8s} {'vol cs':>9s} {'invol cs':>9s}")
    tot = [0.0, 0.0, 0, 0]
    for tid in sorted(after, key=lambda t: (after[t][0], int(t))):
        if tid not in before:
            continue
        name, u0, s0, v0, n0 = before[tid]
        _, u1, s1, v1, n1 = after[tid]
        d = [(u1 - u0) / hz, (s1 - s0) / hz, v1 - v0, n1 - n0]
        if not any(d):
            continue
        tot = [a + b for a, b in zip(tot, d)]
        print(f"{name:16s} {tid:>8s} {d[0]:8.2f} {d[1]:8.2f} {d[2]:9d} {d[3]:9d}")
    print(f"{'total':16s} {'':>8s} {tot[0]:8.2f} {tot[1]:8.2f} {tot[2]:9d} {tot[3]:9d}"
          f"   over {wall:.1f} s: {(tot[0] + tot[1]) / wall:.2f} CPUs busy")
    if summary and summary.get("ok"):
        n = summary["ok"]
        print(f"per answered request: {1e6 * (tot[0] + tot[1]) / n:.1f} us of engine CPU "
              f"({1e6 * tot[0] / n:.1f} user, {1e6 * tot[1] / n:.1f} system), "
              f"{(tot[2] + tot[3]) / n:.2f} context switches")
        print("load:", json.dumps({k: summary.get(k) for k in ("requests", "ok", "rps", "latency_us")}))
    if r.returncode:
        print(f"the command exited with {r.returncode}: {r.stderr[-400:]}", file=sys.stderr)
    return r.returncode


if __name__ == "__main__":
    sys.exit(main())
