"""Network namespaces for integration tests: make and delete them, run
processes and netproxyd in them, run a client function in one.

Tests that change routing (transparent delivery's policy rules) run in
namespaces made here, never in the root namespace, whose routing belongs to
the host.

    reason = why_no_netns()          # None when root and `ip netns` work
    with Lab() as lab:               # at the end: stops and deletes what it made
        ns = lab.ns("role")          # a new namespace, lo up
        lab.popen(ns, argv)          # `ip netns exec NS argv...`
        in_ns(ns, fn, *args)         # fn(*args) in a thread that joined ns

`ip netns exec` execs the command, so a Popen's PID is the process itself.
A client runs in a thread that has joined the namespace: setns(2) changes
only the calling thread, and a socket belongs to the namespace it was
created in.
"""
import ctypes
import functools
import itertools
import os
import shutil
import signal
import subprocess
import tempfile
import threading
from pathlib import Path

from npd import Netproxyd, tool, wait_for, with_close_lines

CLONE_NEWNET = 0x40000000
_seq = itertools.count()
_libc = ctypes.CDLL(None, use_errno=True)


def sh(*argv, check=True, timeout=10, input=None):
    """Run a command; returns CompletedProcess (text). Raises with its output on failure."""
    r = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, input=input)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} -> {r.returncode}\n{r.stdout}{r.stderr}")
    return r


@functools.lru_cache(maxsize=None)
def why_no_netns():
    """None when namespaces can be made here (tried once per session), else why not."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, IP_TRANSPARENT)"
    if not shutil.which("ip"):
        return "ip(8) (iproute2) is not installed"
    probe = f"npt-{os.getpid()}-probe"
    try:
        r = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True,
                           timeout=10)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"ip netns add failed: {e}"
    if r.returncode != 0:
        return f"ip netns add is not available here: {r.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, timeout=10)
    return None


def ns_exec(ns):
    """The argv prefix that runs a command in namespace ns (it execs the command)."""
    return ["ip", "netns", "exec", ns]


def in_ns(ns, fn, *args, **kwargs):
    """Call fn in a thread that has joined network namespace ns; return its result."""
    box = {}

    def run():
        try:
            fd = os.open(f"/run/netns/{ns}", os.O_RDONLY | os.O_CLOEXEC)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns({ns}): {os.strerror(err)}")
            finally:
                os.close(fd)
            box["value"] = fn(*args, **kwargs)
        except BaseException as e:  # handed to the caller
            box["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(120)
    assert not t.is_alive(), f"in_ns({ns}, {fn.__name__}) did not finish"
    if "error" in box:
        raise box["error"]
    return box["value"]


def stop_process(proc, timeout=5.0):
    if proc.poll() is None:
        try:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
        except ProcessLookupError:
            pass


class Lab:
    """Namespaces and processes of one test; close() stops and deletes them all."""

    def __init__(self):
        self.namespaces = []
        self.procs = []
        self.files = []
        self.tmp = Path(tempfile.mkdtemp(prefix="npt-"))
        os.chmod(self.tmp, 0o755)  # readable by unprivileged users (nobody, prosody)

    def ns(self, role):
        name = f"npt-{os.getpid()}-{next(_seq)}-{role}"
        sh("ip", "netns", "add", name)
        self.namespaces.append(name)
        sh("ip", "-n", name, "link", "set", "lo", "up")
        return name

    def popen(self, ns, argv, **kw):
        kw.setdefault("stdout", subprocess.DEVNULL)
        kw.setdefault("stderr", subprocess.STDOUT)
        p = subprocess.Popen([*ns_exec(ns), *argv], **kw)
        self.procs.append(p)
        return p

    def output(self, name):
        """A file in tmp for a process's output; closed with the lab."""
        f = open(self.tmp / name, "w")
        self.files.append(f)
        return f

    def file(self, name, text=""):
        path = self.tmp / name
        path.write_text(text)
        os.chmod(path, 0o644)
        return path

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        for p in reversed(self.procs):
            stop_process(p)
        for name in reversed(self.namespaces):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)
        for f in self.files:
            f.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


class NsNetproxyd(Netproxyd):
    """Netproxyd (npd.py) run as `ip netns exec NS [prefix...] netproxyd -c CONFIG`."""

    def __init__(self, ns, config, prefix=(), ready=r"running: \d+ workers?,"):
        self.tmp = tempfile.TemporaryDirectory(prefix="npd-test-")
        os.chmod(self.tmp.name, 0o755)
        self.config_path = Path(self.tmp.name) / "netproxyd.conf.lua"
        self.log_both = True
        self.config_path.write_text(with_close_lines(config))
        os.chmod(self.config_path, 0o644)
        self.log_path = Path(self.tmp.name) / "netproxyd.log"
        self._log = open(self.log_path, "w+")
        self.proc = subprocess.Popen(
            [*ns_exec(ns), *prefix, tool("netproxyd"), "-c", str(self.config_path)],
            stdout=self._log, stderr=subprocess.STDOUT)
        self.ready = ready

    def __enter__(self):
        try:
            return super().__enter__()
        except BaseException:
            self.stop()      # not left running when it never became ready
            raise

    def close_line(self, pattern=r"reason=", timeout=5.0):
        return self.wait_log(r"conn=\d+ port=.*" + pattern, timeout)[0].string

    def closed(self, n, timeout=5.0):
        """The first n close lines, parsed (waits for them: a client may see its
        EOF a moment before the line is written)."""
        self.wait_log(r"conn=\d+ port=.* reason=", timeout, count=n)
        return self.close_lines()[:n]


def netproxyd_cmd(lab, ns, config, *args, timeout=10):
    """netproxyd run once in ns (e.g. --setup-routing) with config; CompletedProcess."""
    path = lab.file(f"cmd-{next(_seq)}.conf.lua", config)
    return sh(*ns_exec(ns), tool("netproxyd"), *args, "-c", str(path),
              check=False, timeout=timeout)


def wait_listening(ns, port, timeout=10.0):
    def up():
        out = sh(*ns_exec(ns), "ss", "-Hltn", f"sport = :{port}").stdout
        return out.strip() != ""
    wait_for(up, timeout, f"a listener on port {port} in {ns}")
