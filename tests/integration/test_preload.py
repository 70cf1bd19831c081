"""libnetproxy_preload.so under real servers: Python servers in three shapes
(a blocking single-threaded accept loop, four threads calling accept() on one
listener, a non-blocking listener driven by epoll), plus a pre-forked one
(four processes blocking in accept() on one listener), a C program checking
accept4()'s flags and address handling exactly, and nginx (which knows
nothing of the PROXY protocol here) behind a real HAProxy sending v2, and
with four workers receiving late headers directly. Bursts of 500 clients at
once, half of them with a late header, must all be served, by the Python
server in its four shapes and by nginx with two workers. A C server whose
signal handler closes and replaces descriptors while its threads accept
must never hang; a watcher whose setup fails (a library after the shim
fails one of its calls) must leave nothing half made.

Everything runs on loopback. Every process a test starts is a child of the
test, in a session of its own, stopped by its PID in a ``finally`` (SIGTERM,
then SIGKILL to its process group if it has not gone within 5 s); every
thread is joined with a bound, every socket has a timeout. The processes run
with NETPROXY_DEBUG=1 and their stderr goes to a file in tmp_path, shown in
assertion messages.

The Python server (SERVER_PY, written to tmp_path) prints one JSON line per
event on stdout: ``ready`` once it listens, ``accept`` the moment accept()
returns a connection, ``served`` when it has answered one, ``accept_error``
for an accept() that failed. Per connection it reads until EOF and answers
one JSON line: the address accept() gave, getpeername(), getsockname(), and
the length, SHA-256 and first bytes of what it read. So "the server never saw
it" is checked on the accept events, and "the bytes after the header arrive
intact" on the digest.
"""
import hashlib
import json
import os
import pwd
import queue
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from npd import (Threads, build_dir, find_exe, free_port, port_candidates, proxy_v1, proxy_v2,
                 stop_pid, text_of, tool, wait_for)

TIMEOUT = 10.0                 # seconds: the bound on every ordinary wait
SHAPES = ["blocking", "threaded", "epoll"]
CLIENT = ("203.0.113.7", 51234)
DST = ("192.0.2.1", 443)
CLIENT6 = ("2001:db8::7", 51234)
DST6 = ("2001:db8::1", 443)


# --- helpers -----------------------------------------------------------------


def preload_lib(after_shim=()):
    """LD_PRELOAD for the shim: the shim, then after_shim (libraries that
    interpose on calls the shim makes), then NETPROXY_PRELOAD_RUNTIME when
    set, as make tsan sets it to gcc's ThreadSanitizer runtime for a shim
    built with it. The runtime comes after the shim so that the C library
    calls the shim passes on through dlsym(RTLD_NEXT), its own close() and
    accept4() among them, reach the runtime's interceptors (and, through
    them, the C library): it then sees every descriptor the shim makes,
    accepts and closes, and a number the kernel hands out again is a new
    descriptor to it. Put first, the runtime is what the shim's RTLD_NEXT
    skips: it sees the watcher's wake-up connect on a socket, then a recv()
    on the same number in another thread, but neither the close between
    them nor the accept() that got the number again, and reports the two as
    a race on "file descriptor N". The server's own calls reach the shim
    first, and the runtime through it."""
    path = build_dir() / "libnetproxy_preload.so"
    assert path.is_file(), f"{path}: build it first (make)"
    runtime = os.environ.get("NETPROXY_PRELOAD_RUNTIME")
    return ":".join([str(path), *map(str, after_shim), *([runtime] if runtime else [])])


def shim_env(ports, after_shim=(), **extra):
    """The environment of a process under the shim (NETPROXY_DEBUG on)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NETPROXY_")}
    env.update(LD_PRELOAD=preload_lib(after_shim), NETPROXY_PORTS=",".join(map(str, ports)),
               NETPROXY_DEBUG="1")
    env.update({k: str(v) for k, v in extra.items()})
    return env


def pid_alive(pid):
    """True while pid runs (a zombie does not count)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def listening(port):
    """True when a socket listens on TCP port (read from /proc: no connection
    is made, which a PROXY port would count as a client)."""
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(name).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            f = row.split()
            if f[3] == "0A" and int(f[1].rsplit(":", 1)[1], 16) == port:
                return True
    return False


@contextmanager
def process(cmd, out_path, err_path=None, env=None, ports=(), what=None, stdin=None):
    """Run cmd in its own session until the block ends, waiting until every
    port in ports listens. Stopped by PID in all cases."""
    what = what or Path(cmd[0]).name
    out = open(out_path, "wb")
    err = open(err_path, "wb") if err_path else subprocess.STDOUT
    proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, start_new_session=True,
                            stdin=stdin if stdin is not None else subprocess.DEVNULL)
    try:
        def up():
            if proc.poll() is not None:
                raise AssertionError(f"{what} exited ({proc.returncode}):\n"
                                     f"{text_of(out_path)}\n{text_of(err_path or out_path)}")
            return all(listening(p) for p in ports)
        wait_for(up, TIMEOUT, f"{what} to listen on {list(ports)}")
        yield proc
    finally:
        stop_pid(proc)
        out.close()
        if err_path:
            err.close()


SERVER_PY = r'''
import ctypes, errno, hashlib, json, os, selectors, signal, socket, sys, threading, time

SHAPE = sys.argv[1]
LOCK = threading.Lock()

def emit(**ev):
    ev["pid"] = os.getpid()
    line = json.dumps(ev) + "\n"
    with LOCK:
        sys.stdout.write(line)
        sys.stdout.flush()

def a2(a):
    return [a[0], a[1]] if isinstance(a, tuple) else [str(a), None]

def describe(conn, accepted, data, lport):
    return {"lport": lport[0], "lfam": lport[1], "accept": a2(accepted),
            "peer": a2(conn.getpeername()),
            "sock": a2(conn.getsockname()), "len": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "head": bytes(data[:300]).decode("latin-1")}

def answer(conn, accepted, data, lport):
    info = describe(conn, accepted, bytes(data), lport)
    conn.sendall(json.dumps(info).encode() + b"\n")
    emit(event="served", **info)

def serve_blocking(conn, accepted, lport):
    """Read until EOF, answer, close (in the calling thread)."""
    try:
        conn.settimeout(10)
        data = bytearray()
        while True:
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
        answer(conn, accepted, data, lport)
    except OSError as e:
        emit(event="conn_error", error=repr(e), accept=a2(accepted))
    finally:
        conn.close()

def accept_loop(lsock, lport):
    while True:
        try:
            conn, accepted = lsock.accept()
        except OSError as e:
            emit(event="accept_error", errno=e.errno, error=repr(e), lport=lport[0])
            if e.errno in (errno.EBADF, errno.EINVAL, errno.ENOTSOCK):
                return
            time.sleep(0.01)
            continue
        emit(event="accept", accept=a2(accepted), lport=lport[0], lfam=lport[1])
        serve_blocking(conn, accepted, lport)

def main():
    listeners = []
    for spec in sys.argv[2:]:
        # host:port, [host]:port, or [host]:port/v6only for an IPv6-only socket
        spec, v6only = spec.removesuffix("/v6only"), spec.endswith("/v6only")
        host, port = spec.rsplit(":", 1)
        host = host.strip("[]")
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        s = socket.socket(fam, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if fam == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(v6only))
        s.bind((host, int(port)))
        s.listen(1024)
        listeners.append((s, (int(port), 6 if fam == socket.AF_INET6 else 4)))

    if SHAPE == "prefork":
        # Four processes (this one and three children) blocking in accept()
        # on the same listeners, as pre-forked servers do.
        kids = []
        for _ in range(3):
            pid = os.fork()
            if pid == 0:
                # Die with the parent, whatever ends it.
                ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
                if os.getppid() == 1:
                    os._exit(1)
                kids = None
                break
            kids.append(pid)
        threads = [threading.Thread(target=accept_loop, args=(s, p), daemon=True)
                   for s, p in listeners]
        for t in threads:
            t.start()
        emit(event="ready", shape=SHAPE, kids=kids)
        while True:
            time.sleep(3600)

    if SHAPE in ("blocking", "threaded"):
        # blocking: one thread per listener, each a single-threaded accept loop;
        # threaded: four threads calling accept() on each listener at once.
        n = 1 if SHAPE == "blocking" else 4
        threads = [threading.Thread(target=accept_loop, args=(s, p), daemon=True)
                   for s, p in listeners for _ in range(n)]
        for t in threads:
            t.start()
        emit(event="ready", shape=SHAPE)
        while True:
            time.sleep(3600)

    sel = selectors.EpollSelector()
    for s, p in listeners:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, ("L", p))
    emit(event="ready", shape=SHAPE)
    while True:
        for key, _ in sel.select():
            if key.data[0] == "L":
                lsock, lport = key.fileobj, key.data[1]
                while True:
                    try:
                        conn, accepted = lsock.accept()
                    except BlockingIOError:
                        break
                    except OSError as e:
                        emit(event="accept_error", errno=e.errno, error=repr(e),
                             lport=lport[0])
                        break
                    emit(event="accept", accept=a2(accepted), lport=lport[0], lfam=lport[1])
                    conn.setblocking(False)
                    sel.register(conn, selectors.EVENT_READ, ("C", accepted, bytearray(), lport))
                continue
            conn, (_, accepted, data, lport) = key.fileobj, key.data
            try:
                chunk = conn.recv(65536)
            except BlockingIOError:
                continue
            except OSError as e:
                chunk = b""
                emit(event="conn_error", error=repr(e), accept=a2(accepted))
            if chunk:
                data += chunk
                continue
            sel.unregister(conn)
            try:
                conn.settimeout(5)
                answer(conn, accepted, data, lport)
            except OSError as e:
                emit(event="conn_error", error=repr(e), accept=a2(accepted))
            finally:
                conn.close()

main()
'''


