"""netproxyd under a service manager, without systemd as PID 1.

The notify protocol is heard by a datagram socket of the test's own, named in
NOTIFY_SOCKET as systemd names its own; socket activation is done by
systemd-socket-activate(1), or by the test itself, which holds the listening
socket and passes it to each netproxyd it starts (LISTEN_PID, LISTEN_FDS,
LISTEN_FDNAMES), as a .socket unit does across `systemctl restart`. The unit
files are checked with systemd-analyze (verify, and security --offline).
"""
import errno
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from npd import (EchoServer, Netproxyd, find_exe, free_port, proxy_v1, stop_pid, talk, text_of,
                 tool, wait_for)

REPO = Path(__file__).resolve().parents[2]


class NotifyListener:
    """A NOTIFY_SOCKET: an abstract name (default) or a path, as systemd binds it.
    Started as root, netproxyd is nobody by the time it speaks: a path socket is
    made writable by anyone, as systemd's own /run/systemd/notify is."""

    def __init__(self, path=None):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if path is None:
            name = f"netproxyd-test-{os.getpid()}-{id(self)}"
            self.sock.bind("\0" + name)
            self.env = "@" + name
        else:
            self.sock.bind(str(path))
            os.chmod(path, 0o777)
            self.env = str(path)
        self.messages = []

    def next(self, timeout=10.0):
        """The next message as a dict of its assignments."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            raise AssertionError(f"no notify message within {timeout} s; so far: "
                                 f"{self.messages}") from None
        msg = dict(line.split("=", 1) for line in data.decode().split("\n") if line)
        self.messages.append(msg)
        return msg

    def close(self):
        self.sock.close()


@pytest.fixture
def notify():
    n = NotifyListener()
    yield n
    n.close()


def config(port, backend_port, workers=2, extra=""):
    return (f'proxy_ports = {{ "127.0.0.1:{port}" }}\n'
            f'proxy_port_mappings = {{ [{port}] = "echo" }}\n'
            f'services = {{ echo = {{ connect = "127.0.0.1:{backend_port}" }} }}\n'
            f'workers = {workers}\n{extra}')


def roundtrip(port, payload=b"hello", host="127.0.0.1"):
    got, how = talk(port, proxy_v1("192.0.2.1", "192.0.2.2", 40000, port) + payload, host=host)
    return got == payload and how == "eof"


# --- the notify protocol ------------------------------------------------------

def test_ready_reload_stopping(notify):
    with EchoServer() as echo:
        port = free_port()
        d = Netproxyd(config(port, echo.port), env={"NOTIFY_SOCKET": notify.env})
        with d:
            ready = notify.next()
            assert ready["READY"] == "1"
            assert ready["STATUS"] == "running generation 1: 2 workers, 1 listening address"
            assert roundtrip(port)

            before = time.monotonic()
            d.reload()
            reloading = notify.next()
            after = time.monotonic()
            assert reloading["RELOADING"] == "1"
            # CLOCK_MONOTONIC in microseconds, as Type=notify-reload requires.
            usec = int(reloading["MONOTONIC_USEC"])
            assert before * 1e6 - 1e5 <= usec <= after * 1e6 + 1e5
            again = notify.next()
            assert again["READY"] == "1" and "RELOADING" not in again
            assert again["STATUS"] == "running generation 2: 2 workers, 1 listening address"

            # A broken file: the reload fails, READY=1 comes back with the reason.
            d.reload(config(port, echo.port) + "proxy_header_timeout = 'soon'\n")
            assert notify.next()["RELOADING"] == "1"
            failed = notify.next()
            assert failed["READY"] == "1"
            assert re.fullmatch(r"reload failed: \S+netproxyd\.conf\.lua:\d+: "
                                r"proxy_header_timeout: .+; still running generation 2: "
                                r"2 workers, 1 listening address", failed["STATUS"]), failed
            assert roundtrip(port)

            # One that cannot listen: the cause is the socket's.
            with socket.socket() as taken:
                taken.bind(("127.0.0.1", 0))
                taken.listen()
                busy = taken.getsockname()[1]
                d.reload(config(port, echo.port) .replace(
                    f'"127.0.0.1:{port}" }}', f'"127.0.0.1:{port}", "127.0.0.1:{busy}" }}'))
                assert notify.next()["RELOADING"] == "1"
                failed = notify.next()
            assert failed["STATUS"].startswith(
                f"reload failed: cannot listen on 127.0.0.1:{busy}: Address already in use; "
                "still running generation 2"), failed

            d.proc.send_signal(signal.SIGTERM)
            stopping = notify.next()
            assert stopping["STOPPING"] == "1"
            assert stopping["STATUS"] == "stopping on SIGTERM"
            assert d.proc.wait(10) == 0


def test_stopping_reports_draining(notify):
    """A graceful stop: STOPPING=1, then STATUS=draining N connections as
    they finish; shutdown_grace is the running config's, a reload's value."""
    with EchoServer() as echo:
        port = free_port()
        d = Netproxyd(config(port, echo.port), env={"NOTIFY_SOCKET": notify.env})
        with d:
            assert notify.next()["READY"] == "1"
            d.reload(config(port, echo.port) + "shutdown_grace = 20\n")
            assert notify.next()["RELOADING"] == "1"
            assert notify.next()["READY"] == "1"
            conns = []
            for i in range(2):
                s = socket.create_connection(("127.0.0.1", port), timeout=10)
                s.sendall(proxy_v1("192.0.2.1", "192.0.2.2", 40000 + i, port) + b"x")
                assert s.recv(1) == b"x"
                conns.append(s)
            d.proc.send_signal(signal.SIGTERM)
            stopping = notify.next()
            assert stopping["STOPPING"] == "1"
            assert notify.next()["STATUS"] == "draining 2 connections"
            d.wait_log(r"relayed connections have up to 20\.000 s to finish")
            conns.pop().close()
            assert notify.next()["STATUS"] == "draining 1 connection"
            conns.pop().close()
            assert d.proc.wait(10) == 0, d.log()
            assert '2 of 2 connections finished, 0 closed "shutting down"' in d.log()


def test_path_socket_and_one_worker():
    """A NOTIFY_SOCKET that is a file, as systemd's /run/systemd/notify."""
    tmp = tempfile.TemporaryDirectory(prefix="npd-notify-")
    os.chmod(tmp.name, 0o755)
    n = NotifyListener(Path(tmp.name) / "notify")
    try:
        with EchoServer() as echo:
            port = free_port()
            with Netproxyd(config(port, echo.port, workers=1), env={"NOTIFY_SOCKET": n.env}):
                assert n.next()["STATUS"] == "running generation 1: 1 worker, 1 listening address"
    finally:
        n.close()
        tmp.cleanup()


