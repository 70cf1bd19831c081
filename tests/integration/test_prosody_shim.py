"""libnetproxy_preload.so under Prosody (Debian's package, unmodified) behind a
real HAProxy sending PROXY v2 headers, for both of its TCP services: c2s and s2s.

A private Prosody runs from a temp dir of its own (owned by the prosody user:
config, data, self-signed certificate made with the openssl CLI, debug log),
listening on 127.0.0.1 on a free c2s port P and a free s2s port Q. It refuses
to run as root in the foreground, so it is started as the prosody user with
setpriv, which execs it: the PID the test starts is Prosody's own (``-F``
keeps it in the foreground; checked). setpriv keeps the environment, which
carries LD_PRELOAD=<build>/libnetproxy_preload.so, NETPROXY_PORTS=P,Q,
NETPROXY_TRUSTED=127.0.0.1 and NETPROXY_DEBUG=1 (the shim's lines on stderr,
captured to a file, prove it is loaded in that process).

In front, HAProxy (mode tcp) listens on two more free ports and forwards to P
and Q with ``send-proxy-v2``. A Python XMPP client connects to HAProxy from
127.0.0.5 and sends a stream header; Prosody must answer with its stream
features, and its debug log's line for the accepted connection,

    connXXXX  debug  New connection FD 9 (127.0.0.5, 57469, 127.0.0.1, 25222) on server FD 6 (...)

(net/server_epoll.lua, from getpeername()) must name the client, 127.0.0.5 and
its port. A third test sends a v2 header in two pieces 300 ms apart straight
to Prosody's c2s port: the shim parks that connection and must hand it over.

Prosody's epoll loop (net/server_epoll.lua, interface:onacceptable) treats any
failed accept() on a readable listener as an error, EAGAIN included (LuaSocket
says "timeout"), logs "Error accepting new client: timeout, server will be
paused for 10s" and stops watching the listener for accept_retry_interval
(10 s). A shim that answers EAGAIN because a header is not in yet would thus
stall the whole port; the Prosody config here sets accept_retry_interval to
0.05 s, as libnetproxy_preload(8) advises, and the tests check that no 10 s
pause happens and that a late header is served within 2 s.

The control runs the same stack without the shim: Prosody then logs
HAProxy's address (127.0.0.1) and, reading the binary header as XML, never
offers stream features, so the checks above can fail.

Every wait is bounded (at most 15 s); Prosody and HAProxy are children of
the test in sessions of their own, stopped by PID in a ``finally`` (SIGTERM,
then SIGKILL to the process group after 5 s), even when a test fails.
"""
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from npd import build_dir, find_exe, free_port, proxy_v2, stop_pid, wait_for

TIMEOUT = 10.0        # seconds: socket timeouts and ordinary waits
START_TIMEOUT = 15.0  # seconds: Prosody's start-up (Lua, certificates)
CLIENT_IP = "127.0.0.5"

C2S_HEADER = (b"<?xml version='1.0'?><stream:stream to='localhost' xmlns='jabber:client' "
              b"xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>")
S2S_HEADER = (b"<?xml version='1.0'?><stream:stream from='example.net' to='localhost' "
              b"xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' "
              b"version='1.0'>")


def prosody_user():
    try:
        return pwd.getpwnam("prosody")
    except KeyError:
        return None


def _skip_reason():
    missing = [f"{exe} (Debian package {pkg})" for exe, pkg in
               (("prosody", "prosody"), ("haproxy", "haproxy"), ("setpriv", "util-linux"),
                ("openssl", "openssl")) if find_exe(exe) is None]
    if missing:
        return "not installed: " + ", ".join(missing)
    if os.geteuid() != 0:
        return "needs root: Prosody runs as the prosody user, started with setpriv"
    if prosody_user() is None:
        return "the prosody user does not exist (it comes with Debian's prosody package)"
    return None


pytestmark = pytest.mark.skipif(_skip_reason() is not None, reason=str(_skip_reason()))


# --- helpers -----------------------------------------------------------------


def text_of(path):
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


def listening(port):
    """True when a socket listens on TCP port (read from /proc: no connection is
    made, which a PROXY port would count as a client without a header)."""
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