class ShimServer:
    """The Python server under the shim. listen: [(host, port)], a host such
    as "::1/v6only" for an IPv6-only socket; proxy_ports: the NETPROXY_PORTS
    (default: every listen port); env: more NETPROXY_*."""

    def __init__(self, tmp_path, shape, listen, proxy_ports=None, after_shim=(), **env):
        self.dir = Path(tmp_path) / f"server-{shape}-{listen[0][1]}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.script = self.dir / "server.py"
        self.script.write_text(SERVER_PY)
        self.out, self.err = self.dir / "events.jsonl", self.dir / "stderr.log"
        self.shape, self.listen = shape, listen
        ports = proxy_ports if proxy_ports is not None else [p for _, p in listen]
        self.env = shim_env(ports, after_shim, **env)
        def spec(host, port):
            host, _, opt = host.partition("/")
            return (f"[{host}]:{port}" if ":" in host else f"{host}:{port}") + \
                (f"/{opt}" if opt else "")
        specs = [spec(h, p) for h, p in listen]
        self.cmd = [sys.executable, str(self.script), shape] + specs
        self._cm = None

    def __enter__(self):
        self._cm = process(self.cmd, self.out, self.err, env=self.env,
                           what=f"python server ({self.shape})")
        self.proc = self._cm.__enter__()
        self.kids = []
        try:
            want = 4 if self.shape == "prefork" else 1
            wait_for(lambda: len(self.events("ready")) >= want or self._dead(), TIMEOUT,
                     "the server to be ready")
            self._dead(check=True)
            self.kids = [k for e in self.events("ready") for k in (e.get("kids") or [])]
            for _, p in self.listen:
                wait_for(lambda: listening(p), TIMEOUT, f"port {p} to listen")
        except BaseException:
            self.kids = [k for e in self.events("ready") for k in (e.get("kids") or [])]
            try:
                self._cm.__exit__(*sys.exc_info())
            finally:
                self._stop_kids()
            raise
        return self

    def __exit__(self, *exc):
        try:
            return self._cm.__exit__(*exc)
        finally:
            self._stop_kids()

    def _stop_kids(self):
        """The children of a prefork server, by PID (they also die with their parent)."""
        for pid in self.kids:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                if not pid_alive(pid):
                    break
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    break
                try:
                    wait_for(lambda: not pid_alive(pid), 2.0, f"pid {pid} to end")
                    break
                except AssertionError:
                    continue

    def _dead(self, check=False):
        if self.proc.poll() is not None:
            if check:
                raise AssertionError(f"server exited ({self.proc.returncode}):\n{self.debug()}")
            return True
        return False

    def events(self, kind=None):
        out = []
        for line in text_of(self.out).splitlines():
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if kind is None or ev["event"] == kind:
                out.append(ev)
        return out

    def debug(self):
        return (f"--- events ---\n{text_of(self.out)[-6000:]}\n"
                f"--- stderr (NETPROXY_DEBUG) ---\n{text_of(self.err)[-6000:]}")

    def accepted_ports(self):
        return sorted(e["accept"][1] for e in self.events("accept"))

    def assert_no_errors(self):
        bad = [e for e in self.events() if e["event"] in ("accept_error", "conn_error")]
        assert not bad, f"the server saw errors: {bad}\n{self.debug()}"


def connect(port, host="127.0.0.1", source=None, timeout=TIMEOUT):
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        if source:
            s.bind((source, 0))
        s.connect((host, port))
    except BaseException:
        s.close()
        raise
    return s


def recv_all(s):
    got = bytearray()
    while True:
        chunk = s.recv(65536)
        if not chunk:
            return bytes(got)
        got += chunk


def exchange(port, first, later=(), host="127.0.0.1", source=None, timeout=TIMEOUT):
    """Connect, send first in one segment, then each (delay, bytes) of later,
    half-close and read the server's one-line JSON answer until EOF.
    Returns (answer, this end's (host, port), seconds taken)."""
    t0 = time.monotonic()
    s = connect(port, host, source, timeout)
    try:
        local = s.getsockname()[:2]
        s.sendall(first)
        for delay, chunk in later:
            time.sleep(delay)
            s.sendall(chunk)
        s.shutdown(socket.SHUT_WR)
        reply = recv_all(s)
    finally:
        s.close()
    assert reply.endswith(b"\n"), reply
    return json.loads(reply), local, time.monotonic() - t0


def sha(data):
    return hashlib.sha256(data).hexdigest()


def refused(port, data, source=None, host="127.0.0.1", timeout=TIMEOUT):
    """Send data and see the connection end (EOF or reset) without an answer.
    Returns the seconds it took; fails when something came back."""
    t0 = time.monotonic()
    s = connect(port, host, source, timeout)
    try:
        got = b""
        try:
            s.sendall(data)
            got = recv_all(s)
        except (ConnectionResetError, BrokenPipeError):
            pass
        assert got == b"", f"a refused connection got an answer: {got!r}"
    finally:
        s.close()
    return time.monotonic() - t0


def header(version, src=CLIENT, dst=DST):
    if version == "v1":
        fam = "TCP6" if ":" in src[0] else "TCP4"
        return proxy_v1(src[0], dst[0], src[1], dst[1], fam)
    return proxy_v2(src[0], dst[0], src[1], dst[1])


@contextmanager
def silent_clients(port, n, host="127.0.0.1"):
    """n connections that send nothing, closed at the end of the block."""
    socks = []
    try:
        for _ in range(n):
            socks.append(connect(port, host))
        yield socks
    finally:
        for s in socks:
            s.close()


# --- 1. addresses and data, in the three server shapes ----------------------------


@pytest.mark.parametrize("version", ["v1", "v2"])
@pytest.mark.parametrize("shape", SHAPES)
def test_claimed_addresses_and_data_intact(shape, version, tmp_path):
    port = free_port()
    later = random.Random(f"{shape}{version}").randbytes(200_000)
    first = b"first bytes, in the header's own segment|"
    with ShimServer(tmp_path, shape, [("127.0.0.1", port)], NETPROXY_DST=1) as srv:
        ans, _, _ = exchange(port, header(version) + first,
                             later=[(0.15, later[:1000]), (0.1, later[1000:])])
        assert ans["accept"] == list(CLIENT), srv.debug()
        assert ans["peer"] == list(CLIENT), srv.debug()
        assert ans["sock"] == list(DST), srv.debug()
        assert ans["len"] == len(first) + len(later)
        assert ans["sha256"] == sha(first + later), srv.debug()
        assert ans["head"].encode("latin-1") == (first + later)[:300]
        # Only the header itself was taken: a header followed by nothing else.
        ans, _, _ = exchange(port, header(version, ("203.0.113.8", 1000), DST))
        assert (ans["accept"], ans["peer"], ans["len"]) == (["203.0.113.8", 1000],) * 2 + (0,)
        assert srv.accepted_ports() == [1000, CLIENT[1]]
        srv.assert_no_errors()


@pytest.mark.parametrize("shape", SHAPES)
def test_without_dst_getsockname_is_the_real_one(shape, tmp_path):
    port = free_port()
    with ShimServer(tmp_path, shape, [("127.0.0.1", port)]) as srv:
        ans, _, _ = exchange(port, header("v2") + b"x")
        assert ans["accept"] == ans["peer"] == list(CLIENT)
        assert ans["sock"] == ["127.0.0.1", port], srv.debug()
        srv.assert_no_errors()


def free_port_dual():
    """A port for a dual-stack listener on ::, free in both families (a port
    free on ::1 may be taken on 127.0.0.1 by another test meanwhile)."""
    for port in port_candidates():
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            try:
                s.bind(("::", port))
            except OSError:
                continue
            return port
    raise AssertionError("no port free on :: in both families")


def free_port_both():
    """A port free on both 127.0.0.1 and ::1."""
    for _ in range(50):
        port = free_port()
        try:
            with socket.socket(socket.AF_INET6) as s:
                s.bind(("::1", port))
            return port
        except OSError:
            continue
    raise AssertionError("no port free on both 127.0.0.1 and ::1")


MAPPED = ["::ffff:203.0.113.7", CLIENT[1]]
MAPPED_DST = ["::ffff:192.0.2.1", DST[1]]


@pytest.mark.parametrize("shape", SHAPES)
def test_ipv6_listener_v4_and_v6_clients(shape, tmp_path):
    port = free_port_dual()
    cases = [  # (connect to, header, expected peer, expected sock)
        ("127.0.0.1", header("v1"), MAPPED, MAPPED_DST),
        ("127.0.0.1", header("v2"), MAPPED, MAPPED_DST),
        ("::1", header("v2"), MAPPED, MAPPED_DST),
        ("::1", header("v1", CLIENT6, DST6), list(CLIENT6), list(DST6)),
        ("::1", header("v2", CLIENT6, DST6), list(CLIENT6), list(DST6)),
        ("127.0.0.1", header("v2", CLIENT6, DST6), list(CLIENT6), list(DST6)),
    ]
    with ShimServer(tmp_path, shape, [("::", port)], NETPROXY_DST=1) as srv:
        for host, hdr, peer, sock in cases:
            ans, _, _ = exchange(port, hdr + b"hello over v6", host=host)
            assert (ans["accept"], ans["peer"], ans["sock"]) == (peer, peer, sock), \
                (host, hdr, ans, srv.debug())
            assert ans["head"] == "hello over v6"
        srv.assert_no_errors()


@pytest.mark.parametrize("shape", SHAPES + ["prefork"])
def test_each_client_on_the_listener_of_its_family(shape, tmp_path):
    """A server listening on 127.0.0.1 and ::1 on one port, as Prosody does
    with both in its interfaces: a client the header names as IPv6 is
    accepted on the IPv6 socket with its own address, whichever socket the
    load balancer connected to, with its header at once or late; an IPv4
    client is accepted on the IPv4 socket, as the kernel would have done. (A
    socket bound to ::1 is IPv6-only, whatever IPV6_V6ONLY said before bind:
    the kernel sets it. A dual-stack socket, on ::, reports IPv4 clients
    v4-mapped: test_ipv6_listener_v4_and_v6_clients.)"""
    port = free_port_both()
    v4_on_v6 = (4, list(CLIENT), list(DST))
    cases = [  # (connect to, version, client, dst, expected (listener family, peer, sock))
        ("127.0.0.1", "v1", CLIENT6, DST6, (6, list(CLIENT6), list(DST6))),
        ("127.0.0.1", "v2", CLIENT6, DST6, (6, list(CLIENT6), list(DST6))),
        ("127.0.0.1", "v2", CLIENT, DST, (4, list(CLIENT), list(DST))),
        ("::1", "v2", CLIENT6, DST6, (6, list(CLIENT6), list(DST6))),
        ("::1", "v1", CLIENT, DST, v4_on_v6),
        ("::1", "v2", CLIENT, DST, v4_on_v6),
    ]
    with ShimServer(tmp_path, shape, [("127.0.0.1", port), ("::1", port)], NETPROXY_DST=1,
                    NETPROXY_TRUSTED="127.0.0.1,::1") as srv:
        for late in (False, True):
            for host, version, client, dst, want in cases:
                hdr = header(version, client, dst)
                data = b"%s from %s" % (version.encode(), host.encode())
                if late:
                    ans, _, took = exchange(port, hdr[:9], later=[(0.2, hdr[9:] + data)],
                                            host=host)
                else:
                    ans, _, took = exchange(port, hdr + data, host=host)
                got = (ans["lfam"], ans["accept"], ans["sock"])
                assert got == want and ans["peer"] == want[1], \
                    (host, version, late, ans, srv.debug())
                assert ans["head"] == data.decode()
                assert took < 2.0, f"{host} {version} late={late}: {took:.2f} s\n{srv.debug()}"
        assert "refused" not in text_of(srv.err), srv.debug()
        srv.assert_no_errors()


