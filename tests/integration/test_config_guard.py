"""No config can hang netproxyd or be written by someone it should not trust.

A config is evaluated apart first, in a child process under a CPU and a
wall-clock limit (C functions such as pattern matching and table.concat run
whole between two of the sandbox's instruction counts); SIGTERM stops the
daemon even while a reload evaluates. A config file, an included file or a
directory above them that others can write is refused, as sshd and sudo do.
"""
import os
import signal
import subprocess
import time

import pytest

from npd import EchoServer, Netproxyd, free_port, proxy_v1, talk, tool

MAPPING = ('proxy_port_mappings = {{ [{port}] = "svc" }}\n'
           'proxy_ports = {{ "127.0.0.1:{port}" }}\n'
           'services = {{ svc = {{ connect = "127.0.0.1:{backend}" }} }}\n')

# Each runs in C, where the sandbox's instruction hook never fires.
SPINS = {
    "string.rep in a loop": 'for i = 1, 1e8 do local s = string.rep("x", 1 << 24) end\n',
    "table.concat in a loop": ('local t = {} for i = 1, 100000 do t[i] = "xxxxxxxxxx" end\n'
                               'for i = 1, 1e8 do local s = table.concat(t) end\n'),
    "a backtracking pattern": 'x = string.rep("a", 40):find(string.rep("a*", 30) .. "b")\n',
}


def check(path):
    start = time.monotonic()
    out = subprocess.run([tool("netproxyd"), "-t", "-c", str(path)], capture_output=True,
                         text=True, timeout=60)
    return out, time.monotonic() - start


@pytest.mark.parametrize("spin", SPINS.values(), ids=SPINS.keys())
def test_t_ends_a_config_that_runs_in_c(tmp_path, spin):
    cfg = tmp_path / "spin.lua"
    cfg.write_text(MAPPING.format(port=15222, backend=5222) + spin)
    out, took = check(cfg)
    assert out.returncode == 1
    assert out.stderr == (f"netproxyd: {cfg}: evaluating the config took too long (over 4 s of "
                          f"CPU or 10 s in all): a loop, or a string function such as a pattern "
                          f"match or table.concat that runs without end\n")
    assert took < 30, took


def test_a_config_that_runs_long_does_not_stop_the_service_and_sigterm_ends_the_reload():
    port = free_port()
    with EchoServer() as echo:
        good = MAPPING.format(port=port, backend=echo.port)
        with Netproxyd(good) as d:
            d.reload(good + SPINS["a backtracking pattern"])
            d.wait_log(r"SIGHUP: reloading")
            # The workers go on while the config is evaluated apart.
            got, _ = talk(port, proxy_v1("192.0.2.1", "192.0.2.2", 1, 2) + b"during")
            assert got == b"during"
            d.wait_log(r"error: .*evaluating the config took too long", timeout=20)
            d.wait_log(r"reload failed: keeping the running config")
            got, _ = talk(port, proxy_v1("192.0.2.1", "192.0.2.2", 1, 2) + b"after")
            assert got == b"after"

            # SIGTERM while a reload evaluates: it stops now, not after the trial.
            d.reload()
            d.wait_log(r"SIGHUP: reloading", count=2)
            sent = time.monotonic()
            d.proc.send_signal(signal.SIGTERM)
            d.proc.wait(10)
            took = time.monotonic() - sent
            assert d.proc.returncode == 0
            assert took < 3, f"SIGTERM took {took:.1f} s: it waited for the 4 s trial"
            d.wait_log(r"SIGTERM: stopping")


@pytest.mark.parametrize("what", ["file 666", "file 664 other group", "dir 777",
                                  "file of another user", "include 666"])
def test_t_refuses_a_config_others_can_write(tmp_path, what):
    d = tmp_path / "conf"
    d.mkdir()
    cfg = d / "netproxyd.lua"
    cfg.write_text(MAPPING.format(port=15222, backend=5222))
    target = cfg
    if what == "file 666":
        cfg.chmod(0o666)
        want = f"{cfg} is writable by anyone (mode 666)"
    elif what == "file 664 other group":
        os.chown(cfg, 0, 65534)
        cfg.chmod(0o664)
        want = f"{cfg} is writable by group 65534 (mode 664)"
    elif what == "dir 777":
        d.chmod(0o777)
        want = f"{d} is writable by anyone (mode 777)"
    elif what == "file of another user":
        os.chown(cfg, 65534, -1)
        want = f"{cfg} is owned by uid 65534, not by root"
    else:
        inc = d / "inc.lua"
        inc.write_text("proxy_header_timeout = 4\n")
        inc.chmod(0o666)
        cfg.write_text(f'Include "{inc}"\n' + cfg.read_text())
        want = f"Include: {inc} is writable by anyone (mode 666)"
    if os.geteuid() != 0 and what in ("file 664 other group", "file of another user"):
        pytest.skip("chown needs root")
    out, _ = check(target)
    assert out.returncode == 1 and want in out.stderr, out.stderr
    assert "whoever writes the config decides who may claim any address" in out.stderr


def test_a_sticky_world_writable_directory_is_accepted(tmp_path):
    """/tmp is 1777: others cannot replace an entry there that is not theirs."""
    d = tmp_path / "sticky"
    d.mkdir()
    d.chmod(0o1777)
    cfg = d / "netproxyd.lua"
    cfg.write_text(MAPPING.format(port=15222, backend=5222))
    out, _ = check(cfg)
    assert out.returncode == 0, out.stderr


def test_reload_of_a_file_made_world_writable_keeps_the_running_config():
    port = free_port()
    with EchoServer() as echo, Netproxyd(MAPPING.format(port=port, backend=echo.port)) as d:
        d.config_path.chmod(0o666)
        d.reload()
        d.wait_log(r"is writable by anyone \(mode 666\)")
        d.wait_log(r"reload failed: keeping the running config")
        got, _ = talk(port, proxy_v1("192.0.2.1", "192.0.2.2", 1, 2) + b"still")
        assert got == b"still"
