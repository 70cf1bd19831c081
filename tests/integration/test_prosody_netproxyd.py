"""The original module's scenario with netproxyd in its place (issue 6, setup a,
and the direct TLS port of part 3): HAProxy -> netproxyd -> Prosody, where
netproxyd reads Prosody's own config and delivers transparently, so that an
unmodified Prosody (Debian's package, without mod_net_proxy) sees each
client's own address in getpeername().

Transparent delivery needs policy routing, so the whole stack runs in a
network namespace made here (lo up), and `netproxyd --setup-routing` installs
the routing there; the host's routing is never touched. In the namespace:

    client 127.0.0.5     --> HAProxy 127.0.0.1:25222 25269 25223 (send-proxy-v2)
                                     127.0.0.1:35222 35269 35223 (send-proxy)
    client 2001:db8::5   --> HAProxy [::1]:25222 ...  [::1]:35222 ...
      --> netproxyd 127.0.0.1:15222 15269 15223 (proxy_port_mappings)
      --> Prosody   127.0.0.1:5222  5269  5223  (c2s, s2s, c2s_direct_tls)
                    [::1]:5222      5269  5223

Prosody's config (xmpp.py) leaves c2s_ports and s2s_ports out, so that
netproxyd must know Prosody's defaults (5222, 5269), and sets
`c2s_direct_tls_ports = { 5223 }` and `interfaces = { "127.0.0.1", "::1" }`;
it carries the module's `proxy_port_mappings`, which Prosody ignores. Each
service of netproxyd gets both of Prosody's addresses, and a client reaches
Prosody over its own family: an IPv6 client, whose header HAProxy sends over
IPv4 (PROXY TCP6, or v2 INET6), is delivered from its IPv6 address to ::1.
netproxyd's own file says only what Prosody's cannot, the delivery:

    Include "<dir>/prosody.cfg.lua"
    services = { c2s = { transparent = true }, ... }

HAProxy runs the original README's config on these loopback ports, `check`
included: its LOCAL (v2) and v1 health checks pass through netproxyd to
Prosody every 2 s throughout.

One namespace, Prosody, netproxyd and HAProxy serve the module; each test
runs its exchanges against them. The client logs the test account in over
STARTTLS on c2s, after a TLS handshake on the direct TLS port (through
HAProxy and netproxyd, which relay the TLS bytes untouched), and opens a
stream on s2s; Prosody's debug log must name 127.0.0.5 (or 2001:db8::5) and the
client's own port, on the port the client reached.

The control runs netproxyd on Prosody's config alone, where delivery is plain:
the stream works but Prosody sees 127.0.0.1, so the address checks can fail.

Needs root, `ip netns`, Prosody, HAProxy, setpriv and openssl; skipped
otherwise. Every process is stopped by PID and the namespaces deleted.
"""
import re
from contextlib import contextmanager

import pytest

from netns import Lab, NsNetproxyd, in_ns, netproxyd_cmd, ns_exec, sh, why_no_netns
from npd import tool
from xmpp import (CLIENT_IP, CLIENT_IP6, TIMEOUT, c2s_login, prosody_stack, s2s_open,
                  skip_reason as xmpp_skip_reason)

_SKIP = why_no_netns() or xmpp_skip_reason()
pytestmark = pytest.mark.skipif(_SKIP is not None, reason=str(_SKIP))

VERSIONS = ("v2", "v1")
PORTS = {"c2s": 5222, "s2s": 5269, "c2s_direct_tls": 5223}          # Prosody's
PROXY_PORTS = {svc: 10000 + port for svc, port in PORTS.items()}    # netproxyd's
FRONTS = {(v, svc): (20000 if v == "v2" else 30000) + port          # HAProxy's
          for v in VERSIONS for svc, port in PORTS.items()}

# For netproxyd, in Prosody's config (mod_net_proxy's key; Prosody ignores it).
MAPPINGS = ("proxy_port_mappings = { " + ", ".join(
    f'[{port}] = "{svc}"' for svc, port in PROXY_PORTS.items()) + " }\n")


# What Prosody's config cannot say: the delivery (the address is Prosody's).
TRANSPARENT = ("services = {\n" + "".join(f"  {svc} = {{ transparent = true }},\n"
                                          for svc in PORTS) + "}\n")


def netproxyd_conf(st, transparent):
    """netproxyd's own file: Prosody's config and, for transparent delivery,
    TRANSPARENT; without it delivery is plain. At the debug level: a moved
    client port and a health check's close line are debug lines."""
    return (f'Include "{st.cfg}"\nlog_level = "debug"\n'
            + (TRANSPARENT if transparent else ""))


