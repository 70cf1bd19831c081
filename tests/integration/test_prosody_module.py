"""mod_net_proxy (prosody/mod_net_proxy.lua, on the Lua binding of libnetproxy)
in Debian's Prosody 0.12, behind Debian's HAProxy 2.6: issue 14.

The original module's own scenario, with our module in its place. Everything
runs in a network namespace made here (lo up, 2001:db8::5 added to it for an
IPv6 client); the host's network is never touched:

    client 127.0.0.5     --> HAProxy 127.0.0.1:25222 25269 25223 (send-proxy-v2, check)
                                     127.0.0.1:35222 35269 35223 (send-proxy, check)
    client 2001:db8::5   --> HAProxy [::1]:25222 ...  [::1]:35222 ...
      --> Prosody's PROXY ports 15222 15269 15223 (proxy_port_mappings: c2s, s2s,
          c2s_direct_tls), on 127.0.0.1 and ::1, served by mod_net_proxy
      (Prosody's own ports 5222 5269 5223 stay open too, as in the original)

Prosody loads the module from this tree (plugin_paths) and the binding from
the build (LUA_CPATH_5_4 in its environment). Its config also lists
proxy_ports with a port nothing is mapped to (15999) and maps 15998 to a
service Prosody does not have.

The first group of tests is the proof of the scenario: c2s logins over
STARTTLS and direct TLS, s2s streams, IPv4 and IPv6 clients, HAProxy's health
checks, a burst of 500 clients, and Prosody's own view of each client (its
log and `prosodyctl shell c2s:show()`). The second group takes each defect of
the original module in turn, with a client that speaks to a PROXY port
directly from 127.0.0.1 (trusted by default) with a header made by hand.
A second Prosody (proxy_secure_in = true) serves the proxy_secure_in test and
then a session that lives through `prosodyctl reload` and the module's
unload.

Every wait is bounded; processes are stopped by PID, namespaces deleted.
"""
import re
import selectors
import socket
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from netns import Lab, in_ns, ns_exec, sh, why_no_netns
from npd import build_dir, find_exe, proxy_v1, proxy_v2, wait_for
from xmpp import (ACCOUNT, C2S_STREAM, CLIENT_IP, CLIENT_IP6, S2S_STREAM, TIMEOUT, XmppError,
                  XmppStream,
                  c2s_login, listening_ports, prosody_stack, s2s_open,
                  skip_reason as xmpp_skip_reason)

REPO = Path(__file__).resolve().parents[2]
MODULE_DIR = REPO / "prosody"

_SKIP = why_no_netns() or xmpp_skip_reason()
pytestmark = pytest.mark.skipif(_SKIP is not None, reason=str(_SKIP))

VERSIONS = ("v2", "v1")
PORTS = {"c2s": 5222, "s2s": 5269, "c2s_direct_tls": 5223}          # Prosody's own
PROXY_PORTS = {svc: 10000 + port for svc, port in PORTS.items()}    # the module's
FRONTS = {(v, svc): (20000 if v == "v2" else 30000) + port          # HAProxy's
          for v in VERSIONS for svc, port in PORTS.items()}
UNMAPPED = 15999    # in proxy_ports, in no mapping
MISSING = 15998     # mapped to a service Prosody does not have
# Direct-TLS services Prosody does not listen for here, reached through PROXY
# ports only: their TLS context is the module's, made as Prosody makes one.
MORE_TLS = {15224: "legacy_ssl", 15225: "s2s_direct_tls"}
FEATURES = (b"</stream:features>", b"<stream:features/>")


def module_config(mappings, **keys):
    """The config lines that load the module from this tree, with its keys."""
    lua = {True: "true", False: "false"}
    lines = [f'plugin_paths = {{ "{MODULE_DIR}" }}',
             'modules_enabled = { "roster"; "saslauth"; "tls"; "disco"; "ping"; '
             '"dialback"; "admin_shell"; "net_proxy" }',
             # The harness's pause after a failed accept, and a backlog for the burst.
             "network_settings = { accept_retry_interval = 0.05; tcp_backlog = 1024 }",
             "proxy_port_mappings = { " + ", ".join(f'[{p}] = "{s}"' for p, s in
                                                    sorted(mappings.items())) + " }"]
    for key, value in keys.items():
        if isinstance(value, (list, tuple)):
            value = "{ " + ", ".join(f'"{v}"' if isinstance(v, str) else str(v)
                                     for v in value) + " }"
        elif isinstance(value, bool):
            value = lua[value]
        lines.append(f"{key} = {value}")
    return "\n".join(lines) + "\n"


def module_env():
    """Prosody finds the binding in the build, before Lua's default cpath."""
    lib = build_dir() / "lua" / "netproxy.so"
    assert lib.is_file(), f"{lib}: build it first (make)"
    return {"LUA_CPATH_5_4": f"{lib.parent}/?.so;;"}


