"""netproxyd's transparent delivery: the backend connection comes from the
client's own address (IP_TRANSPARENT), so an unmodified server sees the real
client in getpeername().

Everything runs in network namespaces made here (never in the root
namespace's routing: the policy rules would disturb the host):

  single-host   one namespace, lo up; netproxyd, the clients and a Python
                backend on 127.0.0.1 / ::1 all live in it.
  three-host    client (198.51.100.10, 2001:db8:1::10)
                  -- veth --  proxy (198.51.100.1 | 192.0.2.1, 2001:db8:1::1 | 2001:db8:2::1)
                  -- veth --  server (192.0.2.20, 2001:db8:2::20, default route via the proxy)

Clients in the test process run in a thread that has joined the namespace
(setns(2) changes only the calling thread, and a socket belongs to the
namespace it was created in). Processes run under `ip netns exec NS ...`,
which execs the command, so the Popen PID is the process itself; all are
stopped by PID and the namespaces deleted when the test ends.

Needs root and `ip netns`; skipped otherwise.
"""
import itertools
import pwd
import grp
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from netns import (Lab, NsNetproxyd, in_ns, netproxyd_cmd, ns_exec, sh, wait_listening,
                   why_no_netns)
from npd import proxy_v1, proxy_v2, tool, wait_for

# ---------------------------------------------------------------------------
# Helpers: clients and a backend in namespaces (the namespaces are netns.py's)
# ---------------------------------------------------------------------------

CAP_NET_ADMIN_MASK = "0000000000001000"   # bit 12
PY = "/usr/bin/python3"
_seq = itertools.count()

_SKIP = why_no_netns()
pytestmark = pytest.mark.skipif(_SKIP is not None, reason=_SKIP or "")


