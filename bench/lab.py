"""The processes of a comparison run: where they run, how they start and stop,
and what /proc says of them.

A Lab owns everything the run starts: a network namespace of its own (when
it runs as root; otherwise the host's loopback), a scratch directory, and
every process, each stopped by its PID when the lab closes, even after an
error or Ctrl-C. Processes are pinned with taskset(1): receivers on one CPU,
the load generator and the backend on the other (see bench/README.md).

Receivers are the programs compared: each knows how to start itself from a
template in bench/conf/ and which PIDs are its own, for CPU and memory.
"""
import os
import shutil
import socket
import string
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
# The integration tests' helpers (standard library only) for finding and stopping programs.
sys.path.insert(0, str(BENCH_DIR.parent / "tests" / "integration"))
from npd import find_exe, stop_pid as stop  # noqa: E402

CONF_DIR = BENCH_DIR / "conf"
CLK_TCK = os.sysconf("SC_CLK_TCK")
NGINX_STREAM_MODULE = Path("/usr/lib/nginx/modules/ngx_stream_module.so")


# --- /proc ---------------------------------------------------------------------


def process_tree(pid):
    """pid and all its descendants (nginx's workers), from /proc."""
    children = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(children.get(p, []))
    return tree


def cpu_seconds(pids):
    """User + system CPU time of these processes, all their threads, in seconds."""
    ticks = 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        ticks += int(fields[11]) + int(fields[12])     # utime, stime
    return ticks / CLK_TCK


def machine_seconds():
    """(busy, stolen): CPU time the whole machine has spent busy, all CPUs, and
    the time the hypervisor ran something else while we wanted a CPU."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, idle, iowait, irq, softirq, steal = map(int, fields[:8])
    return (user + nice + system + irq + softirq) / CLK_TCK, steal / CLK_TCK


def rss_kib(pids):
    """Resident memory of these processes, summed, in KiB."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


# --- the lab -------------------------------------------------------------------


class Lab:
    def __init__(self, use_netns, load_cpu, receiver_cpu, files):
        self.load_cpu, self.receiver_cpu = load_cpu, receiver_cpu
        self.files = files      # the descriptor limit every process inherits
        # Relayed connections a receiver may hold: two descriptors each, and
        # HAProxy also reserves one pipe (two more) for every fourth.
        self.max_conns = (files - 200) * 2 // 5
        self.procs = []
        self.ns = None
        self.dir = Path(tempfile.mkdtemp(prefix="npbench-"))
        os.chmod(self.dir, 0o755)      # nginx's workers run as nobody
        if use_netns:
            name = f"npbench-{os.getpid()}"
            subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True,
                           timeout=10)
            self.ns = name
            subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True,
                           capture_output=True, timeout=10)

    def command(self, argv, cpu=None):
        """argv run in the lab's namespace, pinned to cpu (each step execs the next,
        so the PID of the command is the program's own)."""
        prefix = ["ip", "netns", "exec", self.ns] if self.ns else []
        if cpu is not None:
            prefix += ["taskset", "-c", str(cpu)]
        return prefix + [str(a) for a in argv]

    def start(self, name, argv, cpu, env=None):
        """A long-running process; its output goes to DIR/name.log."""
        log = open(self.dir / f"{name}.log", "w")
        p = subprocess.Popen(self.command(argv, cpu), stdout=log, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, start_new_session=True,
                             env={**os.environ, **(env or {})})
        log.close()
        self.procs.append(p)
        return p

    def log(self, name):
        try:
            return (self.dir / f"{name}.log").read_text(errors="replace")
        except OSError:
            return ""

    def run(self, argv, cpu, timeout, env=None):
        """A command to completion, bounded; CompletedProcess with text output."""
        return subprocess.run(self.command(argv, cpu), capture_output=True, text=True,
                              timeout=timeout, env={**os.environ, **(env or {})})

    def popen(self, argv, cpu):
        """A command whose output the caller reads as it comes (idle runs)."""
        p = subprocess.Popen(self.command(argv, cpu), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, start_new_session=True)
        self.procs.append(p)
        return p

    def write(self, name, text):
        path = self.dir / name
        path.write_text(text)
        os.chmod(path, 0o644)
        return path

    def free_port(self):
        """A port free on 127.0.0.1: in a fresh namespace any is; on the host, ask."""
        if self.ns:
            self._next_port = getattr(self, "_next_port", 20000) + 1
            return self._next_port
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    def close(self):
        for p in reversed(self.procs):
            stop(p)
        if self.ns:
            subprocess.run(["ip", "netns", "del", self.ns], capture_output=True, timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)


# --- receivers -----------------------------------------------------------------


def fill(template, **values):
    return string.Template((CONF_DIR / template).read_text()).substitute(values)


BULK_MODES = ("up", "down")