def proc_uid(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    return None


class Stack:
    """Paths and ports of one Prosody + HAProxy run."""

    def __init__(self, root, shim):
        self.root, self.shim = Path(root), shim
        self.c2s, self.s2s = free_port(), free_port()          # Prosody: P, Q
        self.fe_c2s, self.fe_s2s = free_port(), free_port()    # HAProxy's fronts
        self.cfg = self.root / "prosody.cfg.lua"
        self.log = self.root / "prosody.log"
        self.out = self.root / "prosody.out"
        self.err = self.root / "prosody.err"                   # NETPROXY_DEBUG lines
        self.hcfg = self.root / "haproxy.cfg"
        self.hlog = self.root / "haproxy.log"
        self.prosody = self.haproxy = None

    def prosody_log(self):
        return text_of(self.log)

    def debug(self):
        return (f"\n--- prosody.log (tail) ---\n{self.prosody_log()[-6000:]}"
                f"\n--- prosody stderr (NETPROXY_DEBUG) ---\n{text_of(self.err)[-3000:]}"
                f"\n--- prosody stdout ---\n{text_of(self.out)[-1000:]}"
                f"\n--- haproxy ---\n{text_of(self.hlog)[-2000:]}")

    def new_connections(self, server_port):
        """(ip, port) of each 'New connection' line on Prosody's listener server_port."""
        rx = re.compile(r"New connection FD \d+ \(([^,]+), (\d+), ([^,]+), (\d+)\) on server")
        return [(m.group(1), int(m.group(2))) for m in map(rx.search,
                                                            self.prosody_log().splitlines())
                if m and int(m.group(4)) == server_port]

    def wait_connection(self, server_port, what):
        """Wait (bounded) for a 'New connection' line on server_port; the lines so far."""
        try:
            return wait_for(lambda: self.new_connections(server_port), TIMEOUT, what)
        except AssertionError as e:
            raise AssertionError(f"{e}{self.debug()}") from None


def write_prosody_files(st):
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=localhost", "-keyout", str(st.root / "localhost.key"),
                    "-out", str(st.root / "localhost.crt")],
                   check=True, capture_output=True, timeout=TIMEOUT)
    (st.root / "data").mkdir()
    (st.root / "certs").mkdir()
    st.cfg.write_text(f"""\
pidfile = "{st.root}/prosody.pid"
data_path = "{st.root}/data"
certificates = "{st.root}/certs"
interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {st.c2s} }}
s2s_ports = {{ {st.s2s} }}
c2s_direct_tls_ports = {{ }}
s2s_direct_tls_ports = {{ }}
log = {{ debug = "{st.log}" }}
-- As libnetproxy_preload(8) advises for Prosody: a refused or parked connection
-- makes accept() say EAGAIN, which Prosody takes for an error and pauses the
-- listener for accept_retry_interval (10 s by default); keep that pause short.
network_settings = {{ accept_retry_interval = 0.05 }}
modules_enabled = {{ "roster"; "saslauth"; "tls"; "disco"; "ping" }}

VirtualHost "localhost"
    ssl = {{ certificate = "{st.root}/localhost.crt"; key = "{st.root}/localhost.key" }}
""")
    user = prosody_user()
    for p in [st.root, *st.root.rglob("*")]:
        os.chown(p, user.pw_uid, user.pw_gid)


def write_haproxy_cfg(st):
    st.hcfg.write_text(f"""\
global
    nbthread 1
defaults
    mode tcp
    timeout connect 5s
    timeout client 15s
    timeout server 15s
frontend c2s
    bind 127.0.0.1:{st.fe_c2s}
    default_backend c2s
backend c2s
    server prosody_c2s 127.0.0.1:{st.c2s} send-proxy-v2
frontend s2s
    bind 127.0.0.1:{st.fe_s2s}
    default_backend s2s
backend s2s
    server prosody_s2s 127.0.0.1:{st.s2s} send-proxy-v2
""")


def prosody_env(st):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("NETPROXY_") and k != "LD_PRELOAD"}
    if st.shim:
        lib = (build_dir() / "libnetproxy_preload.so").resolve()
        assert lib.is_file(), f"{lib}: build it first (make)"
        env.update(LD_PRELOAD=str(lib), NETPROXY_PORTS=f"{st.c2s},{st.s2s}",
                   NETPROXY_TRUSTED="127.0.0.1", NETPROXY_DEBUG="1")
    return env