def fmt_addr(addr):
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def exchange(host, port, data, source=None, timeout=5.0):
    """(Call in a namespace.) Connect, send, half-close, read to the end.
    Returns (reply, how it ended: eof/reset/timeout, our own address text)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        if source:
            s.bind((source, 0))
        s.connect((host, port))
        me = fmt_addr(s.getsockname())
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        got = bytearray()
        while True:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                return bytes(got), "timeout", me
            except ConnectionResetError:
                return bytes(got), "reset", me
            if not chunk:
                return bytes(got), "eof", me
            got += chunk
    finally:
        s.close()


# The backend: an unmodified TCP server. For each connection it prints (and
# sends first) "peer=ADDR:PORT" as getpeername() has it, then echoes every
# byte; at the client's EOF it finishes sending and closes. One thread,
# non-blocking, so hundreds of connections at once are fine.
BACKEND_PY = r'''
import selectors, socket, sys
R, W = selectors.EVENT_READ, selectors.EVENT_WRITE
sel = selectors.DefaultSelector()
def fmt(a):
    return ("[%s]:%d" if ":" in a[0] else "%s:%d") % (a[0], a[1])
for spec in sys.argv[1:]:
    host, port = spec.rsplit(":", 1)
    host = host.strip("[]")
    l = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    l.bind((host, int(port)))
    l.listen(1024)
    l.setblocking(False)
    sel.register(l, R, None)
print("ready", flush=True)
class Conn:
    pass
while True:
    for key, ev in sel.select():
        if key.data is None:
            try:
                s, _ = key.fileobj.accept()
            except OSError:
                continue
            s.setblocking(False)
            c = Conn()
            c.s, c.eof = s, False
            peer = "peer=" + fmt(s.getpeername())
            print(peer, flush=True)
            c.out = bytearray((peer + "\n").encode())
            sel.register(s, R | W, c)
            continue
        c = key.data
        if ev & R and not c.eof:
            try:
                d = c.s.recv(65536)
            except BlockingIOError:
                d = None
            except OSError:
                d, c.out = b"", bytearray()
            if d:
                c.out += d
            elif d is not None:
                c.eof = True
        if ev & W and c.out:
            try:
                del c.out[:c.s.send(c.out)]
            except BlockingIOError:
                pass
            except OSError:
                c.out, c.eof = bytearray(), True
        if c.eof and not c.out:
            sel.unregister(c.s)
            try:
                c.s.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            c.s.close()
        else:
            sel.modify(c.s, (0 if c.eof else R) | (W if c.out else 0) or R, c)
'''


class Backend:
    """BACKEND_PY run in namespace ns, listening on each of addrs ("1.2.3.4:80", "[::1]:80")."""

    def __init__(self, lab, ns, *addrs):
        name = f"backend-{next(_seq)}.out"
        self.path = lab.tmp / name
        self.proc = lab.popen(ns, [PY, "-c", BACKEND_PY, *addrs], stdout=lab.output(name))
        wait_for(lambda: self.proc.poll() is not None or "ready" in self.text(), 10,
                 "the backend to listen")
        assert self.proc.poll() is None, f"backend died:\n{self.text()}"

    def text(self):
        return self.path.read_text(errors="replace")

    def peers(self):
        return [line[5:] for line in self.text().splitlines() if line.startswith("peer=")]


def config(listeners, services, trusted=None, extra=""):
    """listeners: {port: (listen address, service)}; services: {name: Lua table body}.
    At the debug level, so that the lines of a moved port and of health checks
    are there to find (or to find missing)."""
    ports = ", ".join(f'"{addr}"' for addr, _ in listeners.values())
    maps = ", ".join(f'[{port}] = "{svc}"' for port, (_, svc) in listeners.items())
    svcs = ", ".join(f"{name} = {{ {body} }}" for name, body in services.items())
    text = (f"proxy_ports = {{ {ports} }}\n"
            f"proxy_port_mappings = {{ {maps} }}\n"
            f"services = {{ {svcs} }}\n"
            "workers = 2\n"
            'log_level = "debug"\n')
    if trusted is not None:
        text += "proxy_trusted_proxies = { " + ", ".join(f'"{t}"' for t in trusted) + " }\n"
    return text + extra


def rules(ns, six=False):
    return sh("ip", "-n", ns, *(["-6"] if six else []), "rule", "show").stdout


def table_7001(ns, six=False):
    return sh("ip", "-n", ns, *(["-6"] if six else []), "route", "show", "table", "7001").stdout


def proc_status(pid):
    """Fields of /proc/PID/status for the process and each of its threads."""
    out = []
    for task in sorted(Path(f"/proc/{pid}/task").iterdir()):
        fields = {}
        for line in (task / "status").read_text().splitlines():
            key, _, value = line.partition(":")
            fields[key] = value.strip()
        out.append(fields)
    return out


def send_tool(ns, host, port, data=b"", args=(), timeout=10):
    """netproxy-send from ns; returns (stdout bytes, stderr text, returncode)."""
    r = subprocess.run(["ip", "netns", "exec", ns, tool("netproxy-send"), "-w", "5", *args,
                        host, str(port)], input=data, capture_output=True, timeout=timeout)
    return r.stdout, r.stderr.decode(errors="replace"), r.returncode


def sent_from(stderr):
    """The local address netproxy-send says it connected from."""
    m = re.search(r"connected to \S+ from (\S+?);", stderr)
    assert m, stderr
    return m.group(1)


# ---------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------

# Single host: one namespace; backend at 127.0.0.1:8000 and [::1]:8000.
S_V4, S_V6 = 9000, 9006

SINGLE_SERVICES = {
    "back4": 'connect = "127.0.0.1:8000", transparent = true',
    "back6": 'connect = "[::1]:8000", transparent = true',
}
SINGLE_LISTENERS = {S_V4: ("127.0.0.1:9000", "back4"), S_V6: ("127.0.0.1:9006", "back6")}
SINGLE_CONFIG = config(SINGLE_LISTENERS, SINGLE_SERVICES)

SINGLE_COMMANDS = [
    "ip rule add from 127.0.0.0/8 iif lo table 7001",
    "ip route add local 0.0.0.0/0 dev lo table 7001",
    "ip -6 rule add from ::1/128 iif lo table 7001",
    "ip -6 route add local ::/0 dev lo table 7001",
]


@pytest.fixture
def lab():
    with Lab() as lab:
        yield lab


class Single:
    def __init__(self, lab):
        self.lab = lab
        self.ns = lab.ns("one")
        self.backend = Backend(lab, self.ns, "127.0.0.1:8000", "[::1]:8000")

    def setup_routing(self, cfg=SINGLE_CONFIG):
        r = netproxyd_cmd(self.lab, self.ns, cfg, "--setup-routing")
        assert r.returncode == 0, r.stdout + r.stderr
        return r

    def talk(self, port, data, host="127.0.0.1", timeout=5.0):
        return in_ns(self.ns, exchange, host, port, data, timeout=timeout)

    def daemon(self, cfg=SINGLE_CONFIG, **kw):
        return NsNetproxyd(self.ns, cfg, **kw)


@pytest.fixture
def single(lab):
    return Single(lab)


@pytest.fixture
def routed(single):
    single.setup_routing()
    return single


class Three:
    """client -- proxy -- server, IPv4 and IPv6; the proxy forwards."""

    C4, P4C, P4S, S4 = "198.51.100.10", "198.51.100.1", "192.0.2.1", "192.0.2.20"
    C6, P6C, P6S, S6 = "2001:db8:1::10", "2001:db8:1::1", "2001:db8:2::1", "2001:db8:2::20"

    def __init__(self, lab):
        self.lab = lab
        c, p, s = self.client, self.proxy, self.server = lab.ns("c"), lab.ns("p"), lab.ns("s")
        # No DAD on the veths: the link-local addresses that neighbour
        # discovery uses must be usable at once, like the global ones (nodad);
        # a first SYN lost to a tentative address would make the 1 s
        # connect_timeout expire for the wrong reason.
        for ns in (c, p, s):
            sh("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0",
               "net.ipv6.conf.default.accept_dad=0")
        sh("ip", "link", "add", "eth0", "netns", c, "type", "veth", "peer", "name", "toc",
           "netns", p)
        sh("ip", "link", "add", "eth0", "netns", s, "type", "veth", "peer", "name", "tos",
           "netns", p)
        batch = {
            c: [f"addr add {self.C4}/24 dev eth0", f"addr add {self.C6}/64 dev eth0 nodad",
                "link set eth0 up", f"route add default via {self.P4C}",
                f"route add ::/0 via {self.P6C}"],
            p: [f"addr add {self.P4C}/24 dev toc", f"addr add {self.P6C}/64 dev toc nodad",
                f"addr add {self.P4S}/24 dev tos", f"addr add {self.P6S}/64 dev tos nodad",
                "link set toc up", "link set tos up"],
            s: [f"addr add {self.S4}/24 dev eth0", f"addr add {self.S6}/64 dev eth0 nodad",
                "link set eth0 up", f"route add default via {self.P4S}",
                f"route add ::/0 via {self.P6S}"],
        }
        for ns, cmds in batch.items():
            sh("ip", "-n", ns, "-batch", "-", input="\n".join(cmds) + "\n")
        sh("ip", "netns", "exec", p, "sysctl", "-qw", "net.ipv4.ip_forward=1",
           "net.ipv6.conf.all.forwarding=1")
        # A veth drops what it is given until the kernel's link watcher has
        # seen its carrier (up to a second after "link set up"): wait for it,
        # or the first SYN of a test may be lost.
        for ns, dev in ((c, "eth0"), (p, "toc"), (p, "tos"), (s, "eth0")):
            wait_for(lambda: re.search(r"qdisc noqueue state UP", sh(
                "ip", "-n", ns, "-o", "link", "show", "dev", dev).stdout), 5,
                f"{dev} in {ns} to be up")

    def setup_routing(self, cfg):
        r = netproxyd_cmd(self.lab, self.proxy, cfg, "--setup-routing")
        assert r.returncode == 0, r.stdout + r.stderr
        return r


@pytest.fixture
def three(lab):
    return Three(lab)


# The proxy's netproxyd: PROXY ports for the client directly (IPv4 9000,
# IPv6 9006) and for HAProxy on loopback (9002 -> IPv4 server, 9003 -> IPv6).
THREE_SERVICES = {
    "srv4": 'connect = "192.0.2.20:8000", transparent = true, connect_timeout = 1',
    "srv6": 'connect = "[2001:db8:2::20]:8000", transparent = true, connect_timeout = 1',
}
THREE_LISTENERS = {
    9000: ("198.51.100.1:9000", "srv4"),
    9006: ("[2001:db8:1::1]:9006", "srv6"),
    9002: ("127.0.0.1:9002", "srv4"),
    9003: ("127.0.0.1:9003", "srv6"),
}
THREE_TRUSTED = ["198.51.100.0/24", "2001:db8:1::/64", "127.0.0.1"]
THREE_CONFIG = config(THREE_LISTENERS, THREE_SERVICES, THREE_TRUSTED)

# A backend on another host gets a rule for its own replies only (its
# address and service port), not for all of its traffic.
THREE_COMMANDS = [
    "ip rule add from 192.0.2.20/32 ipproto tcp sport 8000 table 7001",
    "ip route add local 0.0.0.0/0 dev lo table 7001",
    "ip -6 rule add from 2001:db8:2::20/128 ipproto tcp sport 8000 table 7001",
    "ip -6 route add local ::/0 dev lo table 7001",
]


def assert_commands_logged(log, commands):
    lines = log.splitlines()
    head = [i for i, l in enumerate(lines)
            if "warning: transparent delivery: no policy routing brings the backends' replies"
            in l and "install it with netproxyd --setup-routing, or:" in l]
    assert len(head) == 1, log
    after = [l.split("warning: ", 1)[-1].strip() for l in lines[head[0] + 1:
                                                              head[0] + 1 + len(commands)]]
    assert after == commands, log


# ---------------------------------------------------------------------------
# 1. Single host: the routing warning, --setup-routing, v1/v2 x IPv4/IPv6
# ---------------------------------------------------------------------------

def test_single_host_warns_then_setup_routing_installs_it(single):
    with single.daemon() as d:
        assert_commands_logged(d.log(), SINGLE_COMMANDS)
    assert "7001" not in rules(single.ns) and "7001" not in rules(single.ns, six=True)

    r = single.setup_routing()
    for cmd in SINGLE_COMMANDS:
        assert f"netproxyd: {cmd}" in r.stderr, r.stderr
    assert re.search(r"from 127\.0\.0\.0/8 iif lo lookup 7001", rules(single.ns))
    assert re.search(r"from ::1 iif lo lookup 7001", rules(single.ns, six=True))
    assert re.search(r"^local default dev lo", table_7001(single.ns), re.M)
    assert re.search(r"^local default dev lo", table_7001(single.ns, six=True), re.M)

    again = single.setup_routing()
    assert "the routing for transparent delivery is in place" in again.stderr, again.stderr
    assert "ip rule add" not in again.stderr
    assert rules(single.ns).count("lookup 7001") == 1      # nothing added twice
    assert rules(single.ns, six=True).count("lookup 7001") == 1

    with single.daemon() as d:
        d.wait_log(r"info: transparent delivery: replies to client addresses are routed locally")
        assert "no policy routing" not in d.log()


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
@pytest.mark.parametrize("version", ["v1", "v2"])
def test_single_host_backend_sees_claimed_client(routed, version, family):
    if family == "ipv4":
        port, src, dst, peer = S_V4, "203.0.113.7", "127.0.0.1", "203.0.113.7:51234"
        v1fam = "TCP4"
    else:
        port, src, dst, peer = S_V6, "2001:db8::7", "::1", "[2001:db8::7]:51234"
        v1fam = "TCP6"
    header = (proxy_v1(src, dst, 51234, port, v1fam) if version == "v1"
              else proxy_v2(src, dst, 51234, port))
    data = bytes(range(256)) * 64 + b"end\n"
    with routed.daemon() as d:
        got, how, _ = routed.talk(port, header + data)
        assert how == "eof"
        assert got == f"peer={peer}\n".encode() + data
        assert routed.backend.peers() == [peer]
        line = d.close_line(r'reason="done"')
        assert f"client={peer}" in line and f"proxy={version}" in line


# ---------------------------------------------------------------------------
# 2, 3, 5, 8. Three hosts: netproxy-send, HAProxy, nginx, health checks, failures
# ---------------------------------------------------------------------------

def test_three_host_needs_the_rule_then_works(three):
    backend = Backend(three.lab, three.server, f"{three.S4}:8000", f"[{three.S6}]:8000")
    with NsNetproxyd(three.proxy, THREE_CONFIG) as d:
        assert_commands_logged(d.log(), THREE_COMMANDS)

        # No policy routing: the server's SYN-ACK to the client's address is
        # routed towards the real client (or dropped), never to netproxyd.
        for host, port in ((three.P4C, 9000), (three.P6C, 9006)):
            t0 = time.monotonic()
            out, err, rc = send_tool(three.client, host, port, b"lost\n")
            assert out == b"", err
            assert time.monotonic() - t0 < 4.5
        lines = d.closed(2)
        assert len(d.close_lines()) == 2, d.log()
        for c in lines:
            assert "connect timeout (1000 ms)" in c["reason"], d.log()
        assert backend.peers() == []      # the server never completed a handshake

        three.setup_routing(THREE_CONFIG)
        assert re.search(r"from 192\.0\.2\.20 ipproto tcp sport 8000 lookup 7001",
                         rules(three.proxy))
        assert re.search(r"from 2001:db8:2::20 ipproto tcp sport 8000 lookup 7001",
                         rules(three.proxy, six=True))

        for host, port, args in ((three.P4C, 9000, ()), (three.P6C, 9006, ()),
                                 (three.P4C, 9000, ("-1",)), (three.P6C, 9006, ("-1",))):
            out, err, rc = send_tool(three.client, host, port, b"hello, server\n", args)
            me = sent_from(err)
            assert me.startswith(f"[{three.C6}]:" if ":" in host else f"{three.C4}:"), err
            assert rc == 0, err
            assert out == f"peer={me}\n".encode() + b"hello, server\n", err
            assert backend.peers()[-1] == me
        d.wait_log(r'client=.*reason="done"', count=4)

    # Running it again changes nothing.
    again = three.setup_routing(THREE_CONFIG)
    assert "the routing for transparent delivery is in place" in again.stderr, again.stderr
    assert rules(three.proxy).count("lookup 7001") == 1
    assert rules(three.proxy, six=True).count("lookup 7001") == 1

    # The rule takes only the service's replies: the server's other traffic
    # to the client's address is still routed through the proxy to the client.
    for family, addr in ((socket.AF_INET, three.C4), (socket.AF_INET6, three.C6)):
        listener = in_ns(three.client, socket.socket, family, socket.SOCK_STREAM)
        with listener:
            listener.bind((addr, 7000))
            listener.listen(1)
            listener.settimeout(5)
            out = in_ns(three.server, socket.create_connection, (addr, 7000), 5)
            with out:
                out.sendall(b"from the server")
                conn, peer = listener.accept()
                with conn:
                    conn.settimeout(5)
                    assert conn.recv(100) == b"from the server"
                    assert peer[0] == (three.S6 if family == socket.AF_INET6 else three.S4)


@pytest.mark.skipif(not shutil.which("haproxy"), reason="haproxy is not installed")
def test_three_host_through_haproxy(three):
    backend = Backend(three.lab, three.server, f"{three.S4}:8000", f"[{three.S6}]:8000")
    three.setup_routing(THREE_CONFIG)
    hcfg = three.lab.file("haproxy.cfg", f"""
