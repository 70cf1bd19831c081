"""The Debian packages: `make deb` builds them with Debian's tools, lintian
finds no error or warning, and they install, work and purge cleanly.

Installs packages on this machine (and purges them again), so it runs only
from `make check-deb` (NETPROXY_DEB=1), as root, with dpkg-buildpackage and
debhelper present (make check-deb installs them), and only when none of
netproxy's packages is installed already: it never touches an admin's.
"""
import os
import re
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

from npd import find_exe

REPO = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("NETPROXY_BUILD") or REPO / "build")
PACKAGES = ["libnetproxy0", "libnetproxy-dev", "netproxyd", "libnetproxy-preload"]
CONFIG = "/etc/netproxyd/netproxyd.conf.lua"

pytestmark = [
    pytest.mark.skipif(os.environ.get("NETPROXY_DEB") != "1",
                       reason="installs packages on this machine: run it with make check-deb"),
    pytest.mark.skipif(os.geteuid() != 0, reason="dpkg -i needs root"),
    pytest.mark.skipif(not shutil.which("dpkg-buildpackage") or not shutil.which("dh"),
                       reason="dpkg-buildpackage or debhelper is missing (DEB=1 scripts/deps.sh)"),
]


def run(*cmd, check=True, **kw):
    return subprocess.run(list(cmd), check=check, capture_output=True, text=True, **kw)


def installed(pkg):
    r = run("dpkg-query", "-W", "-f=${Status}", pkg, check=False)
    return r.returncode == 0 and "installed" in r.stdout.split()


def purge():
    run("dpkg", "--purge", *PACKAGES, check=False)


@pytest.fixture(scope="module")
def debs():
    r = subprocess.run(["make", "--no-print-directory", f"BUILD={BUILD}", "deb"], cwd=REPO,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    out = BUILD / "deb"
    found = {p.name.split("_")[0]: p for p in out.glob("*.deb")}
    assert set(PACKAGES) <= set(found), sorted(found)
    return out, [found[p] for p in PACKAGES]


def test_lintian_clean(debs):
    out, _ = debs
    report = (out / "lintian.txt").read_text()
    bad = [line for line in report.splitlines() if re.match(r"[EW]: ", line)]
    assert bad == [], "\n".join(bad)


@pytest.fixture(scope="module")
def install(debs):
    _, files = debs
    already = [p for p in PACKAGES if installed(p)]
    if already:
        pytest.skip(f"already installed here, left alone: {' '.join(already)}")
    r = run("dpkg", "-i", *map(str, files), check=False)
    try:
        assert r.returncode == 0, r.stdout + r.stderr
        yield {p: run("dpkg", "-L", p).stdout.split("\n") for p in PACKAGES}
    finally:
        purge()


def test_installed_layout(install):
    files = {f for listing in install.values() for f in listing}
    for path in ["/usr/bin/netproxyd", "/lib/systemd/system/netproxyd.service",
                 "/lib/systemd/system/netproxyd.socket",
                 "/lib/systemd/system/netproxyd-routing.service",
                 "/usr/lib/sysusers.d/netproxyd.conf", CONFIG, "/usr/include/netproxy.h",
                 "/usr/share/man/man8/netproxyd.8.gz", "/usr/share/man/man3/libnetproxy.3.gz"]:
        assert path in files and os.path.exists(path), path
    assert any(re.search(r"/libnetproxy\.so\.0$", f) for f in install["libnetproxy0"])
    assert any(f.endswith("/netproxy/libnetproxy_preload.so") for f in install["libnetproxy-preload"])
    conffiles = run("dpkg-query", "-W", "-f=${Conffiles}", "netproxyd").stdout
    assert CONFIG in conffiles
    st = os.stat(CONFIG)
    # netproxyd refuses a config that anyone but root may write.
    assert st.st_uid == 0 and st.st_gid == 0 and st.st_mode & 0o022 == 0


def test_user_and_units(install):
    pw = run("getent", "passwd", "netproxyd").stdout.strip().split(":")
    assert int(pw[2]) < 1000 and pw[6] in ("/usr/sbin/nologin", "/sbin/nologin"), pw
    assert run("getent", "group", "netproxyd").returncode == 0
    # Enabled as Debian enables a service, without systemd running.
    assert os.path.islink("/etc/systemd/system/multi-user.target.wants/netproxyd.service")
    assert not os.path.exists("/etc/systemd/system/sockets.target.wants/netproxyd.socket")
    analyze = find_exe("systemd-analyze")
    r = run(analyze, "verify", "netproxyd.service", "netproxyd.socket",
            "netproxyd-routing.service", cwd="/lib/systemd/system", check=False)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    r = run(analyze, "security", "--offline=yes", "/lib/systemd/system/netproxyd.service")
    score = float(re.search(r"Overall exposure level for \S+: (\d+\.\d+)", r.stdout).group(1))
    assert score <= 2.5, r.stdout


def test_shipped_config_checks_and_runs(install):
    """netproxyd -t on the shipped config, as root and as the unit's user, then
    the daemon itself as the unit runs it (its user, no capability), in a
    network namespace of its own so that its ports 15222 and 15269 are free."""
    r = run("netproxyd", "-t", "-c", CONFIG)
    assert r.stdout.endswith(f"config {CONFIG} is valid\n"), r.stdout + r.stderr
    as_unit = ["setpriv", "--reuid=netproxyd", "--regid=netproxyd", "--clear-groups",
               "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--"]
    r = run(*as_unit, "netproxyd", "-t", "-c", CONFIG, check=False)
    assert r.returncode == 0, r.stderr

    tmp = tempfile.mkdtemp(prefix="npd-deb-")
    os.chmod(tmp, 0o755)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.bind(f"{tmp}/notify")
        os.chmod(f"{tmp}/notify", 0o777)
        sock.settimeout(10)
        script = ('ip link set lo up && exec "$@"')
        proc = subprocess.Popen(["unshare", "--net", "sh", "-c", script, "sh", *as_unit,
                                 "/usr/bin/netproxyd", "-c", CONFIG],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env={**os.environ, "NOTIFY_SOCKET": f"{tmp}/notify"},
                                start_new_session=True)
        try:
            msg = sock.recv(4096).decode()
        finally:
            proc.terminate()
            out, _ = proc.communicate(10)
        assert msg.startswith("READY=1\nSTATUS=running generation 1:"), msg + out
        assert "listening address" in msg, msg
        assert proc.returncode == 0, out
    finally:
        sock.close()
        shutil.rmtree(tmp)


def test_purge_leaves_nothing(install):
    """Purged (the last test: the others use the installed packages): no file
    of the packages stays, nor the config, its directory or the units'
    enablement. (The system user stays, as every Debian package's does:
    files it owned may outlive it.)"""
    listed = {f for listing in install.values() for f in listing if f}
    purge()
    assert not any(installed(p) for p in PACKAGES)
    left = sorted(f for f in listed if os.path.lexists(f) and not os.path.isdir(f))
    assert left == []
    assert not os.path.exists("/etc/netproxyd")
    for d in ("/etc/systemd/system", "/var/lib/systemd/deb-systemd-helper-enabled"):
        found = [str(p) for p in Path(d).rglob("*netproxyd*")] if os.path.isdir(d) else []
        assert found == [], found