@contextmanager
def xmpp_stack(shim):
    """Prosody (as the prosody user, under the shim or not) and HAProxy in front
    of it; both stopped by PID, and the private dir removed, whatever happens."""
    root = tempfile.mkdtemp(prefix="netproxy-prosody-")
    os.chmod(root, 0o755)
    st = Stack(root, shim)
    outs = []
    try:
        write_prosody_files(st)
        write_haproxy_cfg(st)
        outs = [open(st.out, "wb"), open(st.err, "wb"), open(st.hlog, "wb")]
        cmd = [find_exe("setpriv"), "--reuid=prosody", "--regid=prosody", "--init-groups",
               find_exe("prosody"), "--config", str(st.cfg), "-F"]
        st.prosody = subprocess.Popen(cmd, stdout=outs[0], stderr=outs[1],
                                      stdin=subprocess.DEVNULL, env=prosody_env(st),
                                      cwd=root, start_new_session=True)

        def prosody_up():
            if st.prosody.poll() is not None:
                raise AssertionError(f"prosody exited ({st.prosody.returncode}){st.debug()}")
            return (listening(st.c2s) and listening(st.s2s)
                    and "Activated service 's2s'" in st.prosody_log())
        try:
            wait_for(prosody_up, START_TIMEOUT, f"prosody to listen on {st.c2s} and {st.s2s}")
        except AssertionError as e:
            raise AssertionError(f"{e}{st.debug()}") from None
        # setpriv execs Prosody, and -F keeps it in the foreground: the PID the
        # test started is Prosody itself, running as the prosody user.
        cmdline = Path(f"/proc/{st.prosody.pid}/cmdline").read_bytes().split(b"\0")
        assert any(a.endswith(b"/prosody") for a in cmdline), cmdline
        assert proc_uid(st.prosody.pid) == prosody_user().pw_uid

        st.haproxy = subprocess.Popen([find_exe("haproxy"), "-db", "-f", str(st.hcfg)],
                                      stdout=outs[2], stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, start_new_session=True)

        def haproxy_up():
            if st.haproxy.poll() is not None:
                raise AssertionError(f"haproxy exited ({st.haproxy.returncode}){st.debug()}")
            return listening(st.fe_c2s) and listening(st.fe_s2s)
        wait_for(haproxy_up, TIMEOUT, f"haproxy to listen on {st.fe_c2s} and {st.fe_s2s}")
        yield st
    finally:
        try:
            for proc in (st.haproxy, st.prosody):
                if proc is not None:
                    stop_pid(proc)
        finally:
            for f in outs:
                f.close()
            shutil.rmtree(root, ignore_errors=True)


