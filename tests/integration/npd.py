"""Helpers for tests that run netproxyd and real peers on loopback.

Everything started here is a child process or thread of the test, stopped by
PID (or joined) when the test ends. Every wait is bounded.

    with Netproxyd(config_lua) as d:        # or Netproxyd(args=["-l", ...])
        d.wait_log(r"running: ")
        ...
        d.reload(new_config_lua)
    EchoServer / SinkServer: Python backends that record what they saw.
"""
import hashlib
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def build_dir():
    return Path(os.environ.get("NETPROXY_BUILD") or REPO / "build")


def tool(name):
    path = build_dir() / name
    assert path.is_file() and os.access(path, os.X_OK), f"{path}: build it first (make)"
    return str(path)


def find_exe(name):
    """The path of an installed program (also looked for in the sbin
    directories, which a non-root PATH may lack), or None."""
    found = shutil.which(name)
    if found:
        return found
    for d in ("/usr/sbin", "/sbin", "/usr/local/sbin"):
        p = Path(d) / name
        if p.is_file() and os.access(p, os.X_OK):
            return str(p)
    return None


def text_of(path):
    """A file's text, or "" when it cannot be read (yet): for logs in messages."""
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


def stop_pid(proc, timeout=5.0):
    """Stop a child we started: SIGTERM by PID, then SIGKILL to its own
    process group (start it with start_new_session=True)."""
    if proc.poll() is None:
        try:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout)


def _ephemeral_low():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


# The tests' listening ports come from below the kernel's ephemeral range. A
# port the kernel chose for bind(("", 0)) and got back is free to be chosen
# again at once as the local port of some outgoing connection, and then the
# listener's bind fails (EADDRINUSE: seen under ThreadSanitizer's load). Each
# process starts at a random place in the range, so that two test runs at
# once rarely meet, and hands each port out once.
_PORT_LOW = 10000
_PORT_SPAN = max(1000, _ephemeral_low() - _PORT_LOW)
_port_next = [random.randrange(_PORT_SPAN)]
_port_lock = threading.Lock()


def port_candidates():
    """Ports below the ephemeral range, each given once per process; the
    caller checks that the one it takes is free."""
    for _ in range(_PORT_SPAN):
        with _port_lock:
            offset = _port_next[0]
            _port_next[0] = (offset + 1) % _PORT_SPAN
        yield _PORT_LOW + offset