class Receiver:
    """One program compared. name is what ONLY= takes; label is the table's.

    A receiver may run a second process configured for bulk data (HAProxy):
    port_for() and pids() then take the mode.
    """
    name = label = ""
    header = "v2"          # what the load generator sends it
    needs_root = False

    def __init__(self, build):
        self.build = build
        self.proc = self.bulk_proc = None
        self.port = self.bulk_port = None

    def missing(self):
        """Why it cannot run here, or None."""
        return None

    def start(self, lab, backend):
        raise NotImplementedError

    def port_for(self, mode):
        return self.bulk_port if self.bulk_port and mode in BULK_MODES else self.port

    def pids(self, mode=None):
        proc = self.bulk_proc if self.bulk_proc and mode in BULK_MODES else self.proc
        return process_tree(proc.pid) if proc else []

    def restart(self, lab, backend):
        """Fresh processes, on fresh ports: their memory holds nothing of earlier runs."""
        for proc in (self.proc, self.bulk_proc):
            if proc:
                stop(proc)
                lab.procs.remove(proc)
        self.start(lab, backend)


class Direct(Receiver):
    """No receiver: the load generator straight to the backend, the physical limit."""
    name, label, header = "direct", "direct", "none"

    def start(self, lab, backend):
        self.port = backend.port

    def pids(self, mode=None):
        return []


class Netproxyd(Receiver):
    def __init__(self, build, delivery):
        super().__init__(build)
        self.delivery = delivery
        self.name = f"netproxyd-{delivery}"
        self.label = f"netproxyd {delivery}"
        self.needs_root = delivery == "transparent"

    def missing(self):
        exe = self.build / "netproxyd"
        if not exe.is_file():
            return f"{exe} is not built"
        if self.needs_root and os.geteuid() != 0:
            return "needs root (IP_TRANSPARENT, policy routing in a namespace)"
        return None

    def start(self, lab, backend):
        self.port = lab.free_port()
        service = {"plain": "", "send_proxy": ', send_proxy = "v2"',
                   "transparent": ", transparent = true"}[self.delivery]
        to = backend.proxy_port if self.delivery == "send_proxy" else backend.port
        cfg = lab.write(f"{self.name}.conf.lua", fill("netproxyd.conf.lua", port=self.port,
                                                      backend_port=to, service=service,
                                                      max_connections=lab.max_conns))
        if self.delivery == "transparent":
            # The policy routing, in the lab's namespace only: never the host's.
            r = lab.run([self.build / "netproxyd", "--setup-routing", "-c", cfg], None, 20)
            if r.returncode != 0:
                raise RuntimeError(f"netproxyd --setup-routing: {r.stdout}{r.stderr}")
        self.proc = lab.start(self.name, [self.build / "netproxyd", "-c", cfg], lab.receiver_cpu)


class Haproxy(Receiver):
    name, label = "haproxy", "HAProxy"

    def missing(self):
        return None if find_exe("haproxy") else "haproxy is not installed"

    def start(self, lab, backend):
        """Two processes: splice when it pays, for connections and requests; splice
        always, for bulk data. Each is HAProxy's better setting for its work."""
        for kind, splice in (("", "option splice-auto"),
                             ("-bulk", "option splice-request\n\toption splice-response")):
            port = lab.free_port()
            cfg = lab.write(f"haproxy{kind}.cfg", fill("haproxy.cfg", port=port, splice=splice,
                                                       backend_port=backend.port,
                                                       maxconn=lab.max_conns))
            # -db: foreground, one process; its threads are counted in /proc/PID/stat.
            proc = lab.start(self.name + kind, [find_exe("haproxy"), "-db", "-f", cfg],
                             lab.receiver_cpu)
            if kind:
                self.bulk_port, self.bulk_proc = port, proc
            else:
                self.port, self.proc = port, proc


class Nginx(Receiver):
    name, label = "nginx", "nginx stream"

    def missing(self):
        if not find_exe("nginx"):
            return "nginx is not installed"
        if not NGINX_STREAM_MODULE.is_file():
            return (f"nginx has no stream module ({NGINX_STREAM_MODULE}): "
                    "install Debian's libnginx-mod-stream")
        return None

    def start(self, lab, backend):
        self.port = lab.free_port()
        cfg = lab.write("nginx.conf", fill("nginx.conf", port=self.port,
                                           backend_port=backend.port, dir=lab.dir,
                                           stream_module=NGINX_STREAM_MODULE, files=lab.files,
                                           worker_connections=2 * lab.max_conns + 100))
        self.proc = lab.start(self.name, [find_exe("nginx"), "-p", lab.dir, "-c", cfg,
                                          "-e", "stderr"], lab.receiver_cpu)


def all_receivers(build):
    return [Direct(build), Netproxyd(build, "plain"), Netproxyd(build, "send_proxy"),
            Netproxyd(build, "transparent"), Haproxy(build), Nginx(build)]


class Backend:
    """netproxy-bench serve: a plain port and a port that wants a PROXY header."""

    def __init__(self, lab, bench_exe, lifetime):
        self.port, self.proxy_port = lab.free_port(), lab.free_port()
        self.proc = lab.start("backend", [bench_exe, "serve", "-d", lifetime,
                                          "-l", f"127.0.0.1:{self.port}",
                                          "-p", f"127.0.0.1:{self.proxy_port}"], lab.load_cpu)
        deadline = time.monotonic() + 10
        while "listening on" not in lab.log("backend"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the backend did not start: {lab.log('backend')}")
            time.sleep(0.02)