class Setup:
    """The namespace, the stack in it and netproxyd in front of Prosody."""

    def __init__(self, ns, st, npd):
        self.ns, self.st, self.npd = ns, st, npd

    def exchange(self, version, svc, client=CLIENT_IP):
        """From client (CLIENT_IP, or CLIENT_IP6 to HAProxy's [::1]) in the
        namespace, through HAProxy's front for (version, svc): a login on c2s
        and c2s_direct_tls, a stream on s2s. Returns (the client's port, the
        Login or Prosody's s2s reply); XmppError when it fails."""
        front = self.st.fronts[version, svc]
        host = "::1" if ":" in client else "127.0.0.1"
        if svc == "s2s":
            return in_ns(self.ns, s2s_open, host, front, source=client)
        login = in_ns(self.ns, c2s_login, host, front, self.st.cert, source=client,
                      direct_tls=svc == "c2s_direct_tls")
        return login.cport, login

    def client_line(self, svc, version, cport, before, timeout=TIMEOUT, client=CLIENT_IP):
        """Prosody's 'New connection' line for the client whose port was cport,
        among the lines after the first `before` on svc's port. netproxyd's
        close line names the client; its own port is kept unless netproxyd
        says it is in use here, which it is when the client shares the
        namespace: then the line must still name the client's address, and be
        the only new one that does."""
        addr = re.escape(f"[{client}]:{cport}" if ":" in client else f"{client}:{cport}")
        self.npd.wait_log(rf"port={PROXY_PORTS[svc]} service={svc} peer=127\.0\.0\.1:\d+ "
                          rf"client={addr} .*proxy={version} ", TIMEOUT)
        moved = re.search(rf"client {addr}: its port is in use here", self.npd.log())
        new = self.st.wait_connections(client, self.st.ports[svc], since=before,
                                       timeout=timeout)
        assert len(new) == 1 and (moved or new[0][1] == cport), \
            f"client port {cport}, moved: {bool(moved)}, Prosody saw: {new}{self.st.debug()}"
        self.st.assert_running()
        assert self.npd.proc.poll() is None, self.npd.log()
        return new[0][2] + ("" if moved else "   (the client's own port)")

    def exchange_seen(self, version, svc, client=CLIENT_IP):
        """exchange(), then Prosody's line for the client; (result, line)."""
        before = len(self.st.connections(self.st.ports[svc]))
        cport, result = self.exchange(version, svc, client)
        return result, self.client_line(svc, version, cport, before, client=client)


@contextmanager
def netproxyd_setup(lab, role, transparent):
    """A namespace of lab's with the stack and netproxyd in it: a Setup."""
    ns = lab.ns(role)
    sh("ip", "-n", ns, "addr", "add", f"{CLIENT_IP6}/128", "dev", "lo")
    with prosody_stack(PORTS, targets=PROXY_PORTS, fronts=FRONTS, prefix=ns_exec(ns),
                       extra=MAPPINGS, haproxy=False, ipv6=True) as st:
        config = netproxyd_conf(st, transparent)
        if transparent:
            r = netproxyd_cmd(lab, ns, config, "--setup-routing")
            assert r.returncode == 0, r.stdout + r.stderr
        with NsNetproxyd(ns, config) as npd:
            st.start_haproxy()
            yield Setup(ns, st, npd)


@pytest.fixture(scope="module")
def lab():
    with Lab() as lab:
        yield lab


@pytest.fixture(scope="module")
def setup(lab):
    with netproxyd_setup(lab, "xmpp", transparent=True) as s:
        yield s


def describe(path):
    """netproxyd -t -c path: its output, and its table as {service: (listen
    port, backend address, the rest of the line)}. Prosody's own options are
    not warned about, whichever file services is in."""
    r = sh(tool("netproxyd"), "-t", "-c", str(path))
    assert r.stderr == "", r.stderr
    out = r.stdout
    table = {m.group(2): (int(m.group(1)), m.group(3), m.group(4)) for m in re.finditer(
        r"^listen 127\.0\.0\.1:(\d+) -> (\S+) \((\S+?)[ ,](.*)\)$", out, re.M)}
    return out, table


def test_t_prints_the_table_from_prosodys_config(setup, lab):
    """-t on netproxyd's file: each mapped port and the address from Prosody's
    keys and defaults, transparent; on Prosody's config alone, the same table,
    plain; with services written inside Prosody's config, as in netproxyd's."""
    inside = lab.file("prosody-services.cfg.lua", setup.st.cfg.read_text().replace(
        "\nVirtualHost", "\n" + TRANSPARENT + "VirtualHost", 1))
    want = {svc: (PROXY_PORTS[svc], f"127.0.0.1:{port}") for svc, port in PORTS.items()}
    for path, transparent in ((setup.npd.config_path, True), (setup.st.cfg, False),
                              (inside, True)):
        out, table = describe(path)
        print(f"\nnetproxyd -t -c {path.name}:\n{out}")
        assert {svc: row[:2] for svc, row in table.items()} == want, out
        # Both of Prosody's interfaces, one per family, and the proxy ports on both.
        assert all(row[2].startswith(f"and [::1]:{PORTS[svc]} from Prosody's ")
                   for svc, row in table.items()), out
        assert all(f"listen [::1]:{port} -> {svc} " in out
                   for svc, port in PROXY_PORTS.items()), out
        assert all(("transparent" in row[2]) == transparent for row in table.values()), out
        assert re.search(r"^trusted: 127\.0\.0\.1/32 ::1/128$", out, re.M), out
    # Prosody runs without mod_net_proxy: netproxyd has the proxy ports.
    assert "net_proxy" not in setup.st.prosody_log(), setup.st.debug()