def free_port(host="127.0.0.1"):
    """A TCP port nothing is bound to on host right now, outside the
    ephemeral range, so that no outgoing connection takes it meanwhile."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for port in port_candidates():
        with socket.socket(family, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    raise AssertionError(f"no free port on {host}")


def wait_for(predicate, timeout=5.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def wait_port(port, host="127.0.0.1", timeout=5.0):
    def up():
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return True
        except OSError:
            return False
    wait_for(up, timeout, f"{host}:{port} to accept connections")


def with_close_lines(config):
    """config, logging both lines of each connection unless it says which.

    By default a connection that reaches its service has one line at the info
    level, when it is established (log_connections, netproxyd.conf(5)); the
    tests read the close line, with its byte counts and reason, so their
    netproxyd logs it too. test_logs.py tests the default itself."""
    if config is None or "log_connections" in config:
        return config
    return 'log_connections = "both"; ' + config  # on line 1: line numbers stay


class Netproxyd:
    """netproxyd with a Lua config (written to a temp file) or plain arguments."""

    def __init__(self, config=None, args=(), ready=r"running: \d+ workers?,", env=None,
                 prefix=(), log_both=True):
        """prefix: a command to run netproxyd under, as ["prlimit", "--nofile=64:64", "--"]
        (started as root without user, netproxyd is nobody once running: limits are
        set from the start, and what it reads on a reload must be readable to it).
        log_both: log both lines of each connection (with_close_lines) unless the
        config says which; False leaves the config as it is."""
        self.log_both = log_both
        self.tmp = tempfile.TemporaryDirectory(prefix="npd-test-")
        os.chmod(self.tmp.name, 0o755)
        self.config_path = None
        cmd = [*prefix, tool("netproxyd")]
        if config is not None:
            self.config_path = Path(self.tmp.name) / "netproxyd.conf.lua"
            self.config_path.write_text(with_close_lines(config) if log_both else config)
            cmd += ["-c", str(self.config_path)]
        cmd += list(args)
        self.log_path = Path(self.tmp.name) / "netproxyd.log"
        self._log = open(self.log_path, "w+")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT,
                                     env={**os.environ, **(env or {})})
        self.ready = ready

    def __enter__(self):
        if self.ready:
            self.wait_log(self.ready)
        return self

    def __exit__(self, *exc):
        self.stop()

    def log(self):
        return self.log_path.read_text(errors="replace")

    def wait_log(self, pattern, timeout=5.0, count=1):
        """Wait until pattern has matched count lines of the log; returns the matches."""
        rx = re.compile(pattern)

        def found():
            if self.proc.poll() is not None and not rx.search(self.log()):
                raise AssertionError(f"netproxyd exited ({self.proc.returncode}) "
                                     f"before logging {pattern!r}:\n{self.log()}")
            matches = [m for m in map(rx.search, self.log().splitlines()) if m]
            return matches if len(matches) >= count else None
        try:
            return wait_for(found, timeout, f"log line {pattern!r}")
        except AssertionError as e:
            raise AssertionError(f"{e}\n--- netproxyd log ---\n{self.log()}") from None

    def close_lines(self):
        """The per-connection close lines (not the debug lines about a
        connection, which have no reason), parsed into dicts."""
        out = []
        for line in self.log().splitlines():
            if " conn=" not in line or " reason=" not in line:
                continue
            fields = dict(re.findall(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)', line))
            out.append({k: v.strip('"') for k, v in fields.items()})
        return out

    def reload(self, config=None):
        if config is not None:
            self.config_path.write_text(with_close_lines(config) if self.log_both else config)
        self.proc.send_signal(signal.SIGHUP)

    def stop(self, timeout=5.0):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        self._log.close()
        self.tmp.cleanup()
        return self.proc.returncode


class Threads:
    """Threads whose exceptions are kept and re-raised by join()."""

    def __init__(self):
        self.threads, self.errors = [], []

    def start(self, fn, *args):
        def run():
            try:
                fn(*args)
            except BaseException as e:  # noqa: BLE001 - re-raised in join()
                self.errors.append(e)
        t = threading.Thread(target=run, daemon=True)
        t.start()
        self.threads.append(t)

    def join(self, timeout):
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))
        alive = [t for t in self.threads if t.is_alive()]
        if self.errors:
            raise self.errors[0]
        assert not alive, f"{len(alive)} thread(s) still running after {timeout} s"


class _Server:
    """A threaded TCP server on 127.0.0.1 (or host), or a UNIX one on path,
    that runs handle(conn, record)."""

    def __init__(self, host="127.0.0.1", port=0, path=None):
        if path is not None:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.bind(str(path))
            # netproxyd connects as the user it has become (nobody, started as root).
            os.chmod(path, 0o777)
            self.port = None
        else:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            self.sock = socket.socket(family, socket.SOCK_STREAM)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.sock.bind((host, port))
            self.port = self.sock.getsockname()[1]
        self.sock.listen(1024)
        self.records = []
        self.lock = threading.Lock()
        self.stopping = False
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while not self.stopping:
            try:
                conn, peer = self.sock.accept()
            except OSError:
                return
            record = {"peer": peer, "received": bytearray(), "eof": False}
            with self.lock:
                self.records.append(record)
            threading.Thread(target=self._run, args=(conn, record), daemon=True).start()

    def _run(self, conn, record):
        try:
            conn.settimeout(60)
            self.handle(conn, record)
        except OSError as e:
            record["error"] = e
        finally:
            conn.close()

    def close(self):
        self.stopping = True
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class EchoServer(_Server):
    """Echoes every byte back; on EOF from the peer, half-closes in turn."""

    def handle(self, conn, record):
        while True:
            data = conn.recv(65536)
            if not data:
                record["eof"] = True
                break
            record["received"] += data
            conn.sendall(data)
        conn.shutdown(socket.SHUT_WR)


class SinkServer(_Server):
    """Reads until EOF, hashing what arrives; then answers with the hash and closes."""

    def handle(self, conn, record):
        h = hashlib.sha256()
        n = 0
        while True:
            data = conn.recv(1 << 20)
            if not data:
                break
            if n < 4096:
                record["received"] += data[:4096 - n]
            h.update(data)
            n += len(data)
        record["eof"] = True
        record["count"] = n
        record["sha256"] = h.hexdigest()
        conn.sendall(h.hexdigest().encode())
        conn.shutdown(socket.SHUT_WR)


def proxy_v1(src, dst, sport, dport, family="TCP4"):
    return f"PROXY {family} {src} {dst} {sport} {dport}\r\n".encode()


def proxy_v2(src, dst, sport, dport, command=1, tlvs=b""):
    """A v2 header over TCP4 or TCP6 (by the address), without CRC."""
    sig = b"\r\n\r\n\x00\r\nQUIT\n"
    if command == 0:
        return sig + bytes([0x20, 0x00]) + len(tlvs).to_bytes(2, "big") + tlvs
    if ":" in src:
        fam, block = 0x21, socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst)
    else:
        fam, block = 0x11, socket.inet_aton(src) + socket.inet_aton(dst)
    block += sport.to_bytes(2, "big") + dport.to_bytes(2, "big")
    return sig + bytes([0x21, fam]) + (len(block) + len(tlvs)).to_bytes(2, "big") + block + tlvs


def talk(port, data, host="127.0.0.1", timeout=5.0, source=None, shut=True):
    """Connect, send data, half-close (if shut) and read until EOF or timeout.
    Returns (bytes received, how it ended: "eof", "reset" or "timeout")."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        if source:
            s.bind((source, 0))
        s.connect((host, port))
        s.sendall(data)
        if shut:
            s.shutdown(socket.SHUT_WR)
        got = bytearray()
        while True:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                return bytes(got), "timeout"
            except ConnectionResetError:
                return bytes(got), "reset"
            if not chunk:
                return bytes(got), "eof"
            got += chunk
    finally:
        s.close()