class Setup:
    """The namespace and the stack in it, with the helpers the tests share."""

    def __init__(self, ns, st):
        self.ns, self.st = ns, st

    def run(self, fn, *args, **kwargs):
        return in_ns(self.ns, fn, *args, **kwargs)

    def module_lines(self):
        return [line for line in self.st.prosody_log().splitlines() if "\tmod_net_proxy\t" in line
                or " mod_net_proxy\t" in line]

    def wait_line(self, pattern, since=0, timeout=TIMEOUT):
        """The first of the module's log lines after `since` that matches."""
        rx = re.compile(pattern)
        try:
            return wait_for(lambda: next((m for m in map(rx.search, self.module_lines()[since:])
                                          if m), None), timeout, f"a log line /{pattern}/")
        except AssertionError as e:
            raise AssertionError(f"{e}{self.st.debug()}") from None

    def lines_about(self, text, since=0):
        return [line for line in self.module_lines()[since:] if text in line]

    def exchange(self, version, svc, client=CLIENT_IP):
        """A login (c2s, c2s_direct_tls) or a stream (s2s) through HAProxy's front."""
        host = "::1" if ":" in client else "127.0.0.1"
        front = self.st.fronts[version, svc]
        if svc == "s2s":
            return self.run(s2s_open, host, front, source=client)
        login = self.run(c2s_login, host, front, self.st.cert, source=client,
                         direct_tls=svc == "c2s_direct_tls")
        return login.cport, login

    def raw(self, port, data, **kw):
        return self.run(raw_exchange, port, data, **kw)

    def shell(self, *command):
        """prosodyctl shell COMMAND..., as the prosody user; its output."""
        r = subprocess.run([*self.st.setpriv(), find_exe("prosodyctl"), "--config", str(self.st.cfg),
                            "shell", *command], capture_output=True, text=True, timeout=30,
                           stdin=subprocess.DEVNULL, env=self.st.prosody_env())
        return r.stdout + r.stderr


class Raw:
    """What a raw exchange saw: the bytes received, whether the server closed,
    the seconds from connect to the end, the client's own port."""

    def __init__(self, got, closed, took, cport):
        self.got, self.closed, self.took, self.cport = got, closed, took, cport


def raw_exchange(port, data, source="127.0.0.1", host="127.0.0.1", trickle=(), pause=0.0,
                 until=FEATURES, timeout=TIMEOUT):
    """Connect from source to a PROXY port, send data, then each of trickle
    `pause` seconds apart (stopping if the server closes), and read until one
    of `until` or the server's close. Never longer than timeout."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.bind((source, 0))
        t0 = time.monotonic()
        s.connect((host, port))
        cport = s.getsockname()[1]
        got, closed = bytearray(), False
        try:
            if data:
                s.sendall(data)
            for piece in trickle:
                s.settimeout(pause)
                try:
                    chunk = s.recv(65536)
                    if not chunk:
                        closed = True
                        break
                    got += chunk
                except socket.timeout:
                    pass
                s.sendall(piece)
            s.settimeout(max(0.1, timeout - (time.monotonic() - t0)))
            while not closed and not any(u in got for u in until):
                chunk = s.recv(65536)
                if not chunk:
                    closed = True
                    break
                got += chunk
        except (ConnectionResetError, BrokenPipeError):
            closed = True
        except socket.timeout:
            pass
        return Raw(bytes(got), closed, time.monotonic() - t0, cport)


@contextmanager
def module_setup(lab, role, haproxy=True, more_mappings=None, **keys):
    """A namespace with Prosody (the module loaded, with keys) and HAProxy."""
    ns = lab.ns(role)
    sh("ip", "-n", ns, "addr", "add", f"{CLIENT_IP6}/128", "dev", "lo")
    mappings = {port: svc for svc, port in PROXY_PORTS.items()}
    mappings.update(more_mappings or {})
    extra = module_config(mappings, **keys)
    with prosody_stack(PORTS, targets=PROXY_PORTS, fronts=FRONTS, prefix=ns_exec(ns), extra=extra,
                       haproxy=False, ipv6=True, env=module_env()) as st:
        wait_for(lambda: set(PROXY_PORTS.values()) <= listening_ports(st.prosody.pid), TIMEOUT,
                 "Prosody to listen on the PROXY ports")
        if haproxy:
            st.start_haproxy()
        yield Setup(ns, st)


@pytest.fixture(scope="module")
def lab():
    with Lab() as lab:
        yield lab


@pytest.fixture(scope="module")
def setup(lab):
    ports = sorted(PROXY_PORTS.values()) + [UNMAPPED, MISSING, *MORE_TLS]
    with module_setup(lab, "mod", more_mappings={MISSING: "no_such_service", **MORE_TLS},
                      proxy_ports=ports) as s:
        yield s


# --- the scenario: HAProxy in front, as the original README has it ------------------


def client_line(s, client, cport, version, svc, since=0):
    """The module's line for a client it handed to svc."""
    word = r"PROXY v2 PROXY" if version == "v2" else r"PROXY v1 TCP[46]"
    return s.wait_line(rf"Client {re.escape(client)} port {cport} via 127\.0\.0\.1 port \d+ "
                       rf"\({word}\) to {svc}$", since).string


