"""`make install` and `make uninstall`: what a packager and a user of the
library get. Installs into temporary directories, with PREFIX and with
DESTDIR, then builds and runs a program against the installed library, found
through pkg-config, both shared and static.

Installed to the real root (DESTDIR empty), `make install` runs ldconfig, or
a program linked with the new library does not start: the loader's cache
does not know it yet. Where PREFIX is a temporary directory, LDCONFIG is a
stand-in that records its calls, so the host's cache is never touched; the
real thing runs in a sandbox of its own (mount namespace: /usr/local an
empty tmpfs, /etc an overlay), as a new user's `make install` would."""
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("NETPROXY_BUILD", REPO / "build"))
VERSION = re.search(r"^VERSION\s*:=\s*(\S+)", (REPO / "Makefile").read_text(), re.M).group(1)

PROGRAM = r"""
#include <netproxy.h>
#include <stdio.h>
#include <string.h>

int main(void)
{
	const char line[] = "PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\nGET /";
	struct np_header h;
	char src[NP_ADDRSTRLEN];
	int n = np_parse(line, sizeof(line) - 1, &h);

	if (n < 0) {
		printf("%s\n", np_errname(n));
		return 1;
	}
	np_format_addr(src, sizeof(src), h.family, &h.src);
	printf("%d %s %u\n", n, src, h.src.port);
	return 0;
}
"""


def make(*args, **env):
    cmd = ["make", "--no-print-directory", f"BUILD={BUILD}", *args]
    return subprocess.run(cmd, cwd=REPO, check=True, capture_output=True, text=True,
                          env={**os.environ, **env})


def recorder(directory):
    """An ldconfig stand-in that appends its arguments to a file; returns
    (its path, a function that reads the calls recorded)."""
    log = directory / "ldconfig.calls"
    exe = directory / "ldconfig"
    exe.write_text(f"#!/bin/sh\necho \"ldconfig $*\" >> {log}\n")
    exe.chmod(0o755)
    return exe, lambda: log.read_text().splitlines() if log.exists() else []


def files_under(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if not p.is_dir())


def exported_functions():
    header = (REPO / "include/netproxy.h").read_text()
    return set(re.findall(r"NP_EXPORT [^;]*?\b(np_\w+)\(", header))


