-- netproxyd.conf.lua - an example netproxyd configuration showing every key.
--
-- The file is Lua 5.4: each global assignment is a setting. It runs in a
-- sandbox (no io, os, require, load, print; string, table and math are
-- there), so locals and small helper functions are fine:
--
--     local prosody = "127.0.0.1"
--
-- A global that is not a setting below is warned about and ignored, so a
-- typo never passes silently. Check a file without starting the daemon:
--
--     netproxyd -t -c /etc/netproxyd.conf.lua
--
-- The first three keys are mod_net_proxy's, read unchanged: a Prosody
-- config's lines can be copied here as they are. netproxyd also reads a
-- whole prosody.cfg.lua (netproxyd -c /etc/prosody/prosody.cfg.lua), or
-- this file can take Prosody's in, and add only what Prosody cannot say:
--
--     Include "/etc/prosody/prosody.cfg.lua"
--     services = { c2s = { transparent = true } }
--
-- See PROSODY'S CONFIGURATION in netproxyd.conf(5).

-- Which local port goes to which service: a name from `services` below, or
-- one of Prosody's services (c2s, s2s, c2s_direct_tls, s2s_direct_tls,
-- legacy_ssl, http, https, proxy65), found where Prosody's keys say it
-- listens (c2s_ports, interfaces, ...; by default 127.0.0.1:5222 for c2s).
-- Connections arrive with a PROXY header (v1 or v2) from a trusted proxy;
-- netproxyd reads it and relays the rest of the stream to the service.
proxy_port_mappings = {
	[15222] = "c2s",
	[15269] = "s2s",
	[15280] = "http",
	[15080] = "web",
}

-- The ports to listen on. Optional: by default every port mapped above, in
-- ascending order. An entry is a port (listened on at every address in
-- proxy_interfaces) or "address:port" / "[IPv6]:port" (exactly that address).
-- A port without a mapping is allowed, with a warning: its connections are
-- closed once their header is read. A mapped port missing from an explicit
-- list is not listened on (also warned about).
proxy_ports = {
	15222,
	15269,
	"127.0.0.1:15280",
	"127.0.0.1:15080",
}

-- The addresses the numeric entries of proxy_ports listen on. Default
-- { "*" }: every IPv4 and IPv6 address (a family the host lacks is skipped
-- with a warning). "0.0.0.0" is every IPv4 address, "::" every IPv6 one;
-- anything else is one numeric address.
proxy_interfaces = { "*" }

-- Who may send PROXY headers: addresses and CIDR blocks, IPv4 and IPv6. A
-- connection from anywhere else is closed before a byte of it is read.
-- Default { "127.0.0.1", "::1" }. IPv4 entries also match IPv4 peers seen
-- on an IPv6 socket (::ffff:10.0.0.5). An empty list trusts EVERY host, so
-- anyone could claim any address: the daemon warns loudly if you do that.
proxy_trusted_proxies = {
	"127.0.0.1",
	"::1",
	"10.0.0.0/8",
	"2001:db8:1::/48",
}

-- Seconds a connection may take to send its header (fractions allowed).
-- Default 5; the PROXY specification recommends at least 3.
proxy_header_timeout = 5

-- The largest header accepted, in bytes (16 to 65551). Default 4096. Below
-- 107 long v1 lines are refused; below 232, v2 headers with UNIX addresses.
proxy_max_header = 4096

-- Where each service lives and how it learns the client's address.
services = {
	c2s = {
		-- Required: "host:port" (a name is resolved once, at load),
		-- "[IPv6]:port" or "unix:/path/to/socket". Only one of
		-- Prosody's services may leave it out: then it is found where
		-- Prosody listens.
		connect = "127.0.0.1:5222",
		-- How the service learns the client: false (the default) strips
		-- the header and only the log sees the client; "v1" or "v2" send
		-- a fresh PROXY header first, for servers that read one.
		send_proxy = false,
		-- Seconds to wait for the service to accept (default 5).
		connect_timeout = 5,
		-- Close a connection after this many seconds without traffic
		-- (default 0: never).
		idle_timeout = 0,
	},
	s2s = {
		connect = "[::1]:5269",
		send_proxy = "v2",
		-- v2 only: TLVs of the incoming header to pass on, by name (ALPN,
		-- AUTHORITY, NOOP, UNIQUE_ID, SSL, NETNS, AWS, AZURE, GCP) or type
		-- number 0 to 255. CRC32C is never passed on: see crc32c.
		pass_tlvs = { "ALPN", "AUTHORITY", "SSL" },
		-- v2 only: add a CRC32C checksum to the header sent.
		crc32c = true,
		connect_timeout = 2.5,
		idle_timeout = 900,
	},
	http = {
		connect = "unix:/run/prosody/http.sock",
		send_proxy = "v1",
	},
	web = {
		connect = "127.0.0.1:8080",
		-- Connect from the client's own address (IP_TRANSPARENT), so that an
		-- unmodified server sees the client in getpeername(), its logs and
		-- its ACLs. Needs CAP_NET_ADMIN and policy routing for the replies:
		-- netproxyd --setup-routing installs it; see netproxyd(8).
		transparent = true,
		-- Keep the client's port too (the default); when it is taken here,
		-- another port is used and the log says so.
		transparent_port = true,
		-- A firewall mark (SO_MARK) on the connection to the service, for
		-- policy routing of your own (1 to 4294967295).
		-- mark = 1,
	},
}

-- After binding, run as this user and group, keeping only CAP_NET_ADMIN
-- (while a service is transparent or marks) and CAP_NET_BIND_SERVICE (while
-- a port is below 1024). Needs a start as root.
-- user = "netproxy"
-- group = "netproxy"

-- Worker threads, each with its own listening sockets: 0 (the default)
-- means one per CPU; at most 256.
workers = 0

-- Connections open at once, across all workers. By default as many as the
-- descriptor limit allows (two descriptors each; netproxyd says how many at
-- start); set it to choose fewer. At the limit, the connection waiting longest
-- for its header is closed to make room for a new one.
-- max_connections = 10000

-- On SIGTERM, stop accepting and let relayed connections finish for up to
-- this many seconds (default 30; 0 closes them at once). Keep the unit's
-- TimeoutStopSec above it.
-- shutdown_grace = 30

-- Serve counters to Prometheus (GET /metrics) and the list of live
-- connections (GET /connections, /connections.json) over HTTP, here or on a
-- UNIX socket ("/run/netproxyd/stats.sock"). Off by default; read at start
-- only. It lists every client's address: keep it on loopback.
-- stats_listen = "127.0.0.1:9100"

-- "error", "warn", "info" (the default) or "debug".
log_level = "info"

-- Which line a connection that reaches its service has: "established" (the
-- default: the client, the service and the address the service sees, when
-- it is reached), "closed" (with the bytes and the reason, when it ends) or
-- "both".
log_connections = "established"

-- Log to syslog instead of standard error (default false).
log_syslog = false