@pytest.mark.parametrize("version", VERSIONS)
def test_c2s_login_over_starttls(setup, version):
    cport, login = setup.exchange(version, "c2s")
    assert login.success.startswith(b"<success") and login.jid.startswith("test@localhost/")
    print(f"\n{client_line(setup, CLIENT_IP, cport, version, 'c2s')}")


@pytest.mark.parametrize("version", VERSIONS)
def test_c2s_login_over_direct_tls(setup, version):
    """The original README: "not possible ... on SSL/TLS ports". Here the
    header is read exactly, then Prosody does its own handshake with the
    service's certificate, and its debug log names the client once TLS is up."""
    cport, login = setup.exchange(version, "c2s_direct_tls")
    assert login.tls and login.jid.startswith("test@localhost/"), vars(login)
    print(f"\n{client_line(setup, CLIENT_IP, cport, version, 'c2s_direct_tls')}")
    line = wait_for(lambda: re.search(rf"Connected \(FD \d+ \({re.escape(CLIENT_IP)}, {cport}, "
                                      rf"127\.0\.0\.1, {PROXY_PORTS['c2s_direct_tls']}\)\)",
                                      setup.st.prosody_log()), TIMEOUT, "Prosody's Connected line")
    print(f"Prosody after the handshake ({login.tls}): {line.group(0)}")


@pytest.mark.parametrize("version", VERSIONS)
def test_s2s_stream(setup, version):
    cport, _ = setup.exchange(version, "s2s")
    print(f"\n{client_line(setup, CLIENT_IP, cport, version, 's2s')}")


@pytest.mark.parametrize("svc", PORTS)
@pytest.mark.parametrize("version", VERSIONS)
def test_ipv6_client(setup, version, svc):
    """A client of HAProxy's over IPv6; HAProxy sends its header (TCP6, v2
    INET6) to the PROXY port over IPv4, which serves both families."""
    cport, _ = setup.exchange(version, svc, client=CLIENT_IP6)
    print(f"\n{client_line(setup, CLIENT_IP6, cport, version, svc)}")


def header_then_tls(port, header, svc, cafile):
    """From 127.0.0.1 (a trusted proxy) straight to a PROXY port: the header,
    then a TLS handshake, then a c2s login or an s2s stream."""
    with XmppStream("127.0.0.1", port, source="127.0.0.1") as xs:
        xs.sock.sendall(header)
        tls = xs.start_tls(cafile)
        if svc == "s2s_direct_tls":
            return tls, xs.open(S2S_STREAM)
        xs.open()
        xs.auth_plain(*ACCOUNT)
        xs.open()
        return tls, xs.bind("direct")


@pytest.mark.parametrize("port", MORE_TLS, ids=MORE_TLS.values())
def test_other_direct_tls_services(setup, port):
    """legacy_ssl and s2s_direct_tls behind PROXY, which Prosody itself does not
    listen for here: the module makes their TLS context as Prosody would."""
    svc = MORE_TLS[port]
    hdr = proxy_v2("203.0.113.20", "192.0.2.1", 20000 + port % 1000, 5223)
    tls, result = setup.run(header_then_tls, port, hdr, svc, setup.st.cert)
    assert tls.startswith("TLSv1"), tls
    if svc == "s2s_direct_tls":
        assert re.search(rb"<stream:stream [^>]*from=['\"]localhost['\"]", result), result
    else:
        assert result.startswith("test@localhost/"), result
    line = setup.wait_line(rf"Client 203\.0\.113\.20 port {20000 + port % 1000} via 127\.0\.0\.1 "
                           rf"port \d+ \(PROXY v2 PROXY\) to {svc}$").string
    print(f"\n{line} ({tls})")


def test_ipv6_proxy(setup):
    """The proxy itself on IPv6 (::1, trusted by default): the same port's
    IPv6 socket takes its header."""
    hdr = proxy_v2("2001:db8::7", "2001:db8::1", 40000, 5222)
    r = setup.raw(PROXY_PORTS["c2s"], hdr + C2S_STREAM, source="::1", host="::1")
    assert any(f in r.got for f in FEATURES), r.got
    print(f"\n{setup.wait_line(r'Client 2001:db8::7 port 40000 via ::1 port').string}")


def test_a_v4_mapped_client_is_shown_as_ipv4(setup):
    """A header from a dual-stack proxy may name an IPv4 client as
    ::ffff:a.b.c.d: Prosody is given the IPv4 text it shows for such clients."""
    hdr = proxy_v2("::ffff:203.0.113.30", "::ffff:192.0.2.1", 30000, 5222)
    r = setup.raw(PROXY_PORTS["c2s"], hdr + C2S_STREAM)
    assert served(r), r.got
    print(f"\n{setup.wait_line(r'Client 203[.]0[.]113[.]30 port 30000 via').string}")


