#!/usr/bin/env python3
"""make bench-prosody: Prosody's CPU per proxied connection with our
mod_net_proxy, with the original module, and without a proxy at all; and what
a header costs to parse in Lua, the original's against libnetproxy's.

    bench/prosody.py --build BUILD --original PATH [--conns N] [--repeat R]
                     [--log-level LEVEL]

Two Prosody 0.12 instances (Debian's package, as the prosody user) run side by
side in a network namespace made here: one loads our module (this tree's
prosody/, the binding from BUILD), the other the original module from PATH,
a file fetched for the benchmark into a directory outside the tree (see
bench/README.md; it is never part of the tree). Both map a PROXY port to c2s
and keep their own c2s port open.

A round is four runs, interleaved so that drift on a shared machine falls on
all of them alike: N connections to our PROXY port, N to the original's, N
straight to each instance's c2s port. A connection is what HAProxy relays for
a client: a v2 PROXY header and a c2s stream header in one segment (none on
the direct path), Prosody's stream features back, the stream closed. The
client is one Python thread, one connection at a time, so Prosody is never
the bottleneck of anything but its own CPU; with two CPUs or more, both Prosody
run on the last and the client on the first. Prosody's CPU is its threads'
schedstat run time (ns) before and after a run, after its last connection
has been torn down; divided by N. Each figure is the median of R rounds.

The original module, as the tool store and upstream keep its older version,
maps connections by conn:serverport(), which Debian 12's LuaSocket returns
as text: it then finds no mapping and serves nothing. The copy that is run
gets the one fix it needs, tonumber(), and the report says so. Nothing else
of it is changed.

Needs root (a namespace, the prosody user), Prosody, lua5.4 and lua-bitop
(the original needs a bit library).
"""
import argparse
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration"))

from netns import Lab, in_ns, ns_exec, why_no_netns  # noqa: E402
from npd import proxy_v2, wait_for  # noqa: E402
from xmpp import (C2S_STREAM, listening_ports, prosody_stack,  # noqa: E402
                  skip_reason as xmpp_skip_reason)

FEATURES = (b"</stream:features>", b"<stream:features/>")
OURS = {"c2s": 5222, "proxy": 15222}
THEIRS = {"c2s": 6222, "proxy": 16222}
SERVERPORT_LOOKUP = "mappings[conn:serverport()]"


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def config(plugin_dir, proxy_port, original):
    lines = [f'plugin_paths = {{ "{plugin_dir}" }}',
             'modules_enabled = { "roster"; "saslauth"; "tls"; "disco"; "ping"; "net_proxy" }',
             "network_settings = { tcp_backlog = 1024 }",
             f'proxy_port_mappings = {{ [{proxy_port}] = "c2s" }}']
    if original:
        lines.append(f"proxy_ports = {{ {proxy_port} }}")  # the original listens on these only
    return "\n".join(lines) + "\n"


def prepare_original(src, workdir):
    """Copy the original into workdir; apply the serverport fix if it needs it."""
    text = Path(src).read_text()
    fixed = SERVERPORT_LOOKUP in text
    if fixed:
        text = text.replace(SERVERPORT_LOOKUP, "mappings[tonumber(conn:serverport())]")
    d = Path(workdir) / "original"
    d.mkdir()
    (d / "mod_net_proxy.lua").write_text(text)
    os.chmod(d, 0o755)
    os.chmod(d / "mod_net_proxy.lua", 0o644)
    return d, fixed


def set_log_level(st, level):
    """The harness logs at debug, which would be most of what is measured:
    the same file at `level`, by a config reload (SIGHUP)."""
    with open(st.cfg, "a") as f:
        f.write(f'\nlog = {{ {level} = "{st.log}" }}\n')
    size = st.log.stat().st_size
    os.kill(st.prosody.pid, signal.SIGHUP)
    wait_for(lambda: st.log.stat().st_size > size or st.prosody.poll() is not None, 15,
             "Prosody's reload")
    time.sleep(0.5)