def test_start_failure_says_why(notify):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        d = Netproxyd(config(port, 9), env={"NOTIFY_SOCKET": notify.env}, ready=None)
        try:
            assert d.proc.wait(10) == 1
            msg = notify.next()
        finally:
            d.stop()
    assert "READY" not in msg
    assert msg["STATUS"] == f"not started: cannot listen on 127.0.0.1:{port}: Address already in use"


def test_no_notify_socket_no_message():
    """Without NOTIFY_SOCKET nothing is sent and nothing is said about it."""
    with EchoServer() as echo:
        port = free_port()
        with Netproxyd(config(port, echo.port)) as d:
            assert roundtrip(port)
            assert "NOTIFY" not in d.log(), d.log()


def test_unusable_notify_socket_is_warned():
    with EchoServer() as echo:
        port = free_port()
        with Netproxyd(config(port, echo.port), env={"NOTIFY_SOCKET": "vsock:2:1234"}) as d:
            assert roundtrip(port)
            assert "NOTIFY_SOCKET=vsock:2:1234: not a path or an abstract name" in d.log()


# --- socket activation -----------------------------------------------------------

def listening_socket(host="127.0.0.1", port=0, v6only=True):
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1 if v6only else 0)
    s.bind((host, port))
    s.listen(4096)
    return s


# What a service manager does between fork and exec: the sockets at 3, 4, ...,
# LISTEN_PID the pid that exec keeps, then exec.
LAUNCH = r"""
import os, sys
n = int(sys.argv[1])
fds = [int(a) for a in sys.argv[2:2 + n]]
high = [os.dup2(fd, 900 + i) for i, fd in enumerate(fds)]
for i, fd in enumerate(high):
    os.dup2(fd, 3 + i)
for fd in high:
    os.close(fd)
os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS=str(n), LISTEN_FDNAMES=sys.argv[2 + n])
os.execv(sys.argv[3 + n], sys.argv[3 + n:])
"""


