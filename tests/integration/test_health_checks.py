"""HAProxy's health checks through netproxyd, as documented: README.md
(Health checks) and netproxyd(8) (EXAMPLES).

netproxyd accepts a trusted connection before it knows whether the service
will answer, so HAProxy's plain `check` (connect, LOCAL header, close) passes
whether or not the service runs. The documented `tcp-check` speaks the
service's protocol through netproxyd (the LOCAL header first, by `connect
default` and the server line's send-proxy-v2) and passes only when the
service answers.

Each test runs HAProxy 2.6 with the documents' own backends, taken from
their text (only renamed, so that both documents' backends and the control
fit in one config), in a network namespace where 192.168.10.1 (HAProxy's
source address) and 192.168.10.10 (netproxyd's host) are on lo, so that the
server lines and netproxyd's trusted address are as written:

    HAProxy (source 192.168.10.1) --> netproxyd 192.168.10.10:15222, 15269
        --> Prosody 127.0.0.1:5222, 5269   (netproxyd(8)'s /etc/netproxyd.conf.lua)
    HAProxy --> netproxyd 192.168.10.10:10025 --> a mail-like banner on 127.0.0.1:25

Each server's state comes from HAProxy's stats socket: the checked servers
are UP (L7OK) while the service runs, DOWN within DOWN_WITHIN seconds after
it stops, and UP again within UP_WITHIN seconds after it is back; the control,
the same server with the plain `check` of README.md's first config, stays UP
(L4OK) all along. Needs root, `ip netns`, HAProxy and, for XMPP, Prosody;
skipped otherwise. Every process is stopped by PID and the namespace deleted.
"""
import csv
import re
import socket
import subprocess
import sys
import time

import pytest

from netns import Lab, NsNetproxyd, ns_exec, sh, why_no_netns, wait_listening
from npd import find_exe, text_of, wait_for
from test_docs import blocks_of, haproxy_sections
from xmpp import prosody_stack, skip_reason as xmpp_skip_reason

_SKIP = why_no_netns() or (None if find_exe("haproxy") else "haproxy is not installed")
pytestmark = pytest.mark.skipif(_SKIP is not None, reason=str(_SKIP))

DOWN_WITHIN = 20.0   # seconds: fall 3 at inter 2s is about 6 s, on a busy machine more
UP_WITHIN = 20.0     # seconds: rise 2, after the service listens again
HAPROXY_SRC = "192.168.10.1"
NETPROXYD_HOST = "192.168.10.10"

BANNER = r"""
import socket, sys, threading
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 25))
s.listen(64)
def greet(c):
    try:
        c.settimeout(5)
        c.sendall(b"220 mail.example.org ESMTP\r\n")
        while c.recv(4096):
            pass
    except OSError:
        pass
    c.close()
while True:
    c, _ = s.accept()
    threading.Thread(target=greet, args=(c,), daemon=True).start()
"""


def documented(doc, pred):
    """The HAProxy blocks of doc for which pred(text) holds."""
    return [b.text for b in blocks_of(doc) if b.kind == "haproxy" and pred(b.text)]


def backends(text, prefix, keep=None):
    """The backend sections of an HAProxy config, renamed prefix-NAME."""
    out = {}
    for head, body in haproxy_sections(text):
        m = re.match(r"^backend (\S+)$", head)
        if m and (keep is None or m.group(1) in keep):
            out[f"{prefix}-{m.group(1)}"] = body.replace(head, f"backend {prefix}-{m.group(1)}", 1)
    return out


def haproxy_config(sock, sections):
    """The documented defaults (netproxyd(8)'s complete config) with a stats
    socket and HAProxy's source address, then the given backends."""
    full = documented("man/netproxyd.8", lambda t: re.search(r"^defaults$", t, re.M))
    assert len(full) == 1, full
    defaults = dict(haproxy_sections(full[0]))["defaults"]
    # HAProxy does not start without a listener: one nobody connects to.
    return (f"global\n\tstats socket {sock} mode 600\n\n" + defaults.rstrip("\n")
            + f"\n\tsource {HAPROXY_SRC}\n\nfrontend unused\n\tbind {HAPROXY_SRC}:15999\n"
            f"\tdefault_backend {next(iter(sections))}\n\n" + "\n".join(sections.values()))


def tcp_check_backends(service):
    """README.md's and netproxyd(8)'s backends with a tcp-check for service
    ("xmpp" or "smtp"), renamed by document."""
    found = {}
    for doc, prefix in (("README.md", "readme"), ("man/netproxyd.8", "man")):
        for text in documented(doc, lambda t: "tcp-check" in t):
            for name, body in backends(text, prefix).items():
                if service in name:
                    found[name] = body
    return found


class Haproxy:
    def __init__(self, lab, ns, sections):
        self.sock = lab.tmp / f"haproxy-{ns}.sock"
        self.cfg = lab.file(f"haproxy-{ns}.cfg", haproxy_config(self.sock, sections))
        r = sh(find_exe("haproxy"), "-c", "-f", str(self.cfg), check=False)
        assert r.returncode == 0 and "[WARNING]" not in r.stdout + r.stderr, \
            r.stdout + r.stderr + self.cfg.read_text()
        self.log = lab.tmp / f"haproxy-{ns}.log"
        self.proc = lab.popen(ns, [find_exe("haproxy"), "-db", "-f", str(self.cfg)],
                              stdout=lab.output(self.log.name), stderr=subprocess.STDOUT)
        wait_for(lambda: self.sock.exists(), 10, "HAProxy's stats socket")

    def servers(self):
        """{backend: (status, last check status)} from `show stat`."""
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(str(self.sock))
            s.sendall(b"show stat\n")
            got = bytearray()
            while chunk := s.recv(65536):
                got += chunk
        rows = list(csv.reader(got.decode().lstrip("# ").splitlines()))
        return {r[0]: (r[rows[0].index("status")],
                       r[rows[0].index("check_status")].removeprefix("* "))
                for r in rows[1:] if len(r) > 1 and r[1] not in ("FRONTEND", "BACKEND")}

    def wait(self, names, status, timeout, what):
        def reached():
            now = self.servers()
            return now if all(now[n][0] == status for n in names) else None
        try:
            return wait_for(reached, timeout, what)
        except AssertionError as e:
            raise AssertionError(f"{e}: {self.servers()}\n--- haproxy ---\n"
                                 f"{text_of(self.log)[-3000:]}") from None