def test_prosody_session_list_shows_the_client(setup):
    """Prosody's own session list (the admin shell's c2s:show() with its IP
    address column) names the client's address, not HAProxy's, while the
    client is connected."""
    def logged_in_and_listed():
        with XmppStream("127.0.0.1", setup.st.fronts["v2", "c2s"]) as xs:
            xs.open()
            xs.starttls(setup.st.cert)
            xs.open()
            xs.auth_plain(*ACCOUNT)
            xs.open()
            jid = xs.bind("listed")
            return xs.cport, jid, setup.shell('c2s:show(nil, { "jid"; "ip"; "secure" })')
    cport, jid, shown = setup.run(logged_in_and_listed)
    row = next((line for line in shown.splitlines() if jid in line), None)
    assert row and CLIENT_IP in row and "127.0.0.1" not in row, shown
    print(f"\nprosodyctl shell c2s:show(): {row}")


def test_health_checks(setup):
    """HAProxy's `check` on every server, as in the original README: all UP,
    no header left in a stream, and never an error in Prosody's log (the
    original raised a Lua error on every check)."""
    servers = setup.st.assert_health_checks_survived()  # waits for a check of every server
    print(f"\nHAProxy: {[(x['pxname'], x['status'], x['check_status']) for x in servers]}")
    assert_no_errors(setup)


def local_then_reset(port, n):
    """n health checks as HAProxy's tcp-check sends them: a v2 LOCAL header,
    then a reset (SO_LINGER 0) before any answer."""
    for _ in range(n):
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
            s.connect(("127.0.0.1", port))
            s.sendall(proxy_v2("", "", 0, 0, command=0))


def test_checks_that_send_local_and_reset(setup):
    """Checks with a header of their own (LOCAL) that reset at once, on every
    PROXY port: served or dropped quietly, never an error, Prosody serving on."""
    for port in PROXY_PORTS.values():
        setup.run(local_then_reset, port, 20)
    time.sleep(0.5)
    assert_no_errors(setup)
    setup.st.assert_running()
    assert setup.exchange("v2", "c2s")[1].jid


def burst(host, port, n, source, timeout):
    """n clients at once, each opening a c2s stream and reading its features;
    returns the client ports that were served."""
    sel = selectors.DefaultSelector()
    served, state = [], {}
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind((source, 0))
        s.setblocking(False)
        s.connect_ex((host, port))
        state[s] = bytearray()
        sel.register(s, selectors.EVENT_WRITE)
    deadline = time.monotonic() + timeout
    while state and time.monotonic() < deadline:
        for key, events in sel.select(0.5):
            s = key.fileobj
            if events & selectors.EVENT_WRITE:
                if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) != 0:
                    sel.unregister(s); s.close(); del state[s]
                    continue
                s.send(C2S_STREAM)
                sel.modify(s, selectors.EVENT_READ)
                continue
            try:
                chunk = s.recv(65536)
            except OSError:
                chunk = b""
            state[s] += chunk
            if any(f in state[s] for f in FEATURES):
                served.append(s.getsockname()[1])
            if not chunk or any(f in state[s] for f in FEATURES):
                sel.unregister(s)
                s.close()
                del state[s]
    for s in state:
        s.close()
    return served


def test_burst_of_500_clients(setup):
    n = 500
    since = len(setup.module_lines())
    t0 = time.monotonic()
    served = setup.run(burst, "127.0.0.1", setup.st.fronts["v2", "c2s"], n, CLIENT_IP, 60)
    took = time.monotonic() - t0
    assert len(served) == n, f"{len(served)}/{n} served{setup.st.debug()}"
    lines = wait_for(lambda: (ls := setup.lines_about(f"Client {CLIENT_IP} port", since))
                     and len(ls) >= n and ls, TIMEOUT, f"{n} client lines")
    ports = {int(m.group(1)) for m in (re.search(r"Client \S+ port (\d+) ", x) for x in lines)}
    assert set(served) <= ports, set(served) - ports
    print(f"\n{len(served)}/{n} served in {took:.2f} s, each logged with its own address and port")
    assert_no_errors(setup)


# --- the original module's defects, one test each --------------------------------------


C2S = PROXY_PORTS["c2s"]


def served(r):
    return any(f in r.got for f in FEATURES)


def one_line_about(setup, r, since, pattern):
    """Exactly one of the module's lines about the raw client (its port, as
    the proxy's), and it matches pattern."""
    def found():
        return setup.lines_about(f"port {r.cport} ", since)
    lines = wait_for(found, TIMEOUT, f"the module's line about port {r.cport}")
    assert len(lines) == 1, lines
    assert re.search(pattern, lines[0]), (pattern, lines[0])
    return lines[0]