class Activated:
    """netproxyd started with sockets passed as systemd passes them: at
    descriptors 3, 4, ..., with LISTEN_PID set to netproxyd's own pid (sh's
    $$, which exec keeps) and their names in LISTEN_FDNAMES."""

    def __init__(self, socks, names, config_text, env=None):
        # Not under pytest's tmp_path, whose parents nobody (netproxyd) cannot enter.
        self.tmp = tempfile.TemporaryDirectory(prefix="npd-act-")
        self.dir = Path(self.tmp.name)
        os.chmod(self.dir, 0o755)
        self.config_path = self.dir / "netproxyd.conf.lua"
        self.config_path.write_text(config_text)
        self.log_path = self.dir / "netproxyd.log"
        fds = [s.fileno() for s in socks]
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", LAUNCH, str(len(fds)), *map(str, fds), ":".join(names),
                 tool("netproxyd"), "-c", str(self.config_path)],
                pass_fds=fds, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                env={**os.environ, **(env or {})})

    def log(self):
        return text_of(self.log_path)

    def wait_log(self, pattern, timeout=10.0):
        def seen():
            if self.proc.poll() is not None and not re.search(pattern, self.log()):
                raise AssertionError(f"netproxyd exited ({self.proc.returncode}):\n{self.log()}")
            return re.search(pattern, self.log())
        try:
            return wait_for(seen, timeout, repr(pattern))
        except AssertionError as e:
            raise AssertionError(f"{e}\n{self.log()}") from None

    def stop(self, timeout=10.0):
        stop_pid(self.proc, timeout)
        return self.proc.returncode

    def cleanup(self):
        self.stop()
        self.tmp.cleanup()


