"""A private Prosody (Debian's package, unmodified) with HAProxy in front of it,
and an XMPP client, for the end-to-end tests of the original module's scenario.

    with prosody_stack(ports, targets, fronts, ...) as st:
        login = c2s_login("127.0.0.1", st.fronts["v2", "c2s"], cafile=st.cert)
        st.wait_connections(CLIENT_IP, st.ports["c2s"], login.cport)   # Prosody saw it

Prosody runs from a temp dir of its own, owned by the prosody user (config,
data, a self-signed certificate made with the openssl CLI, debug log), with a
test account made by prosodyctl. It refuses to run as root in the foreground,
so it is started as the prosody user with setpriv, which execs it, and -F
keeps it in the foreground: the PID the test starts is Prosody's own
(checked). Started with a prefix such as `ip netns exec NS`, which execs too,
it runs in that namespace.

HAProxy takes the original module README's config, adapted to loopback ports:
one frontend binding a front port per service, `use_backend ... if
{ dst_port eq ... }`, and backends `server xmpp1 127.0.0.1:<target>
send-proxy-v2 check`; a second frontend does the same with `send-proxy` (v1).
`check` stays as in the original: HAProxy then connects every 2 s with a
PROXY header of its own (LOCAL in v2), which whatever sits behind must survive.

Prosody's debug log names each accepted connection's peer as getpeername()
has it (net/server_epoll.lua):

    connXXXX  debug  New connection FD 9 (127.0.0.5, 57469, 127.0.0.1, 25222) on server FD 6 (...)

which is where a test sees which address Prosody believes.

Every wait is bounded; Prosody and HAProxy run in sessions of their own and
are stopped by PID in a finally (SIGTERM, then SIGKILL to the process group
after 5 s), and the temp dir is removed, whatever happens.
"""
import base64
import csv
import os
import pwd
import re
import shutil
import socket
import ssl
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path

from npd import build_dir, find_exe, free_port, stop_pid, text_of, wait_for

TIMEOUT = 10.0        # seconds: socket timeouts and ordinary waits
START_TIMEOUT = 15.0  # seconds: Prosody's start-up (Lua, certificates)
CLIENT_IP = "127.0.0.5"
# An IPv6 client, for a stack on both families; its address must be made
# local (`ip addr add 2001:db8::5/128 dev lo`) where the client runs.
CLIENT_IP6 = "2001:db8::5"
DOMAIN = "localhost"
ACCOUNT = ("test", "testpass")    # registered on DOMAIN by prosodyctl

# Prosody's own defaults (core/portmanager.lua, the net providers' default_port);
# a stack whose port equals one leaves the key out of the config.
PROSODY_DEFAULT_PORTS = {"c2s": 5222, "s2s": 5269}
# The config key for each service's ports (c2s_direct_tls has no default in 0.12).
PORT_KEYS = {"c2s": "c2s_ports", "s2s": "s2s_ports", "c2s_direct_tls": "c2s_direct_tls_ports"}
SEND_PROXY = {"v2": "send-proxy-v2", "v1": "send-proxy"}

C2S_STREAM = (f"<?xml version='1.0'?><stream:stream to='{DOMAIN}' xmlns='jabber:client' "
              "xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>").encode()
S2S_STREAM = (f"<?xml version='1.0'?><stream:stream from='example.net' to='{DOMAIN}' "
              "xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' "
              "version='1.0'>").encode()


def prosody_user():
    try:
        return pwd.getpwnam("prosody")
    except KeyError:
        return None


def skip_reason():
    """Why a Prosody + HAProxy stack cannot run here, or None."""
    missing = [f"{exe} (Debian package {pkg})" for exe, pkg in
               (("prosody", "prosody"), ("prosodyctl", "prosody"), ("haproxy", "haproxy"),
                ("setpriv", "util-linux"), ("openssl", "openssl")) if find_exe(exe) is None]
    if missing:
        return "not installed: " + ", ".join(missing)
    if os.geteuid() != 0:
        return "needs root: Prosody runs as the prosody user, started with setpriv"
    if prosody_user() is None:
        return "the prosody user does not exist (it comes with Debian's prosody package)"
    return None