@pytest.mark.parametrize("shape", SHAPES)
def test_ipv6_client_without_an_ipv6_listener_is_refused(shape, tmp_path):
    """Only an IPv4 listener on the port (an IPv6 one on another port does
    not count): an IPv6 client is refused, at once or late, with the reason
    in the debug line; IPv4 clients are served meanwhile. An IPv6-only
    listener alone reports an IPv4 client v4-mapped."""
    port, other = free_port_both(), free_port_both()
    with ShimServer(tmp_path, shape, [("127.0.0.1", port), ("::1/v6only", other)]) as srv:
        for version in ("v1", "v2"):
            hdr = header(version, CLIENT6, DST6)
            took = refused(port, hdr + b"not for an IPv4 socket")
            assert took < 1.5, f"closed after {took:.2f} s"
            c = connect(port)
            try:
                c.sendall(hdr[:9])
                time.sleep(0.2)
                c.sendall(hdr[9:] + b"late")
                c.settimeout(5)
                try:
                    assert c.recv(100) == b""
                except ConnectionResetError:
                    pass
            finally:
                c.close()
            ans, _, _ = exchange(port, header(version) + b"v4")
            assert (ans["lfam"], ans["accept"], ans["head"]) == (4, list(CLIENT), "v4")
        err = text_of(srv.err)
        reason = "an IPv6 client cannot be reported on an IPv4 listener"
        # Refused in accept(), or, when it was accepted before its header
        # came, closed by the watcher.
        assert err.count(f"refused: {reason}") + err.count(f"closed: {reason}") == 4, \
            srv.debug()
        ans, _, _ = exchange(other, header("v2") + b"v4 on v6only", host="::1")
        assert (ans["lfam"], ans["accept"]) == (6, MAPPED), srv.debug()
        assert [e["lport"] for e in srv.events("accept")] == [port, port, other]
        srv.assert_no_errors()


@pytest.mark.parametrize("shape", SHAPES)
def test_local_and_unknown_give_the_real_peer(shape, tmp_path):
    port = free_port()
    hdrs = {
        "v2 LOCAL": proxy_v2("", "", 0, 0, command=0),
        "v1 UNKNOWN": b"PROXY UNKNOWN\r\n",
        "v1 UNKNOWN with addresses": b"PROXY UNKNOWN 203.0.113.7 192.0.2.1 51234 443\r\n",
    }
    with ShimServer(tmp_path, shape, [("127.0.0.1", port)], NETPROXY_DST=1) as srv:
        for name, hdr in hdrs.items():
            ans, local, _ = exchange(port, hdr + b"after " + name.encode())
            assert local[0] == "127.0.0.1"
            assert ans["accept"] == ans["peer"] == ["127.0.0.1", local[1]], (name, srv.debug())
            assert ans["sock"] == ["127.0.0.1", port], (name, srv.debug())
            assert ans["head"] == "after " + name, name
        srv.assert_no_errors()


# --- 2. never stall ------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
def test_silent_client_never_stalls_the_server(shape, tmp_path):
    port = free_port()
    with ShimServer(tmp_path, shape, [("127.0.0.1", port)], NETPROXY_TIMEOUT_MS=3000) as srv:
        with silent_clients(port, 1) as (silent,):
            t_silent = time.monotonic()
            silent_port = silent.getsockname()[1]
            time.sleep(0.2)     # the server is in accept() with the silent one first
            for i in range(6):
                version = "v1" if i % 2 else "v2"
                src = ("203.0.113.7", 20000 + i)
                ans, _, took = exchange(port, header(version, src) + b"quick %d" % i,
                                        timeout=2.5)
                assert ans["accept"] == list(src) and ans["head"] == "quick %d" % i
                assert took < 1.0, f"round trip {i} took {took:.2f} s\n{srv.debug()}"
            # The silent one is closed once NETPROXY_TIMEOUT_MS has passed.
            silent.settimeout(6)
            try:
                got = silent.recv(1)
            except ConnectionResetError:
                got = b""
            waited = time.monotonic() - t_silent
            assert got == b"", got
            assert 2.5 <= waited < 5.0, f"silent client closed after {waited:.2f} s"
        # One more after the timeout: still served, and the silent one never seen.
        ans, _, took = exchange(port, header("v2") + b"after")
        assert ans["accept"] == list(CLIENT) and took < 1.0
        assert srv.accepted_ports() == sorted([20000 + i for i in range(6)] + [CLIENT[1]])
        assert silent_port not in srv.accepted_ports()
        srv.assert_no_errors()


@pytest.mark.parametrize("version,piece", [("v1", 16), ("v2", 10)])
@pytest.mark.parametrize("shape", SHAPES)
def test_split_header_is_delivered_by_the_wake_up(shape, version, piece, tmp_path):
    """netproxy-send --split: three pieces 300 ms apart, and no other
    connection arrives; the watcher's wake-up alone gets it to the server."""
    port = free_port()
    hlen = len(header(version))
    assert (hlen + piece - 1) // piece == 3
    with ShimServer(tmp_path, shape, [("127.0.0.1", port)], NETPROXY_DST=1) as srv:
        cmd = [tool("netproxy-send"), "-q", "-w", "8", f"-{version[1]}",
               "-s", f"{CLIENT[0]}:{CLIENT[1]}", "-d", f"{DST[0]}:{DST[1]}",
               "--split", str(piece), "--split-delay", "300", "127.0.0.1", str(port)]
        t0 = time.monotonic()
        r = subprocess.run(cmd, input=b"data after a split header", capture_output=True,
                           timeout=15)
        took = time.monotonic() - t0
        assert r.returncode == 0, (r.returncode, r.stderr, srv.debug())
        ans = json.loads(r.stdout)
        assert (ans["accept"], ans["peer"], ans["sock"]) == (list(CLIENT), list(CLIENT),
                                                             list(DST)), srv.debug()
        assert ans["head"] == "data after a split header"
        assert 0.55 <= took < 2.0, f"took {took:.2f} s\n{srv.debug()}"
        assert len(srv.events("accept")) == 1, srv.debug()
        srv.assert_no_errors()


# The watcher's setup made to fail at one step, the first time the shim makes
# that call: a library loaded after the shim interposes on it, and fails it
# only when the caller is the shim (Python's own threads and epoll go on).
FAULTS_C = r'''
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>

static int from_shim(const char *name, void *caller)
{
	static int failed;
	const char *which = getenv("FAIL_CALL");
	Dl_info info;

	if (!which || strcmp(which, name) != 0 || !dladdr(caller, &info) || !info.dli_fname ||
	    !strstr(info.dli_fname, "libnetproxy_preload"))
		return 0;
	return __atomic_fetch_add(&failed, 1, __ATOMIC_RELAXED) == 0;
}

int epoll_create1(int flags)
{
	static int (*next)(int);
	if (!next)
		next = (int (*)(int))dlsym(RTLD_NEXT, "epoll_create1");
	if (from_shim("epoll_create1", __builtin_return_address(0))) {
		errno = EMFILE;
		return -1;
	}
	return next(flags);
}

int eventfd(unsigned int initval, int flags)
{
	static int (*next)(unsigned int, int);
	if (!next)
		next = (int (*)(unsigned int, int))dlsym(RTLD_NEXT, "eventfd");
	if (from_shim("eventfd", __builtin_return_address(0))) {
		errno = EMFILE;
		return -1;
	}
	return next(initval, flags);
}

int epoll_ctl(int epfd, int op, int fd, struct epoll_event *ev)
{
	static int (*next)(int, int, int, struct epoll_event *);
	if (!next)
		next = (int (*)(int, int, int, struct epoll_event *))dlsym(RTLD_NEXT, "epoll_ctl");
	if (from_shim("epoll_ctl", __builtin_return_address(0))) {
		errno = ENOSPC;
		return -1;
	}
	return next(epfd, op, fd, ev);
}

int pthread_create(pthread_t *t, const pthread_attr_t *attr, void *(*fn)(void *), void *arg)
{
	static int (*next)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *);
	if (!next)
		next = (int (*)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *))
			dlsym(RTLD_NEXT, "pthread_create");
	if (from_shim("pthread_create", __builtin_return_address(0)))
		return EAGAIN;
	return next(t, attr, fn, arg);
}
'''


def anon_inodes(pid):
    """How many of each anonymous inode kind ([eventfd], [eventpoll]) pid holds."""
    kinds = {}
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("anon_inode:"):
            kinds[target[11:]] = kinds.get(target[11:], 0) + 1
    return kinds


def closed_within(sock, bound):
    """Seconds until the peer closes sock (EOF or reset), failing after bound."""
    t0 = time.monotonic()
    sock.settimeout(bound)
    try:
        got = sock.recv(1)
    except ConnectionResetError:
        got = b""
    except socket.timeout:
        raise AssertionError(f"not closed within {bound} s") from None
    assert got == b"", got
    return time.monotonic() - t0