def test_systemd_socket_activate():
    """systemd's own tool listens, waits for the first connection and execs
    netproxyd with the socket: that first connection is served too."""
    exe = find_exe("systemd-socket-activate")
    if not exe:
        pytest.skip("systemd-socket-activate is not installed (Debian's systemd package)")
    with EchoServer() as echo, tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o755)
        port = free_port()
        cfg = Path(tmp) / "netproxyd.conf.lua"
        cfg.write_text(config(port, echo.port))
        log_path = Path(tmp) / "log"
        with open(log_path, "w") as log:
            proc = subprocess.Popen([exe, "-l", f"127.0.0.1:{port}", "--fdname=proxy",
                                     tool("netproxyd"), "-c", str(cfg)],
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_for(lambda: f"Listening on 127.0.0.1:{port}" in text_of(log_path), 10,
                     "systemd-socket-activate to listen")
            for i in range(20):
                assert roundtrip(port, b"x%d" % i), text_of(log_path)
            log = text_of(log_path)
            assert f"passed socket 127.0.0.1:{port} (proxy) from the service manager" in log
            assert "cannot listen" not in log
        finally:
            stop_pid(proc, 10)
        assert proc.returncode == 0, text_of(log_path)


def test_passed_sockets_matched_and_the_rest_opened():
    """Two ports passed, three in the config, one passed that the config lacks."""
    with EchoServer() as echo:
        a, b, extra = listening_socket(), listening_socket(), listening_socket()
        pa, pb, px = (s.getsockname()[1] for s in (a, b, extra))
        own = free_port()
        cfg = (f'proxy_ports = {{ "127.0.0.1:{pa}", "127.0.0.1:{pb}", "127.0.0.1:{own}" }}\n'
               f'proxy_port_mappings = {{ [{pa}] = "echo", [{pb}] = "echo", [{own}] = "echo" }}\n'
               f'services = {{ echo = {{ connect = "127.0.0.1:{echo.port}" }} }}\n'
               f'workers = 2\n')
        d = Activated([a, b, extra], ["first", "second", "stray"], cfg)
        try:
            d.wait_log(r"running: 2 workers")
            for port in (pa, pb, own):
                for _ in range(10):
                    assert roundtrip(port), d.log()
            log = d.log()
            assert f"passed socket 127.0.0.1:{pa} (first) from the service manager" in log
            assert f"passed socket 127.0.0.1:{px} (stray): no listener of the config has " \
                   f"this address: its connections wait unanswered" in log
            # The stray socket's connections wait in its queue, accepted by nobody.
            with socket.create_connection(("127.0.0.1", px), timeout=2) as c:
                c.settimeout(0.5)
                c.sendall(proxy_v1("192.0.2.1", "192.0.2.2", 1, px))
                with pytest.raises(socket.timeout):
                    c.recv(1)

            # A reload that drops a passed port and one that brings it back.
            d.config_path.write_text(cfg.replace(f'"127.0.0.1:{pb}", ', ""))
            d.proc.send_signal(signal.SIGHUP)
            d.wait_log(r"reloaded: generation 2")
            assert roundtrip(pa)
            d.config_path.write_text(cfg)
            d.proc.send_signal(signal.SIGHUP)
            d.wait_log(r"reloaded: generation 3")
            for _ in range(10):
                assert roundtrip(pb), d.log()
            assert "cannot listen" not in d.log()
        finally:
            rc, log = d.stop(), d.log()
            d.cleanup()
            assert rc == 0, log
            for s in (a, b, extra):
                s.close()


def test_dual_stack_passed_socket_serves_ipv4():
    """systemd's default ListenStream=PORT is one [::] socket that takes IPv4
    too: the config's 0.0.0.0 listener of that port is served by it."""
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    with EchoServer() as echo:
        s = listening_socket("::", 0, v6only=False)
        port = s.getsockname()[1]
        cfg = (f'proxy_ports = {{ {port} }}\n'
               f'proxy_port_mappings = {{ [{port}] = "echo" }}\n'
               f'services = {{ echo = {{ connect = "127.0.0.1:{echo.port}" }} }}\n')
        d = Activated([s], ["netproxyd.socket"], cfg)
        try:
            d.wait_log(r"running: \d+ workers?")
            assert roundtrip(port, host="127.0.0.1"), d.log()
            assert roundtrip(port, host="::1"), d.log()
            log = d.log()
            assert f"0.0.0.0:{port}: served by the passed IPv6 socket of port {port}, " \
                   "which takes IPv4 too" in log
            assert f"passed socket [::]:{port} (netproxyd.socket) from the service manager, " \
                   "IPv4 and IPv6" in log
        finally:
            rc, log = d.stop(), d.log()
            d.cleanup()
            assert rc == 0, log
            s.close()


def test_passed_descriptor_that_is_no_listener():
    with EchoServer() as echo:
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("127.0.0.1", 0))
        port = free_port()
        d = Activated([udp], ["dgram"], config(port, echo.port))
        try:
            d.wait_log(r"running: ")
            assert "passed descriptor 3 (dgram): not a stream socket" in d.log()
            assert roundtrip(port)
        finally:
            rc = d.stop()
            d.cleanup()
            udp.close()
            assert rc == 0


def test_listen_pid_of_another_process_is_ignored():
    """LISTEN_FDS meant for a parent is not taken (sd_listen_fds's rule)."""
    with EchoServer() as echo:
        port = free_port()
        with Netproxyd(config(port, echo.port),
                       env={"LISTEN_PID": "1", "LISTEN_FDS": "1"}) as d:
            assert roundtrip(port)
            assert "passed" not in d.log()


# --- a restart with the socket held ----------------------------------------------

RESTART_CONNS = 200
PAYLOAD = 64 * 1024