global
    maxconn 256
defaults
    mode tcp
    timeout connect 3s
    timeout client 10s
    timeout server 10s
frontend fe4
    bind {three.P4C}:8080
    default_backend be4
frontend fe6
    bind [{three.P6C}]:8086
    default_backend be6
backend be4
    server npd 127.0.0.1:9002 send-proxy-v2
backend be6
    server npd 127.0.0.1:9003 send-proxy-v2
""")
    three.lab.popen(three.proxy, ["haproxy", "-db", "-f", str(hcfg)],
                    stdout=three.lab.output("haproxy.out"))
    wait_listening(three.proxy, 8080)
    wait_listening(three.proxy, 8086)
    with NsNetproxyd(three.proxy, THREE_CONFIG) as d:
        for host, port, want in ((three.P4C, 8080, three.C4), (three.P6C, 8086, three.C6)):
            got, how, me = in_ns(three.client, exchange, host, port, b"via haproxy\n")
            assert me.startswith(f"[{want}]:" if ":" in want else f"{want}:")
            assert how == "eof", (got, d.log())
            assert got == f"peer={me}\n".encode() + b"via haproxy\n", d.log()
            assert backend.peers()[-1] == me
        lines = d.closed(2)
        assert [c["peer"].rsplit(":", 1)[0] for c in lines] == ["127.0.0.1", "127.0.0.1"]
        assert all(c["proxy"] == "v2" and c["reason"] == "done" for c in lines), d.log()


@pytest.mark.skipif(not shutil.which("haproxy"), reason="haproxy is not installed")
def test_three_host_one_port_for_both_families_through_haproxy(three):
    """HAProxy reached over IPv4 and over IPv6 sends every client to one
    netproxyd port, whose service has an address per family: each client
    reaches the server over its own family, from its own address."""
    backend = Backend(three.lab, three.server, f"{three.S4}:8000", f"[{three.S6}]:8000")
    cfg = config({9004: ("127.0.0.1:9004", "srv")},
                 {"srv": f'connect = {{ "{three.S4}:8000", "[{three.S6}]:8000" }}, '
                         'transparent = true, connect_timeout = 1'})
    three.setup_routing(cfg)
    assert re.search(r"from 192\.0\.2\.20 ipproto tcp sport 8000 lookup 7001",
                     rules(three.proxy))
    assert re.search(r"from 2001:db8:2::20 ipproto tcp sport 8000 lookup 7001",
                     rules(three.proxy, six=True))
    hcfg = three.lab.file("haproxy-dual.cfg", f"""