def cpu_ns(pid):
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        total += int((task / "schedstat").read_text().split()[0])
    return total


def settle(pid, quiet_ms=200, timeout=5.0):
    """Wait until Prosody has used no CPU for quiet_ms (its last connection torn down)."""
    end = time.monotonic() + timeout
    last = cpu_ns(pid)
    while time.monotonic() < end:
        time.sleep(quiet_ms / 1000)
        now = cpu_ns(pid)
        if now - last < 1_000_000:  # under 1 ms in the interval: idle
            return now
        last = now
    return cpu_ns(pid)


def connections(port, n, header, cpu=None):
    """n connections one after another; returns how many got their features."""
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})  # this thread only
    ok = 0
    payload = header + C2S_STREAM
    for _ in range(n):
        with socket.socket() as s:
            s.settimeout(10)
            s.connect(("127.0.0.1", port))
            s.sendall(payload)
            got = b""
            while not any(f in got for f in FEATURES):
                chunk = s.recv(65536)
                if not chunk:
                    break
                got += chunk
            if any(f in got for f in FEATURES):
                ok += 1
                s.sendall(b"</stream:stream>")
    return ok


def cpus():
    """(the client's CPU, Prosody's CPU): apart when there are two or more."""
    mine = sorted(os.sched_getaffinity(0))
    return (mine[0], mine[-1]) if len(mine) > 1 else (None, None)


def run(ns, pid, port, n, header):
    before = settle(pid)
    t0 = time.monotonic()
    ok = in_ns(ns, connections, port, n, header, cpus()[0])
    wall = time.monotonic() - t0
    after = settle(pid)
    if ok != n:
        raise SystemExit(f"port {port}: only {ok}/{n} connections were served")
    return (after - before) / n / 1000, wall / n * 1e6  # us of Prosody's CPU, us of wall


