#!/bin/sh
# Install, from Debian's packages, whatever building and testing netproxy need.
# Idempotent and silent when everything is present. As a user other than
# root it installs nothing and prints the exact command to run instead.
set -eu

# Building: compilers, make, ar, Lua 5.4 for the daemon's config, libcap for
# its privileges. Testing:
# prove (perl), pytest, mandoc for the man page lint, clang's sanitizer and
# libFuzzer runtimes, gcc's ThreadSanitizer runtime (make tsan), pkg-config,
# readelf and nm for the install test.
PACKAGES="make gcc libc6-dev binutils pkgconf liblua5.4-dev libcap-dev clang libclang-rt-14-dev libtsan2 perl python3 python3-pytest mandoc"
# The Lua binding's tests: the lua5.4 interpreter, and LuaSocket for sockets.
PACKAGES="$PACKAGES lua5.4 lua-socket"
# make bench-prosody runs the original mod_net_proxy, which needs a bit library.
PACKAGES="$PACKAGES lua-bitop"
# Real peers for the integration tests, and prlimit (util-linux).
PACKAGES="$PACKAGES haproxy nginx-light prosody curl openssl util-linux iproute2"
# nginx-light is built for a dynamic stream module it does not ship: make
# bench-compare's nginx receiver (listen ... proxy_protocol; proxy_pass).
PACKAGES="$PACKAGES libnginx-mod-stream"
# The systemd tests: systemd-analyze (verify, security) and
# systemd-socket-activate, without systemd as PID 1; setpriv (util-linux).
PACKAGES="$PACKAGES systemd"
# The metrics tests: promtool checks netproxyd's exposition, and a real
# Prometheus server scrapes it and answers a query (tests/integration/test_metrics.py).
PACKAGES="$PACKAGES prometheus"
# make deb and make check-deb (DEB=1): Debian's packaging tools and lintian.
if [ "${DEB:-}" = 1 ]; then
	PACKAGES="$PACKAGES dpkg-dev debhelper fakeroot lintian"
fi

if ! command -v dpkg-query >/dev/null 2>&1; then
	echo "deps.sh: not a Debian system; make sure these are installed: $PACKAGES" >&2
	exit 0
fi

missing=""
for p in $PACKAGES; do
	if ! dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
		missing="$missing $p"
	fi
done
[ -z "$missing" ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
	echo "deps.sh: missing Debian packages:$missing" >&2
	echo "deps.sh: run as root: apt-get update && apt-get install -y --no-install-recommends$missing" >&2
	exit 1
fi

echo "deps.sh: installing:$missing" >&2
export DEBIAN_FRONTEND=noninteractive
# HAProxy, nginx and Prosody are test peers that the tests start themselves:
# keep their packages from starting system services (policy-rc.d, Debian's
# own switch).
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
	printf '#!/bin/sh\nexit 101\n' > "$policy"
	chmod 755 "$policy"
	trap 'rm -f "$policy"' EXIT
fi
apt-get update -qq
# shellcheck disable=SC2086 # one word per package
apt-get install -y -qq --no-install-recommends $missing >/dev/null