@pytest.mark.parametrize("version", VERSIONS)
def test_c2s_login_through_netproxyd(setup, version):
    login, line = setup.exchange_seen(version, "c2s")
    assert login.success.startswith(b"<success"), login.success
    assert login.jid.startswith("test@localhost/"), login.jid
    print(f"\nProsody, c2s through HAProxy {version} and netproxyd: {line}")


@pytest.mark.parametrize("version", VERSIONS)
def test_s2s_stream_through_netproxyd(setup, version):
    _, line = setup.exchange_seen(version, "s2s")
    print(f"\nProsody, s2s through HAProxy {version} and netproxyd: {line}")


@pytest.mark.parametrize("version", VERSIONS)
def test_direct_tls_login_through_netproxyd(setup, version):
    """Beyond the original (issue 6 part 3): mod_net_proxy could not serve a
    direct TLS port; netproxyd relays the TLS bytes after the header."""
    login, line = setup.exchange_seen(version, "c2s_direct_tls")
    assert login.tls and login.jid.startswith("test@localhost/"), vars(login)
    print(f"\nProsody, direct TLS ({login.tls}) through HAProxy {version} and netproxyd: "
          f"{line}")


@pytest.mark.parametrize("svc", PORTS)
@pytest.mark.parametrize("version", VERSIONS)
def test_ipv6_client_through_netproxyd(setup, version, svc):
    """A client of HAProxy's over IPv6: HAProxy sends a header naming it (PROXY
    TCP6, or v2 INET6) over IPv4 to netproxyd's port, which serves both
    families; netproxyd connects from the client's IPv6 address to Prosody's
    ::1, and Prosody logs the client's IPv6 address."""
    result, line = setup.exchange_seen(version, svc, client=CLIENT_IP6)
    if svc != "s2s":
        assert result.jid.startswith("test@localhost/"), vars(result)
    assert re.search(rf"\({re.escape(CLIENT_IP6)}, \d+, ::1, {PORTS[svc]}\)", line), line
    print(f"\nProsody, {svc} from an IPv6 client through HAProxy {version} and netproxyd: "
          f"{line}")


def test_health_checks_through_netproxyd(setup):
    """HAProxy's checks (LOCAL in v2) reach Prosody through netproxyd, which
    delivers them with the real addresses and no header left in the stream."""
    servers = setup.st.assert_health_checks_survived()
    print(f"\nHAProxy: {[(x['pxname'], x['status'], x['check_status']) for x in servers]}")
    # A v2 check is LOCAL; a v1 check names HAProxy's own connection.
    for svc, port in PROXY_PORTS.items():
        for check in (r"client=- dst=- proxy=v2-local ",
                      rf"client=127\.0\.0\.1:\1 dst=127\.0\.0\.1:{port} proxy=v1 "):
            line = setup.npd.wait_log(rf"port={port} service={svc} peer=127\.0\.0\.1:(\d+) "
                                      + check, TIMEOUT)[0].string
            print(f"netproxyd: {line}")
    assert setup.exchange("v2", "c2s")[1].jid


def test_control_plain_delivery_prosody_sees_netproxyd(lab):
    """netproxyd on Prosody's config alone delivers plain: the stream works, but
    Prosody sees netproxyd's address, so the address checks above can fail."""
    with netproxyd_setup(lab, "plain", transparent=False) as s:
        for svc in ("c2s", "s2s"):
            before = len(s.st.connections(s.st.ports[svc]))
            cport, _ = s.exchange("v2", svc)
            # The exchange is over, so Prosody has long logged its connection.
            with pytest.raises(AssertionError, match=f"Prosody's 'New connection' line for "
                                                     f"{CLIENT_IP}"):
                s.client_line(svc, "v2", cport, before, timeout=1.0)
            new = s.st.connections(s.st.ports[svc])[before:]
            # HAProxy's checks come through netproxyd from 127.0.0.1 too: the
            # new lines are the client's connection and perhaps a check.
            assert new and {ip for ip, _, _ in new} == {"127.0.0.1"}, s.st.debug()
            print(f"\nProsody behind plain netproxyd, {svc}: {new[0][2]}")
        assert CLIENT_IP not in s.st.prosody_log(), s.st.debug()