def test_v2_local_is_stripped_and_served_with_the_real_endpoints(setup):
    """Original: LOCAL left in the stream (the XML parser saw the header)."""
    since = len(setup.module_lines())
    r = setup.raw(C2S, proxy_v2("", "", 0, 0, command=0, tlvs=b"\x04\x00\x02xy") + C2S_STREAM)
    assert served(r) and b"not-well-formed" not in r.got, r.got
    print("\n" + one_line_about(setup, r, since, rf"Client 127\.0\.0\.1 port {r.cport} via 127\.0\.0\.1 "
                                rf"port {r.cport} \(PROXY v2 LOCAL\) to c2s"))


def test_v1_unknown_is_served(setup):
    """Original: "PROXY UNKNOWN" refused (no address family it knew)."""
    since = len(setup.module_lines())
    r = setup.raw(C2S, b"PROXY UNKNOWN\r\n" + C2S_STREAM)
    assert served(r), r.got
    print("\n" + one_line_about(setup, r, since, r"\(PROXY v1 UNKNOWN\) to c2s"))


@pytest.mark.parametrize("header", [proxy_v1("203.0.113.7", "192.0.2.1", 65535, 0),
                                    proxy_v2("203.0.113.7", "192.0.2.1", 0, 65535)],
                         ids=["v1 65535 and 0", "v2 0 and 65535"])
def test_ports_0_and_65535_are_served(setup, header):
    """Original: v1 ports 0 and 65535 refused (it wanted 1..65534)."""
    since = len(setup.module_lines())
    r = setup.raw(C2S, header + C2S_STREAM)
    assert served(r), r.got
    sport = 65535 if header.startswith(b"PROXY") else 0
    print("\n" + one_line_about(setup, r, since, rf"Client 203\.0\.113\.7 port {sport} via"))


UNIX_PATHS = (b"/run/haproxy.sock".ljust(108, b"\0") * 2)


@pytest.mark.parametrize("header,outcome", [
    (b"\r\n\r\n\x00\r\nQUIT\n\x21\x00\x00\x00", "served"),
    (b"\r\n\r\n\x00\r\nQUIT\n\x21\x31\x00\xd8" + UNIX_PATHS, "served"),
    (b"\r\n\r\n\x00\r\nQUIT\n\x21\x01\x00\x00", "NP_EFAMILY"),
], ids=["PROXY UNSPEC", "PROXY UNIX", "PROXY UNSPEC over STREAM"])
def test_v2_unspec_and_unix_do_not_hang(setup, header, outcome):
    """Original: UNSPEC/STREAM and UNIX left the connection hanging. Now an
    UNSPEC or UNIX header is served with the connection's own addresses, and
    a combination the specification does not list is refused at once."""
    since = len(setup.module_lines())
    r = setup.raw(C2S, header + C2S_STREAM, timeout=3)
    assert r.took < 2, f"{r.took:.2f} s"
    if outcome == "served":
        assert served(r), r.got
        line = one_line_about(setup, r, since, rf"Client 127\.0\.0\.1 port {r.cport} via .* to c2s")
    else:
        assert r.closed and not r.got, r.got
        line = one_line_about(setup, r, since, rf"warn\tClosed 127\.0\.0\.1 port {r.cport} .*"
                              rf"\({outcome}\)$")
    print(f"\n{line}")


def test_v2_length_short_of_the_address_block_is_refused(setup):
    """Original: a v2 length below the address block read the addresses
    from the application data that followed (garbage addresses)."""
    since = len(setup.module_lines())
    hdr = b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x04" + b"\xcb\x00\x71\x07"
    r = setup.raw(C2S, hdr + C2S_STREAM, timeout=3)
    assert r.closed and not r.got and r.took < 1, (r.got, r.took)
    line = one_line_about(setup, r, since, r"v2 length does not cover the address block \(NP_ESHORT\)")
    assert "Client" not in line
    print(f"\n{line}")


def test_header_deadline_counts_from_the_accept(setup):
    """Original: no header deadline (its read timeout, 14 minutes, restarted
    by every byte). Here 5 s from the accept, whatever trickles in meanwhile."""
    since = len(setup.module_lines())
    hdr = proxy_v2("203.0.113.7", "192.0.2.1", 1, 2)
    r = setup.raw(C2S, hdr[:2], trickle=[hdr[i:i + 1] for i in range(2, 14)], pause=0.5,
                  timeout=9)
    assert r.closed and 4.5 <= r.took <= 6.5, f"closed={r.closed} after {r.took:.2f} s"
    print("\n" + one_line_about(setup, r, since, r"no complete PROXY header within "
                                r"proxy_header_timeout \(5 s\)") + f"   ({r.took:.2f} s)")


def noop_header(total):
    """A v2 PROXY header of exactly `total` bytes (a NOOP TLV makes up the size)."""
    base = proxy_v2("203.0.113.7", "192.0.2.1", 7, 5222)
    pad = total - len(base) - 3
    tlv = b"\x04" + pad.to_bytes(2, "big") + b"\0" * pad
    return proxy_v2("203.0.113.7", "192.0.2.1", 7, 5222, tlvs=tlv)