@pytest.fixture(scope="module")
def prefix(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("prefix")
    root = tmp / "usr"
    ldconfig, calls = recorder(tmp)
    make("install", f"PREFIX={root}", f"LDCONFIG={ldconfig}")
    assert calls() == ["ldconfig "], calls()
    return root


def test_layout(prefix):
    lib = prefix / "lib"
    assert (lib / f"libnetproxy.so.{VERSION}").is_file()
    assert os.readlink(lib / "libnetproxy.so.0") == f"libnetproxy.so.{VERSION}"
    assert os.readlink(lib / "libnetproxy.so") == "libnetproxy.so.0"
    for rel in ["lib/libnetproxy.a", "include/netproxy.h", "lib/pkgconfig/libnetproxy.pc",
                "bin/netproxy-dump", "share/man/man1/netproxy-dump.1",
                "share/man/man3/libnetproxy.3"]:
        assert (prefix / rel).is_file(), rel
    assert os.access(prefix / "bin/netproxy-dump", os.X_OK)


def test_soname(prefix):
    out = subprocess.run(["readelf", "-d", prefix / f"lib/libnetproxy.so.{VERSION}"],
                         check=True, capture_output=True, text=True).stdout
    assert "Library soname: [libnetproxy.so.0]" in out


def test_exports_exactly_the_api(prefix):
    out = subprocess.run(["nm", "-D", "--defined-only", prefix / f"lib/libnetproxy.so.{VERSION}"],
                         check=True, capture_output=True, text=True).stdout
    symbols = {m.group(1) for m in re.finditer(r" T (\w+)@", out)}
    api = exported_functions()
    assert len(api) >= 20
    assert symbols == api


def build_and_run(tmp_path, flags, env):
    src = tmp_path / "prog.c"
    src.write_text(PROGRAM)
    exe = tmp_path / "prog"
    subprocess.run(["cc", "-std=c11", "-Wall", "-Werror", str(src), "-o", str(exe), *flags],
                   check=True, capture_output=True, text=True)
    return subprocess.run([str(exe)], check=True, capture_output=True, text=True, env=env).stdout


def test_pkg_config_shared(prefix, tmp_path):
    env = {**os.environ, "PKG_CONFIG_PATH": str(prefix / "lib/pkgconfig")}
    flags = subprocess.run(["pkg-config", "--cflags", "--libs", "libnetproxy"], env=env,
                           check=True, capture_output=True, text=True).stdout.split()
    assert f"-I{prefix}/include" in flags and f"-L{prefix}/lib" in flags
    version = subprocess.run(["pkg-config", "--modversion", "libnetproxy"], env=env,
                             check=True, capture_output=True, text=True).stdout.strip()
    assert version == VERSION
    out = build_and_run(tmp_path, flags + [f"-Wl,-rpath,{prefix}/lib"], env)
    assert out == "45 192.0.2.1 56324\n"
    ldd = subprocess.run(["ldd", str(tmp_path / "prog")], check=True, capture_output=True,
                         text=True).stdout
    assert f"{prefix}/lib/libnetproxy.so.0" in ldd


def test_static(prefix, tmp_path):
    flags = [f"-I{prefix}/include", str(prefix / "lib/libnetproxy.a")]
    assert build_and_run(tmp_path, flags, os.environ) == "45 192.0.2.1 56324\n"


def test_destdir_and_uninstall(tmp_path):
    stage = tmp_path / "stage"
    ldconfig, calls = recorder(tmp_path)
    make("install", f"DESTDIR={stage}", "PREFIX=/opt/np", f"LDCONFIG={ldconfig}")
    assert calls() == [], "ldconfig ran for a DESTDIR install"
    installed = files_under(stage)
    assert "opt/np/lib/libnetproxy.a" in installed
    assert all(f.startswith("opt/np/") for f in installed), installed
    pc = (stage / "opt/np/lib/pkgconfig/libnetproxy.pc").read_text()
    assert "prefix=/opt/np" in pc and str(stage) not in pc
    make("uninstall", f"DESTDIR={stage}", "PREFIX=/opt/np", f"LDCONFIG={ldconfig}")
    assert files_under(stage) == []
    assert calls() == [], "ldconfig ran for a DESTDIR uninstall"
    shutil.rmtree(stage)


def test_uninstall_without_destdir_runs_ldconfig(tmp_path):
    root = tmp_path / "usr"
    ldconfig, calls = recorder(tmp_path)
    make("install", f"PREFIX={root}", f"LDCONFIG={ldconfig}")
    make("uninstall", f"PREFIX={root}", f"LDCONFIG={ldconfig}")
    assert calls() == ["ldconfig ", "ldconfig "], calls()
    assert files_under(root) == []


def why_no_sandbox():
    if os.geteuid() != 0:
        return "needs root: make install to /usr/local runs in a mount namespace"
    r = subprocess.run(["unshare", "-m", "true"], capture_output=True, text=True, timeout=30)
    return None if r.returncode == 0 else f"unshare -m fails here: {r.stderr.strip()}"


# In the sandbox: make install as a user would, then the README's way to
# build a program (pkg-config's default search path, no rpath) and run it.
ROOT_INSTALL = r"""
set -e
mount -t tmpfs tmpfs "$SB"
mkdir "$SB/upper" "$SB/work"
mount -t overlay overlay -o "lowerdir=/etc,upperdir=$SB/upper,workdir=$SB/work" /etc
mount -t tmpfs tmpfs /usr/local
make -s --no-print-directory -C "$REPO" BUILD="$BUILD" $EXTRA install >/dev/null
cd "$SB"
cc -std=c11 -Wall -Werror -o prog "$PROG" $(pkg-config --cflags --libs libnetproxy)
ldd ./prog | grep libnetproxy
exec ./prog
"""
INSTALLED = "libnetproxy.so.0 => /usr/local/lib/libnetproxy.so.0"


@pytest.mark.skipif(why_no_sandbox() is not None, reason=str(why_no_sandbox()))
@pytest.mark.parametrize("ldconfig", ["ldconfig", "none"])
def test_installed_to_the_root_a_program_starts(tmp_path, ldconfig):
    """make install with no DESTDIR, PREFIX /usr/local: a program built with
    pkg-config starts, with the library just installed, because install ran
    ldconfig. The control installs with LDCONFIG=true (what the Makefile did
    before): the loader then does not find that library, and the program
    does not start (or, where another libnetproxy.so.0 is installed on the
    host, starts with that one)."""
    src = tmp_path / "prog.c"
    src.write_text(PROGRAM)
    sb = tmp_path / "sandbox"
    sb.mkdir()
    env = {**os.environ, "SB": str(sb), "REPO": str(REPO), "BUILD": str(BUILD.resolve()),
           "PROG": str(src), "EXTRA": "" if ldconfig == "ldconfig" else "LDCONFIG=true"}
    r = subprocess.run(["unshare", "-m", "bash", "-c", ROOT_INSTALL], env=env,
                       capture_output=True, text=True, timeout=120)
    if ldconfig == "ldconfig":
        assert r.returncode == 0, r.stdout + r.stderr
        assert INSTALLED in r.stdout, r.stdout
        assert r.stdout.endswith("45 192.0.2.1 56324\n"), r.stdout
    else:
        assert INSTALLED not in r.stdout, r.stdout + r.stderr
        assert r.returncode != 0 or "=> /usr/local/lib/" not in r.stdout, r.stdout + r.stderr