global
    maxconn 256
defaults
    mode tcp
    timeout connect 3s
    timeout client 10s
    timeout server 10s
frontend fe4
    bind {three.P4C}:8080
    default_backend v2
frontend fe6
    bind [{three.P6C}]:8086
    default_backend v2
frontend fe6v1
    bind [{three.P6C}]:8087
    default_backend v1
backend v2
    server npd 127.0.0.1:9004 send-proxy-v2
backend v1
    server npd 127.0.0.1:9004 send-proxy
""")
    three.lab.popen(three.proxy, ["haproxy", "-db", "-f", str(hcfg)],
                    stdout=three.lab.output("haproxy-dual.out"))
    for port in (8080, 8086, 8087):
        wait_listening(three.proxy, port)
    with NsNetproxyd(three.proxy, cfg) as d:
        for host, port, want in ((three.P4C, 8080, three.C4), (three.P6C, 8086, three.C6),
                                 (three.P6C, 8087, three.C6)):
            got, how, me = in_ns(three.client, exchange, host, port, b"one port\n")
            assert me.startswith(f"[{want}]:" if ":" in want else f"{want}:")
            assert how == "eof", (got, d.log())
            assert got == f"peer={me}\n".encode() + b"one port\n", d.log()
            assert backend.peers()[-1] == me
        lines = d.closed(3)
        assert [c["proxy"] for c in lines] == ["v2", "v2", "v1"], d.log()
        assert all(c["port"] == "9004" and c["reason"] == "done" for c in lines), d.log()
        assert lines[1]["client"].startswith(f"[{three.C6}]:"), d.log()


@pytest.mark.skipif(not shutil.which("nginx"), reason="nginx is not installed")
def test_three_host_unmodified_nginx_sees_the_client(three):
    tmp = three.lab.tmp
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (tmp / sub).mkdir()
    access = tmp / "access.log"
    ncfg = three.lab.file("nginx.conf", f"""