def free_ports(n):
    """n distinct TCP ports on 127.0.0.1 that nothing is bound to now
    (npd.free_port: outside the ephemeral range, each given once)."""
    return [free_port() for _ in range(n)]


def free_ports_both(n):
    """n distinct TCP ports that nothing listens on now, on 127.0.0.1 nor on
    ::1 (free_ports(), tried again while one of them is taken on ::1)."""
    for _ in range(20):
        ports = free_ports(n)
        try:
            for port in ports:
                with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
                    s.bind(("::1", port))
            return ports
        except OSError:
            continue
    raise AssertionError(f"no {n} ports free on both 127.0.0.1 and ::1")


def listening_ports(pid="self"):
    """The TCP ports sockets listen on in the network namespace of pid, read
    from /proc once (no connection is made, which a PROXY port would count as
    a client without a header; the tables list every socket, so a busy host
    makes them long: read them once per look)."""
    ports = set()
    for name in ("tcp", "tcp6"):
        try:
            rows = Path(f"/proc/{pid}/net/{name}").read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            f = row.split(None, 4)
            if f[3] == "0A":
                ports.add(int(f[1].rsplit(":", 1)[1], 16))
    return ports


def proc_uid(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    return None


# --- the stack ---------------------------------------------------------------


class Stack:
    """Paths, ports and processes of one Prosody + HAProxy run.

    ports:   {service: port} Prosody listens on, at 127.0.0.1 (and ::1 with ipv6)
    targets: {service: port} at 127.0.0.1 that HAProxy's backends send to
    fronts:  {(version, service): port} HAProxy listens on, at 127.0.0.1
             (and [::1] with ipv6), version "v2" (send-proxy-v2) or "v1"
             (send-proxy)
    ipv6:    Prosody's interfaces and HAProxy's fronts on ::1 as well
    trusted: NETPROXY_TRUSTED under the shim
    """

    def __init__(self, root, ports, targets, fronts, prefix=(), shim=False, extra="",
                 ipv6=False, trusted="127.0.0.1", env=None):
        self.root = Path(root)
        self.env = dict(env or {})  # more of Prosody's environment (LUA_CPATH_5_4, ...)
        self.ports, self.targets, self.fronts = dict(ports), dict(targets), dict(fronts)
        self.prefix, self.shim, self.extra = list(prefix), shim, extra
        self.hosts = ["127.0.0.1", "::1"] if ipv6 else ["127.0.0.1"]
        self.trusted = trusted
        # As Debian lays them out: the config root's (group prosody, mode 640, in
        # a directory of root's), which netproxyd insists on; what Prosody
        # writes in var/, its own.
        self.cfg = self.root / "prosody.cfg.lua"
        self.var = self.root / "var"
        self.cert = self.root / "certs" / f"{DOMAIN}.crt"
        self.key = self.root / "certs" / f"{DOMAIN}.key"
        self.log = self.var / "prosody.log"
        self.out = self.root / "prosody.out"
        self.err = self.root / "prosody.err"                   # NETPROXY_DEBUG lines
        self.hcfg = self.root / "haproxy.cfg"
        self.hlog = self.root / "haproxy.log"
        self.hsock = self.root / "haproxy.sock"               # its stats socket
        self.prosody = self.haproxy = None
        self.outputs = []

    def prosody_log(self):
        return text_of(self.log)

    def debug(self):
        return (f"\n--- prosody.log (tail) ---\n{self.prosody_log()[-6000:]}"
                f"\n--- prosody stderr ---\n{text_of(self.err)[-3000:]}"
                f"\n--- prosody stdout ---\n{text_of(self.out)[-1000:]}"
                f"\n--- haproxy ---\n{text_of(self.hlog)[-2000:]}")

    def connections(self, server_port):
        """(ip, port, line) of each 'New connection' line on Prosody's listener
        server_port, in order."""
        rx = re.compile(r"New connection FD \d+ \(([^,]+), (\d+), ([^,]+), (\d+)\) on server")
        return [(m.group(1), int(m.group(2)), m.string) for m in map(
            rx.search, self.prosody_log().splitlines()) if m and int(m.group(4)) == server_port]

    def wait_connections(self, ip, server_port, port=None, since=0, timeout=TIMEOUT):
        """connections(server_port) from ip (and port, unless None) after the
        first `since`; waits (bounded) for at least one, else AssertionError."""
        def found():
            return [c for c in self.connections(server_port)[since:]
                    if c[0] == ip and port in (None, c[1])]
        try:
            return wait_for(found, timeout, f"Prosody's 'New connection' line for {ip}:"
                                            f"{port or '*'} on port {server_port}")
        except AssertionError as e:
            raise AssertionError(f"{e}{self.debug()}") from None

    def write_prosody_files(self):
        (self.var / "data").mkdir(parents=True)
        (self.root / "certs").mkdir()
        # A SAN, so that the client verifies Prosody's certificate by name (its
        # own: HAProxy and netproxyd only relay TCP here). In the certificates
        # directory Prosody 0.12 finds the host's pair, and a direct TLS port
        # finds one too ("Using cert ... from index for service c2s_direct_tls
        # port N"); a VirtualHost's ssl option alone would leave that port
        # without a certificate ("SNI will be required").
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
                        "-subj", f"/CN={DOMAIN}", "-addext", f"subjectAltName=DNS:{DOMAIN}",
                        "-keyout", str(self.key), "-out", str(self.cert)],
                       check=True, capture_output=True, timeout=TIMEOUT)
        ports = "".join(f"{PORT_KEYS[svc]} = {{ {port} }}\n" for svc, port in self.ports.items()
                        if port != PROSODY_DEFAULT_PORTS.get(svc))
        self.cfg.write_text(f"""\
pidfile = "{self.var}/prosody.pid"
data_path = "{self.var}/data"
certificates = "{self.root}/certs"
interfaces = {{ {", ".join(f'"{h}"' for h in self.hosts)} }}
{ports}log = {{ debug = "{self.log}" }}
-- As libnetproxy_preload(8) advises for Prosody: a refused or parked connection
-- makes accept() say EAGAIN, which Prosody takes for an error and pauses the
-- listener for accept_retry_interval (10 s by default); keep that pause short.
network_settings = {{ accept_retry_interval = 0.05 }}
modules_enabled = {{ "roster"; "saslauth"; "tls"; "disco"; "ping" }}
{self.extra}
VirtualHost "{DOMAIN}"
""")
        user = prosody_user()
        for d in (self.var, self.root / "certs"):
            for p in [d, *d.rglob("*")]:
                os.chown(p, user.pw_uid, user.pw_gid)
        os.chown(self.cfg, 0, user.pw_gid)
        os.chmod(self.cfg, 0o640)

    def write_haproxy_cfg(self):
        """The original README's config on loopback ports: a frontend per PROXY
        version, a backend per (service, version), `check` kept; without its
        syslog lines, and with timeouts a test can wait out."""
        text = f"""\
global
    nbthread 1
    stats socket {self.hsock} mode 600
defaults
    mode tcp
    option clitcpka
    option srvtcpka
    timeout connect 5s
    timeout client 15s
    timeout server 15s
"""
        for version in sorted({v for v, _ in self.fronts}, reverse=True):
            name = "xmpp" if version == "v2" else f"xmpp-{version}"
            mine = sorted((port, svc) for (v, svc), port in self.fronts.items() if v == version)
            text += f"frontend {name}\n    bind " + ",".join(
                f"[{h}]:{port}" if ":" in h else f"{h}:{port}"
                for h in self.hosts for port, _ in mine) + "\n"
            text += "".join(f"    use_backend {name}-{svc} if {{ dst_port eq {port} }}\n"
                            for port, svc in mine)
            text += "".join(f"backend {name}-{svc}\n    server xmpp1 127.0.0.1:"
                            f"{self.targets[svc]} {SEND_PROXY[version]} check\n"
                            for _, svc in mine)
        self.hcfg.write_text(text)

    def register_account(self):
        r = subprocess.run([*self.setpriv(), find_exe("prosodyctl"), "--config", str(self.cfg),
                            "register", ACCOUNT[0], DOMAIN, ACCOUNT[1]],
                           capture_output=True, text=True, timeout=TIMEOUT,
                           stdin=subprocess.DEVNULL)
        assert r.returncode == 0, f"prosodyctl register -> {r.returncode}\n{r.stdout}{r.stderr}"

    @staticmethod
    def setpriv():
        return [find_exe("setpriv"), "--reuid=prosody", "--regid=prosody", "--init-groups"]

    def prosody_env(self):
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("NETPROXY_") and k != "LD_PRELOAD"}
        if self.shim:
            lib = (build_dir() / "libnetproxy_preload.so").resolve()
            assert lib.is_file(), f"{lib}: build it first (make)"
            env.update(LD_PRELOAD=str(lib),
                       NETPROXY_PORTS=",".join(str(p) for p in self.ports.values()),
                       NETPROXY_TRUSTED=self.trusted, NETPROXY_DEBUG="1")
        env.update(self.env)
        return env

    def output(self, path):
        """A file for a process's output, closed by close_outputs()."""
        f = open(path, "wb")
        self.outputs.append(f)
        return f

    def close_outputs(self):
        for f in self.outputs:
            f.close()

    def start_prosody(self):
        self.prosody = subprocess.Popen(
            [*self.prefix, *self.setpriv(), find_exe("prosody"), "--config", str(self.cfg), "-F"],
            stdout=self.output(self.out), stderr=self.output(self.err),
            stdin=subprocess.DEVNULL, env=self.prosody_env(), cwd=self.root,
            start_new_session=True)

        def up():
            if self.prosody.poll() is not None:
                raise AssertionError(f"prosody exited ({self.prosody.returncode}){self.debug()}")
            return ("Activated service 's2s'" in self.prosody_log()
                    and set(self.ports.values()) <= listening_ports(self.prosody.pid))
        try:
            wait_for(up, START_TIMEOUT, f"prosody to listen on {sorted(self.ports.values())}")
        except AssertionError as e:
            raise AssertionError(f"{e}{self.debug()}") from None
        # setpriv (and ip netns exec) exec Prosody, and -F keeps it in the
        # foreground: the PID the test started is Prosody itself, as prosody.
        cmdline = Path(f"/proc/{self.prosody.pid}/cmdline").read_bytes().split(b"\0")
        assert any(a.endswith(b"/prosody") for a in cmdline), cmdline
        assert proc_uid(self.prosody.pid) == prosody_user().pw_uid

    def start_haproxy(self):
        """Start HAProxy; do it last, so that its first health checks find up
        whatever its backends send to."""
        self.haproxy = subprocess.Popen([*self.prefix, find_exe("haproxy"), "-db", "-f",
                                         str(self.hcfg)],
                                        stdout=self.output(self.hlog), stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, start_new_session=True)

        def up():
            if self.haproxy.poll() is not None:
                raise AssertionError(f"haproxy exited ({self.haproxy.returncode}){self.debug()}")
            # Once it is haproxy (a prefix such as ip netns exec has exec'd
            # it), /proc/PID/net is the namespace it listens in.
            return (text_of(f"/proc/{self.haproxy.pid}/comm").strip() == "haproxy"
                    and set(self.fronts.values()) <= listening_ports(self.haproxy.pid))
        wait_for(up, TIMEOUT, f"haproxy to listen on {sorted(self.fronts.values())}")

    def haproxy_servers(self):
        """HAProxy's view of its servers ("show stat" on its stats socket): one
        dict per backend's server, with its status and health check fields."""
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(TIMEOUT)
            s.connect(str(self.hsock))
            s.sendall(b"show stat\n")
            got = bytearray()
            while chunk := s.recv(65536):
                got += chunk
        rows = list(csv.reader(got.decode().lstrip("# ").splitlines()))
        return [dict(zip(rows[0], r)) for r in rows[1:] if len(r) > 1 and r[1] == "xmpp1"]

    def assert_health_checks_survived(self):
        """Wait (bounded: HAProxy spreads its first checks over the 2 s
        interval) until every server has been checked, then check that all
        passed and are UP, and that Prosody never read a PROXY header as part
        of a stream: a header left in place shows as invalid XML on c2s and s2s
        and as a TLS "wrong version number" on a direct TLS port."""
        # check_status is the last result, "INI" before the first, with "* "
        # in front while a check is under way.
        def last(server):
            return server["check_status"].removeprefix("* ")
        servers = wait_for(lambda: (s := self.haproxy_servers()) and all(
            last(x) not in ("", "INI") for x in s) and s, TIMEOUT,
            "HAProxy to health-check every server")
        bad = [(x["pxname"], x["status"], x["check_status"], x["chkfail"]) for x in servers
               if not (x["status"] == "UP" and last(x) == "L4OK" and x["chkfail"] == "0")]
        assert not bad, f"HAProxy's servers not all UP with passing checks: {bad}{self.debug()}"
        leftovers = [line for line in self.prosody_log().splitlines()
                     if "Received invalid XML" in line or "wrong version number" in line]
        assert not leftovers, ("a PROXY header reached Prosody's streams:\n"
                               + "\n".join(leftovers) + self.debug())
        self.assert_running()
        return servers

    def assert_running(self):
        for name, proc in (("prosody", self.prosody), ("haproxy", self.haproxy)):
            assert proc.poll() is None, f"{name} exited ({proc.returncode}){self.debug()}"


