"""`make install` and `make uninstall`: what a packager and a user of the
library get. Installs into temporary directories, with PREFIX and with
DESTDIR, then builds and runs a program against the installed library, found
through pkg-config, both shared and static."""
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


def files_under(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if not p.is_dir())


def exported_functions():
    header = (REPO / "include/netproxy.h").read_text()
    return set(re.findall(r"NP_EXPORT [^;]*?\b(np_\w+)\(", header))


@pytest.fixture(scope="module")
def prefix(tmp_path_factory):
    root = tmp_path_factory.mktemp("prefix") / "usr"
    make("install", f"PREFIX={root}")
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
    make("install", f"DESTDIR={stage}", "PREFIX=/opt/np")
    installed = files_under(stage)
    assert "opt/np/lib/libnetproxy.a" in installed
    assert all(f.startswith("opt/np/") for f in installed), installed
    pc = (stage / "opt/np/lib/pkgconfig/libnetproxy.pc").read_text()
    assert "prefix=/opt/np" in pc and str(stage) not in pc
    make("uninstall", f"DESTDIR={stage}", "PREFIX=/opt/np")
    assert files_under(stage) == []
    shutil.rmtree(stage)
