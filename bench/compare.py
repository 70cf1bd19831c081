#!/usr/bin/python3
"""make bench-compare: netproxyd against HAProxy, nginx stream and the direct
path, side by side on this machine, in one run. The method is bench/README.md.

    bench/compare.py [--build DIR] [--only NAMES] [--modes MODES] [--repeat N]
                     [--seconds S] [--idle-conns N] [--out PREFIX]

It starts the backend (netproxy-bench serve) and every receiver once, then,
for each repetition, each measurement (mode) and each receiver in turn, runs
netproxy-bench against it and reads the receiver's CPU time and memory from
/proc. Interleaving receivers within each repetition spreads any drift of the
machine over all of them. It prints one table with medians, spread and
ratios, and the issue's targets, and writes it (with every raw report) to
PREFIX.md and PREFIX.json.

Standard library only; every step is bounded in time, and everything it
starts is stopped by PID, the namespace deleted, even on an error or Ctrl-C.
"""
import argparse
import datetime
import json
import os
import platform
import re
import resource
import selectors
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import lab as labmod
import report

REPO = Path(__file__).resolve().parents[1]
MODES = ["conn", "kept", "lat-kept", "lat-conn", "up", "down", "mixed", "idle", "shim"]
SOURCES = "127.0.0.2-127.0.0.250"        # the load generator's addresses
CLAIMS = "127.1.0.2-127.1.0.250"         # the clients the headers claim (see README)
CONCURRENCY = {"conn": 32, "kept": 32, "lat-kept": 1, "lat-conn": 1, "up": 1, "down": 1}
BENCH_MODE = {"conn": "conn", "kept": "kept", "lat-kept": "kept", "lat-conn": "conn",
              "up": "up", "down": "down"}
RLIMIT_FILES = 200000


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default="build", help="the build directory (default build)")
    ap.add_argument("--only", default="", help="receivers, comma-separated: " +
                    ", ".join(r.name for r in labmod.all_receivers(Path("."))))
    ap.add_argument("--modes", default="", help="measurements, comma-separated: " +
                    ", ".join(MODES))
    ap.add_argument("--repeat", type=int, default=5, help="runs of each (default 5)")
    ap.add_argument("--seconds", type=float, default=2.0,
                    help="measured seconds per run (default 2)")
    ap.add_argument("--idle-conns", type=int, default=5000,
                    help="connections held for the memory measurement (default 5000)")
    ap.add_argument("--streams", type=int, default=4,
                    help="bulk streams beside the probes of the mixed measurement (default 4)")
    ap.add_argument("--out", default=None, help="write PREFIX.md and PREFIX.json "
                    "(default BUILD/bench/compare)")
    ap.add_argument("--no-netns", action="store_true",
                    help="run on the host's loopback even as root (no transparent mode)")
    a = ap.parse_args()
    a.build = Path(a.build).resolve()
    names = [r.name for r in labmod.all_receivers(a.build)]
    a.only = [x for x in a.only.split(",") if x] or names
    a.modes = [x for x in a.modes.split(",") if x] or MODES
    for x in a.only:
        if x not in names:
            ap.error(f"--only: no receiver {x!r} (there are {', '.join(names)})")
    for x in a.modes:
        if x not in MODES:
            ap.error(f"--modes: no mode {x!r} (there are {', '.join(MODES)})")
    if not 1 <= a.repeat <= 20 or not 0.2 <= a.seconds <= 60 or not 1 <= a.idle_conns <= 50000 \
            or not 1 <= a.streams <= 1000:
        ap.error("--repeat 1..20, --seconds 0.2..60, --idle-conns 1..50000, --streams 1..1000")
    return a


def say(*parts):
    print(*parts, file=sys.stderr, flush=True)


def machine():
    """Date, CPU model, CPUs, kernel and load, for the results' heading."""
    model = "unknown CPU"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        m = re.search(r"^Model name:\s*(.+)$", out, re.M)
        model = m.group(1).strip() if m else model
    except (OSError, subprocess.TimeoutExpired):
        pass
    return {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "cpu": model, "cpus": os.cpu_count(), "kernel": platform.release(),
            "load": " ".join(f"{x:.2f}" for x in os.getloadavg())}