@contextmanager
def prosody_stack(ports, targets, fronts, prefix=(), shim=False, extra="", haproxy=True,
                  ipv6=False, trusted="127.0.0.1", env=None):
    """Prosody (as the prosody user, under the shim or not, with the account
    registered) and, unless haproxy is False (then the caller starts it with
    st.start_haproxy() once its targets are up), HAProxy in front; with ipv6,
    both on ::1 as well as 127.0.0.1; trusted: as for Stack. Both are stopped
    by PID, and the private dir removed, whatever happens."""
    root = tempfile.mkdtemp(prefix="netproxy-prosody-")
    os.chmod(root, 0o755)
    st = Stack(root, ports, targets, fronts, prefix, shim, extra, ipv6, trusted, env)
    try:
        st.write_prosody_files()
        st.write_haproxy_cfg()
        st.register_account()
        st.start_prosody()
        if haproxy:
            st.start_haproxy()
        yield st
    finally:
        try:
            if st.haproxy is not None:
                stop_pid(st.haproxy)
        finally:
            try:
                if st.prosody is not None:
                    stop_pid(st.prosody)
            finally:
                st.close_outputs()
                shutil.rmtree(root, ignore_errors=True)


# --- the client --------------------------------------------------------------


class XmppError(AssertionError):
    """The server did not answer as a working XMPP stream does; .received is
    what it had sent in that step."""

    def __init__(self, what, received):
        super().__init__(f"{what}; received {bytes(received)[:600]!r}")
        self.received = bytes(received)