def cycle(hap, checked, control, stop, start):
    """Up, stop, down, start, up; the control UP all along. Prints the times."""
    everyone = checked + control
    hap.wait(everyone, "UP", UP_WITHIN, "every server UP")
    states = hap.servers()
    assert all(states[n][1] == "L7OK" for n in checked), states
    assert all(states[n][1] == "L4OK" for n in control), states
    t0 = time.monotonic()
    stop()
    states = hap.wait(checked, "DOWN", DOWN_WITHIN, "the tcp-checked servers DOWN")
    down = time.monotonic() - t0
    assert all(states[n][0] == "UP" for n in control), \
        f"the plain check saw the service stopped: {states}"
    time.sleep(2.5)   # one more check interval: the control is still UP
    states = hap.servers()
    assert all(states[n] == ("UP", "L4OK") for n in control), states
    assert all(states[n][0] == "DOWN" for n in checked), states
    t1 = time.monotonic()
    start()
    states = hap.wait(checked, "UP", UP_WITHIN, "the tcp-checked servers UP again")
    up = time.monotonic() - t1
    assert all(states[n][0] == "UP" for n in control), states
    print(f"\nDOWN {down:.1f} s after the service stopped, UP {up:.1f} s after it was back;"
          f" the plain check stayed UP: {states}")


@pytest.fixture
def lab():
    with Lab() as lab:
        yield lab


def lab_ns(lab, role):
    ns = lab.ns(role)
    for addr in (HAPROXY_SRC, NETPROXYD_HOST):
        sh("ip", "-n", ns, "addr", "add", f"{addr}/32", "dev", "lo")
    return ns


@pytest.mark.skipif(xmpp_skip_reason() is not None, reason=str(xmpp_skip_reason()))
def test_tcp_check_sees_prosody_through_netproxyd(lab):
    """netproxyd(8)'s /etc/netproxyd.conf.lua in front of Prosody (a
    VirtualHost example.org, as the checks' stream header names), the XMPP
    tcp-checks of both documents, and README.md's plain backends as the
    control."""
    ns = lab_ns(lab, "hc-xmpp")
    conf = [b.text for b in blocks_of("man/netproxyd.8")
            if b.mark("file") == "/etc/netproxyd.conf.lua"]
    assert len(conf) == 1, conf
    checked = tcp_check_backends("xmpp")
    assert len(checked) == 4, checked            # c2s and s2s, in both documents
    plain = documented("README.md", lambda t: re.search(r"^global$", t, re.M))
    control = backends(plain[0], "plain")
    assert sorted(control) == ["plain-xmpp-c2s", "plain-xmpp-s2s"], control
    with prosody_stack({"c2s": 5222, "s2s": 5269}, {}, {}, prefix=ns_exec(ns),
                       extra='VirtualHost "example.org"', haproxy=False) as st:
        with NsNetproxyd(ns, conf[0]) as npd:
            hap = Haproxy(lab, ns, {**checked, **control})

            def stop():
                from npd import stop_pid
                stop_pid(st.prosody)

            try:
                cycle(hap, list(checked), list(control), stop, st.start_prosody)
            except AssertionError as e:
                raise AssertionError(f"{e}\n--- netproxyd ---\n{npd.log()[-3000:]}"
                                     f"{st.debug()}") from None
            # The checks reached Prosody: LOCAL connections that moved bytes.
            npd.wait_log(r"service=c2s peer=192\.168\.10\.1:\d+ client=- dst=- "
                         r"proxy=v2-local local=\S+ up=[1-9]\d* down=[1-9]\d*")


def test_tcp_check_sees_a_banner_through_netproxyd(lab):
    """netproxyd(8)'s smtp backend: netproxyd on 10025 in front of a server
    that greets first; the control is the same server with a plain check."""
    ns = lab_ns(lab, "hc-smtp")
    checked = tcp_check_backends("smtp")
    assert len(checked) == 1, checked
    body = next(iter(checked.values()))
    server = re.search(r"^\s*server (\S+) (\S+) .*$", body, re.M)
    assert server and server.group(2) == f"{NETPROXYD_HOST}:10025", body
    control = {"plain-smtp": f"backend plain-smtp\n\tserver mail1 {server.group(2)} "
                             "send-proxy-v2 check\n"}
    config = ('proxy_port_mappings = { [10025] = "smtp" }\n'
              f'proxy_trusted_proxies = {{ "{HAPROXY_SRC}" }}\n'
              'services = { smtp = { connect = "127.0.0.1:25" } }\n')
    procs = []

    def start():
        procs.append(lab.popen(ns, [sys.executable, "-c", BANNER]))
        wait_listening(ns, 25)

    def stop():
        from netns import stop_process
        stop_process(procs[-1])

    start()
    with NsNetproxyd(ns, config) as npd:
        hap = Haproxy(lab, ns, {**checked, **control})
        try:
            cycle(hap, list(checked), list(control), stop, start)
        except AssertionError as e:
            raise AssertionError(f"{e}\n--- netproxyd ---\n{npd.log()[-3000:]}") from None