def versions(build):
    def first_line(argv):
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=10)
            return (r.stdout + r.stderr).strip().splitlines()[0]
        except (OSError, subprocess.TimeoutExpired, IndexError):
            return "not installed"
    return {"netproxyd": first_line([str(build / "netproxyd"), "--version"]),
            "haproxy": first_line([labmod.find_exe("haproxy") or "haproxy", "-v"]),
            "nginx": first_line([labmod.find_exe("nginx") or "nginx", "-v"])}


class Comparison:
    def __init__(self, args, lab):
        self.args, self.lab = args, lab
        self.bench = args.build / "netproxy-bench"
        self.runs = []          # every raw result, for the JSON file
        self.others = []        # per run: (CPU seconds of other processes, stolen, the run's length)
        self.samples = {}       # receiver -> metric -> {round: value}
        self.errors = {}        # receiver -> mode -> runs with errors

    def bench_argv(self, rec, mode):
        argv = [self.bench, "--json", "-m", BENCH_MODE[mode], "-c", CONCURRENCY[mode],
                "-d", self.args.seconds, "-w", 5, "--header", rec.header, "-b", SOURCES]
        if rec.header != "none":
            argv += ["--claim-src", CLAIMS]
        return argv + ["127.0.0.1", rec.port_for(mode)]

    def add(self, rec, mode, rnd, values, report_, extra):
        self.runs.append({"receiver": rec.name, "mode": mode, "round": rnd, "report": report_,
                          **extra})
        if report_ is None or report_["errors"]["total"]:
            self.errors.setdefault(rec.name, {}).setdefault(mode, 0)
            self.errors[rec.name][mode] += 1
        for key, value in values.items():
            if value is not None:
                self.samples.setdefault(rec.name, {}).setdefault(key, {})[rnd] = value

    def measure(self, rec, mode, rnd):
        """One run of mode against rec in round rnd; the receiver's CPU is read
        around it, and the machine's, to tell what other processes and the
        hypervisor took meanwhile."""
        pids = rec.pids(mode)
        ours = pids + [self.backend.proc.pid]
        cpu0, ours0 = labmod.cpu_seconds(pids), labmod.cpu_seconds(ours)
        busy0, stolen0 = labmod.machine_seconds()
        t0 = time.monotonic()
        r = self.lab.run(self.bench_argv(rec, mode), self.lab.load_cpu,
                         timeout=2 * self.args.seconds + 30)
        wall = time.monotonic() - t0
        cpu = labmod.cpu_seconds(pids) - cpu0
        busy, stolen = labmod.machine_seconds()
        busy, stolen, ours = busy - busy0, stolen - stolen0, labmod.cpu_seconds(ours) - ours0
        try:
            out = json.loads(r.stdout)
        except ValueError:
            say(f"  {rec.name} {mode}: no report (exit {r.returncode}): {r.stderr.strip()}")
            self.add(rec, mode, rnd, {}, None, {"stderr": r.stderr})
            return
        client = out["client_cpu_s"]["user"] + out["client_cpu_s"]["system"]
        others = max(0.0, busy - ours - client)
        self.others.append((others, stolen, wall))
        if out["errors"]["total"]:
            say(f"  {rec.name} {mode}: {out['errors']}")
        done, lat = out["completed"], out["latency_us"] or {}
        gib = out["stream_bytes"] / 2**30
        values = {}
        if mode in ("conn", "kept"):
            values[f"{mode}_rate"] = out["rate_per_s"]
            if pids and done:
                values[f"{mode}_cpu"] = cpu * 1e6 / done
        elif mode.startswith("lat-"):
            name = mode.replace("-", "_")
            for p in ("p50", "p99", "p999"):
                values[f"{name}_{p}"] = lat.get(p)
        else:
            values[f"{mode}_rate"] = out["throughput_mib_s"]
            if pids and gib:
                values[f"{mode}_cpu"] = cpu / gib
        self.add(rec, mode, rnd, values, out, {"receiver_cpu_s": cpu, "others_cpu_s": others,
                                               "stolen_s": stolen, "wall_s": wall})

    def measure_mixed(self, rec, rnd):
        """Bulk streams and, beside them, one client's small requests on a kept
        connection and one client's new connections, all through rec at once:
        what bulk transfers cost everyone else on the receiver's loop.

        The streams start first and end last; the probes run the measured
        seconds in between, one request (one connection) at a time, as
        lat-kept and lat-conn do: each latency is that of one request alone.
        (Paced probes were tried: once a stall put them behind their pace
        they never caught up, and their latencies measured the backlog.)
        """
        secs = self.args.seconds
        common = ["--json", "-w", 5, "--header", rec.header, "-b", SOURCES]
        if rec.header != "none":
            common += ["--claim-src", CLAIMS]
        target = ["127.0.0.1", rec.port_for("mixed")]
        bulk_argv = [self.bench, "-m", "up", "-c", self.args.streams, "-d", secs + 1.5,
                     *common, *target]
        probes = {"kept": [self.bench, "-m", "kept", "-c", 1, "-d", secs, *common, *target],
                  "conn": [self.bench, "-m", "conn", "-c", 1, "-d", secs, *common, *target]}
        pids = rec.pids("mixed")
        cpu0 = labmod.cpu_seconds(pids)
        procs = {"bulk": self.lab.popen(bulk_argv, self.lab.load_cpu)}
        time.sleep(0.5)         # the streams established and streaming
        for name, argv in probes.items():
            procs[name] = self.lab.popen(argv, self.lab.load_cpu)
        out = {}
        for name, p in procs.items():
            try:
                stdout, stderr = p.communicate(timeout=2 * secs + 30)
            except subprocess.TimeoutExpired:
                labmod.stop(p)
                stdout, stderr = "", "timed out"
            try:
                out[name] = json.loads(stdout)
            except ValueError:
                out[name] = None
                say(f"  {rec.name} mixed {name}: no report (exit {p.returncode}): "
                    f"{stderr.strip()}")
        cpu = labmod.cpu_seconds(pids) - cpu0
        values = {}
        for name in ("kept", "conn"):
            lat = (out[name] or {}).get("latency_us") or {}
            for p in ("p50", "p99", "p999"):
                values[f"mixed_{name}_{p}"] = lat.get(p)
        if out["bulk"]:
            values["mixed_bulk_rate"] = out["bulk"]["throughput_mib_s"]
        errors = sum(r["errors"]["total"] if r else 1 for r in out.values())
        for name, r in out.items():
            if r and r["errors"]["total"]:
                say(f"  {rec.name} mixed {name}: {r['errors']}")
        # One report stands for the run in the error count; all three are kept.
        summary = {"errors": {"total": errors}}
        self.add(rec, "mixed", rnd, values, summary,
                 {"reports": out, "receiver_cpu_s": cpu, "streams": self.args.streams})

    def measure_idle(self, rec, rnd):
        """RSS of the receiver with N idle relayed connections, less without, over N.

        The receiver is started afresh first: a process that has held N
        connections before keeps their freed memory and would grow by nothing.
        """
        rec.restart(self.lab, self.backend)
        wait_ready(self, rec)
        pids = rec.pids()
        before = labmod.rss_kib(pids)
        argv = [self.bench, "--json", "-m", "idle", "-n", self.args.idle_conns, "-c", 100,
                "-d", 60, "-w", 5, "--header", rec.header, "-b", SOURCES,
                "--claim-src", CLAIMS, "127.0.0.1", rec.port_for("idle")]
        p = self.lab.popen(argv, self.lab.load_cpu)
        line = read_line_until(p.stderr, "connections established", 60)
        m = re.search(r"idle: (\d+) of (\d+) connections established", line or "")
        after = None
        if m:
            time.sleep(0.5)     # let the last round trips' buffers be released
            after = labmod.rss_kib(rec.pids())
        p.send_signal(signal.SIGTERM)
        try:
            out, err = p.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            labmod.stop(p)
            out, err = "", "timed out"
        try:
            result = json.loads(out)
        except ValueError:
            result = None
        held = int(m.group(1)) if m else 0
        per_conn = (after - before) / held if m and held and pids else None
        if not m or held != self.args.idle_conns:
            say(f"  {rec.name} idle: {line or err}")
        self.add(rec, "idle", rnd, {"idle_rss": per_conn}, result,
                 {"rss_before_kib": before, "rss_after_kib": after, "held": held})

    def measure_shim(self):
        """accept() timed with and without the preload shim, in turns; the median added."""
        exe = self.args.build / "bench" / "accept-latency"
        shim = self.args.build / "libnetproxy_preload.so"
        if not exe.is_file() or not shim.is_file():
            say(f"shim: {exe} or {shim} is not built: skipped")
            return None
        port = self.lab.free_port()
        medians = {"plain": [], "shim": []}
        for _ in range(self.args.repeat):
            for kind in ("plain", "shim"):
                env = [] if kind == "plain" else ["env", f"LD_PRELOAD={shim}",
                                                  f"NETPROXY_PORTS={port}"]
                r = self.lab.run(env + [exe, "-p", port], self.lab.receiver_cpu, timeout=60)
                try:
                    out = json.loads(r.stdout)
                except ValueError:
                    say(f"shim: accept-latency failed: {r.stderr.strip()}")
                    return None
                if kind == "shim" and out["claimed_source_seen"] != out["accepts"]:
                    say("shim: the shim did not read the headers: skipped")
                    return None
                medians[kind].append(out["median_ns"])
                self.runs.append({"receiver": "shim", "mode": kind, "report": out})
        self.shim = {k: statistics.median(v) for k, v in medians.items()}
        return self.shim["shim"] - self.shim["plain"]