def test_restart_under_load_refuses_nothing():
    """200 connections, 16 at a time, each sending 64 KiB and reading its echo,
    while netproxyd is stopped (SIGTERM) and started anew, the listening socket
    held by the test as a .socket unit holds it. None may be refused, and
    every one completes byte for byte: the old netproxyd stops accepting at
    once and lets the connections it relays finish (shutdown_grace), so it
    closes none "shutting down". Connections that arrive meanwhile, and while
    no netproxyd runs, wait in the held socket's queue and are served by the
    new one."""
    with EchoServer() as echo:
        held = listening_socket()
        port = held.getsockname()[1]
        cfg = config(port, echo.port)
        payload = os.urandom(PAYLOAD)
        results = []
        lock = threading.Lock()
        started = threading.Event()
        counter = iter(range(RESTART_CONNS))

        def one():
            t0 = time.monotonic()
            s = socket.socket()
            s.settimeout(20)
            got = bytearray()
            try:
                s.connect(("127.0.0.1", port))
                s.sendall(proxy_v1("192.0.2.1", "192.0.2.2", 40000, port))
                for i in range(0, PAYLOAD, 8192):
                    s.sendall(payload[i:i + 8192])
                s.shutdown(socket.SHUT_WR)
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    got += chunk
                outcome = "ok" if bytes(got) == payload else "short"
            except ConnectionRefusedError:
                outcome = "refused"
            except (ConnectionResetError, BrokenPipeError):
                outcome = "reset"
            except OSError as e:
                outcome = f"error {errno.errorcode.get(e.errno, e)}"
            finally:
                s.close()
            with lock:
                results.append((t0, time.monotonic(), outcome, len(got)))

        def client():
            started.wait()
            while True:
                with lock:
                    n = next(counter, None)
                if n is None:
                    return
                one()
                time.sleep(0.005)

        first = Activated([held], ["proxy"], cfg)
        second = None
        try:
            first.wait_log(r"running: 2 workers")
            threads = [threading.Thread(target=client, daemon=True) for _ in range(16)]
            for t in threads:
                t.start()
            started.set()
            wait_for(lambda: len(results) >= 50, 30, "50 connections before the restart")
            stop_at = time.monotonic()
            assert first.stop() == 0, first.log()
            gone_at = time.monotonic()
            second = Activated([held], ["proxy"], cfg)
            second.wait_log(r"running: 2 workers")
            ready_at = time.monotonic()
            for t in threads:
                t.join(60)
            assert not any(t.is_alive() for t in threads)
            assert second.stop() == 0, second.log()
        finally:
            logs = []
            for d in (first, second):
                if d:
                    logs.append(d.log())
                    d.cleanup()
            held.close()

    outcomes = {}
    for _, _, outcome, _ in results:
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    first_log, second_log = logs
    cut_by_stop = first_log.count('reason="shutting down"')
    in_gap = sum(1 for t0, _, o, _ in results if gone_at <= t0 < ready_at and o == "ok")
    served_by_second = second_log.count(" conn=")
    report = (f"{outcomes}; old netproxyd closed {cut_by_stop} 'shutting down'; stop took "
              f"{(gone_at - stop_at) * 1000:.0f} ms, the new one was ready "
              f"{(ready_at - gone_at) * 1000:.0f} ms later; {in_gap} connections began in "
              f"that gap and were served; the new one served {served_by_second}")
    print("restart under load:", report)
    assert len(results) == RESTART_CONNS, report
    assert outcomes == {"ok": RESTART_CONNS}, report
    assert cut_by_stop == 0, report
    assert 'finished, 0 closed "shutting down"' in first_log, report
    assert served_by_second > 0, report


# --- the unit files ----------------------------------------------------------------

def analyze():
    exe = find_exe("systemd-analyze")
    if not exe:
        pytest.skip("systemd-analyze is not installed (Debian's systemd package)")
    return exe


@pytest.fixture(scope="module")
def units(tmp_path_factory):
    """The units as make install writes them, naming the build's netproxyd and a
    config of the test's; the directory of the installed units."""
    stage = tmp_path_factory.mktemp("units")
    conf_dir = Path(tempfile.mkdtemp(prefix="npd-unitconf-"))
    os.chmod(conf_dir, 0o755)
    subprocess.run(["make", "--no-print-directory", "install-systemd", f"DESTDIR={stage}",
                    "PREFIX=/usr", f"BINDIR={Path(tool('netproxyd')).parent}",
                    f"NPD_CONFIG={conf_dir}/netproxyd.conf.lua"],
                   cwd=REPO, check=True, capture_output=True, text=True)
    yield stage / "usr/lib/systemd/system", conf_dir / "netproxyd.conf.lua"
    shutil.rmtree(conf_dir)


