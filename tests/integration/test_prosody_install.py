"""`make install` for a Prosody admin (issue 14): the Lua binding where Lua 5.4
finds it, mod_net_proxy where one plugin_paths line finds it; then Debian's
Prosody loads both from a DESTDIR install and serves a PROXY port with them.

    make install DESTDIR=<stage> PREFIX=/usr/local
      <stage>/usr/local/lib/lua/5.4/netproxy.so           (Lua 5.4's default cpath)
      <stage>/usr/local/lib/prosody/modules/mod_net_proxy.lua

Prosody runs in a network namespace made here, as the prosody user, with
plugin_paths naming the staged modules directory and LUA_CPATH_5_4 the staged
Lua directory: what PREFIX=/usr/local without DESTDIR gives with Lua's own
cpath. Every process is stopped by PID, the namespace and the stage removed.
"""
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from netns import Lab, in_ns, ns_exec, why_no_netns
from npd import proxy_v2, wait_for
from xmpp import (C2S_STREAM, TIMEOUT, XmppStream, listening_ports, prosody_stack,
                  skip_reason as xmpp_skip_reason)

REPO = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("NETPROXY_BUILD", REPO / "build"))
PREFIX = "/usr/local"
LUA_DIR = f"{PREFIX}/lib/lua/5.4"
MODULE_DIR = f"{PREFIX}/lib/prosody/modules"


def make(*args):
    return subprocess.run(["make", "--no-print-directory", f"BUILD={BUILD}", *args], cwd=REPO,
                          check=True, capture_output=True, text=True)


@pytest.fixture(scope="module")
def stage():
    # Readable by the prosody user all the way down (pytest's tmp dirs are not).
    root = Path(tempfile.mkdtemp(prefix="np-prosody-install-"))
    os.chmod(root, 0o755)
    try:
        make("install", f"DESTDIR={root}", f"PREFIX={PREFIX}")
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_layout(stage):
    so = stage / LUA_DIR.lstrip("/") / "netproxy.so"
    mod = stage / MODULE_DIR.lstrip("/") / "mod_net_proxy.lua"
    assert so.is_file() and mod.is_file()
    assert mod.read_bytes() == (REPO / "prosody" / "mod_net_proxy.lua").read_bytes()
    assert oct(so.stat().st_mode & 0o777) == "0o644" and oct(mod.stat().st_mode & 0o777) == "0o644"


def test_the_lua_directory_is_in_lua_54s_default_cpath():
    """Without DESTDIR, require "netproxy" needs no setting: Lua 5.4's own
    cpath has PREFIX/lib/lua/5.4/?.so."""
    cpath = subprocess.run(["lua5.4", "-e", "io.write(package.cpath)"], capture_output=True,
                           text=True, check=True, env={"PATH": os.environ["PATH"]}).stdout
    assert f"{LUA_DIR}/?.so" in cpath.split(";"), cpath


def test_the_binding_stands_alone(stage):
    """The library is inside the module: no libnetproxy.so to find at run
    time, and only luaopen_netproxy exported."""
    so = stage / LUA_DIR.lstrip("/") / "netproxy.so"
    ldd = subprocess.run(["ldd", str(so)], capture_output=True, text=True).stdout
    assert "libnetproxy" not in ldd, ldd
    syms = subprocess.run(["nm", "-D", "--defined-only", str(so)], capture_output=True, text=True,
                          check=True).stdout
    assert re.findall(r" T (\w+)", syms) == ["luaopen_netproxy"], syms
    out = subprocess.run(["lua5.4", "-e", 'local np = require "netproxy"; io.write(np.VERSION, " ", '
                          'select(2, np.parse("PROXY UNKNOWN\\r\\n")))'], capture_output=True,
                         text=True, env={**os.environ,
                                         "LUA_CPATH_5_4": f"{stage}{LUA_DIR}/?.so"})
    assert re.fullmatch(r"\d+\.\d+\.\d+ 15", out.stdout), out.stdout + out.stderr


_SKIP = why_no_netns() or xmpp_skip_reason()


@pytest.mark.skipif(_SKIP is not None, reason=str(_SKIP))
def test_prosody_loads_the_installed_module(stage):
    """One plugin_paths line, and Prosody serves a PROXY port with the
    installed module and binding."""
    extra = (f'plugin_paths = {{ "{stage}{MODULE_DIR}" }}\n'
             'modules_enabled = { "roster"; "saslauth"; "tls"; "disco"; "ping"; "net_proxy" }\n'
             'proxy_port_mappings = { [15222] = "c2s" }\n')
    env = {"LUA_CPATH_5_4": f"{stage}{LUA_DIR}/?.so;;"}

    def stream(port):
        with XmppStream("127.0.0.1", port, source="127.0.0.1") as xs:
            xs.sock.sendall(proxy_v2("203.0.113.7", "192.0.2.1", 50000, 5222))
            return xs.open(C2S_STREAM)

    with Lab() as lab:
        ns = lab.ns("install")
        with prosody_stack({"c2s": 5222}, {}, {}, prefix=ns_exec(ns), haproxy=False, extra=extra,
                           env=env) as st:
            wait_for(lambda: 15222 in listening_ports(st.prosody.pid), TIMEOUT,
                     "Prosody on the PROXY port")
            features = in_ns(ns, stream, 15222)
            assert b"<stream:features" in features, features
            log = st.prosody_log()
            line = re.search(r"mod_net_proxy\tinfo\tClient 203\.0\.113\.7 port 50000 via "
                             r"127\.0\.0\.1 port \d+ \(PROXY v2 PROXY\) to c2s", log)
            assert line, st.debug()
            # Nowhere else could Prosody have found it.
            assert not Path("/usr/lib/prosody/modules/mod_net_proxy.lua").exists()
            print(f"\n{line.group(0)}")