def parse_table(build, original):
    env = {**os.environ, "LUA_CPATH_5_4": f"{build}/lua/?.so;;"}
    out = subprocess.run(["lua5.4", str(REPO / "bench" / "prosody_parse.lua"), str(original)],
                         capture_output=True, text=True, timeout=600, env=env)
    if out.returncode != 0:
        return f"(parse benchmark failed: {out.stderr.strip()})\n"
    rows = [line.split("\t") for line in out.stdout.splitlines() if line.count("\t") == 2]
    text = "| header | path | ns per header |\n|---|---|---:|\n"
    text += "".join(f"| {h} | {what} | {ns} |\n" for h, what, ns in rows)
    return text


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default=str(REPO / "build"))
    ap.add_argument("--original", required=True,
                    help="the original mod_net_proxy.lua, fetched outside the tree")
    ap.add_argument("--conns", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--log-level", default="info")
    args = ap.parse_args()
    build = Path(args.build).resolve()
    os.environ["NETPROXY_BUILD"] = str(build)
    why = why_no_netns() or xmpp_skip_reason()
    if why:
        raise SystemExit(f"bench-prosody: {why}")
    if not (build / "lua" / "netproxy.so").is_file():
        raise SystemExit(f"bench-prosody: {build}/lua/netproxy.so: build it first (make)")

    work = Path(tempfile.mkdtemp(prefix="np-bench-prosody-"))
    os.chmod(work, 0o755)
    try:
        theirs_dir, fixed = prepare_original(args.original, work)
        env = {"LUA_CPATH_5_4": f"{build}/lua/?.so;;"}
        hdr = proxy_v2("203.0.113.7", "192.0.2.1", 50000, 5222)
        with Lab() as lab:
            ns = lab.ns("bench")
            with prosody_stack({"c2s": OURS["c2s"]}, {}, {}, prefix=ns_exec(ns), haproxy=False,
                               env=env, extra=config(REPO / "prosody", OURS["proxy"], False)) as ours, \
                 prosody_stack({"c2s": THEIRS["c2s"]}, {}, {}, prefix=ns_exec(ns), haproxy=False,
                               env=env, extra=config(theirs_dir, THEIRS["proxy"], True)) as theirs:
                for st, port in ((ours, OURS["proxy"]), (theirs, THEIRS["proxy"])):
                    wait_for(lambda: port in listening_ports(st.prosody.pid), 15,
                             f"Prosody on {port}")
                for st in (ours, theirs):
                    set_log_level(st, args.log_level)
                    if cpus()[1] is not None:  # both Prosody on one CPU, the client on another
                        os.sched_setaffinity(st.prosody.pid, {cpus()[1]})
                # Both answer through their PROXY port before anything is measured.
                for st, port in ((ours, OURS["proxy"]), (theirs, THEIRS["proxy"])):
                    if in_ns(ns, connections, port, 3, hdr) != 3:
                        raise SystemExit(f"port {port} does not serve: {st.debug()}")
                runs = {k: [] for k in ("ours", "theirs", "direct-ours", "direct-theirs")}
                walls = {k: [] for k in runs}
                for r in range(args.repeat):
                    for key, st, port, h in (("ours", ours, OURS["proxy"], hdr),
                                             ("theirs", theirs, THEIRS["proxy"], hdr),
                                             ("direct-ours", ours, OURS["c2s"], b""),
                                             ("direct-theirs", theirs, THEIRS["c2s"], b"")):
                        cpu, wall = run(ns, st.prosody.pid, port, args.conns, h)
                        runs[key].append(cpu)
                        walls[key].append(wall)
                        log(f"round {r + 1}/{args.repeat} {key}: {cpu:.1f} us CPU, "
                            f"{wall:.0f} us wall per connection")
        med = {k: statistics.median(v) for k, v in runs.items()}
        # Each proxied path against the direct path of its own Prosody: two
        # instances of the same Prosody differ by a few per cent on their own.
        mine = {"ours": "direct-ours", "theirs": "direct-theirs",
                "direct-ours": "direct-ours", "direct-theirs": "direct-theirs"}
        ratio = {k: statistics.median(a / b for a, b in zip(runs[k], runs[mine[k]]))
                 for k in runs}
        text = (f"## Prosody 0.12: CPU per connection\n\n{args.conns} connections per run, "
                f"median of {args.repeat} interleaved rounds, log level {args.log_level}; "
                "each connection a v2 header and a c2s stream header in one segment "
                "(none on the direct path), the stream features back. \"x own direct\" is "
                "the median, over rounds, of a run against the same round's direct run on "
                "the same Prosody.\n\n"
                "| path | Prosody CPU per connection (us) | spread | x own direct |\n"
                "|---|---:|---:|---:|\n")
        names = {"ours": "PROXY port, this mod_net_proxy",
                 "theirs": "PROXY port, the original mod_net_proxy"
                           + (" (serverport fix)" if fixed else ""),
                 "direct-ours": "direct c2s, the Prosody with ours",
                 "direct-theirs": "direct c2s, the Prosody with the original"}
        for k in runs:
            text += (f"| {names[k]} | {med[k]:.1f} | {min(runs[k]):.1f}-{max(runs[k]):.1f} | "
                     f"{ratio[k]:.3f} |\n")
        text += (f"\nOurs over its direct path: {ratio['ours']:.3f} "
                 f"({med['ours'] - med['direct-ours']:+.1f} us per connection); the original "
                 f"over its own: {ratio['theirs']:.3f} "
                 f"({med['theirs'] - med['direct-theirs']:+.1f} us); ours against the original, "
                 f"each over its direct path: {ratio['ours'] / ratio['theirs']:.3f}.\n")
        if fixed:
            text += ("\nThe original as fetched maps `mappings[conn:serverport()]`; Debian 12's "
                     "LuaSocket gives that port as text, so it serves no connection at all. The "
                     "copy measured reads `mappings[tonumber(conn:serverport())]`.\n")
        text += "\n## A header's cost in Lua (lua5.4, outside Prosody)\n\n"
        text += parse_table(build, args.original)
        out = build / "bench" / "prosody.md"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        print(text)
        log(f"written to {out}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