def xmpp_exchange(port, header, done=(b"</stream:features>", b"</stream:stream>",
                                      b"</stream:error>"), source=CLIENT_IP, pieces=()):
    """Connect to 127.0.0.1:port from source, send header, then each (delay, bytes)
    of pieces, and read until Prosody's answer is complete (any of done), it
    closes, or TIMEOUT. Returns (the client's port, what was read)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(TIMEOUT)
    try:
        s.bind((source, 0))
        s.connect(("127.0.0.1", port))
        cport = s.getsockname()[1]
        s.sendall(header)
        for delay, data in pieces:
            time.sleep(delay)
            s.sendall(data)
        got = bytearray()
        deadline = time.monotonic() + TIMEOUT
        while not any(d in got for d in done) and time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except (socket.timeout, ConnectionResetError):
                break
            if not chunk:
                break
            got += chunk
        return cport, bytes(got)
    finally:
        s.close()


def assert_listener_never_paused(st, what=""):
    """Prosody's epoll loop treats any failed accept() on a readable listener,
    EAGAIN included ("timeout" in LuaSocket), as an error, and pauses that
    listener for accept_retry_interval. The config keeps that at 0.05 s, as
    the man page advises; a pause of the default 10 s would be a wrong config."""
    paused = [line for line in st.prosody_log().splitlines()
              if "Error accepting new client" in line and "paused for 10s" in line]
    assert not paused, ("Prosody paused a PROXY listener for 10 s:\n" + "\n".join(paused)
                        + (f"\n{what}" if what else "") + st.debug())


def assert_shim_loaded(st):
    err = text_of(st.err)
    for port in (st.c2s, st.s2s):
        assert re.search(rf"netproxy_preload\[{st.prosody.pid}\]: fd \d+ listens on PROXY "
                         rf"port {port}\b", err), f"the shim is not at work in Prosody{st.debug()}"
    assert "refused" not in err, st.debug()


def log_line_for(st, ip, cport, server_port):
    rx = re.compile(rf"New connection FD \d+ \({re.escape(ip)}, {cport}, [^)]*, {server_port}\)")
    return next((line for line in st.prosody_log().splitlines() if rx.search(line)), None)


# --- tests -------------------------------------------------------------------


def test_c2s_client_address_under_the_shim():
    with xmpp_stack(shim=True) as st:
        t0 = time.monotonic()
        cport, reply = xmpp_exchange(st.fe_c2s, C2S_HEADER)
        assert_listener_never_paused(st, f"client: {reply[:60]!r}... after "
                                         f"{time.monotonic() - t0:.2f} s")
        assert b"<stream:features>" in reply, f"reply {reply!r}{st.debug()}"
        assert b"urn:ietf:params:xml:ns:xmpp-tls" in reply, f"no STARTTLS: {reply!r}"
        conns = st.wait_connection(st.c2s, "Prosody's 'New connection' line for c2s")
        assert conns == [(CLIENT_IP, cport)], f"{conns}{st.debug()}"
        line = log_line_for(st, CLIENT_IP, cport, st.c2s)
        assert line, st.debug()
        print(f"\nProsody c2s log line: {line}")
        wait_for(lambda: "Client connected" in st.prosody_log(), TIMEOUT, "'Client connected'")
        assert_shim_loaded(st)
        assert st.prosody.poll() is None, st.debug()


def test_s2s_client_address_under_the_shim():
    with xmpp_stack(shim=True) as st:
        t0 = time.monotonic()
        cport, reply = xmpp_exchange(st.fe_s2s, S2S_HEADER)
        assert_listener_never_paused(st, f"client: {reply[:60]!r}... after "
                                         f"{time.monotonic() - t0:.2f} s")
        # Prosody answers with stream features (STARTTLS) or a stream error;
        # either way it has parsed the stream header.
        assert b"xmlns='jabber:server'" in reply or b'xmlns="jabber:server"' in reply, \
            f"reply {reply!r}{st.debug()}"
        assert b"<stream:features>" in reply or b"<stream:error>" in reply, \
            f"reply {reply!r}{st.debug()}"
        conns = st.wait_connection(st.s2s, "Prosody's 'New connection' line for s2s")
        assert conns == [(CLIENT_IP, cport)], f"{conns}{st.debug()}"
        line = log_line_for(st, CLIENT_IP, cport, st.s2s)
        assert line, st.debug()
        print(f"\nProsody s2s log line: {line}")
        wait_for(lambda: "Incoming s2s connection" in st.prosody_log(), TIMEOUT,
                 "'Incoming s2s connection'")
        assert_shim_loaded(st)
        assert st.prosody.poll() is None, st.debug()


def test_late_header_straight_to_prosody():
    """A sender (127.0.0.1, trusted) whose v2 header arrives in two pieces 300 ms
    apart, straight to Prosody's c2s port: the shim parks the connection and
    must hand it over once the header is complete (README: "that wake-up makes
    the server's accept() come back, whether it blocks or runs from an event
    loop"), so Prosody answers well within 2 s, and a client behind HAProxy
    right after it is served at once."""
    with xmpp_stack(shim=True) as st:
        hdr = proxy_v2("203.0.113.7", "192.0.2.1", 50000, 5222)
        t0 = time.monotonic()
        _, reply = xmpp_exchange(st.c2s, hdr[:8], source="127.0.0.1",
                                 pieces=[(0.3, hdr[8:] + C2S_HEADER)])
        took = time.monotonic() - t0
        assert_listener_never_paused(st, f"client: {reply[:60]!r}... after {took:.2f} s")
        assert b"<stream:features>" in reply, f"reply {reply!r} after {took:.2f} s{st.debug()}"
        assert took < 2.0, f"the late header took {took:.2f} s{st.debug()}"
        t0 = time.monotonic()
        cport, reply = xmpp_exchange(st.fe_c2s, C2S_HEADER)
        took = time.monotonic() - t0
        assert b"<stream:features>" in reply and took < 2.0, \
            f"reply {reply!r} after {took:.2f} s{st.debug()}"
        wait_for(lambda: len(st.new_connections(st.c2s)) >= 2, TIMEOUT, "two connections")
        assert st.new_connections(st.c2s) == [("203.0.113.7", 50000), (CLIENT_IP, cport)], \
            st.debug()
        assert_shim_loaded(st)


def test_control_without_the_shim_prosody_sees_haproxy():
    """The same stack without LD_PRELOAD: Prosody sees HAProxy's address and the
    binary v2 header as (bad) XML, so the assertions of the tests above fail."""
    with xmpp_stack(shim=False) as st:
        for front, server, header in ((st.fe_c2s, st.c2s, C2S_HEADER),
                                      (st.fe_s2s, st.s2s, S2S_HEADER)):
            _, reply = xmpp_exchange(front, header)
            assert b"<stream:features>" not in reply, f"reply {reply!r}{st.debug()}"
            conns = st.wait_connection(server, f"Prosody's 'New connection' line on {server}")
            assert len(conns) == 1 and conns[0][0] == "127.0.0.1", f"{conns}{st.debug()}"
            print(f"\nProsody log line without the shim: "
                  f"{log_line_for(st, '127.0.0.1', conns[0][1], server)}")
        assert CLIENT_IP not in st.prosody_log(), st.debug()
        assert "netproxy_preload" not in text_of(st.err), st.debug()