def test_units_verify(units):
    unit_dir, _ = units
    names = sorted(p.name for p in unit_dir.iterdir())
    assert names == ["netproxyd-routing.service", "netproxyd.service", "netproxyd.socket"]
    # --man=no: the man pages they name are not installed here (test_deb checks with them).
    r = subprocess.run([analyze(), "verify", "--man=no", *names], cwd=unit_dir,
                       capture_output=True, text=True)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    sysusers = unit_dir.parent.parent / "sysusers.d/netproxyd.conf"
    assert re.match(r"u netproxyd - ", sysusers.read_text().splitlines()[-1])


def exposure(unit_file, cwd):
    r = subprocess.run([analyze(), "security", "--offline=yes", unit_file], cwd=cwd,
                       capture_output=True, text=True)
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+) (\w+)", r.stdout)
    assert m, r.stdout + r.stderr
    return float(m.group(1)), m.group(2)


def test_security_score(units, tmp_path):
    """systemd-analyze security: 2.5 at most for the plain unit (lower is
    better; 10 is a unit with no sandbox), and what transparent.conf costs."""
    unit_dir, _ = units
    plain, verdict = exposure("netproxyd.service", unit_dir)
    # The drop-in's settings after the unit's, as systemd merges them.
    merged = tmp_path / "netproxyd.service"
    merged.write_text((unit_dir / "netproxyd.service").read_text() +
                      (REPO / "systemd/transparent.conf").read_text())
    r = subprocess.run([analyze(), "verify", "--man=no", "netproxyd.service"], cwd=tmp_path,
                       capture_output=True, text=True)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    transparent, _ = exposure("netproxyd.service", tmp_path)
    routing, _ = exposure("netproxyd-routing.service", unit_dir)
    print(f"exposure: plain {plain} {verdict}, with transparent.conf {transparent}, "
          f"netproxyd-routing.service {routing}")
    assert plain <= 2.5 and verdict == "OK"
    assert transparent <= 3.5 and routing <= 3.5


def unit_commands(unit, key):
    return [line.split("=", 1)[1].split() for line in unit.read_text().splitlines()
            if line.startswith(key + "=")]


# What the unit's User=, CapabilityBoundingSet= and NoNewPrivileges= make of a
# process (nobody stands in for the netproxyd user).
AS_UNIT = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all",
           "--bounding-set=-all", "--no-new-privs", "--"]


def test_unit_reload_as_systemd_252_runs_it(units, notify):
    """ExecStart and the two ExecReload lines, run as systemd 252 runs them:
    a good file is checked, then SIGHUP brings RELOADING=1 and READY=1; a
    broken one fails the first line, so `systemctl reload` fails and the
    running config stays."""
    if not find_exe("setpriv"):
        pytest.skip("setpriv is not installed (util-linux)")
    unit_dir, conf = units
    unit = unit_dir / "netproxyd.service"
    [start] = unit_commands(unit, "ExecStart")
    check, kill = unit_commands(unit, "ExecReload")
    assert check[1:] == ["-t", "-c", str(conf)] and kill[1:] == ["-HUP", "$MAINPID"]
    with EchoServer() as echo:
        port = free_port()
        conf.write_text(config(port, echo.port))
        log = conf.parent / "log"
        with open(log, "w") as out:
            proc = subprocess.Popen(AS_UNIT + start, stdout=out, stderr=subprocess.STDOUT,
                                    env={**os.environ, "NOTIFY_SOCKET": notify.env},
                                    start_new_session=True)
        try:
            assert notify.next()["READY"] == "1", text_of(log)
            assert roundtrip(port)

            def reload_unit():
                r = subprocess.run(AS_UNIT + check, capture_output=True, text=True)
                if r.returncode != 0:
                    return r
                return subprocess.run(kill[:1] + ["-HUP", str(proc.pid)], capture_output=True,
                                      text=True)
            conf.write_text(config(port, echo.port, extra="proxy_header_timeout = 3\n"))
            assert reload_unit().returncode == 0
            assert notify.next()["RELOADING"] == "1"
            assert notify.next()["STATUS"].startswith("running generation 2")

            conf.write_text(config(port, echo.port, extra="proxy_header_timeot = 3\n"))
            r = reload_unit()
            assert r.returncode == 1 and "proxy_header_timeot" in r.stderr, r
            with pytest.raises(AssertionError, match="no notify message"):
                notify.next(timeout=0.5)
            assert roundtrip(port)
        finally:
            stop_pid(proc, 10)
        assert proc.returncode == 0, text_of(log)