user nobody nogroup;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log;
events {{ worker_connections 64; }}
http {{
    log_format peer '$remote_addr:$remote_port "$request" $status';
    access_log {access} peer;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    server {{
        listen {three.S4}:80;
        default_type text/plain;
        location / {{ return 200 "$remote_addr\\n"; }}
    }}
}}
""")
    three.lab.popen(three.server, ["nginx", "-p", str(tmp), "-c", str(ncfg), "-e", "stderr",
                                   "-g", "daemon off;"], stdout=three.lab.output("nginx.out"))
    wait_listening(three.server, 80)
    cfg = config({9000: ("198.51.100.1:9000", "web")},
                 {"web": 'connect = "192.0.2.20:80", transparent = true, connect_timeout = 1'},
                 THREE_TRUSTED)
    three.setup_routing(cfg)
    with NsNetproxyd(three.proxy, cfg) as d:
        out, err, rc = send_tool(three.client, three.P4C, 9000,
                                 b"GET /hello HTTP/1.0\r\nHost: test\r\n\r\n")
        me = sent_from(err)
        assert rc == 0, err
        assert out.startswith(b"HTTP/1.1 200"), out
        assert out.endswith(b"\r\n\r\n198.51.100.10\n"), out
        entry = wait_for(lambda: access.exists() and access.read_text(), 5, "nginx's access log")
        assert entry.splitlines() == [f'{me} "GET /hello HTTP/1.0" 200'], entry
        d.close_line(r'client=198\.51\.100\.10:.*reason="done"')


def test_three_host_health_checks_come_from_the_proxy(three):
    backend = Backend(three.lab, three.server, f"{three.S4}:8000", f"[{three.S6}]:8000")
    three.setup_routing(THREE_CONFIG)
    with NsNetproxyd(three.proxy, THREE_CONFIG) as d:
        cases = [(three.P4C, 9000, ("--local",), f"{three.P4S}:"),
                 (three.P4C, 9000, ("-1", "--local"), f"{three.P4S}:"),
                 (three.P6C, 9006, ("--local",), f"[{three.P6S}]:"),
                 (three.P6C, 9006, ("-1", "--local"), f"[{three.P6S}]:")]
        for host, port, args, want in cases:
            out, err, rc = send_tool(three.client, host, port, b"ping\n", args)
            assert rc == 0, err + d.log()
            peer = backend.peers()[-1]
            assert peer.startswith(want), peer
            assert out == f"peer={peer}\n".encode() + b"ping\n"
        kinds = [c["proxy"] for c in d.closed(4)]
        assert kinds == ["v2-local", "v1-unknown", "v2-local", "v1-unknown"], d.log()


def test_three_host_backend_refusing_or_down(three):
    # Nothing listens at 192.0.2.20:8009; nothing at all is at 192.0.2.99.
    cfg = config({9000: ("198.51.100.1:9000", "refusing"), 9001: ("198.51.100.1:9001", "down")},
                 {"refusing": 'connect = "192.0.2.20:8009", transparent = true',
                  "down": 'connect = "192.0.2.99:8000", transparent = true, connect_timeout = 1'},
                 THREE_TRUSTED)
    three.setup_routing(cfg)
    with NsNetproxyd(three.proxy, cfg) as d:
        out, err, rc = send_tool(three.client, three.P4C, 9000, b"x")
        assert out == b""
        line = d.close_line(r"service=refusing")
        assert re.search(r'client=198\.51\.100\.10:\d+ .*reason="backend refusing '
                         r'\(192\.0\.2\.20:8009\) connect failed: Connection refused"', line), line
        t0 = time.monotonic()
        out, err, rc = send_tool(three.client, three.P4C, 9001, b"x")
        assert out == b"" and time.monotonic() - t0 < 4
        line = d.close_line(r"service=down")
        assert re.search(r'reason="backend down \(192\.0\.2\.99:8000\) '
                         r'(connect timeout \(1000 ms\)|connect failed: No route to host)"',
                         line), line


# ---------------------------------------------------------------------------
# 4. Many at once
# ---------------------------------------------------------------------------

def _many_at_once(n):
    socks, wants = [], []
    try:
        for i in range(n):
            s = socket.create_connection(("127.0.0.1", S_V4), timeout=10)
            socks.append(s)
            src, sport = f"203.0.113.{i + 1}", 40000 + i
            payload = f"conn {i} ".encode() * (i + 1)
            s.sendall(proxy_v2(src, "127.0.0.1", sport, S_V4) + payload)
            wants.append((f"{src}:{sport}", payload))
        for s in socks:   # all n are open before any finishes
            s.shutdown(socket.SHUT_WR)
        results = []
        for s in socks:
            got = bytearray()
            while chunk := s.recv(65536):
                got += chunk
            results.append(bytes(got))
        return wants, results
    finally:
        for s in socks:
            s.close()


def test_200_concurrent_connections_each_with_its_own_address(routed):
    with routed.daemon() as d:
        wants, results = in_ns(routed.ns, _many_at_once, 200)
        for (peer, payload), got in zip(wants, results):
            assert got == f"peer={peer}\n".encode() + payload, (peer, got[:80])
        assert sorted(routed.backend.peers()) == sorted(p for p, _ in wants)
        d.wait_log(r'reason="done"', count=200)
        assert "its port is in use" not in d.log()


# ---------------------------------------------------------------------------
# 5. Health checks on one host
# ---------------------------------------------------------------------------

def test_single_host_health_checks_come_from_the_daemon(routed):
    with routed.daemon() as d:
        cases = [(S_V4, proxy_v2("0.0.0.0", "0.0.0.0", 0, 0, command=0), "127.0.0.1:"),
                 (S_V4, b"PROXY UNKNOWN\r\n", "127.0.0.1:"),
                 (S_V6, proxy_v2("0.0.0.0", "0.0.0.0", 0, 0, command=0), "[::1]:"),
                 (S_V6, b"PROXY UNKNOWN\r\n", "[::1]:")]
        for port, header, want in cases:
            got, how, _ = routed.talk(port, header + b"ping")
            peer = routed.backend.peers()[-1]
            assert peer.startswith(want), peer
            assert how == "eof" and got == f"peer={peer}\n".encode() + b"ping"
        kinds = [c["proxy"] for c in d.closed(4)]
        assert kinds == ["v2-local", "v1-unknown", "v2-local", "v1-unknown"], d.log()


def test_datagram_header_is_delivered_from_the_daemon(routed):
    """A v2 header about a datagram (UDP) client names no address a TCP
    connection can come from: it is treated as LOCAL."""
    with routed.daemon() as d:
        for port, src, dst, want in ((S_V4, "203.0.113.7", "127.0.0.1", "127.0.0.1:"),
                                     (S_V6, "2001:db8::7", "::1", "[::1]:")):
            header = bytearray(proxy_v2(src, dst, 51234, 53))
            header[13] = header[13] & 0xF0 | 0x2     # STREAM -> DGRAM
            got, how, _ = routed.talk(port, bytes(header) + b"dgram")
            peer = routed.backend.peers()[-1]
            assert peer.startswith(want), peer
            assert how == "eof" and got == f"peer={peer}\n".encode() + b"dgram"
        assert [c["reason"] for c in d.closed(2)] == ["done", "done"], d.log()


# ---------------------------------------------------------------------------
# 6. transparent_port = false, and the fallback when the port is taken
# ---------------------------------------------------------------------------

def test_transparent_port_false_lets_the_kernel_pick(routed):
    cfg = config(SINGLE_LISTENERS, {
        "back4": 'connect = "127.0.0.1:8000", transparent = true, transparent_port = false',
        "back6": 'connect = "[::1]:8000", transparent = true, transparent_port = false'})
    lo, hi = map(int, sh("ip", "netns", "exec", routed.ns, "sysctl", "-n",
                         "net.ipv4.ip_local_port_range").stdout.split())
    with routed.daemon(cfg) as d:
        # 2345 is outside the ephemeral range: the kernel cannot pick it.
        for port, src, dst in ((S_V4, "203.0.113.7", "127.0.0.1"),
                               (S_V6, "2001:db8::7", "::1")):
            got, how, _ = routed.talk(port, proxy_v2(src, dst, 2345, port) + b"data")
            peer = routed.backend.peers()[-1]
            host, _, pport = peer.rpartition(":")
            assert host.strip("[]") == src
            assert int(pport) != 2345 and lo <= int(pport) <= hi, peer
            assert how == "eof" and got == f"peer={peer}\n".encode() + b"data"
        assert "its port is in use" not in d.log()
        assert [c["client"] for c in d.closed(2)] == ["203.0.113.7:2345",
                                                           "[2001:db8::7]:2345"]


def _hold_transparent_port(family, addr):
    s = socket.socket(family, socket.SOCK_STREAM)
    if family == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, 75, 1)   # IPV6_TRANSPARENT
    else:
        s.setsockopt(socket.SOL_IP, 19, 1)         # IP_TRANSPARENT
    s.bind(addr)
    return s


def test_port_in_use_falls_back_to_another_port(routed):
    held = [in_ns(routed.ns, _hold_transparent_port, socket.AF_INET, ("203.0.113.7", 51234)),
            in_ns(routed.ns, _hold_transparent_port, socket.AF_INET6, ("2001:db8::7", 51234))]
    try:
        with routed.daemon() as d:
            for port, src, dst, client in ((S_V4, "203.0.113.7", "127.0.0.1",
                                            "203.0.113.7:51234"),
                                           (S_V6, "2001:db8::7", "::1",
                                            "[2001:db8::7]:51234")):
                got, how, _ = routed.talk(port, proxy_v1(src, dst, 51234, port,
                                                         "TCP6" if ":" in src else "TCP4")
                                          + b"still works")
                peer = routed.backend.peers()[-1]
                host, _, pport = peer.rpartition(":")
                assert host.strip("[]") == src and int(pport) != 51234, peer
                assert how == "eof" and got == f"peer={peer}\n".encode() + b"still works"
                d.wait_log(rf"debug: conn=\d+ client {re.escape(client)}: its port is in use "
                           rf"here, so back\d is reached from another port")
            assert [c["reason"] for c in d.closed(2)] == ["done", "done"], \
                d.log()
    finally:
        for s in held:
            s.close()


# ---------------------------------------------------------------------------
# 7. Mixed families
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("case", ["ipv6-client-ipv4-backend", "ipv4-client-ipv6-backend"])
def test_mixed_families_close_cleanly(routed, case):
    if case == "ipv6-client-ipv4-backend":
        port, svc, header, client = S_V4, "back4", proxy_v2("2001:db8::7", "::1", 51234, 443), \
            "[2001:db8::7]:51234"
        why = ("backend back4 (127.0.0.1:8000): an IPv6 client cannot connect from its own "
               "address to the IPv4 backend 127.0.0.1:8000")
        ok = (proxy_v2("203.0.113.8", "127.0.0.1", 51235, 443), "203.0.113.8:51235")
    else:
        port, svc, header, client = S_V6, "back6", proxy_v2("203.0.113.7", "127.0.0.1", 51234,
                                                              443), "203.0.113.7:51234"
        why = ("backend back6 ([::1]:8000): an IPv4 client cannot connect from its own "
               "address to the IPv6 backend [::1]:8000")
        ok = (proxy_v2("2001:db8::8", "::1", 51235, 443), "[2001:db8::8]:51235")
    with routed.daemon() as d:
        got, how, _ = routed.talk(port, header + b"x")
        assert got == b"" and how in ("eof", "reset")
        line = d.close_line(rf"service={svc} ")
        assert f'reason="{why}"' in line, line
        assert f"client={client} " in line
        assert routed.backend.peers() == []
        # ... and it keeps serving.
        got, how, _ = routed.talk(port, ok[0] + b"y")
        assert got == f"peer={ok[1]}\n".encode() + b"y"
        d.wait_log(rf'client={re.escape(ok[1])} .*reason="done"')
        assert d.proc.poll() is None


# A service that listens on both families (Prosody's interfaces = { "127.0.0.1",
# "::1" }): one address per family, so one PROXY port serves both.
DUAL = config({S_V4: ("127.0.0.1:9000", "dual")},
              {"dual": 'connect = { "127.0.0.1:8000", "[::1]:8000" }, transparent = true'})


def test_one_port_serves_both_families_of_a_dual_stack_service(lab):
    """An IPv4 and an IPv6 client on one proxy port, v1 and v2 headers, each
    delivered from its own address over its own family; LOCAL health checks
    to the first address; -t shows both; the routing covers both families."""
    single = Single(lab)
    r = netproxyd_cmd(lab, single.ns, DUAL, "-t")
    assert r.returncode == 0, r.stdout + r.stderr
    assert ("listen 127.0.0.1:9000 -> dual (127.0.0.1:8000 and [::1]:8000, plain, "
            "transparent)") in r.stdout, r.stdout
    with single.daemon(DUAL) as d:      # the warning names what both families need
        assert_commands_logged(d.log(), SINGLE_COMMANDS)
    single.setup_routing(DUAL)
    cases = [(proxy_v2("203.0.113.7", "127.0.0.1", 51234, 443), "203.0.113.7:51234", "v2"),
             (proxy_v2("2001:db8::7", "::1", 51234, 443), "[2001:db8::7]:51234", "v2"),
             (proxy_v1("203.0.113.8", "127.0.0.1", 51235, 443), "203.0.113.8:51235", "v1"),
             (proxy_v1("2001:db8::8", "::1", 51235, 443, "TCP6"), "[2001:db8::8]:51235", "v1"),
             # A v4-mapped client is IPv4 on the wire: it goes to the IPv4 address.
             (proxy_v2("::ffff:203.0.113.9", "::1", 51236, 443), "203.0.113.9:51236", "v2")]
    with single.daemon(DUAL) as d:
        for header, peer, version in cases:
            got, how, _ = single.talk(S_V4, header + b"both families")
            assert how == "eof" and got == f"peer={peer}\n".encode() + b"both families", \
                (peer, got, d.log())
            assert single.backend.peers()[-1] == peer
            line = d.close_line(rf'proxy={version} .*reason="done"')
            assert " service=dual " in line
        # Health checks name no client: the first address, from the daemon's own.
        for header, kind in ((proxy_v2("0.0.0.0", "0.0.0.0", 0, 0, command=0), "v2-local"),
                             (b"PROXY UNKNOWN\r\n", "v1-unknown")):
            got, how, _ = single.talk(S_V4, header + b"ping")
            peer = single.backend.peers()[-1]
            assert peer.startswith("127.0.0.1:") and got == f"peer={peer}\n".encode() + b"ping"
        lines = d.closed(len(cases) + 2)
        claimed = [p for _, p, _ in cases[:-1]] + ["[::ffff:203.0.113.9]:51236"]
        assert [c["client"] for c in lines] == claimed + ["-", "-"], d.log()
        assert [c["reason"] for c in lines] == ["done"] * (len(cases) + 2), d.log()
        assert re.search(r"service=dual .* backend=\[::1\]:8000 established", d.log())
        assert re.search(r"service=dual .* backend=127\.0\.0\.1:8000 established", d.log())


def test_v4_mapped_backend(routed):
    """A backend given as [::ffff:127.0.0.1] is IPv4 underneath: an IPv4
    client reaches it from its own address; an IPv6 client cannot, and is
    told so like with a plain IPv4 backend."""
    cfg = config({S_V4: ("127.0.0.1:9000", "mapped")},
                 {"mapped": 'connect = "[::ffff:127.0.0.1]:8000", transparent = true'})
    with routed.daemon(cfg) as d:
        got, how, _ = routed.talk(S_V4, proxy_v1("203.0.113.7", "127.0.0.1", 51234, 443)
                                  + b"mapped")
        assert got == b"peer=203.0.113.7:51234\nmapped", d.log()
        d.wait_log(r'client=203\.0\.113\.7:51234 .*reason="done"')

        got, how, _ = routed.talk(S_V4, proxy_v2("2001:db8::7", "::1", 51234, 443) + b"x")
        assert got == b"" and how in ("eof", "reset")
        line = d.close_line(r"client=\[2001:db8::7\]:51234 ")
        want = (r'reason="backend mapped \(\[::ffff:127\.0\.0\.1\]:8000\): an IPv6 client '
                r'cannot connect from its own address to the IPv\d backend')
        assert re.search(want, line), line


# ---------------------------------------------------------------------------
# 8. Backend refusing, one host
# ---------------------------------------------------------------------------

def test_single_host_backend_refusing(routed):
    cfg = config({S_V4: ("127.0.0.1:9000", "gone"), S_V6: ("127.0.0.1:9006", "gone6")},
                 {"gone": 'connect = "127.0.0.1:8009", transparent = true',
                  "gone6": 'connect = "[::1]:8009", transparent = true'})
    with routed.daemon(cfg) as d:
        for port, header, name, addr in (
                (S_V4, proxy_v2("203.0.113.7", "127.0.0.1", 51234, 80), "gone",
                 "127.0.0.1:8009"),
                (S_V6, proxy_v2("2001:db8::7", "::1", 51234, 80), "gone6", "[::1]:8009")):
            got, how, _ = routed.talk(port, header + b"anyone?", timeout=5)
            assert got == b"" and how in ("eof", "reset")
            line = d.close_line(rf"service={name} ")
            assert (f'reason="backend {name} ({addr}) connect failed: Connection refused"'
                    in line), line


# ---------------------------------------------------------------------------
# 9, 10. Privileges
# ---------------------------------------------------------------------------

NOBODY = pwd.getpwnam("nobody") if "nobody" in [p.pw_name for p in pwd.getpwall()] else None
NOGROUP = grp.getgrnam("nogroup") if "nogroup" in [g.gr_name for g in grp.getgrall()] else None
need_nobody = pytest.mark.skipif(NOBODY is None or NOGROUP is None,
                                 reason="no user nobody / group nogroup here")


@need_nobody
def test_privileges_dropped_to_nobody_keep_only_net_admin(routed):
    cfg = SINGLE_CONFIG + 'user = "nobody"\ngroup = "nogroup"\n'
    with routed.daemon(cfg) as d:
        statuses = proc_status(d.proc.pid)
        assert [st["Name"] for st in statuses if st["Pid"] == str(d.proc.pid)] == ["netproxyd"]
        assert len(statuses) >= 3    # main thread and 2 workers
        for st in statuses:
            assert st["CapEff"] == CAP_NET_ADMIN_MASK, st
            assert st["CapPrm"] == CAP_NET_ADMIN_MASK, st
            assert st["Uid"].split() == [str(NOBODY.pw_uid)] * 4, st
            assert st["Gid"].split() == [str(NOGROUP.gr_gid)] * 4, st
        assert "running as root" not in d.log()
        for port, header, peer in (
                (S_V4, proxy_v2("203.0.113.9", "127.0.0.1", 40001, 443), "203.0.113.9:40001"),
                (S_V6, proxy_v1("2001:db8::9", "::1", 40001, 443, "TCP6"),
                 "[2001:db8::9]:40001")):
            got, how, _ = routed.talk(port, header + b"as nobody")
            assert got == f"peer={peer}\n".encode() + b"as nobody", d.log()


def capbnd(st):
    return int(st["CapBnd"], 16)


@need_nobody
def test_privileges_bounding_set_and_no_new_privs(routed):
    """With user, what leaves the capability sets leaves the bounding set too,
    and no exec could gain a privilege back."""
    cfg = SINGLE_CONFIG + 'user = "nobody"\ngroup = "nogroup"\n'
    with routed.daemon(cfg) as d:
        for st in proc_status(d.proc.pid):
            assert capbnd(st) == int(CAP_NET_ADMIN_MASK, 16), st
            assert st["NoNewPrivs"] == "1", st
            assert st["CapInh"] == "0" * 16 and st["CapAmb"] == "0" * 16, st


@need_nobody
def test_started_as_root_without_user_runs_as_nobody(routed):
    """Never root after binding: without user, a start as root becomes nobody,
    keeping only CAP_NET_ADMIN for the transparent services, and says so."""
    with routed.daemon() as d:
        d.wait_log(r"info: started as root without user: running as nobody")
        for st in proc_status(d.proc.pid):
            assert st["Uid"].split() == [str(NOBODY.pw_uid)] * 4, st
            assert st["CapEff"] == CAP_NET_ADMIN_MASK, st
            assert capbnd(st) == int(CAP_NET_ADMIN_MASK, 16), st
            assert st["NoNewPrivs"] == "1", st
        got, how, _ = routed.talk(S_V4, proxy_v2("203.0.113.9", "127.0.0.1", 40002, 443) + b"x")
        assert got == b"peer=203.0.113.9:40002\nx", d.log()


def test_user_root_is_refused(routed):
    with routed.daemon(SINGLE_CONFIG + 'user = "root"\n', ready=None) as d:
        assert d.proc.wait(10) == 1
        assert "user: root is root: netproxyd does not run as root after binding" in d.log()


def test_setup_routing_never_runs_ip_from_path(single, tmp_path):
    """--setup-routing runs as root: a PATH chosen by someone else must not
    choose the program it runs."""
    fake = tmp_path / "bin"
    fake.mkdir()
    marker = tmp_path / "ran"
    (fake / "ip").write_text(f"#!/bin/sh\ntouch {marker}\nexit 0\n")
    (fake / "ip").chmod(0o755)
    path = single.lab.file(f"path-{next(_seq)}.conf.lua", SINGLE_CONFIG)
    r = sh(*ns_exec(single.ns), "env", f"PATH={fake}:/usr/sbin:/usr/bin:/sbin:/bin",
           tool("netproxyd"), "--setup-routing", "-c", str(path), check=False)
    assert r.returncode == 0, r.stderr
    assert not marker.exists()
    assert re.search(r"from 127\.0\.0\.0/8 iif lo lookup 7001", rules(single.ns))


@need_nobody
def test_no_transparent_service_keeps_no_capability(lab):
    ns = lab.ns("plain")
    cfg = config({S_V4: ("127.0.0.1:9000", "plain")},
                 {"plain": 'connect = "127.0.0.1:8000", send_proxy = "v2"'},
                 extra='user = "nobody"\ngroup = "nogroup"\n')
    with NsNetproxyd(ns, cfg) as d:
        for st in proc_status(d.proc.pid):
            assert st["CapEff"] == "0000000000000000", st
            assert st["CapPrm"] == "0000000000000000", st
            assert st["Uid"].split()[0] == str(NOBODY.pw_uid)
        assert "CAP_NET_ADMIN" not in d.log()


@need_nobody
@pytest.mark.skipif(not shutil.which("setpriv"), reason="setpriv (util-linux) is not installed")
def test_missing_capability_is_said_at_start_and_per_connection(routed):
    prefix = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
    with routed.daemon(prefix=prefix) as d:
        st = next(st for st in proc_status(d.proc.pid) if st["Pid"] == str(d.proc.pid))
        assert st["Name"] == "netproxyd"
        assert st["Uid"].split()[0] == str(NOBODY.pw_uid) and st["CapEff"] == "0" * 16
        d.wait_log(r"warning: transparent services.* need CAP_NET_ADMIN, which this process "
                   r"lacks")
        got, how, _ = routed.talk(S_V4, proxy_v2("203.0.113.7", "127.0.0.1", 51234, 443) + b"x")
        assert got == b"" and how in ("eof", "reset")
        line = d.close_line(r"service=back4")
        assert re.search(r'reason="backend back4 \(127\.0\.0\.1:8000\): IP_TRANSPARENT: '
                         r'Operation not permitted \([^"]*CAP_NET_ADMIN\)"',
                         line), line
        assert routed.backend.peers() == []


# ---------------------------------------------------------------------------
# Connection rate, for the notes (printed, not asserted)
# ---------------------------------------------------------------------------

def _sequential(port, n, base):
    t0 = time.perf_counter()
    bad = 0
    for i in range(n):
        src, sport = f"203.0.113.{i % 250 + 1}", base + i
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        try:
            s.sendall(proxy_v2(src, "127.0.0.1", sport, port) + b"x")
            s.shutdown(socket.SHUT_WR)
            got = bytearray()
            while chunk := s.recv(4096):
                got += chunk
            bad += not got.endswith(b"x")
        finally:
            s.close()
    return n / (time.perf_counter() - t0), bad


def test_connection_rate_transparent_vs_send_proxy_v2(routed, capsys):
    cfg = config({S_V4: ("127.0.0.1:9000", "transp"), 9001: ("127.0.0.1:9001", "header")},
                 {"transp": 'connect = "127.0.0.1:8000", transparent = true',
                  "header": 'connect = "127.0.0.1:8000", send_proxy = "v2"'},
                 extra='log_level = "warn"\n')
    n = 2000
    with routed.daemon(cfg, ready=None) as d:
        wait_for(lambda: in_ns(routed.ns, _can_connect, 9001), 5, "netproxyd to listen")
        in_ns(routed.ns, _sequential, S_V4, 50, 10000)          # warm up
        in_ns(routed.ns, _sequential, 9001, 50, 10000)
        rate_t, bad_t = in_ns(routed.ns, _sequential, S_V4, n, 20000)
        rate_h, bad_h = in_ns(routed.ns, _sequential, 9001, n, 20000)
        with capsys.disabled():
            print(f"\n[rate] {n} sequential connections, one host: transparent "
                  f"{rate_t:.0f}/s, send_proxy=\"v2\" {rate_h:.0f}/s")
        assert bad_t == 0 and bad_h == 0, d.log()[-3000:]


def _can_connect(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False