@pytest.mark.parametrize("call", ["epoll_create1", "eventfd", "epoll_ctl", "pthread_create"])
def test_watcher_that_cannot_start_refuses_then_starts_whole(call, tmp_path):
    """The watcher's setup fails at one step: the connection that needed it is
    refused at once, with a debug line naming the call; the next one that
    needs it finds nothing half made: a whole watcher starts, parked clients
    are closed at their deadline, a later one too (the watcher, idle with no
    deadline, is told of it), and a late header is delivered. No descriptor
    of the failed attempt is left."""
    cc = shutil.which("cc") or shutil.which("gcc")
    assert cc, "a C compiler is needed"
    src, lib = tmp_path / "faults.c", tmp_path / "faults.so"
    src.write_text(FAULTS_C)
    r = subprocess.run([cc, "-shared", "-fPIC", "-O1", "-Wall", "-Werror", "-o", str(lib),
                        str(src), "-ldl"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    port = free_port()
    with ShimServer(tmp_path, "blocking", [("127.0.0.1", port)], after_shim=[lib],
                    NETPROXY_TIMEOUT_MS=1500, FAIL_CALL=call) as srv:
        with silent_clients(port, 1) as (first,):
            took = closed_within(first, 5)
            assert took < 1.0, f"refused after {took:.2f} s\n{srv.debug()}"
        err = text_of(srv.err)
        assert f"the watcher cannot start: {call}: " in err, srv.debug()
        assert "refused: cannot watch it for its header" in err, srv.debug()
        for _ in range(2):      # the second one while the watcher waits with no deadline
            with silent_clients(port, 1) as (silent,):
                took = closed_within(silent, 6)
                assert 1.2 <= took < 4.0, f"closed after {took:.2f} s\n{srv.debug()}"
        s = send_split(port, header("v2"), b"late but served", delay=0.3)
        try:
            s.shutdown(socket.SHUT_WR)
            ans = json.loads(recv_all(s))
        finally:
            s.close()
        assert ans["accept"] == list(CLIENT) and ans["head"] == "late but served", srv.debug()
        kinds = anon_inodes(srv.proc.pid)
        assert (kinds.get("[eventpoll]"), kinds.get("[eventfd]")) == (1, 1), (kinds, srv.debug())
        assert text_of(srv.err).count("the watcher cannot start") == 1, srv.debug()
        srv.assert_no_errors()


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_prefork_processes_get_their_late_headers(version, tmp_path):
    """Four processes blocking in accept() on one listener: a wake-up may be
    accepted by another process than the one that parked the connection."""
    port = free_port()
    with ShimServer(tmp_path, "prefork", [("127.0.0.1", port)], NETPROXY_TIMEOUT_MS=3000) as srv:
        took = {}

        def late(i):
            src = ("203.0.113.7", 21000 + i)
            hdr = header(version, src)
            ans, _, took[i] = exchange(port, hdr[:7], later=[(0.3, hdr[7:] + b"late %d" % i)],
                                       timeout=6)
            assert ans["accept"] == list(src) and ans["head"] == "late %d" % i, ans

        with silent_clients(port, 2):
            for i in range(4):
                late(i)
            th = Threads()
            for i in range(4, 16):
                th.start(late, i)
                time.sleep(0.05)
            th.join(20)
        slow = {i: round(t, 2) for i, t in took.items() if t >= 1.5}
        assert not slow, f"late headers served after (s): {slow}\n{srv.debug()}"
        assert srv.accepted_ports() == [21000 + i for i in range(16)]
        srv.assert_no_errors()


# --- 3. rejection ----------------------------------------------------------------------


MALFORMED = {
    "http": b"GET / HTTP/1.0\r\nHost: x\r\n\r\n",
    "bad v1 address": b"PROXY TCP4 203.0.113.300 192.0.2.1 51234 443\r\nhello",
    "bad v1 protocol": b"PROXY TCP5 203.0.113.7 192.0.2.1 51234 443\r\nhello",
    "bad v2 signature": b"\r\n\r\n\x00\r\nQUIX\n" + bytes([0x21, 0x11, 0, 12])
                        + socket.inet_aton(CLIENT[0]) + socket.inet_aton(DST[0])
                        + (51234).to_bytes(2, "big") + (443).to_bytes(2, "big") + b"hello",
    # Refused as soon as its first 16 bytes announce more than 4096
    # (NETPROXY_MAX_HEADER's default).
    "v2 longer than 4096 bytes": b"\r\n\r\n\x00\r\nQUIT\n" + bytes([0x21, 0x11])
                                 + (5000).to_bytes(2, "big") + socket.inet_aton(CLIENT[0])
                                 + socket.inet_aton(DST[0]) + bytes(4) + b"\x00" * 200,
}


@pytest.mark.parametrize("shape", SHAPES)
def test_untrusted_and_malformed_are_refused(shape, tmp_path):
    port = free_port()
    good_port = iter(range(30000, 30100))
    with ShimServer(tmp_path, shape, [("127.0.0.1", port)], NETPROXY_TRUSTED="127.0.0.2/32",
                    NETPROXY_TIMEOUT_MS=3000) as srv:
        served = []

        def good():
            # Every other one with its header late: the wake-up comes from the
            # listener's own address, 127.0.0.1, which is not trusted here.
            src = ("203.0.113.7", next(good_port))
            hdr = header("v2", src)
            if src[1] % 2:
                ans, _, took = exchange(port, hdr[:9], later=[(0.15, hdr[9:] + b"good")],
                                        source="127.0.0.2")
            else:
                ans, _, took = exchange(port, hdr + b"good", source="127.0.0.2")
            assert ans["accept"] == list(src) and ans["head"] == "good", srv.debug()
            assert took < 1.0, f"{took:.2f} s\n{srv.debug()}"
            served.append(src[1])

        good()
        for source in ("127.0.0.1", "127.0.0.3"):
            for version in ("v1", "v2"):
                took = refused(port, header(version) + b"from an untrusted peer", source)
                assert took < 1.5, f"untrusted {source} closed after {took:.2f} s"
                good()
        for name, data in MALFORMED.items():
            took = refused(port, data, "127.0.0.2")
            assert took < 1.5, f"{name}: closed after {took:.2f} s\n{srv.debug()}"
            good()
        # Part of a header, then the sender closes: closed, never seen (at the
        # latest when the header times out).
        for version in ("v1", "v2"):
            t0 = time.monotonic()
            c = connect(port, source="127.0.0.2")
            try:
                c.sendall(header(version)[:10])
                c.shutdown(socket.SHUT_WR)
                c.settimeout(6)
                try:
                    assert c.recv(100) == b""
                except ConnectionResetError:
                    pass
            finally:
                c.close()
            took = time.monotonic() - t0
            assert took < 4.5, f"a half header with FIN closed after {took:.2f} s"
            good()
        assert srv.accepted_ports() == served, srv.debug()
        assert len(srv.events("served")) == len(served)
        srv.assert_no_errors()


def largest_v2(src=CLIENT, dst=DST):
    """The largest legal v2 header, 16 + 65535 bytes: the addresses and one
    NOOP TLV of 65520 bytes."""
    hdr = proxy_v2(src[0], dst[0], src[1], dst[1],
                   tlvs=b"\x04" + (65520).to_bytes(2, "big") + bytes(range(256)) * 255
                   + bytes(range(240)))
    assert len(hdr) == 65551 and hdr[14:16] == b"\xff\xff"
    return hdr


@pytest.mark.parametrize("shape", SHAPES)
def test_largest_v2_header_with_max_header_raised(shape, tmp_path):
    """NETPROXY_MAX_HEADER=65551: the largest legal v2 header is read, at
    once or late (its rest 0.2 s after its first 16 bytes), and the bytes
    after it arrive intact; a 4097-byte one too."""
    port = free_port()
    hdr = largest_v2()
    mid = proxy_v2(CLIENT[0], DST[0], CLIENT[1], DST[1],
                   tlvs=b"\x04" + (4097 - 31).to_bytes(2, "big") + bytes(4097 - 31))
    assert len(mid) == 4097
    after = random.Random(3).randbytes(100_000)
    with ShimServer(tmp_path, shape, [("127.0.0.1", port)], NETPROXY_MAX_HEADER=65551,
                    NETPROXY_DST=1) as srv:
        for name, first, later in (("at once", hdr + after, []),
                                   ("late", hdr[:16], [(0.2, hdr[16:] + after)]),
                                   ("4097 bytes", mid + after, [])):
            ans, _, took = exchange(port, first, later=later)
            assert (ans["accept"], ans["peer"], ans["sock"]) == (list(CLIENT), list(CLIENT),
                                                                 list(DST)), (name, srv.debug())
            assert (ans["len"], ans["sha256"]) == (len(after), sha(after)), name
            assert took < 2.0, f"{name}: {took:.2f} s\n{srv.debug()}"
        assert "header up to 65551 bytes" in text_of(srv.err)
        srv.assert_no_errors()


@pytest.mark.parametrize("shape", SHAPES)
def test_header_over_max_header_is_refused_naming_the_setting(shape, tmp_path):
    """By default (4096 bytes) the largest v2 header is refused as soon as its
    first 16 bytes announce its length, with a debug line that names the
    setting to raise; so is a 4097-byte one, and a header of exactly
    NETPROXY_MAX_HEADER bytes is read."""
    port = free_port()
    exact = proxy_v2(CLIENT[0], DST[0], CLIENT[1], DST[1],
                     tlvs=b"\x04" + (4096 - 31).to_bytes(2, "big") + bytes(4096 - 31))
    assert len(exact) == 4096
    with ShimServer(tmp_path, shape, [("127.0.0.1", port)]) as srv:
        took = refused(port, largest_v2()[:16])
        assert took < 1.5, f"closed after {took:.2f} s"
        refused(port, exact[:14] + (4097 - 16).to_bytes(2, "big") + exact[16:] + b"x")
        ans, _, _ = exchange(port, exact + b"just fits")
        assert (ans["accept"], ans["head"]) == (list(CLIENT), "just fits"), srv.debug()
        # "connection on fd N refused: ...", or "fd N closed: ..." when it was
        # accepted (and parked) before its bytes came.
        err = text_of(srv.err)
        assert err.count(": header larger than NETPROXY_MAX_HEADER (4096 bytes)") == 2, \
            srv.debug()
        assert srv.accepted_ports() == [CLIENT[1]]
        srv.assert_no_errors()


def shim_start_error(**env):
    """What a process under the shim says on stderr at its first wrapped call
    (a close()), with env added to NETPROXY_PORTS=1."""
    r = subprocess.run(["/usr/bin/python3", "-c", "import os; os.close(os.dup(0))"],
                       env=shim_env([1], **env), capture_output=True, text=True,
                       timeout=TIMEOUT, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r
    return r.stderr


@pytest.mark.parametrize("value", ["15", "65552", "4k", "-1", "0", "99999999999999999999"])
def test_max_header_out_of_range_turns_the_shim_off(value):
    err = shim_start_error(NETPROXY_MAX_HEADER=value)
    assert err == (f"netproxy_preload: NETPROXY_MAX_HEADER={value}: expected bytes from 16 "
                   f"to 65551; the shim is off\n"), err


# --- trusted senders: one meaning, netproxyd's and the original module's -----------------


UNTRUSTED = "untrusted sender (not in NETPROXY_TRUSTED)"


def test_default_trusts_exactly_127_0_0_1_and_ipv6_loopback(tmp_path):
    """NETPROXY_TRUSTED unset: 127.0.0.1 and ::1, nothing else of 127.0.0.0/8."""
    port = free_port_both()
    with ShimServer(tmp_path, "epoll", [("127.0.0.1", port), ("::1", port)]) as srv:
        for host, source in (("127.0.0.1", "127.0.0.1"), ("::1", "::1")):
            ans, _, _ = exchange(port, header("v2") + b"trusted", host=host, source=source)
            assert (ans["accept"], ans["head"]) == (list(CLIENT), "trusted"), srv.debug()
        for source in ("127.0.0.5", "127.0.0.2"):
            refused(port, header("v2") + b"from another loopback address", source=source)
        err = text_of(srv.err)
        assert "trusted: 127.0.0.1,::1;" in err, err
        assert err.count(f"refused: {UNTRUSTED}") == 2, srv.debug()
        assert len(srv.events("accept")) == 2
        srv.assert_no_errors()


@pytest.mark.parametrize("value", ["", " , ,"], ids=["empty", "separators"])
def test_empty_trusted_means_anyone_with_a_warning(value, tmp_path):
    """NETPROXY_TRUSTED set and empty (or only separators): any sender, with
    a warning on stderr at start, NETPROXY_DEBUG or not, once per process."""
    port = free_port()
    with ShimServer(tmp_path, "prefork", [("127.0.0.1", port)], NETPROXY_TRUSTED=value,
                    NETPROXY_DEBUG=0) as srv:
        for i, source in enumerate(("127.0.0.5", "127.0.0.1", "127.0.0.77")):
            src = ("203.0.113.7", 40000 + i)
            ans, _, _ = exchange(port, header("v1", src) + b"anyone", source=source)
            assert ans["accept"] == list(src), srv.debug()
        warning = ("netproxy_preload: WARNING: NETPROXY_TRUSTED is set and empty: ANY host "
                   "can send PROXY headers and claim any address\n")
        # Four processes, forked after the shim started: one warning.
        assert text_of(srv.err) == warning, srv.debug()


@pytest.mark.parametrize("block,write", [("::ffff:10.0.0.0/104", "10.0.0.0/8"),
                                         ("::ffff:127.0.0.1", "127.0.0.1"),
                                         ("::ffff:192.0.2.77/120", "192.0.2.0/24"),
                                         ("::ffff:0:0/96", "0.0.0.0/0")])
def test_ipv4_mapped_block_is_a_configuration_error(block, write):
    """A block inside ::ffff:0:0/96 could match no sender, an IPv4 sender being
    matched as IPv4: refused, naming the IPv4 form to write; the shim is off."""
    err = shim_start_error(NETPROXY_TRUSTED=f"127.0.0.1,{block}")
    assert err == (f"netproxy_preload: NETPROXY_TRUSTED: '{block}' is an IPv4-mapped block, "
                   f"which no sender matches (an IPv4 sender is matched as IPv4): write "
                   f"'{write}'; the shim is off\n"), err


@pytest.mark.parametrize("value", ["10.0.0.0/33", "127.0.0.1/08", "::1/129", "localhost",
                                   "10.0.0.01", "fe80::1%lo"])
def test_unreadable_trusted_entry_turns_the_shim_off(value):
    err = shim_start_error(NETPROXY_TRUSTED=f"127.0.0.1 {value}")
    assert err == f"netproxy_preload: NETPROXY_TRUSTED: cannot read '{value}'; the shim is off\n"


@pytest.mark.parametrize("shape", SHAPES)
def test_v4_mapped_sender_matched_as_ipv4(shape, tmp_path):
    """On a dual-stack listener (::) an IPv4 sender shows as ::ffff:a.b.c.d:
    it is matched by IPv4 blocks, and by no IPv6 block."""
    port = free_port_dual()
    with ShimServer(tmp_path, shape, [("::", port)],
                    NETPROXY_TRUSTED="127.0.0.5/32,::1,::/0") as srv:
        ans, _, _ = exchange(port, header("v2") + b"mapped", source="127.0.0.5")
        assert ans["accept"] == MAPPED, srv.debug()
        # ::/0 holds every IPv6 address, ::ffff:127.0.0.6 too, but it is an IPv4 sender.
        refused(port, header("v2") + b"no IPv4 block", source="127.0.0.6")
        ans, _, _ = exchange(port, header("v2") + b"v6", host="::1", source="::1")
        assert ans["accept"] == MAPPED, srv.debug()
        assert text_of(srv.err).count(f"refused: {UNTRUSTED}") == 1, srv.debug()
        srv.assert_no_errors()


@pytest.mark.parametrize("shape", SHAPES)
def test_ports_not_listed_are_untouched(shape, tmp_path):
    port, plain = free_port(), free_port()
    with ShimServer(tmp_path, shape, [("127.0.0.1", port), ("127.0.0.1", plain)],
                    proxy_ports=[port], NETPROXY_DST=1) as srv:
        for data in (b"plain client, no header\n",
                     header("v1") + b"a header on a plain port is just data",
                     header("v2") + b"binary too"):
            ans, local, _ = exchange(plain, data)
            assert ans["accept"] == ans["peer"] == ["127.0.0.1", local[1]]
            assert ans["sock"] == ["127.0.0.1", plain]
            assert ans["len"] == len(data) and ans["sha256"] == sha(data), srv.debug()
        # The PROXY port next to it still works, and still refuses a bare client.
        ans, _, _ = exchange(port, header("v1") + b"proxied")
        assert ans["accept"] == list(CLIENT) and ans["head"] == "proxied"
        refused(port, b"plain client, no header\n")
        assert len([e for e in srv.events("accept") if e["lport"] == port]) == 1
        srv.assert_no_errors()


# --- 4. accept4 flags and addresses, exactly ---------------------------------------------


ACCEPT_C = r'''
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static void fmt(const struct sockaddr_storage *ss, char *out, size_t n)
{
	char ip[INET6_ADDRSTRLEN] = "?";
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *in = (const void *)ss;
		inet_ntop(AF_INET, &in->sin_addr, ip, sizeof(ip));
		snprintf(out, n, "%s:%u", ip, ntohs(in->sin_port));
	} else if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const void *)ss;
		inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof(ip));
		snprintf(out, n, "[%s]:%u", ip, ntohs(in6->sin6_port));
	} else {
		snprintf(out, n, "family%d", ss->ss_family);
	}
}

static void say(const char *f, const char *a)
{
	printf(f, a);
	fflush(stdout);
}

/* Report what fd is like; read what the client sent after its header. */
static void report(const char *name, int fd, int err, const struct sockaddr_storage *ss,
		   socklen_t len, int with_addr)
{
	if (fd < 0) {
		printf("RESULT %s fd=-1 errno=%d\n", name, err);
		fflush(stdout);
		return;
	}
	int fl = fcntl(fd, F_GETFL), fdfl = fcntl(fd, F_GETFD);
	char addr[128] = "none", peer[128], raw[2 * 16 + 1] = "none", data[256];
	if (with_addr) {
		fmt(ss, addr, sizeof(addr));
		for (int i = 0; i < 16; i++)
			sprintf(raw + 2 * i, "%02x", ((const unsigned char *)ss)[i]);
	}
	struct sockaddr_storage ps;
	socklen_t pl = sizeof(ps);
	memset(&ps, 0, sizeof(ps));
	int pr = getpeername(fd, (struct sockaddr *)&ps, &pl);
	fmt(&ps, peer, sizeof(peer));
	struct pollfd p = {.fd = fd, .events = POLLIN};
	ssize_t n = 0;
	if (poll(&p, 1, 5000) == 1)
		n = recv(fd, data, sizeof(data) - 1, MSG_DONTWAIT);
	data[n > 0 ? n : 0] = '\0';
	printf("RESULT %s nonblock=%d cloexec=%d len=%u addr=%s raw=%s peer_rc=%d peer=%s "
	       "peerlen=%u data=%s\n", name, !!(fl & O_NONBLOCK), !!(fdfl & FD_CLOEXEC),
	       (unsigned)len, addr, raw, pr, peer, (unsigned)pl, data);
	fflush(stdout);
	close(fd);
}

struct acase {
	const char *name;
	int use_accept4, flags;
	socklen_t len; /* 0: sizeof(struct sockaddr_storage) */
	int null_addr;
};

static const struct acase cases[] = {
	{"accept4-0", 1, 0, 0, 0},
	{"accept4-nonblock", 1, SOCK_NONBLOCK, 0, 0},
	{"accept4-cloexec", 1, SOCK_CLOEXEC, 0, 0},
	{"accept4-both", 1, SOCK_NONBLOCK | SOCK_CLOEXEC, 0, 0},
	{"accept4-short", 1, SOCK_CLOEXEC, 6, 0},
	{"accept4-null", 1, SOCK_NONBLOCK, 0, 1},
	{"accept", 0, 0, 0, 0},
	{"accept-short", 0, 0, 6, 0},
};

static int one(int l, const struct acase *c, const char *round)
{
	char name[96];
	struct sockaddr_storage ss;
	socklen_t len = c->len ? c->len : sizeof(ss);
	snprintf(name, sizeof(name), "%s/%s", round, c->name);
	memset(&ss, 0xAA, sizeof(ss));
	say("WAIT %s\n", name);
	struct sockaddr *a = c->null_addr ? NULL : (struct sockaddr *)&ss;
	socklen_t *lp = c->null_addr ? NULL : &len;
	errno = 0;
	int fd = c->use_accept4 ? accept4(l, a, lp, c->flags) : accept(l, a, lp);
	report(name, fd, errno, &ss, c->null_addr ? 0 : len, !c->null_addr);
	return fd;
}

/* Non-blocking listener: wait (bounded) until an accept gives a connection. */
static int nb_accept(int l, int use_accept4, int flags, struct sockaddr_storage *ss,
		     socklen_t *len, int *eagains)
{
	struct timespec t0, t;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		clock_gettime(CLOCK_MONOTONIC, &t);
		int left = 8000 - (int)((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000);
		if (left <= 0) {
			errno = ETIMEDOUT;
			return -1;
		}
		struct pollfd p = {.fd = l, .events = POLLIN};
		if (poll(&p, 1, left) != 1)
			continue;
		*len = sizeof(*ss);
		errno = 0;
		int fd = use_accept4 ? accept4(l, (struct sockaddr *)ss, len, flags)
				     : accept(l, (struct sockaddr *)ss, len);
		if (fd >= 0 || errno != EAGAIN)
			return fd;
		(*eagains)++;
	}
}

int main(int argc, char **argv)
{
	int l = socket(AF_INET, SOCK_STREAM, 0), on = 1;
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[1]))};
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
	if (bind(l, (struct sockaddr *)&sin, sizeof(sin)) || listen(l, 64)) {
		perror("listen");
		return 1;
	}
	say("READY%s\n", "");
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		one(l, &cases[i], "now");
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		one(l, &cases[i], "split");

	/* The same listener, non-blocking. */
	fcntl(l, F_SETFL, fcntl(l, F_GETFL) | O_NONBLOCK);
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	errno = 0;
	int r = accept(l, (struct sockaddr *)&ss, &len);
	printf("EAGAIN accept rc=%d errno=%d\n", r, errno);
	len = sizeof(ss);
	errno = 0;
	r = accept4(l, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
	printf("EAGAIN accept4 rc=%d errno=%d\n", r, errno);
	fflush(stdout);

	/* A silent client is pending: the shim parks it, accept says EAGAIN. */
	say("WAIT %s\n", "nb/silent");
	struct pollfd p = {.fd = l, .events = POLLIN};
	int pr = poll(&p, 1, 5000);
	len = sizeof(ss);
	errno = 0;
	r = accept4(l, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK);
	printf("EAGAIN parked poll=%d rc=%d errno=%d\n", pr, r, errno);
	fflush(stdout);

	int eagains = 0;
	say("WAIT %s\n", "nb/accept");
	int fd = nb_accept(l, 0, 0, &ss, &len, &eagains);
	report("nb/accept", fd, errno, &ss, len, 1);
	say("WAIT %s\n", "nb/split-accept4-cloexec");
	fd = nb_accept(l, 1, SOCK_CLOEXEC, &ss, &len, &eagains);
	report("nb/split-accept4-cloexec", fd, errno, &ss, len, 1);
	say("WAIT %s\n", "nb/split-accept4-nonblock");
	fd = nb_accept(l, 1, SOCK_NONBLOCK, &ss, &len, &eagains);
	report("nb/split-accept4-nonblock", fd, errno, &ss, len, 1);
	say("DONE%s\n", "");
	return 0;
}
'''


class Lines:
    """A process's stdout, line by line, with bounded waits."""

    def __init__(self, stream):
        self.q = queue.Queue()
        self.all = []
        self.t = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self.t.start()

    def _read(self, stream):
        for line in iter(stream.readline, b""):
            self.q.put(line.decode(errors="replace").rstrip("\n"))
        self.q.put(None)

    def next(self, timeout=TIMEOUT):
        try:
            line = self.q.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no line within {timeout} s; so far: {self.all}") from None
        assert line is not None, f"the program ended; it said: {self.all}"
        self.all.append(line)
        return line


def fields(line):
    return dict(f.split("=", 1) for f in line.split()[2:])


def send_split(port, hdr, data, delay=0.2):
    """A client whose header comes in two segments, delay apart."""
    s = connect(port)
    s.sendall(hdr[:7])
    time.sleep(delay)
    s.sendall(hdr[7:] + data)
    return s


def test_accept4_flags_and_addresses(tmp_path):
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    assert cc, "a C compiler is needed"
    src, exe = tmp_path / "acc.c", tmp_path / "acc"
    src.write_text(ACCEPT_C)
    r = subprocess.run([cc, "-std=c11", "-Wall", "-Werror", "-O1", "-o", str(exe), str(src)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    port = free_port()
    err = tmp_path / "acc.stderr"
    with open(err, "wb") as errf:
        proc = subprocess.Popen([str(exe), str(port)], stdout=subprocess.PIPE, stderr=errf,
                                stdin=subprocess.DEVNULL, env=shim_env([port]),
                                start_new_session=True)
    clients = []
    try:
        out = Lines(proc.stdout)

        def dbg():
            return "\n--- output ---\n" + "\n".join(out.all) + \
                f"\n--- stderr ---\n{text_of(err)[-5000:]}"
        assert out.next() == "READY"
        results = {}
        sport = 40000
        for rnd in ("now", "split"):
            for name in ("accept4-0", "accept4-nonblock", "accept4-cloexec", "accept4-both",
                         "accept4-short", "accept4-null", "accept", "accept-short"):
                assert out.next() == f"WAIT {rnd}/{name}", dbg()
                sport += 1
                hdr = header("v2" if sport % 2 else "v1", ("203.0.113.7", sport))
                data = f"ping-{sport}".encode()
                if rnd == "now":
                    s = connect(port)
                    s.sendall(hdr + data)
                else:
                    s = send_split(port, hdr, data)
                clients.append(s)
                line = out.next()
                assert line.startswith(f"RESULT {rnd}/{name} "), line + dbg()
                results[f"{rnd}/{name}"] = (fields(line), sport, line)

        def expect(key, nonblock, cloexec, addr=True, short=False):
            f, sp, line = results[key]
            msg = f"{key}: {line}{dbg()}"
            assert (f["nonblock"], f["cloexec"]) == (str(nonblock), str(cloexec)), msg
            assert (f["peer_rc"], f["peer"], f["peerlen"]) == ("0", f"203.0.113.7:{sp}",
                                                                "16"), msg
            assert f["data"] == f"ping-{sp}", msg
            if not addr:
                assert (f["addr"], f["len"]) == ("none", "0"), msg
            elif short:
                # Truncated to the 6 bytes given; *addrlen says the full 16.
                want = "0200" + sp.to_bytes(2, "big").hex() + "cb00" + "aa" * 10
                assert (f["raw"], f["len"]) == (want, "16"), msg
            else:
                assert (f["addr"], f["len"]) == (f"203.0.113.7:{sp}", "16"), msg
                assert f["raw"] == "0200" + sp.to_bytes(2, "big").hex() + "cb007107" \
                    + "00" * 8, msg

        for rnd in ("now", "split"):
            expect(f"{rnd}/accept4-0", 0, 0)
            expect(f"{rnd}/accept4-nonblock", 1, 0)
            expect(f"{rnd}/accept4-cloexec", 0, 1)
            expect(f"{rnd}/accept4-both", 1, 1)
            expect(f"{rnd}/accept4-short", 0, 1, short=True)
            expect(f"{rnd}/accept4-null", 1, 0, addr=False)
            expect(f"{rnd}/accept", 0, 0)
            expect(f"{rnd}/accept-short", 0, 0, short=True)

        # Non-blocking listener, nothing pending: EAGAIN, exactly.
        for call in ("accept", "accept4"):
            line = out.next()
            assert line == f"EAGAIN {call} rc=-1 errno={11}", line + dbg()
        assert out.next() == "WAIT nb/silent"
        clients.append(connect(port))          # never sends
        line = out.next()
        assert line == "EAGAIN parked poll=1 rc=-1 errno=11", line + dbg()

        assert out.next() == "WAIT nb/accept"
        s = connect(port)
        s.sendall(header("v1", ("203.0.113.7", 41001)) + b"ping-41001")
        clients.append(s)
        f = fields(out.next())
        assert (f["nonblock"], f["cloexec"], f["addr"], f["peer"], f["data"]) == \
            ("0", "0", "203.0.113.7:41001", "203.0.113.7:41001", "ping-41001"), dbg()
        for key, sp, nb, ce in (("cloexec", 41002, "0", "1"), ("nonblock", 41003, "1", "0")):
            assert out.next() == f"WAIT nb/split-accept4-{key}"
            clients.append(send_split(port, header("v2", ("203.0.113.7", sp)),
                                      f"ping-{sp}".encode(), delay=0.3))
            f = fields(out.next())
            assert (f["nonblock"], f["cloexec"], f["addr"], f["peer"], f["data"]) == \
                (nb, ce, f"203.0.113.7:{sp}", f"203.0.113.7:{sp}", f"ping-{sp}"), dbg()
        assert out.next() == "DONE"
        proc.wait(TIMEOUT)
        assert proc.returncode == 0
    finally:
        for s in clients:
            s.close()
        stop_pid(proc)
        proc.stdout.close()


# --- 5. nginx under the shim, behind HAProxy ------------------------------------------------


NGINX_CONF = """\
{user}worker_processes {workers};
pid {tmp}/nginx.pid;
error_log {tmp}/error.log info;
events {{ worker_connections 256; }}
http {{
    log_format peers '$remote_addr:$remote_port "$request" $status';
    access_log {tmp}/access.log peers;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            default_type text/plain;
            return 200 "$remote_addr\\n";
        }}
    }}
}}
"""


@pytest.mark.skipif(not (find_exe("nginx") and find_exe("haproxy")),
                    reason="nginx (nginx-light) and haproxy are needed")
@pytest.mark.parametrize("master", [False, True], ids=["single-process", "master-worker"])
def test_nginx_under_the_shim_behind_haproxy(master, tmp_path):
    nginx_port, fe_port = free_port(), free_port()
    user = f"user {pwd.getpwuid(0).pw_name};\n" if os.geteuid() == 0 else ""
    conf = tmp_path / "nginx.conf"
    conf.write_text(NGINX_CONF.format(user=user, tmp=tmp_path, port=nginx_port, workers=1))
    ncmd = [find_exe("nginx"), "-p", f"{tmp_path}/", "-e", f"{tmp_path}/error.log",
            "-c", str(conf), "-g", "daemon off;" + ("" if master else " master_process off;")]
    hcfg = tmp_path / "haproxy.cfg"
    hcfg.write_text(f"""\
global
    nbthread 1
defaults
    mode tcp
    timeout connect 5s
    timeout client 10s
    timeout server 10s
frontend fe
    bind 127.0.0.1:{fe_port}
    default_backend be
backend be
    server s 127.0.0.1:{nginx_port} send-proxy-v2
""")
    access = tmp_path / "access.log"
    with process(ncmd, tmp_path / "nginx.out", tmp_path / "nginx.err",
                 env=shim_env([nginx_port]), ports=[nginx_port]), \
            process([find_exe("haproxy"), "-db", "-f", str(hcfg)], tmp_path / "haproxy.log",
                    ports=[fe_port]):
        def dbg():
            return (f"\n--- nginx stderr ---\n{text_of(tmp_path / 'nginx.err')[-4000:]}"
                    f"\n--- error.log ---\n{text_of(tmp_path / 'error.log')[-4000:]}"
                    f"\n--- haproxy ---\n{text_of(tmp_path / 'haproxy.log')[-2000:]}")
        want = []
        for i in range(3):
            s = connect(fe_port, source="127.0.0.5")
            try:
                cport = s.getsockname()[1]
                s.sendall(b"GET /who/%d HTTP/1.0\r\nHost: preload.test\r\n\r\n" % i)
                reply = recv_all(s)
            finally:
                s.close()
            head, _, body = reply.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200"), reply + dbg().encode()
            assert body == b"127.0.0.5\n", reply + dbg().encode()
            want.append(f'127.0.0.5:{cport} "GET /who/{i} HTTP/1.0" 200')
        # A request straight to nginx, without a header, never reaches it.
        took = refused(nginx_port, b"GET /direct HTTP/1.0\r\n\r\n")
        assert took < 2.0
        # And nginx still answers after that.
        s = connect(fe_port, source="127.0.0.5")
        try:
            cport = s.getsockname()[1]
            s.sendall(b"GET /last HTTP/1.0\r\n\r\n")
            assert recv_all(s).endswith(b"\r\n\r\n127.0.0.5\n"), dbg()
        finally:
            s.close()
        want.append(f'127.0.0.5:{cport} "GET /last HTTP/1.0" 200')
        wait_for(lambda: len(text_of(access).splitlines()) >= len(want), TIMEOUT,
                 "nginx's access log lines")
        assert text_of(access).splitlines() == want, dbg()


@pytest.mark.skipif(not find_exe("nginx"), reason="nginx (nginx-light) is needed")
def test_nginx_with_four_workers_gets_late_headers(tmp_path):
    """nginx's usual setup, a master and several workers sharing the listener
    (EPOLLEXCLUSIVE): headers that arrive after the accept, in two pieces
    300 ms apart, must still be served, promptly."""
    port = free_port()
    user = f"user {pwd.getpwuid(0).pw_name};\n" if os.geteuid() == 0 else ""
    conf = tmp_path / "nginx.conf"
    conf.write_text(NGINX_CONF.format(user=user, tmp=tmp_path, port=port, workers=4))
    ncmd = [find_exe("nginx"), "-p", f"{tmp_path}/", "-e", f"{tmp_path}/error.log",
            "-c", str(conf), "-g", "daemon off;"]
    results = {}
    with process(ncmd, tmp_path / "nginx.out", tmp_path / "nginx.err",
                 env=shim_env([port], NETPROXY_TIMEOUT_MS=3000), ports=[port]):
        def late(i):
            src = (f"203.0.113.{10 + i}", 22000 + i)
            hdr = header("v2", src, ("192.0.2.1", 80))
            t0 = time.monotonic()
            s = connect(port, timeout=6)
            try:
                s.sendall(hdr[:7])
                time.sleep(0.3)
                s.sendall(hdr[7:] + b"GET /late/%d HTTP/1.0\r\n\r\n" % i)
                try:
                    reply = recv_all(s)
                except ConnectionResetError:
                    reply = b"(reset)"
                except socket.timeout:
                    reply = b"(timeout)"
            finally:
                s.close()
            results[i] = (reply, time.monotonic() - t0)

        th = Threads()
        for i in range(12):
            th.start(late, i)
            time.sleep(0.1)
        th.join(20)
    bad = {i: (r[-40:], round(t, 2)) for i, (r, t) in sorted(results.items())
           if not r.endswith(f"\r\n\r\n203.0.113.{10 + i}\n".encode()) or t >= 2.0}
    log = "\n".join(line for line in text_of(tmp_path / "error.log").splitlines()
                    if "netproxy_preload" in line and "listens" not in line)
    assert not bad, (f"{len(bad)} of 12 late headers not served within 2 s: {bad}\n"
                     f"--- NETPROXY_DEBUG (error.log) ---\n{log[-6000:]}")


# --- 6. many connections ----------------------------------------------------------------


def test_many_concurrent_connections(tmp_path):
    port = free_port()
    rng = random.Random(6)
    with ShimServer(tmp_path, "threaded", [("127.0.0.1", port)], NETPROXY_DST=1,
                    NETPROXY_TIMEOUT_MS=8000) as srv:
        def client(i, barrier, results):
            src = (f"198.51.100.{i % 250 + 1}", 10000 + i)
            data = rng.randbytes(1000 + i) if i % 3 else b""
            if barrier:
                barrier.wait(TIMEOUT)
            version = "v1" if i % 2 else "v2"
            later = [(0.05, data[len(data) // 2:])] if i % 5 == 0 else []
            first = data if not later else data[:len(data) // 2]
            ans, _, _ = exchange(port, header(version, src) + first, later=later,
                                 timeout=20)
            assert (ans["accept"], ans["peer"], ans["sock"]) == (list(src), list(src),
                                                                 list(DST)), ans
            assert (ans["len"], ans["sha256"]) == (len(data), sha(data)), i
            results.append(i)

        results = []
        barrier = threading.Barrier(300)
        t0 = time.monotonic()
        th = Threads()
        for i in range(300):
            th.start(client, i, barrier, results)
        try:
            th.join(30)
        except AssertionError as e:
            raise AssertionError(f"{e}; {len(results)} of 300 served\n{srv.debug()}") from None
        took300 = time.monotonic() - t0
        assert sorted(results) == list(range(300))
        assert len(srv.events("accept")) == 300, srv.debug()

        # 50 more while 20 silent clients are parked.
        with silent_clients(port, 20):
            time.sleep(0.3)
            results = []
            barrier = threading.Barrier(50)
            t0 = time.monotonic()
            th = Threads()
            for i in range(300, 350):
                th.start(client, i, barrier, results)
            try:
                th.join(20)
            except AssertionError as e:
                raise AssertionError(f"{e}; {len(results)} of 50 served\n{srv.debug()}") \
                    from None
            took50 = time.monotonic() - t0
            assert sorted(results) == list(range(300, 350))
            assert took50 < 5.0, f"50 clients took {took50:.2f} s with 20 parked"
        assert srv.accepted_ports() == [10000 + i for i in range(350)]
        srv.assert_no_errors()
        assert took300 < 20.0


LAZY_SERVER = r"""
import os, socket, sys, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen(64)
s.setblocking(False)
print("listening", flush=True)
sys.stdin.readline()                  # the test has connected
deadline = time.monotonic() + 0.3
while time.monotonic() < deadline:    # accepts for a moment (the shim parks), then never again
    try:
        c, a = s.accept()
        print("accepted", a[0], flush=True)
    except BlockingIOError:
        time.sleep(0.02)
print("stopped accepting", flush=True)
time.sleep(float(sys.argv[2]))
"""


def test_late_connection_nobody_accepts_is_closed(tmp_path):
    """A header that completes after its accept, on a listener the server no
    longer accepts on, is not kept forever: NETPROXY_TIMEOUT_MS after it
    completed, the connection is closed (the client sees the close)."""
    port = free_port()
    script = tmp_path / "lazy.py"
    script.write_text(LAZY_SERVER)
    env = shim_env([port], NETPROXY_TIMEOUT_MS="800", NETPROXY_DEBUG="1")
    proc = subprocess.Popen(["/usr/bin/python3", str(script), str(port), "6"], env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "listening"
        late = socket.create_connection(("127.0.0.1", port), timeout=5)
        late.sendall(b"PROXY TCP4 203.0.113.2 ")
        proc.stdin.write("go\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "stopped accepting"
        late.sendall(b"192.0.2.1 1 2\r\nlate")
        t0 = time.monotonic()
        try:
            assert late.recv(10) == b""
        except ConnectionResetError:
            pass
        took = time.monotonic() - t0
        assert 0.5 < took < 3.0, f"closed after {took:.2f} s"
        late.close()
    finally:
        proc.kill()
        _, err = proc.communicate(timeout=10)
    assert "parked" in err and "the server did not accept it in time" in err, err


CLOSING_SERVER = r"""
import os, socket, sys, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen(64)
s.setblocking(False)
fds = lambda: len(os.listdir("/proc/self/fd"))
print("listening", fds(), flush=True)
for _ in range(2):
    sys.stdin.readline()              # a client connected, its header incomplete
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        try:
            s.accept()                # the shim parks it and says EAGAIN
            print("accepted", flush=True)
        except BlockingIOError:
            time.sleep(0.05)
    print("parked", flush=True)
sys.stdin.readline()                  # the second one's header is complete now
s.close()
print("closed", flush=True)
time.sleep(1.5)
print("fds", fds(), flush=True)
sys.stdin.readline()
"""


def test_closing_the_listener_closes_what_waits_for_it(tmp_path):
    """A listener closed while one connection waits for its header (parked)
    and another, its header complete, waits in the listener's mailbox: both
    are closed at once, not at their timeout, and the process keeps no
    descriptor of them or of the mailbox (close() only marks the entry and
    wakes the watcher, which does the rest)."""
    port = free_port()
    script = tmp_path / "closing.py"
    script.write_text(CLOSING_SERVER)
    proc = subprocess.Popen(["/usr/bin/python3", str(script), str(port)],
                            env=shim_env([port], NETPROXY_TIMEOUT_MS="10000"),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    out = Lines(proc.stdout)
    clients = []
    try:
        word, listening_fds = out.next().split()
        assert word == "listening"
        for _ in range(2):
            clients.append(connect(port))
            clients[-1].sendall(b"PROXY TCP4 203.0.113.2 ")
            proc.stdin.write(b"go\n")
            proc.stdin.flush()
            assert out.next() == "parked", out.all
        clients[1].sendall(b"192.0.2.1 1 2\r\nlate")
        time.sleep(0.5)                 # read by the watcher, passed to the mailbox
        proc.stdin.write(b"close\n")
        proc.stdin.flush()
        assert out.next() == "closed", out.all
        for c in clients:
            took = closed_within(c, 5)
            assert took < 1.0, f"closed after {took:.2f} s"
        word, fds = out.next().split()
        # Gone: the listener, its mailbox's two; come: the watcher's epoll and eventfd.
        assert (word, int(fds)) == ("fds", int(listening_fds) - 3 + 2), out.all
        proc.stdin.write(b"end\n")
        proc.stdin.flush()
    finally:
        for c in clients:
            c.close()
        stop_pid(proc)
        err = proc.communicate(timeout=10)[1].decode(errors="replace")
    assert "passed to the mailbox" in err, err
    assert "closed: its listener was closed" in err, err


# --- 7. bursts: many late headers at once ----------------------------------------------


BURST = 500
BURST_BOUND = 30.0     # seconds for a whole burst: a bound on the wait, not a target


def burst(port, talk, n=BURST, late_delay=0.5, bound=BURST_BOUND, host="127.0.0.1"):
    """n clients connect at once (a barrier); the odd ones send the first 7
    bytes of their header, then all together the rest late_delay after the
    barrier, when the server has accepted them and the shim has parked them;
    the even ones send their header at once. talk(i, sock, late, release)
    sends the header (with late, its rest at time.monotonic() == release)
    and what follows, and returns True when served.
    Returns (the indices served, {index: why not}, seconds taken)."""
    served, failed = set(), {}
    release = []
    barrier = threading.Barrier(n, action=lambda: release.append(time.monotonic() + late_delay))

    def client(i):
        try:
            barrier.wait(TIMEOUT)
            s = connect(port, host, timeout=bound)
        except (OSError, threading.BrokenBarrierError) as e:
            failed[i] = f"connect: {e!r}"
            return
        try:
            if talk(i, s, i % 2 == 1, release[0]):
                served.add(i)
            else:
                failed[i] = "not served"
        except (OSError, ValueError, AssertionError) as e:
            failed[i] = repr(e)[:200]
        finally:
            s.close()

    th = Threads()
    t0 = time.monotonic()
    for i in range(n):
        th.start(client, i)
    try:
        th.join(bound)
    except AssertionError as e:
        failed[-1] = str(e)
    return served, failed, time.monotonic() - t0


def send_header(s, hdr, late, release, after=b""):
    """Send hdr and what follows it: at once, or its first 7 bytes, then the
    rest at time release (time.monotonic())."""
    if late:
        s.sendall(hdr[:7])
        time.sleep(max(0.0, release - time.monotonic()))
        s.sendall(hdr[7:] + after)
    else:
        s.sendall(hdr + after)


@pytest.mark.parametrize("shape", ["blocking", "threaded", "epoll", "prefork"])
def test_burst_of_late_headers_python_server(shape, tmp_path):
    """500 clients at once, half of them with a late header, on the Python
    server: single-threaded and blocking in accept(), four threads blocking
    in accept(), an epoll loop, four processes blocking in accept() on one
    listener. Every one is served."""
    port = free_port()
    with ShimServer(tmp_path, shape, [("127.0.0.1", port)]) as srv:
        def talk(i, s, late, release):
            src = (f"198.51.100.{i % 250 + 1}", 10000 + i)
            send_header(s, header("v2" if i % 4 < 2 else "v1", src), late, release,
                        b"burst %d" % i)
            s.shutdown(socket.SHUT_WR)
            ans = json.loads(recv_all(s))
            return ans["accept"] == list(src) and ans["head"] == "burst %d" % i

        served, failed, took = burst(port, talk)
        err = text_of(srv.err)
        print(f"\nPython server ({shape}): {len(served)} of {BURST} served in {took:.2f} s; "
              f"{err.count('parked')} parked, {err.count('taken from')} taken from the mailbox")
        assert not failed, (f"{len(served)} of {BURST} served; {len(failed)} not: "
                            f"{dict(list(sorted(failed.items()))[:10])}\n{srv.debug()[-3000:]}")
        assert len(srv.events("served")) == BURST
        srv.assert_no_errors()


NGINX_BURST_CONF = """\
{user}worker_processes 2;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log info;
events {{ worker_connections 2048; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            default_type text/plain;
            return 200 "$remote_addr:$remote_port\\n";
        }}
    }}
}}
"""


@pytest.mark.skipif(not find_exe("nginx"), reason="nginx (nginx-light) is needed")
def test_burst_of_late_headers_nginx_two_workers(tmp_path):
    """nginx with two workers sharing the listener: 500 clients at once, half
    with a late header. Every one is answered with its own address."""
    port = free_port()
    user = f"user {pwd.getpwuid(0).pw_name};\n" if os.geteuid() == 0 else ""
    conf = tmp_path / "nginx.conf"
    conf.write_text(NGINX_BURST_CONF.format(user=user, tmp=tmp_path, port=port))
    ncmd = [find_exe("nginx"), "-p", f"{tmp_path}/", "-e", f"{tmp_path}/error.log",
            "-c", str(conf), "-g", "daemon off;"]
    with process(ncmd, tmp_path / "nginx.out", tmp_path / "nginx.err",
                 env=shim_env([port], NETPROXY_DEBUG="0"), ports=[port]):
        def talk(i, s, late, delay):
            src = (f"198.51.100.{i % 250 + 1}", 10000 + i)
            send_header(s, header("v2" if i % 4 < 2 else "v1", src), late, delay,
                        b"GET /burst/%d HTTP/1.0\r\n\r\n" % i)
            reply = recv_all(s)
            return reply.startswith(b"HTTP/1.1 200") and \
                reply.endswith(f"\r\n\r\n{src[0]}:{src[1]}\n".encode())

        served, failed, took = burst(port, talk)
        print(f"\nnginx, 2 workers: {len(served)} of {BURST} served in {took:.2f} s")
        assert not failed, (f"{len(served)} of {BURST} served; {len(failed)} not: "
                            f"{dict(list(sorted(failed.items()))[:10])}\n"
                            f"{text_of(tmp_path / 'error.log')[-3000:]}")


# --- 8. signal handlers that close descriptors ---------------------------------------------


# A server whose signal handler closes (SIGALRM) or replaces with dup2() and
# then closes (SIGUSR1) connections its threads accepted, while four threads
# accept on a PROXY port: a thread of its own sends the signals to the
# accepting threads, thousands a second, so that many land while a thread is
# inside the shim's accept(). Two client threads of its own connect, half of
# them with a header in two segments, which the shim parks and hands over
# later. It runs for argv[2] seconds, then says what it did, as JSON; a
# wrapper that takes a lock in the handler deadlocks it instead.
SIGNAL_C = r"""
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define ACCEPTORS 4
#define CLIENTS 2
#define SLOTS 64

static atomic_int slot[SLOTS];	/* accepted fds for the handler to close, -1: none */
static atomic_long accepted, claimed, handler_closed, handler_duped, signals_sent;
static atomic_int stop;
static int devnull, port;

static void handler(int sig)
{
	int saved = errno;

	for (int i = 0; i < SLOTS; i++) {
		int fd = atomic_exchange(&slot[i], -1);
		if (fd < 0)
			continue;
		if (sig == SIGUSR1 && dup2(devnull, fd) == fd)
			atomic_fetch_add(&handler_duped, 1);
		close(fd);
		atomic_fetch_add(&handler_closed, 1);
		break;
	}
	errno = saved;
}

static void *acceptor(void *arg)
{
	int l = *(int *)arg;

	while (!atomic_load(&stop)) {
		struct sockaddr_in sa, peer;
		socklen_t len = sizeof(sa), plen = sizeof(peer);
		int fd = accept4(l, (struct sockaddr *)&sa, &len, SOCK_CLOEXEC);
		if (fd < 0)
			continue; /* EINTR, or the listener's timeout */
		atomic_fetch_add(&accepted, 1);
		if (getpeername(fd, (struct sockaddr *)&peer, &plen) == 0 &&
		    peer.sin_addr.s_addr == htonl(0xCB007107)) /* 203.0.113.7 */
			atomic_fetch_add(&claimed, 1);
		for (int i = 0; i < SLOTS; i++) {
			int none = -1;
			if (atomic_compare_exchange_strong(&slot[i], &none, fd)) {
				fd = -1;
				break;
			}
		}
		if (fd >= 0)
			close(fd);
	}
	return NULL;
}

static void *client(void *arg)
{
	unsigned n = (unsigned)(size_t)arg;
	struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(port)};
	to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);

	while (!atomic_load(&stop)) {
		char hdr[64];
		int len = snprintf(hdr, sizeof(hdr), "PROXY TCP4 203.0.113.7 192.0.2.1 %u 443\r\n",
				   1024 + n++ % 60000);
		int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
		setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		if (connect(c, (struct sockaddr *)&to, sizeof(to)) == 0) {
			if (n % 2) {
				send(c, hdr, 7, MSG_NOSIGNAL);
				usleep(3000);
				send(c, hdr + 7, len - 7, MSG_NOSIGNAL);
			} else {
				send(c, hdr, len, MSG_NOSIGNAL);
			}
			usleep(1000);
		}
		close(c);
	}
	return NULL;
}

int main(int argc, char **argv)
{
	port = atoi(argv[1]);
	int seconds = atoi(argv[2]), one = 1;
	devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
	for (int i = 0; i < SLOTS; i++)
		atomic_init(&slot[i], -1);

	struct sigaction sa = {.sa_handler = handler};
	sigemptyset(&sa.sa_mask);
	sigaction(SIGALRM, &sa, NULL);
	sigaction(SIGUSR1, &sa, NULL);

	int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(port)};
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	struct timeval tv = {.tv_usec = 100000}; /* accept() gives up after 100 ms */
	setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	setsockopt(l, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if (bind(l, (struct sockaddr *)&sin, sizeof(sin)) || listen(l, 1024)) {
		perror("listen");
		return 1;
	}
	pthread_t acc[ACCEPTORS], cli[CLIENTS];
	for (int i = 0; i < ACCEPTORS; i++)
		pthread_create(&acc[i], NULL, acceptor, &l);
	for (int i = 0; i < CLIENTS; i++)
		pthread_create(&cli[i], NULL, client, (void *)(size_t)(i * 30000));

	struct timespec t0, t, gap = {.tv_nsec = 100000};
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (unsigned k = 0;; k++) {
		clock_gettime(CLOCK_MONOTONIC, &t);
		if (t.tv_sec - t0.tv_sec >= seconds)
			break;
		pthread_kill(acc[k % ACCEPTORS], k % 3 ? SIGALRM : SIGUSR1);
		atomic_fetch_add(&signals_sent, 1);
		nanosleep(&gap, NULL);
	}
	atomic_store(&stop, 1);
	for (int i = 0; i < CLIENTS; i++)
		pthread_join(cli[i], NULL);
	for (int i = 0; i < ACCEPTORS; i++)
		pthread_join(acc[i], NULL);
	printf("{\"accepted\": %ld, \"claimed\": %ld, \"handler_closed\": %ld, "
	       "\"handler_duped\": %ld, \"signals\": %ld}\n", atomic_load(&accepted),
	       atomic_load(&claimed), atomic_load(&handler_closed), atomic_load(&handler_duped),
	       atomic_load(&signals_sent));
	return 0;
}
"""


def test_signal_handler_closing_descriptors_never_deadlocks(tmp_path):
    """close() and dup2() from a signal handler, landing while the server's
    threads are inside the shim's accept(), return: the program runs its 3
    seconds and exits, having accepted and closed many connections."""
    cc = shutil.which("cc") or shutil.which("gcc")
    assert cc, "a C compiler is needed"
    src, exe = tmp_path / "sig.c", tmp_path / "sig"
    src.write_text(SIGNAL_C)
    r = subprocess.run([cc, "-std=c11", "-O1", "-Wall", "-Werror", "-pthread", "-o", str(exe),
                        str(src)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    port = free_port()
    err = tmp_path / "sig.stderr"
    with open(err, "wb") as errf:
        proc = subprocess.Popen([str(exe), str(port), "3"], stdout=subprocess.PIPE,
                                stderr=errf, stdin=subprocess.DEVNULL, start_new_session=True,
                                env=shim_env([port], NETPROXY_DEBUG="0",
                                             NETPROXY_TIMEOUT_MS="2000"))
    try:
        try:
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            raise AssertionError("the server hung (a wrapper blocked in its signal handler?)"
                                 f"\n{text_of(err)[-3000:]}") from None
        assert proc.returncode == 0, (proc.returncode, text_of(err)[-3000:])
        got = json.loads(out)
        print(f"\nsignal handler test: {got}")
        assert got["accepted"] >= 100 and got["claimed"] >= 100, got
        assert got["handler_closed"] >= 50 and got["handler_duped"] >= 10, got
        assert got["signals"] >= 3000, got
    finally:
        stop_pid(proc)
        if proc.stdout:
            proc.stdout.close()


# --- 9. the library itself ------------------------------------------------------------------


def test_exports_exactly_what_preload_map_lists():
    """The shim's dynamic symbols are the calls preload/preload.map lists as
    global, whatever files the shim is built from: nothing internal leaks."""
    mapfile = Path(__file__).resolve().parents[2] / "preload" / "preload.map"
    text = mapfile.read_text()
    listed = text.split("global:", 1)[1].split("local:", 1)[0]
    want = sorted(w.strip().rstrip(";") for w in listed.split() if w.strip().rstrip(";"))
    lib = build_dir() / "libnetproxy_preload.so"
    r = subprocess.run(["nm", "-D", "--defined-only", str(lib)], capture_output=True, text=True,
                       timeout=TIMEOUT)
    assert r.returncode == 0, r.stderr
    got = sorted(line.split()[-1] for line in r.stdout.splitlines() if line.strip())
    assert got == want, f"{lib} exports {got}; preload.map lists {want}"