def test_header_size_is_capped(setup):
    """Original: no cap after the signature (up to 1 MiB buffered, by
    quadratic concatenation). Here proxy_max_header (4096): a v2 header
    announcing more is refused on its 16 fixed bytes; 4096 bytes are served,
    4097 are not."""
    since = len(setup.module_lines())
    big = noop_header(60000)
    r = setup.raw(C2S, big[:16], timeout=3)
    assert r.closed and r.took < 1, (r.closed, r.took)
    print("\n" + one_line_about(setup, r, since, r"larger than proxy_max_header \(4096 bytes\)"))
    r = setup.raw(C2S, noop_header(4096) + C2S_STREAM)
    assert served(r), r.got
    r = setup.raw(C2S, noop_header(4097) + C2S_STREAM, timeout=3)
    assert r.closed and not r.got
    one_line_about(setup, r, since, r"NP_ETOOBIG")


@pytest.mark.parametrize("line,code", [
    (b"PROXY TCP4 2001:db8::7 192.0.2.1 1000 5222\r\n", "NP_EADDRESS"),
    (b"PROXY TCP6 fe80::7%eth0 ::1 1000 5222\r\n", "NP_EADDRESS"),
    (b"PROXY TCP4 203.0.113.07 192.0.2.1 1000 5222\r\n", "NP_EADDRESS"),
    (b"PROXY TCP4 203.0.113.7 192.0.2.1 01000 5222\r\n", "NP_EPORT"),
    (b"PROXY UNKNOWN " + b"x" * 100 + b"\r\n", "NP_ETOOLONG"),
], ids=["TCP4 with IPv6", "zone id", "leading zero in an octet", "leading zero in a port",
        "over 107 bytes"])
def test_v1_is_strict(setup, line, code):
    """Original: lenient v1 (TCP4 with an IPv6 address, zone ids, leading
    zeros, no 107-byte limit). Each is refused with one warning naming why."""
    since = len(setup.module_lines())
    r = setup.raw(C2S, line + C2S_STREAM, timeout=3)
    assert r.closed and not r.got, r.got
    print("\n" + one_line_about(setup, r, since, rf"warn\tClosed .*bad PROXY header: .*\({code}"))


def test_a_client_without_a_header_is_refused_at_its_first_byte(setup):
    """Original: waited for 256 bytes before refusing a non-PROXY client."""
    since = len(setup.module_lines())
    r = setup.raw(C2S, b"<", timeout=3)
    assert r.closed and r.took < 1, (r.closed, r.took)
    print("\n" + one_line_about(setup, r, since, r"not a PROXY protocol header \(NP_ENOTPROXY\)"))


def test_an_untrusted_sender_is_refused_before_a_byte_is_read(setup):
    """proxy_trusted_proxies (default 127.0.0.1 and ::1): 127.0.0.5 is refused
    at the accept, even with a valid header."""
    since = len(setup.module_lines())
    r = setup.raw(C2S, proxy_v2("203.0.113.7", "192.0.2.1", 1, 2) + C2S_STREAM,
                  source=CLIENT_IP, timeout=3)
    assert r.closed and not r.got and r.took < 1
    print("\n" + one_line_about(setup, r, since, rf"warn\tClosed {re.escape(CLIENT_IP)} port "
                                rf"{r.cport} on PROXY port {C2S}: not a trusted proxy"))


def test_unmapped_port_and_missing_service(setup):
    """A proxy port without a mapping and a mapping to a service Prosody does
    not have: each warned once at start, Prosody running; their connections
    are closed after the header, one line each."""
    log = setup.st.prosody_log()
    assert log.count(f"Port {UNMAPPED} is in proxy_ports but has no proxy_port_mappings") == 1, \
        setup.st.debug()
    assert log.count(f'proxy_port_mappings[{MISSING}] = "no_such_service"') == 1, setup.st.debug()
    for port, why in ((UNMAPPED, f"port {UNMAPPED} has no proxy_port_mappings entry"),
                      (MISSING, "is not a service Prosody has")):
        since = len(setup.module_lines())
        r = setup.raw(port, proxy_v2("203.0.113.7", "192.0.2.1", 1, 2) + C2S_STREAM, timeout=3)
        assert r.closed and not r.got
        line = one_line_about(setup, r, since, re.escape(why) + r" \(client 203\.0\.113\.7 port 1\)")
        print(f"\n{line}")
    setup.st.assert_running()


def assert_no_errors(setup):
    """Never a Lua error or a traceback, never an error line from the module."""
    log = setup.st.prosody_log()
    bad = [line for line in log.splitlines() if "Traceback" in line or "Error calling" in line
           or "Top-level error" in line or ("mod_net_proxy" in line and "\terror\t" in line)]
    assert not bad, "\n".join(bad) + setup.st.debug()


def test_every_rejection_is_a_log_line_never_an_error(setup):
    """Original: its every error path raised a Lua error from the log call.
    All the refusals above left one line each and no error at all."""
    assert_no_errors(setup)
    levels = {}
    for line in setup.module_lines():
        f = line.split("\t")
        if len(f) >= 3 and f[2].startswith("Closed "):
            levels[f[1]] = levels.get(f[1], 0) + 1
    print(f"\nrefusals by level: {levels}")
    assert levels.get("warn", 0) >= 8


