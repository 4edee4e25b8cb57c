#!/usr/bin/env python3
"""Instructions per call, counted by valgrind's callgrind: a measure of CPU
work that does not depend on the noise of a shared machine (it leaves out
the kernel, cache misses and waiting; BENCHMARKS.md has the timed runs).

Each figure is a difference of two runs, (Ir(big) - Ir(small)) divided by
the difference in calls made (warm-up included), so that start-up,
connection set-up and shutdown cancel out.

  callgrind.py servers [--registry R ...] [--servers A,B,...] [--client C]
                       [--workloads w1,w2] [--baseline B]
      Runs each server under callgrind against the same client (default
      rust-capnp-rpc's, so that every server sees the same traffic) and
      prints the server's instructions per call, per workload.

  callgrind.py actor-costs
      Runs `target/release/examples/actor-costs CALLS --only CASE IMPL` under
      callgrind for each case and both implementations (build it first:
      `cargo build --release --example actor-costs`).

Python 3 standard library and valgrind only. Run from the workspace root.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile

# Calls (small, big) per workload: the client's --calls (callback: --count).
SIZES = {
    "latency": (1000, 3000),
    "throughput": (5000, 15000),
    "noop": (5000, 15000),
    "pipeline": (100, 300),
    "callback": (1000, 3000),
    "connections": (2000, 6000),
    "payload": (10, 30),
}
EXTRA = {"connections": ["--conns", "50"]}


def units(workload, calls):
    """Calls the client makes in all: the timed ones and the warm-up's
    (CONTRACT.md: min(1000, ceil(N/10)); for `connections` one per
    connection, the same in both runs, so it cancels out)."""
    if workload == "connections":
        return calls
    return calls + min(1000, -(-calls // 10))


def total_instructions(path):
    """The Ir total of a callgrind output file."""
    with open(path) as f:
        for line in f:
            if line.startswith("totals:") or line.startswith("summary:"):
                return int(line.split()[1])
    raise RuntimeError(f"no totals in {path}")


def callgrind(cmd, out):
    return ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"] + cmd


def load_registry(paths):
    impls = {}
    for path in paths:
        with open(path) as f:
            entries = json.load(f)
        base = os.path.dirname(os.path.abspath(path))
        for name, entry in entries.items():
            if name.startswith("_"):
                continue
            resolve = lambda cmd: [
                os.path.normpath(os.path.join(base, c)) if c.startswith(".") else c for c in cmd
            ]
            impls[name] = {"server": resolve(entry["server"]), "client": resolve(entry["client"])}
    return impls


def server_run(server, client, workload, calls, tmp):
    """Ir of `server` serving one client run of `workload` with `calls`."""
    out = os.path.join(tmp, "server.out")
    proc = subprocess.Popen(
        callgrind(server + ["127.0.0.1:0"], out),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        port = line.strip().rsplit(":", 1)[-1]
        count = "--count" if workload == "callback" else "--calls"
        args = [count, str(calls)] + EXTRA.get(workload, [])
        subprocess.run(
            client + ["127.0.0.1:" + port, workload] + args,
            check=True,
            capture_output=True,
            timeout=900,
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    return total_instructions(out)


def servers(args):
    impls = load_registry(args.registry)
    client = impls[args.client]["client"]
    names = args.servers.split(",")
    workloads = args.workloads.split(",")
    print(f"server instructions per call (client: {args.client}; callgrind, Ir)\n")
    base = names.index(args.baseline)
    print("| workload | " + " | ".join(names) + f" | {names[-1]} / {args.baseline} |")
    print("| --- |" + " ---: |" * (len(names) + 1))
    with tempfile.TemporaryDirectory() as tmp:
        for workload in workloads:
            small, big = SIZES[workload]
            row = []
            for name in names:
                server = impls[name]["server"]
                a = server_run(server, client, workload, small, tmp)
                b = server_run(server, client, workload, big, tmp)
                row.append((b - a) / (units(workload, big) - units(workload, small)))
            ratio = row[-1] / row[base]
            cells = " | ".join(f"{r:,.0f}" for r in row)
            print(f"| {workload} | {cells} | {ratio:.2f} |", flush=True)


def actor_costs(_args):
    program = "target/release/examples/actor-costs"
    cases = ["local call", "in-memory round trip", "in-memory, 128 in flight"]
    small, big = 2000, 6000
    print("instructions per call, whole process (callgrind, Ir)\n")
    print("| case | capnp-actix | capnp-rpc | ratio (ours/theirs) |")
    print("| --- | ---: | ---: | ---: |")
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "costs.out")
        for i, case in enumerate(cases):
            per_call = {}
            for who in ("ours", "theirs"):
                irs = []
                for calls in (small, big):
                    cmd = [program, str(calls), "--only", str(i), who]
                    subprocess.run(callgrind(cmd, out), check=True, capture_output=True, timeout=900)
                    irs.append(total_instructions(out))
                per_call[who] = (irs[1] - irs[0]) / ((big - small) * 1.1)
            ours, theirs = per_call["ours"], per_call["theirs"]
            print(f"| {case} | {ours:,.0f} | {theirs:,.0f} | {ours / theirs:.2f} |", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("servers")
    s.add_argument("--registry", action="append", default=[])
    s.add_argument("--servers", default="cpp,rust-capnp-rpc,capnp-actix")
    s.add_argument("--baseline", default="rust-capnp-rpc")
    s.add_argument("--client", default="rust-capnp-rpc")
    s.add_argument("--workloads", default=",".join(SIZES))
    sub.add_parser("actor-costs")
    args = parser.parse_args()
    if args.command == "servers":
        if not args.registry:
            sys.exit("--registry: give the anchors' and ours (see BENCHMARKS.md)")
        servers(args)
    else:
        actor_costs(args)


if __name__ == "__main__":
    main()
