"""netproxyd's command line keeps the conventions HAProxy and nginx users have
in their fingers: -v prints the version, SIGUSR1 does not kill, -t fails on a
typo (so ExecStartPre=netproxyd -t catches it), and errors about -l/-b name the
flags, not the config the daemon writes from them."""
import signal
import subprocess

import pytest

from npd import EchoServer, Netproxyd, free_port, proxy_v1, talk, tool


def run(*args):
    return subprocess.run([tool("netproxyd"), *args], capture_output=True, text=True, timeout=10)


@pytest.mark.parametrize("flag", ["-v", "--version"])
def test_v_prints_the_version_and_exits(flag):
    out = run(flag)
    assert out.returncode == 0 and out.stderr == ""
    assert out.stdout.startswith("netproxyd ") and len(out.stdout.splitlines()) == 1, out.stdout


def test_capital_v_says_how_it_was_built():
    out = run("-V")
    assert out.returncode == 0
    lines = out.stdout.splitlines()
    assert lines[0].startswith("netproxyd ") and "Lua 5.4" in lines[1], out.stdout


def test_help_names_the_flags():
    out = run("--help")
    assert out.returncode == 0
    for flag in ("-v, --version", "-d, --debug", "-t, --test", "SIGUSR1"):
        assert flag in out.stdout


@pytest.mark.parametrize("sig", [signal.SIGUSR1, signal.SIGUSR2])
def test_sigusr_is_logged_not_fatal(sig):
    port, name = free_port(), signal.Signals(sig).name
    with EchoServer() as echo, Netproxyd(args=["-l", f"127.0.0.1:{port}", "-b",
                                               f"127.0.0.1:{echo.port}"]) as d:
        d.proc.send_signal(sig)
        d.wait_log(rf"{name}: ignored")
        assert d.proc.poll() is None
        got, _ = talk(port, proxy_v1("192.0.2.1", "192.0.2.2", 1000, 2000) + b"still here")
        assert got == b"still here"


def test_t_fails_on_a_top_level_typo(tmp_path):
    cfg = tmp_path / "n.lua"
    cfg.write_text('proxy_port_mappings = { [15222] = "c2s" }\n'
                   'services = { c2s = { connect = "127.0.0.1:5222" } }\n'
                   'proxy_trusted_proxy = { "192.0.2.1" }\n')
    out = run("-t", "-c", str(cfg))
    assert out.returncode == 1
    assert out.stderr == (f"netproxyd: {cfg}:3: unknown key proxy_trusted_proxy "
                          f"(did you mean proxy_trusted_proxies?)\n")


def test_t_fails_on_a_typo_inside_a_service_with_the_key_meant(tmp_path):
    cfg = tmp_path / "n.lua"
    cfg.write_text('proxy_port_mappings = { [15222] = "c2s" }\n'
                   'services = { c2s = { connect = "127.0.0.1:5222", transparnt = true } }\n')
    out = run("-t", "-c", str(cfg))
    assert out.returncode == 1
    assert 'unknown key "transparnt" (did you mean transparent?)' in out.stderr


@pytest.mark.parametrize("args,code,want", [
    (["-b", "nonsense"], 1, 'netproxyd: -b: "nonsense": expected "host:port"\n'),
    (["-b", "127.0.0.1:0"], 1, 'netproxyd: -b: "127.0.0.1:0": the port must be a number from 1 '
                               'to 65535\n'),
    (["-b", "127.0.0.1:1", "--send-proxy", "v3"], 2,
     "netproxyd: --send-proxy v3: expected v1 or v2\n"),
    (["-b", "127.0.0.1:1", "--trusted", "::1", "--trusted", "1.2.3"], 1,
     'netproxyd: --trusted: "1.2.3" is not an IPv4 or IPv6 address or CIDR block\n'),
])
def test_command_line_errors_name_the_flag(args, code, want):
    """A usage error exits 2, a value the config check refuses 1, as with a file."""
    out = run("-t", "-l", "15222", *args)
    assert out.returncode == code and out.stderr == want
    assert "command line:" not in out.stderr and "false" not in out.stderr


def test_command_line_error_at_start_names_the_flag_in_the_log():
    out = subprocess.run([tool("netproxyd"), "-l", "15222", "-b", "nonsense"], capture_output=True,
                         text=True, timeout=10)
    assert out.returncode == 1
    assert 'error: -b: "nonsense": expected "host:port"' in out.stderr


def test_many_long_command_line_values_are_not_cut_or_overflowed():
    """cli_config had a fixed buffer whose remaining size wrapped: 200 --trusted
    blocks and a long backend now reach the config whole."""
    trusted = []
    for i in range(200):
        trusted += ["--trusted", f"2001:db8:{i:x}::/48"]
    out = run("-t", "-l", "15222", "-b", "127.0.0.1:5222", *trusted)
    assert out.returncode == 0, out.stderr
    line = next(x for x in out.stdout.splitlines() if x.startswith("trusted:"))
    assert len(line.split()) == 201 and "2001:db8:c7::/48" in line
    out = run("-t", "-l", "15222", "-b", "unix:/" + "x" * 5000)
    assert out.returncode == 1 and out.stderr.startswith("netproxyd: -b: ")