# --- proxy_secure_in, reload and unload: a Prosody of their own ----------------------


EGRESS = 17269  # proxy_out: the egress proxy a test plays, in the namespace


@pytest.fixture(scope="module")
def secure(lab):
    with module_setup(lab, "secure", haproxy=False, proxy_secure_in=True,
                      proxy_out=f'"127.0.0.1:{EGRESS}"', proxy_secure_out=True,
                      proxy_trusted_proxies=["127.0.0.0/29", "::1"], proxy_header_timeout=2,
                      proxy_max_header=65551) as s:
        yield s


def plain_login(port, header, resource):
    """Log in on a PROXY port without TLS; returns the open XmppStream."""
    xs = XmppStream("127.0.0.1", port, source="127.0.0.1")
    xs.sock.sendall(header)
    features = xs.open()
    if b"<mechanism>PLAIN</mechanism>" not in features:
        xs.close()
        raise XmppError("no SASL PLAIN offered", features)
    xs.features = features
    xs.auth_plain(*ACCOUNT)
    xs.open()
    xs.jid = xs.bind(resource)
    return xs


def ping(xs, n):
    xs.sock.sendall(f"<iq type='get' id='ping{n}'><ping xmlns='urn:xmpp:ping'/></iq>".encode())
    answer = xs.read_until([b"</iq>", b"/>"], f"the answer to ping {n}")
    return f"id='ping{n}'" in answer.decode() and "type='result'" in answer.decode()


def test_proxy_secure_in_counts_a_proxied_session_as_encrypted(secure, setup):
    """proxy_secure_in: the proxy terminated TLS, so a plaintext c2s session
    behind it is secure: SASL PLAIN is offered without STARTTLS (and STARTTLS
    is not offered inside it). Without the key the same offers STARTTLS and
    no PLAIN."""
    hdr = proxy_v2("203.0.113.9", "192.0.2.1", 4444, 5222)

    def secure_login():
        xs = plain_login(PROXY_PORTS["c2s"], hdr, "secure")
        try:
            return xs.features, xs.jid, ping(xs, 1)
        finally:
            xs.close()
    features, jid, pinged = secure.run(secure_login)
    assert b"urn:ietf:params:xml:ns:xmpp-tls" not in features, features
    assert jid.startswith("test@localhost/") and pinged
    print(f"\nproxy_secure_in: PLAIN offered without TLS, {jid} bound")

    r = setup.raw(C2S, hdr + C2S_STREAM)
    assert b"urn:ietf:params:xml:ns:xmpp-tls" in r.got and b">PLAIN<" not in r.got, r.got


def test_reload_and_unload_leave_established_sessions_alone(secure):
    """`prosodyctl reload`, then unloading the module from the admin shell:
    a session established through a PROXY port keeps working throughout;
    the PROXY ports close on unload and open again on load."""
    hdr = proxy_v2("203.0.113.10", "192.0.2.1", 5555, 5222)
    port = PROXY_PORTS["c2s"]
    st = secure.st

    def scenario():
        xs = plain_login(port, hdr, "lasting")
        try:
            steps = [("logged in", ping(xs, 1))]
            r = subprocess.run([*st.setpriv(), find_exe("prosodyctl"), "--config", str(st.cfg),
                                "reload"], capture_output=True, text=True, timeout=30,
                               stdin=subprocess.DEVNULL, env=st.prosody_env())
            assert r.returncode == 0, r.stdout + r.stderr
            wait_for(lambda: "Reloading configuration file" in st.prosody_log()
                     or "config-reloaded" in st.prosody_log(), TIMEOUT, "the reload")
            steps.append(("after prosodyctl reload", ping(xs, 2)))
            out = secure.shell("module", "unload", "net_proxy")
            wait_for(lambda: port not in listening(), TIMEOUT, "the PROXY port to close")
            assert "OK: Module unloaded" in out, out
            steps.append(("after the module's unload (PROXY ports closed)", ping(xs, 3)))
            out = secure.shell("module", "load", "net_proxy")
            assert "OK: Module loaded" in out, out
            wait_for(lambda: port in listening(), TIMEOUT, "the PROXY port to open again")
            fresh = plain_login(port, hdr, "fresh")
            fresh.close()
            steps.append(("after load, and a new session", ping(xs, 4)))
            return steps
        finally:
            xs.close()

    def listening():
        return listening_ports(st.prosody.pid)

    steps = secure.run(scenario)
    for what, ok in steps:
        print(f"\nsession {what}: {'pong' if ok else 'NO ANSWER'}")
    assert all(ok for _, ok in steps), steps
    assert_no_errors(secure)