def read_line_until(stream, needle, timeout):
    """Read lines from a pipe until one contains needle, or timeout; that line or None."""
    sel = selectors.DefaultSelector()
    sel.register(stream, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not sel.select(deadline - time.monotonic()):
                break
            line = stream.readline()
            if not line:
                return None
            if needle in line:
                return line
    finally:
        sel.close()
    return None


def wait_ready(comparison, rec, deadline_s=10):
    """A receiver is ready when a short run through it to the backend succeeds
    (through each of its processes)."""
    deadline = time.monotonic() + deadline_s
    for mode in ("kept", "up"):
        argv = [comparison.bench, "--json", "-m", "kept", "-c", 1, "-n", 5, "-d", 2, "-w", 1,
                "--header", rec.header, "127.0.0.1", rec.port_for(mode)]
        while True:
            r = comparison.lab.run(argv, comparison.lab.load_cpu, timeout=10)
            if r.returncode == 0:
                break
            if time.monotonic() > deadline or any(p and p.poll() is not None
                                                  for p in (rec.proc, rec.bulk_proc)):
                raise RuntimeError(f"{rec.name} is not answering: {r.stdout}{r.stderr}\n"
                                   f"{comparison.lab.log(rec.name)}")
            time.sleep(0.1)


def disturbance(others, which):
    """How much CPU other processes (which=0) or the hypervisor (which=1) took
    during the runs, as a sentence."""
    shares = sorted(x[which] / x[2] for x in others if x[2] > 0)
    if not shares:
        return "no runs"
    return (f"median {100 * statistics.median(shares):.0f}% of one CPU, "
            f"the worst run {100 * shares[-1]:.0f}%")


def heading(info, args, lab, skipped, vers, others):
    pin = (f"receiver on CPU {lab.receiver_cpu}, load generator and backend on CPU "
           f"{lab.load_cpu}" if lab.receiver_cpu is not None else "no pinning (one CPU)")
    lines = [f"- date: {info['date']}",
             f"- machine: {info['cpu']}, {info['cpus']} CPUs, Linux {info['kernel']}",
             f"- load average at the start: {info['load']}; at the end: {info['load_end']}",
             f"- CPU taken by other processes during the runs: {disturbance(others, 0)}; "
             f"stolen by the hypervisor: {disturbance(others, 1)}",
             f"- {args.repeat} runs of each, {args.seconds:g} s each, interleaved; "
             f"{args.idle_conns} idle connections; {args.streams} bulk streams in mixed; {pin}",
             f"- {'in a network namespace of its own' if lab.ns else 'on the host loopback'}",
             f"- {vers['netproxyd']}; {vers['haproxy']}; {vers['nginx']}"]
    lines += [f"- skipped: {name}: {why}" for name, why in skipped]
    return "\n".join(lines)


def run(args):
    # Every process started inherits the limit: a relay holds two descriptors
    # per idle connection, so the idle measurement must fit in it.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (RLIMIT_FILES, RLIMIT_FILES))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    files = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if args.idle_conns > (files - 200) * 2 // 5 - 100:     # see Lab.max_conns
        args.idle_conns = (files - 200) * 2 // 5 - 100
        say(f"--idle-conns lowered to {args.idle_conns}: the limit on descriptors is {files}")
    for exe in ("netproxy-bench",):
        if not (args.build / exe).is_file():
            sys.exit(f"compare: {args.build / exe} is not built: run make first")
    use_netns = os.geteuid() == 0 and not args.no_netns and labmod.find_exe("ip")
    cpus = os.cpu_count() or 1
    load_cpu, receiver_cpu = (0, cpus - 1) if cpus >= 2 else (None, None)
    info, vers = machine(), versions(args.build)
    started = time.monotonic()

    lab = labmod.Lab(use_netns, load_cpu, receiver_cpu, files)
    try:
        comparison = Comparison(args, lab)
        # The backend lives as long as the whole run may: bounded even if we die.
        backend = comparison.backend = labmod.Backend(lab, comparison.bench, lifetime=1800)
        receivers, skipped = [], []
        for rec in labmod.all_receivers(args.build):
            if rec.name not in args.only:
                continue
            why = rec.missing()
            if rec.needs_root and not lab.ns:
                why = why or "needs root and a network namespace (run as root)"
            if why:
                skipped.append((rec.label, why))
                say(f"skipped: {rec.name}: {why}")
                continue
            rec.start(lab, backend)
            wait_ready(comparison, rec)
            receivers.append(rec)
            say(f"ready: {rec.name} on port {rec.port}")

        modes = [m for m in args.modes if m != "shim"]
        for rep in range(args.repeat):
            for mode in modes:
                for rec in receivers:
                    say(f"run {rep + 1}/{args.repeat}: {mode:8} {rec.name}")
                    if mode == "idle":
                        if rec.name != "direct":
                            comparison.measure_idle(rec, rep)
                    elif mode == "mixed":
                        comparison.measure_mixed(rec, rep)
                    else:
                        comparison.measure(rec, mode, rep)
        shim_added = comparison.measure_shim() if "shim" in args.modes else None

        info["load_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
        text = ["# netproxyd, HAProxy and nginx stream side by side", "",
                heading(info, args, lab, skipped, vers, comparison.others), "",
                report.table(comparison.samples, receivers, comparison.errors)]
        if shim_added is not None:
            text += ["", f"accept() under the preload shim: median {comparison.shim['shim']:.0f} ns, "
                     f"without: {comparison.shim['plain']:.0f} ns, added: {shim_added:.0f} ns"]
        text += ["", "## Targets (issues 7 and 12)", "",
                 report.targets(comparison.samples, receivers, shim_added), "",
                 f"(the whole comparison took {time.monotonic() - started:.0f} s)"]
        out = "\n".join(text) + "\n"
        print(out)
        prefix = Path(args.out) if args.out else args.build / "bench" / "compare"
        prefix.parent.mkdir(parents=True, exist_ok=True)
        prefix.with_suffix(".md").write_text(out)
        prefix.with_suffix(".json").write_text(json.dumps(
            {"machine": info, "versions": vers, "settings": {k: str(v) for k, v in vars(args).items()},
             "skipped": skipped, "runs": comparison.runs, "samples": comparison.samples,
             "namespace": lab.ns, "pids": [p.pid for p in lab.procs]}, indent=1))
        say(f"written: {prefix.with_suffix('.md')} and {prefix.with_suffix('.json')}")
    finally:
        lab.close()


def interrupted(signum, frame):
    raise KeyboardInterrupt


def main():
    args = parse_args()
    # SIGTERM as Ctrl-C: either way the lab is closed on the way out. SIGINT is
    # set too, since a shell starts background jobs with it ignored.
    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGINT, interrupted)
    try:
        run(args)
    except KeyboardInterrupt:
        sys.exit("compare: interrupted; everything it started is stopped")
    except (RuntimeError, subprocess.SubprocessError, OSError) as e:
        sys.exit(f"compare: {e}")


if __name__ == "__main__":
    main()