class XmppStream:
    """One client connection from source to host:port, step by step. Every
    read waits at most TIMEOUT; an unexpected answer raises XmppError."""

    def __init__(self, host, port, source=CLIENT_IP):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            self.sock.settimeout(TIMEOUT)
            self.sock.bind((source, 0))
            self.sock.connect((host, port))
        except BaseException:
            self.sock.close()
            raise
        self.cport = self.sock.getsockname()[1]
        self.pending = bytearray()     # read past the end of the last step

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def start_tls(self, cafile):
        """The TLS handshake on the connection as it is, verifying the server's
        certificate against cafile for DOMAIN (sent as SNI)."""
        ctx = ssl.create_default_context(cafile=str(cafile))
        assert not self.pending, f"bytes before the TLS handshake: {bytes(self.pending)!r}"
        try:
            self.sock = ctx.wrap_socket(self.sock, server_hostname=DOMAIN)
        except (ssl.SSLError, OSError) as e:
            raise XmppError(f"the TLS handshake failed: {e}", b"") from None
        return self.sock.version()

    def read_until(self, ends, what):
        """Read until one of ends; returns the data up to and including it.
        Raises XmppError on a stream error, the end of the stream, EOF or timeout."""
        got = self.pending
        while True:
            hits = [(got.find(e), e) for e in ends if e in got]
            if hits:
                at, end = min(hits)
                cut = at + len(end)
                self.pending = bytearray(got[cut:])
                return bytes(got[:cut])
            if b"</stream:stream>" in got or b"</stream:error>" in got:
                raise XmppError(f"the server ended the stream waiting for {what}", got)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                raise XmppError(f"no {what} within {TIMEOUT} s", got) from None
            except (ConnectionResetError, ssl.SSLError) as e:
                raise XmppError(f"{e} waiting for {what}", got) from None
            if not chunk:
                raise XmppError(f"the server closed the connection waiting for {what}", got)
            got += chunk

    def open(self, header=C2S_STREAM):
        """Send a stream header; returns the server's answer up to its features."""
        self.sock.sendall(header)
        return self.read_until([b"</stream:features>", b"<stream:features/>"], "stream features")

    def starttls(self, cafile):
        self.sock.sendall(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        self.read_until([b"<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"], "<proceed/>")
        return self.start_tls(cafile)

    def auth_plain(self, user, password):
        token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        self.sock.sendall(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>"
                          f"{token}</auth>".encode())
        answer = self.read_until([b"/>", b"</success>", b"</failure>"], "the SASL answer")
        if not answer.startswith(b"<success"):
            raise XmppError("SASL PLAIN did not succeed", answer)
        return answer

    def bind(self, resource):
        self.sock.sendall(f"<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:"
                          f"xmpp-bind'><resource>{resource}</resource></bind></iq>".encode())
        answer = self.read_until([b"</iq>"], "the bind result")
        m = re.search(rb"<jid>([^<]+)</jid>", answer)
        if b"type='result'" not in answer or not m:
            raise XmppError("no bound JID", answer)
        return m.group(1).decode()


class Login:
    """What a c2s login saw: the client's port, the first stream features,
    the TLS version, the SASL answer and the bound JID."""

    def __init__(self, cport, features, tls, success, jid):
        self.cport, self.features, self.tls, self.success, self.jid = \
            cport, features, tls, success, jid


def c2s_login(host, port, cafile, source=CLIENT_IP, direct_tls=False, resource="netproxy"):
    """Log ACCOUNT in on DOMAIN: TLS (STARTTLS, or direct TLS first), SASL
    PLAIN, stream restart, resource binding. Returns a Login; XmppError when
    a step fails."""
    with XmppStream(host, port, source) as xs:
        tls = xs.start_tls(cafile) if direct_tls else None
        features = xs.open()
        if not direct_tls:
            if b"urn:ietf:params:xml:ns:xmpp-tls" not in features:
                raise XmppError("no STARTTLS offered", features)
            tls = xs.starttls(cafile)
            features = xs.open()
        if b"<mechanism>PLAIN</mechanism>" not in features:
            raise XmppError("no SASL PLAIN offered over TLS", features)
        success = xs.auth_plain(*ACCOUNT)
        if b"urn:ietf:params:xml:ns:xmpp-bind" not in xs.open():
            raise XmppError("no resource binding offered after SASL", b"")
        jid = xs.bind(resource)
        xs.sock.sendall(b"</stream:stream>")
        return Login(xs.cport, features, tls, success, jid)


def s2s_open(host, port, source=CLIENT_IP):
    """Open an s2s stream from example.net; returns (the client's port,
    Prosody's answer). Prosody has parsed the stream header when its own
    header is addressed back, to example.net from DOMAIN; stream features
    (STARTTLS) or a stream error may follow. A stream that ends before, such
    as the not-well-formed error a PROXY header read as XML gets, is XmppError."""
    with XmppStream(host, port, source) as xs:
        try:
            reply = xs.open(S2S_STREAM)
        except XmppError as e:
            reply = e.received
        header = re.search(rb"<stream:stream [^>]*>", reply)
        if not (header and re.search(rb"""\sto=['"]example\.net['"]""", header.group(0))
                and re.search(rf"""\sfrom=['"]{re.escape(DOMAIN)}['"]""".encode(),
                              header.group(0))):
            raise XmppError("Prosody did not answer the s2s stream header", reply)
        return xs.cport, reply