def parse_v2_authority(data):
    """(header length, AUTHORITY TLV value, dst address, dst port) of the v2
    PROXY header at the start of data (INET only), or None."""
    if not data.startswith(b"\r\n\r\n\x00\r\nQUIT\n") or len(data) < 16:
        return None
    length = int.from_bytes(data[14:16], "big")
    if data[12] != 0x21 or data[13] != 0x11 or len(data) < 16 + length:
        return None
    block, tlvs = data[16:28], data[28:16 + length]
    dst = socket.inet_ntoa(block[4:8]), int.from_bytes(block[10:12], "big")
    authority = None
    while len(tlvs) >= 3:
        t, n = tlvs[0], int.from_bytes(tlvs[1:3], "big")
        if t == 0x02:
            authority = tlvs[3:3 + n]
        tlvs = tlvs[3 + n:]
    return 16 + length, authority, *dst


def test_proxy_out_sends_outgoing_s2s_through_the_proxy(secure):
    """proxy_out: an outgoing s2s connection goes to the one proxy address,
    opening with a v2 PROXY header whose AUTHORITY TLV names the remote
    domain (for HAProxy's fc_pp_authority); no DNS in Prosody. With
    proxy_secure_out the stream counts as encrypted: no STARTTLS inside."""
    hdr = proxy_v2("203.0.113.11", "192.0.2.1", 6666, 5222)

    def scenario():
        with socket.socket() as egress:
            egress.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            egress.bind(("127.0.0.1", EGRESS))
            egress.listen(4)
            egress.settimeout(TIMEOUT)
            xs = plain_login(PROXY_PORTS["c2s"], hdr, "sender")
            try:
                xs.sock.sendall(b"<message to='someone@example.net' type='chat'>"
                                b"<body>through the egress proxy</body></message>")
                conn, _ = egress.accept()
                with conn:
                    conn.settimeout(TIMEOUT)
                    got = b""
                    while b"<stream:stream" not in got or not got.rstrip().endswith(b">"):
                        chunk = conn.recv(65536)
                        if not chunk:
                            break
                        got += chunk
                    # Play the remote server, offering STARTTLS: a stream that
                    # counts as encrypted must not take it up.
                    conn.sendall(b"<?xml version='1.0'?><stream:stream xmlns='jabber:server' "
                                 b"xmlns:stream='http://etherx.jabber.org/streams' "
                                 b"xmlns:db='jabber:server:dialback' from='example.net' "
                                 b"to='localhost' id='egress1' version='1.0'><stream:features>"
                                 b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"
                                 b"<dialback xmlns='urn:xmpp:features:dialback'/>"
                                 b"</stream:features>")
                    after, end = b"", time.monotonic() + 2
                    conn.settimeout(0.2)
                    while time.monotonic() < end:
                        try:
                            chunk = conn.recv(65536)
                        except socket.timeout:
                            continue
                        if not chunk:
                            break
                        after += chunk
                    return got, after
            finally:
                xs.close()
    got, after = secure.run(scenario)
    assert b"starttls" not in after and b"<db:result" in after, after
    print(f"after the remote's features (STARTTLS offered): {after[:200]!r}")
    parsed = parse_v2_authority(got)
    assert parsed, got
    n, authority, dst, dport = parsed
    assert authority == b"example.net" and (dst, dport) == ("127.0.0.1", EGRESS), parsed
    stream = got[n:]
    assert stream.startswith(b"<?xml") and re.search(rb"""to=['"]example\.net['"]""", stream), got
    print(f"\negress proxy got a {n}-byte v2 header (AUTHORITY {authority.decode()}) "
          f"then {stream[:120]!r}")
    line = wait_for(lambda: re.search(r"Outgoing s2s to example\.net through the proxy at "
                                      rf"127\.0\.0\.1 port {EGRESS}", secure.st.prosody_log()),
                    TIMEOUT, "the s2sout line")
    print(line.group(0))
    assert_no_errors(secure)


def test_keys_trusted_block_timeout_and_cap(secure):
    """The other keys, set: proxy_trusted_proxies as a block (127.0.0.5 is in
    127.0.0.0/29, 127.0.0.9 is not), proxy_header_timeout = 2 (from the
    accept) and proxy_max_header = 65551 (the largest v2 header served)."""
    port = PROXY_PORTS["c2s"]
    hdr = proxy_v2("203.0.113.12", "192.0.2.1", 7777, 5222)
    r = secure.raw(port, hdr + C2S_STREAM, source=CLIENT_IP)
    assert served(r), r.got
    r = secure.raw(port, hdr + C2S_STREAM, source="127.0.0.9", timeout=3)
    assert r.closed and not r.got
    one_line_about(secure, r, 0, r"not a trusted proxy")
    r = secure.raw(port, hdr[:5], timeout=5)
    assert r.closed and 1.5 <= r.took <= 3.5, r.took
    one_line_about(secure, r, 0, r"within proxy_header_timeout \(2 s\)")
    r = secure.raw(port, noop_header(65551) + C2S_STREAM)
    assert served(r), r.got
    print("\n127.0.0.5 trusted by 127.0.0.0/29, 127.0.0.9 not; deadline 2 s; a 65551-byte header "
          "served")
