/*
 * test_npd_config.c - netproxyd's config: the built-in default, each key's
 * valid forms and errors (exact messages), warnings, line numbers in nested
 * tables, the sandbox, CIDR parsing and matching, and loading files.
 *
 * Snippets are loaded as "t.lua", so messages read "t.lua:LINE: KEY: ...".
 * In an expected message, '*' stands for any text. Every load is freed, also
 * on errors: the ASan build's leak checker sees every error path here.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "backend.h"
#include "config.h"
#include "config_check.h"
#include "tap.h"

#define C2S "services = { c2s = { connect = \"127.0.0.1:5222\" } }\n"
#define MAP "proxy_port_mappings = { [15222] = \"c2s\" }\n"

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Each key's errors; the line is where the key is assigned. */
static const struct {
	const char *lua;
	const char *want;
} errors[] = {
	/* Tunables. */
	{"proxy_header_timeout = \"5\"\n" MAP C2S,
	 "t.lua:1: proxy_header_timeout: expected a number of seconds, got string"},
	{"proxy_header_timeout = 0\n" MAP C2S,
	 "t.lua:1: proxy_header_timeout: expected more than 0 seconds, at most 2147483, got 0"},
	{MAP C2S "proxy_header_timeout = -1\n", "t.lua:3: proxy_header_timeout: expected more than 0*"},
	{"proxy_header_timeout = 1e10\n" MAP C2S, "t.lua:1: proxy_header_timeout: * got 10000000000"},
	{"proxy_header_timeout = 0/0\n" MAP C2S, "t.lua:1: proxy_header_timeout: expected more*"},
	{"proxy_max_header = 15\n" MAP C2S,
	 "t.lua:1: proxy_max_header: expected a number of bytes from 16 to 65551, got 15"},
	{"proxy_max_header = 65552\n" MAP C2S, "t.lua:1: proxy_max_header: * got 65552"},
	{"proxy_max_header = 4096.5\n" MAP C2S, "t.lua:1: proxy_max_header: * got 4096.5"},
	{"proxy_max_header = \"4096\"\n" MAP C2S, "t.lua:1: proxy_max_header: * got string"},
	{"workers = 257\n" MAP C2S,
	 "t.lua:1: workers: expected a number of threads from 0 (one per CPU) to 256, got 257"},
	{"workers = -1\n" MAP C2S, "t.lua:1: workers: * got -1"},
	{"workers = 1.5\n" MAP C2S, "t.lua:1: workers: * got 1.5"},
	{"max_connections = 0\n" MAP C2S,
	 "t.lua:1: max_connections: expected a number of connections, at least 1, got 0"},
	{"log_level = \"verbose\"\n" MAP C2S,
	 "t.lua:1: log_level: expected \"error\", \"warn\", \"info\" or \"debug\", got \"verbose\""},
	{"log_level = 2\n" MAP C2S, "t.lua:1: log_level: * got 2"},
	{"log_syslog = \"yes\"\n" MAP C2S, "t.lua:1: log_syslog: expected true or false, got string"},

	/* proxy_port_mappings. */
	{"proxy_port_mappings = \"c2s\"\n" C2S,
	 "t.lua:1: proxy_port_mappings: expected a table such as { [15222] = \"c2s\" }, got string"},
	{"proxy_port_mappings = { [0] = \"c2s\" }\n" C2S,
	 "t.lua:1: proxy_port_mappings: expected port numbers from 1 to 65535 as keys, got 0"},
	{"proxy_port_mappings = { [65536] = \"c2s\" }\n" C2S, "t.lua:1: proxy_port_mappings: * got 65536"},
	{"proxy_port_mappings = { [\"c2s\"] = \"c2s\" }\n" C2S,
	 "t.lua:1: proxy_port_mappings: * got \"c2s\""},
	{"proxy_port_mappings = { [\"015222\"] = \"c2s\" }\n" C2S,
	 "t.lua:1: proxy_port_mappings: * got \"015222\""},
	{"proxy_port_mappings = { [\"15222\"] = \"c2s\", [15222] = \"c2s\" }\n" C2S,
	 "t.lua:1: proxy_port_mappings: port 15222 is mapped twice (as 15222 and as \"15222\")"},
	{"proxy_port_mappings = { [15222] = 5 }\n" C2S,
	 "t.lua:1: proxy_port_mappings[15222]: expected a service name, got number"},
	{"proxy_port_mappings = { [15222] = \"\" }\n" C2S,
	 "t.lua:1: proxy_port_mappings[15222]: expected a service name, got \"\""},
	/* The first bad mapping by port, whatever the table's order. */
	{"proxy_port_mappings = { [9] = \"c2s\", [7] = {}, [8] = 1 }\n" C2S,
	 "t.lua:1: proxy_port_mappings[7]: expected a service name, got table"},

	/* proxy_ports and proxy_interfaces. */
	{"proxy_ports = { 0 }\n" MAP C2S,
	 "t.lua:1: proxy_ports[1]: expected a port from 1 to 65535 or \"address:port\", got 0"},
	{"proxy_ports = { 15222, true }\n" MAP C2S, "t.lua:1: proxy_ports[2]: * got true"},
	{"proxy_ports = { \"localhost:15222\" }\n" MAP C2S,
	 "t.lua:1: proxy_ports[1]: \"localhost:15222\": expected a numeric IPv4 address or an IPv6 "
	 "one in brackets"},
	{"proxy_ports = { \"[127.0.0.1]:15222\" }\n" MAP C2S,
	 "t.lua:1: proxy_ports[1]: \"[127.0.0.1]:15222\": expected a numeric IPv4*"},
	{"proxy_ports = { \"::1:15222\" }\n" MAP C2S,
	 "t.lua:1: proxy_ports[1]: \"::1:15222\": write an IPv6 address in brackets, as in "
	 "\"[::1]:5222\""},
	{"proxy_ports = { \"127.0.0.1:0\" }\n" MAP C2S,
	 "t.lua:1: proxy_ports[1]: \"127.0.0.1:0\": the port must be a number from 1 to 65535"},
	{"proxy_ports = { \"127.0.0.1\" }\n" MAP C2S,
	 "t.lua:1: proxy_ports[1]: \"127.0.0.1\": expected \"host:port\""},
	{"proxy_ports = { 15222, 15222 }\n" MAP C2S,
	 "t.lua:1: proxy_ports[2]: 0.0.0.0:15222 is listed twice"},
	{"proxy_ports = { \"[::1]:15222\", \"[0::1]:15222\" }\n" MAP C2S,
	 "t.lua:1: proxy_ports[2]: [::1]:15222 is listed twice"},
	/* Found after thousands of listeners (the set is rehashed many times on the way). */
	{"proxy_ports = {} for p = 20000, 24999 do proxy_ports[#proxy_ports + 1] = p end "
	 "proxy_ports[#proxy_ports + 1] = \"[::]:20007\"\n" MAP C2S,
	 "t.lua:1: proxy_ports[5001]: [::]:20007 is listed twice"},
	{"proxy_ports = { c2s = 15222 }\n" MAP C2S,
	 "t.lua:1: proxy_ports: expected a list, found the key \"c2s\""},
	{"proxy_ports = { 15222, nil, 15269 }\n" MAP C2S, "t.lua:1: proxy_ports: expected a list*"},
	{"proxy_ports = {}\n" MAP C2S, "t.lua:1: proxy_ports: the list is empty: nothing to listen on"},
	{"proxy_interfaces = { \"localhost\" }\n" MAP C2S,
	 "t.lua:1: proxy_interfaces[1]: expected \"*\", \"::\", \"0.0.0.0\" or a numeric IP address, "
	 "got \"localhost\""},
	{"proxy_interfaces = { \"[::1]\" }\n" MAP C2S, "t.lua:1: proxy_interfaces[1]: expected*"},
	{"proxy_interfaces = { \"::\", \"::\" }\n" MAP C2S,
	 "t.lua:1: proxy_interfaces[2]: \"::\" repeats an address listed before"},
	{"proxy_interfaces = {}\n" MAP C2S,
	 "t.lua:1: proxy_interfaces: the list is empty: nothing to listen on"},
	{"", "t.lua: proxy_port_mappings: nothing to listen on: map a port to a service*"},
	{C2S, "t.lua: proxy_port_mappings: nothing to listen on*"},

	/* proxy_trusted_proxies. */
	{"proxy_trusted_proxies = { \"10.0.0.0/33\" }\n" MAP C2S,
	 "t.lua:1: proxy_trusted_proxies[1]: \"10.0.0.0/33\" is not an IPv4 or IPv6 address or "
	 "CIDR block"},
	{"proxy_trusted_proxies = { \"::1\", \"gateway.example\" }\n" MAP C2S,
	 "t.lua:1: proxy_trusted_proxies[2]: \"gateway.example\" is not*"},
	{"proxy_trusted_proxies = { \"::ffff:127.0.0.0/104\" }\n" MAP C2S,
	 "t.lua:1: proxy_trusted_proxies[1]: \"::ffff:127.0.0.0/104\" is an IPv4-mapped block, which "
	 "no peer matches: a v4-mapped peer is matched as IPv4; write \"127.0.0.0/8\""},
	{"proxy_trusted_proxies = { 10 }\n" MAP C2S,
	 "t.lua:1: proxy_trusted_proxies[1]: expected an address or a CIDR block such as "
	 "\"10.0.0.0/8\", got number"},
	{"proxy_trusted_proxies = \"1.2.3\"\n" MAP C2S,
	 "t.lua:1: proxy_trusted_proxies: \"1.2.3\" is not*"},

	/* services. */
	{MAP "services = 5\n",
	 "t.lua:2: services: expected a table such as { c2s = { connect = \"127.0.0.1:5222\" } }, "
	 "got number"},
	{MAP "services = { [\"c2s x\"] = { connect = \"127.0.0.1:1\" } }\n",
	 "t.lua:2: services: invalid service name \"c2s x\": use 1 to 63 letters, digits, '_', '.' "
	 "or '-' (not \"-\" alone)"},
	/* "-" is a port mapped to no service, in the log and in the metrics. */
	{MAP "services = { [\"-\"] = { connect = \"127.0.0.1:1\" } }\n",
	 "t.lua:2: services: invalid service name \"-\"*"},
	{MAP "services = { [string.rep(\"a\", 64)] = { connect = \"127.0.0.1:1\" } }\n",
	 "t.lua:2: services: invalid service name*"},
	{MAP "services = { [\"\"] = { connect = \"127.0.0.1:1\" } }\n",
	 "t.lua:2: services: invalid service name \"\"*"},
	{MAP "services = { { connect = \"127.0.0.1:1\" } }\n",
	 "t.lua:2: services: expected service names as keys, got 1"},
	{MAP "services = { c2s = \"127.0.0.1:5222\" }\n",
	 "t.lua:2: services.c2s: expected a table such as { connect = \"127.0.0.1:5222\" }, got "
	 "string"},
	{"proxy_port_mappings = { [15222] = \"xmpp\" }\nservices = { xmpp = {} }\n",
	 "t.lua:2: services.xmpp.connect: missing: say where the service is, as \"127.0.0.1:5222\", "
	 "\"[::1]:5222\" or \"unix:/run/service.sock\" (only Prosody's services, c2s, s2s, "
	 "c2s_direct_tls, s2s_direct_tls, legacy_ssl, http, https, proxy65, can do without: they "
	 "are found where Prosody's config says)"},
	{MAP "services = { c2s = { connect = 5222 } }\n",
	 "t.lua:2: services.c2s.connect: expected \"host:port\", \"[address]:port\", "
	 "\"unix:/path\" or a list of them, got number"},
	/* A list: one address per family at most; a UNIX socket alone; not empty. */
	{MAP "services = { c2s = { connect = { \"127.0.0.1:5222\", \"127.0.0.2:5222\" } } }\n",
	 "t.lua:2: services.c2s.connect[2]: \"127.0.0.2:5222\" is a second IPv4 address, after "
	 "\"127.0.0.1:5222\": a service has at most one address per family"},
	{MAP "services = { c2s = { connect = { \"[::1]:1\", \"127.0.0.1:1\", \"[::2]:1\" } } }\n",
	 "t.lua:2: services.c2s.connect[3]: \"[::2]:1\" is a second IPv6 address, after "
	 "\"[::1]:1\": *"},
	{MAP "services = { c2s = { connect = { \"[::ffff:127.0.0.1]:1\", \"127.0.0.1:2\" } } }\n",
	 "t.lua:2: services.c2s.connect[2]: \"127.0.0.1:2\" is a second IPv4 address, after "
	 "\"[::ffff:127.0.0.1]:1\": *"},
	{MAP "services = { c2s = { connect = { \"unix:/run/s\", \"[::1]:1\" } } }\n",
	 "t.lua:2: services.c2s.connect[2]: \"unix:/run/s\" and \"[::1]:1\": a unix: socket is a "
	 "service's only address"},
	{MAP "services = { c2s = { connect = { \"127.0.0.1:1\", \"unix:/run/s\" } } }\n",
	 "t.lua:2: services.c2s.connect[2]: \"127.0.0.1:1\" and \"unix:/run/s\": a unix: socket*"},
	{MAP "services = { c2s = { connect = { \"unix:/a\", \"unix:/b\" } } }\n",
	 "t.lua:2: services.c2s.connect[2]: \"unix:/a\" and \"unix:/b\": a unix: socket*"},
	{MAP "services = { c2s = { connect = {} } }\n",
	 "t.lua:2: services.c2s.connect: the list is empty: say where the service is, as "
	 "{ \"127.0.0.1:5222\", \"[::1]:5222\" }"},
	{MAP "services = { c2s = { connect = { 5222 } } }\n",
	 "t.lua:2: services.c2s.connect[1]: expected \"host:port\", \"[address]:port\" or "
	 "\"unix:/path\", got number"},
	{MAP "services = { c2s = { connect = { \"127.0.0.1:1\", \"[::1]:x\" } } }\n",
	 "t.lua:2: services.c2s.connect[2]: \"[::1]:x\": the port must be*"},
	{MAP "services = { c2s = { connect = { v4 = \"127.0.0.1:1\" } } }\n",
	 "t.lua:2: services.c2s.connect: expected a list, found the key \"v4\""},
	{MAP "services = { c2s = { connect = { \"unix:/s\" }, transparent = true } }\n",
	 "t.lua:2: services.c2s.transparent: a unix: backend cannot see a client address*"},
	{MAP "services = { c2s = { connect = \"127.0.0.1\" } }\n",
	 "t.lua:2: services.c2s.connect: \"127.0.0.1\": expected \"host:port\""},
	{MAP "services = { c2s = { connect = \"127.0.0.1:99999\" } }\n",
	 "t.lua:2: services.c2s.connect: \"127.0.0.1:99999\": the port must be a number from 1 to "
	 "65535"},
	{MAP "services = { c2s = { connect = \"127.0.0.1:xmpp\" } }\n",
	 "t.lua:2: services.c2s.connect: * the port must be*"},
	{MAP "services = { c2s = { connect = \":5222\" } }\n",
	 "t.lua:2: services.c2s.connect: \":5222\": the address is empty"},
	{MAP "services = { c2s = { connect = \"::1:5222\" } }\n",
	 "t.lua:2: services.c2s.connect: \"::1:5222\": write an IPv6 address in brackets*"},
	{MAP "services = { c2s = { connect = \"[::1:5222\" } }\n",
	 "t.lua:2: services.c2s.connect: \"[::1:5222\": expected \"[address]:port\""},
	{MAP "services = { c2s = { connect = \"[not-an-ip]:5222\" } }\n",
	 "t.lua:2: services.c2s.connect: cannot resolve \"not-an-ip\": *"},
	{MAP "services = { c2s = { connect = \"unix:\" } }\n",
	 "t.lua:2: services.c2s.connect: expected \"unix:\" and a socket path of 1 to 107 bytes, got "
	 "\"unix:\""},
	{MAP "services = { c2s = { connect = \"unix:/\" .. string.rep(\"a\", 107) } }\n",
	 "t.lua:2: services.c2s.connect: expected \"unix:\" and a socket path of 1 to 107 bytes*"},
	{MAP "services = { c2s = { connect = string.rep(\"a\", 130) .. \":1\" } }\n",
	 "t.lua:2: services.c2s.connect: \"aaaa* is too long (at most 127 bytes)"},
	{MAP "services = { c2s = { connect = \"127.0.0.1:1\\0\" } }\n",
	 "t.lua:2: services.c2s.connect: contains a NUL byte"},
	{MAP "services = { c2s = { connect = \"127.0.0.1:1\", send_proxy = \"v3\" } }\n",
	 "t.lua:2: services.c2s.send_proxy: expected \"v1\", \"v2\" or false, got \"v3\""},
	{MAP "services = { c2s = { connect = \"127.0.0.1:1\", send_proxy = true } }\n",
	 "t.lua:2: services.c2s.send_proxy: * got true"},
	{MAP "services = { c2s = { connect = \"127.0.0.1:1\", pass_tlvs = { \"ALPN\" } } }\n",
	 "t.lua:2: services.c2s.pass_tlvs: TLVs are only passed on with send_proxy = \"v2\""},
	{MAP "services = { c2s = { connect = \"127.0.0.1:1\", send_proxy = \"v1\", pass_tlvs = {} } }\n",
	 "t.lua:2: services.c2s.pass_tlvs: TLVs are only passed on with send_proxy = \"v2\""},
	{MAP "services = { c2s = { connect = \"127.0.0.1:1\", send_proxy = \"v2\", "
	     "pass_tlvs = { \"ALPN\", \"CRC32C\" } } }\n",
	 "t.lua:2: services.c2s.pass_tlvs[2]: CRC32C is never passed on: set crc32c = true to "
	 "checksum the header sent to the service"},
	{MAP "services = { c2s = { connect = \"127.0.0.1:1\", send_proxy = \"v2\", pass_tlvs = { 3 } } }\n",
	 "t.lua:2: services.c2s.pass_tlvs[1]: CRC32C is never passed on*"},
	{MAP "services = { c2s = { connect = \"127.0.0.1:1\", send_proxy = \"v2\", "
	     "pass_tlvs = { \"FOO\" } } }\n",
	 "t.lua:2: services.c2s.pass_tlvs[1]: expected a TLV type (ALPN, AUTHORITY, NOOP, UNIQUE_ID, "
	 "SSL, NETNS, AWS, AZURE, GCP) or a number from 0 to 255, got \"FOO\""},
	{MAP "services = { c2s = { connect = \"127.0.0.1:1\", send_proxy = \"v2\", pass_tlvs = { 256 } } }\n",
	 "t.lua:2: services.c2s.pass_tlvs[1]: * got 256"},
	{MAP "services = { c2s = { connect = \"127.0.0.1:1\", send_proxy = \"v2\", pass_tlvs = { -1 } } }\n",
	 "t.lua:2: services.c2s.pass_tlvs[1]: * got -1"},
	{MAP "services = { c2s = { connect = \"127.0.0.1:1\", send_proxy = \"v1\", crc32c = true } }\n",
	 "t.lua:2: services.c2s.crc32c: a checksum is only sent with send_proxy = \"v2\""},
	{MAP "services = { c2s = { connect = \"127.0.0.1:1\", send_proxy = \"v2\", crc32c = 1 } }\n",
	 "t.lua:2: services.c2s.crc32c: expected true or false, got number"},
	{MAP "services = { c2s = { connect = \"127.0.0.1:1\", connect_timeout = 0 } }\n",
	 "t.lua:2: services.c2s.connect_timeout: expected more than 0 seconds, at most 2147483, got 0"},
	{MAP "services = { c2s = { connect = \"127.0.0.1:1\", idle_timeout = -1 } }\n",
	 "t.lua:2: services.c2s.idle_timeout: expected 0 (none) or more seconds, at most 2147483, got "
	 "-1"},
	{MAP "services = { c2s = { connect = \"127.0.0.1:1\", idle_timeout = \"1m\" } }\n",
	 "t.lua:2: services.c2s.idle_timeout: expected a number of seconds, got string"},
	{MAP "services = { c2s = { connect = \"unix:/run/s\", transparent = true } }\n",
	 "t.lua:2: services.c2s.transparent: a unix: backend cannot see a client address: connect "
	 "over TCP"},
	{MAP "services = { c2s = { connect = \"127.0.0.1:1\", transparent_port = false } }\n",
	 "t.lua:2: services.c2s.transparent_port: only means something with transparent = true"},
	{MAP "services = { c2s = { connect = \"127.0.0.1:1\", mark = 0 } }\n",
	 "t.lua:2: services.c2s.mark: expected a firewall mark from 1 to 4294967295, got 0"},
	{MAP "services = { c2s = { connect = \"unix:/run/s\", mark = 7 } }\n",
	 "t.lua:2: services.c2s.mark: a unix: backend is not routed: a mark means nothing"},
	{"user = \"\"\n" MAP C2S, "t.lua:1: user: expected a user name, got \"\""},
	{"group = 0\n" MAP C2S, "t.lua:1: group: expected a group name, got 0"},
	{MAP "services = { c2s = { connect = \"127.0.0.1:1\", transparent = \"yes\" } }\n",
	 "t.lua:2: services.c2s.transparent: expected true or false, got string"},
	{MAP "services = { c2s = { connect = \"127.0.0.1:1\", sendproxy = \"v2\" } }\n",
	 "t.lua:2: services.c2s: unknown key \"sendproxy\" (did you mean send_proxy?); a service has "
	 "connect, send_proxy, pass_tlvs, crc32c, connect_timeout, idle_timeout, transparent, "
	 "transparent_port, mark"},
	/* Typos are reported before the "missing" they cause, all of them, sorted. */
	{MAP "services = { c2s = { zz = 1, conect = \"127.0.0.1:1\", [1] = 2 } }\n",
	 "t.lua:2: services.c2s: unknown keys \"conect\" (did you mean connect?), \"zz\", [1]; a "
	 "service has*"},
	/* Eight typos with hints fill the list: it is cut, never overrun (ASan checks). */
	{MAP "services = { c2s = { connect = \"127.0.0.1:1\", transparent_porA = 1, "
	     "transparent_porB = 1, transparent_porC = 1, transparent_porD = 1, transparent_porE = 1, "
	     "transparent_porF = 1, transparent_porG = 1, transparent_porH = 1, transparent_porI = 1 } }\n",
	 "t.lua:2: services.c2s: unknown keys \"transparent_por*\" (did you mean transparent_port?), "
	 "*(did you ; a service has connect, send_proxy, *"},
	/* Top-level typos are errors too, so that -t (ExecStartPre) catches them. */
	{"proxy_trusted_proxy = { \"10.0.0.1\" }\n" MAP C2S,
	 "t.lua:1: unknown key proxy_trusted_proxy (did you mean proxy_trusted_proxies?)"},
	{MAP C2S "proxy_header_timout = 3\nfoo = 1\nbar = 2\n",
	 "t.lua:3: unknown key proxy_header_timout (did you mean proxy_header_timeout?); and 2 more "
	 "unknown keys"},
	{MAP C2S "zzzz = 1\n", "t.lua:3: unknown key zzzz"},
	{"proxy_port_mappings = { [1] = \"xmpp.c2s\" }\nservices = { [\"xmpp.c2s\"] = {} }\n",
	 "t.lua:2: services[\"xmpp.c2s\"].connect: missing*"},
	/* The first bad service by name, whatever the table's order. */
	{MAP "services = { c2s = { connect = 1 }, a = {}, b = { connect = 2 } }\n",
	 "t.lua:2: services.a.connect: missing*"},

	/* Lua's own errors keep Lua's own words. */
	{"proxy_ports = {\n", "t.lua:2: unexpected symbol near <eof>"},
	{"services = { c2s = {\n\tconnect = \"x\"\n}\n", "t.lua:4: '}' expected (to close '{' at line 1) near <eof>"},
	{"x = nil + 1\n", "t.lua:1: attempt to perform arithmetic on a nil value"},
	{"\n\nerror(\"boom\")\n", "t.lua:3: boom"},
	{"error(\"boom\", 0)\n", "t.lua: boom"},
	{"error({})\n", "t.lua: config raised an error that is a table, not a message"},
	{"\033Lua", "t.lua: attempt to load a binary chunk (mode is 't')"},
};

/* Where a message points when keys sit on lines of their own. */
static const struct {
	const char *lua;
	const char *want;
} lines[] = {
	{"proxy_port_mappings = { [15222] = \"c2s\" }\n"
	 "services = {\n"
	 "\ts2s = { connect = \"127.0.0.1:5269\" },\n"
	 "\tc2s = {\n"
	 "\t\tconnect = \"127.0.0.1:5222\",\n"
	 "\t\tsend_proxy = \"v3\",\n"
	 "\t},\n"
	 "}\n",
	 "t.lua:6: services.c2s.send_proxy: *"},
	{"proxy_port_mappings = { [15222] = \"xmpp\" }\n"
	 "services = {\n"
	 "\txmpp = {\n"
	 "\t\tsend_proxy = \"v2\",\n"
	 "\t},\n"
	 "}\n",
	 "t.lua:3: services.xmpp.connect: missing*"},
	{"proxy_port_mappings = {\n"
	 "\t[15222] = \"c2s\",\n"
	 "\t[15269] = 15269,\n"
	 "}\n" C2S,
	 "t.lua:3: proxy_port_mappings[15269]: *"},
	{MAP "services = {\n"
	 "\tc2s = {\n"
	 "\t\tsend_proxy = \"v2\",\n"
	 "\t\tconnect = {\n"
	 "\t\t\t\"127.0.0.1:5222\",\n"
	 "\t\t\t\"127.0.0.2:5222\",\n"
	 "\t\t},\n"
	 "\t},\n"
	 "}\n",
	 "t.lua:5: services.c2s.connect[2]: \"127.0.0.2:5222\" is a second IPv4 address*"},
	{MAP C2S "\n-- a comment\nproxy_header_timeout =\n\t\"5\"\n",
	 "t.lua:5: proxy_header_timeout: *"},
	/* Built by code: the statement's line is the best there is. */
	{MAP "local s = {}\ns.c2s = { connect = 1 }\nservices = s\n",
	 "t.lua:4: services.c2s.connect: *"},
	{MAP "services = {}\nservices.c2s = {\n\tconnect = 1,\n}\n",
	 "t.lua:2: services.c2s.connect: *"},
};

static void test_errors(void)
{
	for (size_t i = 0; i < sizeof(errors) / sizeof(errors[0]); i++)
		check_error(errors[i].lua, errors[i].want);
	for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++)
		check_error(lines[i].lua, lines[i].want);
}


static void test_default(void)
{
	struct npd_config *cfg;
	char *text;
	const struct sockaddr_in *sin;
	const struct sockaddr_in6 *sin6;

	memset(&dg, 0, sizeof(dg));
	forget_warnings();
	dg.warn = collect_warning;
	if (!ok(npd_config_load_string("built-in default", npd_config_default_lua, &cfg, &dg) == 0,
		"the default loads"))
		diag("  %s", dg.error);
	if (!cfg)
		return;
	is_int(warned.count, 0, "the default warns about nothing");
	ok(strcmp(cfg->source, "built-in default") == 0, "source");
	is_int(cfg->nservices, 2, "two services");
	ok(strcmp(cfg->services[0].name, "c2s") == 0 && strcmp(cfg->services[1].name, "s2s") == 0,
	   "c2s and s2s, sorted");
	sin = (const struct sockaddr_in *)&cfg->services[0].target[0].addr;
	sin6 = (const struct sockaddr_in6 *)&cfg->services[0].target[1].addr;
	ok(cfg->services[0].ntargets == 2 && sin->sin_family == AF_INET &&
		   ntohs(sin->sin_port) == 5222 && sin->sin_addr.s_addr == htonl(INADDR_LOOPBACK) &&
		   cfg->services[0].target[0].addrlen == sizeof(*sin) &&
		   sin6->sin6_family == AF_INET6 && ntohs(sin6->sin6_port) == 5222 &&
		   IN6_IS_ADDR_LOOPBACK(&sin6->sin6_addr) &&
		   cfg->services[0].target[1].addrlen == sizeof(*sin6),
	   "c2s connects to 127.0.0.1:5222 or [::1]:5222, where Prosody listens by default");
	ok(cfg->services[0].send_proxy == NPD_SEND_NONE && !cfg->services[0].crc32c &&
		   cfg->services[0].connect_timeout_ms == NPD_DEFAULT_CONNECT_TIMEOUT_MS &&
		   cfg->services[0].idle_timeout_ms == 0 &&
		   strcmp(cfg->services[0].prosody, "Prosody's defaults for c2s") == 0,
	   "c2s: plain, default timeouts, found at Prosody's defaults");
	is_int(cfg->nlisteners, 4, "four listeners: two ports on \"*\"");
	if (cfg->nlisteners == 4) {
		ok(strcmp(cfg->listeners[0].addr_text, "0.0.0.0:15222") == 0 &&
			   strcmp(cfg->listeners[1].addr_text, "[::]:15222") == 0 &&
			   strcmp(cfg->listeners[2].addr_text, "0.0.0.0:15269") == 0 &&
			   strcmp(cfg->listeners[3].addr_text, "[::]:15269") == 0,
		   "listener addresses in order");
		ok(cfg->listeners[0].implicit && cfg->listeners[1].implicit &&
			   cfg->listeners[0].service == 0 && cfg->listeners[3].service == 1 &&
			   cfg->listeners[1].port == 15222,
		   "implicit, mapped to c2s and s2s");
		ok(cfg->listeners[1].addr.ss_family == AF_INET6 &&
			   cfg->listeners[1].addrlen == sizeof(struct sockaddr_in6) &&
			   ntohs(((struct sockaddr_in6 *)&cfg->listeners[1].addr)->sin6_port) ==
				   15222,
		   "[::]:15222 as a sockaddr");
	}
	is_int(cfg->ntrusted, 2, "trusted: loopback");
	ok(cfg->header_timeout_ms == 5000 && cfg->max_header == 4096 && cfg->workers == 0 &&
		   cfg->max_connections == 0 && cfg->log_level == 1 && !cfg->log_syslog,
	   "tunables at their defaults");
	text = describe(cfg);
	if (!ok(strcmp(text, "listen 0.0.0.0:15222 -> c2s (127.0.0.1:5222 and [::1]:5222 from "
			     "Prosody's defaults for c2s, plain)\n"
			     "listen [::]:15222 -> c2s (127.0.0.1:5222 and [::1]:5222 from "
			     "Prosody's defaults for c2s, plain)\n"
			     "listen 0.0.0.0:15269 -> s2s (127.0.0.1:5269 and [::1]:5269 from "
			     "Prosody's defaults for s2s, plain)\n"
			     "listen [::]:15269 -> s2s (127.0.0.1:5269 and [::1]:5269 from "
			     "Prosody's defaults for s2s, plain)\n"
			     "trusted: 127.0.0.1/32 ::1/128\n"
			     "header timeout: 5 s\n"
			     "max header: 4096 bytes\n") == 0,
		"describe the default"))
		diag("%s", text);
	free(text);
	npd_config_free(cfg);
}

static void test_ports(void)
{
	struct npd_config *cfg;
	char *text;

	cfg = load(
		"proxy_ports = { 15222, \"127.0.0.1:15300\", \"[::1]:15301\" }\n"
		"proxy_interfaces = { \"::\", \"192.0.2.1\" }\n"
		"proxy_port_mappings = { [15222] = \"c2s\", [15269] = \"s2s\", [15301] = \"s2s\" }\n"
		"services = {\n"
		"\tc2s = { connect = \"127.0.0.1:5222\" },\n"
		"\ts2s = { connect = \"127.0.0.1:5269\" },\n"
		"}\n");
	if (!ok(cfg != NULL, "explicit ports and interfaces"))
		diag("  %s", dg.error);
	if (!cfg)
		return;
	is_int(cfg->nlisteners, 4, "four listeners");
	text = describe(cfg);
	if (!ok(strncmp(text,
			"listen [::]:15222 -> c2s (127.0.0.1:5222, plain)\n"
			"listen 192.0.2.1:15222 -> c2s (127.0.0.1:5222, plain)\n"
			"listen 127.0.0.1:15300 -> (unmapped: connections closed after the header)\n"
			"listen [::1]:15301 -> s2s (127.0.0.1:5269, plain)\n",
			strlen("listen [::]:15222 -> c2s (127.0.0.1:5222, plain)\n"
			       "listen 192.0.2.1:15222 -> c2s (127.0.0.1:5222, plain)\n"
			       "listen 127.0.0.1:15300 -> (unmapped: connections closed after the header)\n"
			       "listen [::1]:15301 -> s2s (127.0.0.1:5269, plain)\n")) == 0,
		"listeners in the order written, each port on each interface"))
		diag("%s", text);
	free(text);
	ok(!cfg->listeners[0].implicit && cfg->listeners[2].service == -1 &&
		   cfg->listeners[2].port == 15300,
	   "\"::\" is explicit; the unmapped port has service -1");
	if (!ok(strcmp(warned.text,
		       "t.lua:1: proxy_ports[2]: port 15300 has no mapping in proxy_port_mappings: its "
		       "connections will be closed after the header\n"
		       "t.lua:3: proxy_port_mappings[15269]: port 15269 is not in proxy_ports: it is "
		       "not listened on\n") == 0,
		"warnings: unmapped port, mapping not listened on"))
		diag("%s", warned.text);
	npd_config_free(cfg);

	/* Prosody's single-value forms, and keys that are floats with integral values. */
	cfg = load("proxy_ports = 15222.0\nproxy_interfaces = \"127.0.0.1\"\n"
		   "proxy_port_mappings = { [15222.0] = \"c2s\" }\n" C2S);
	ok(cfg && cfg->nlisteners == 1 &&
		   strcmp(cfg->listeners[0].addr_text, "127.0.0.1:15222") == 0 &&
		   cfg->listeners[0].service == 0 && warned.count == 0,
	   "proxy_ports = 15222, proxy_interfaces = \"127.0.0.1\"");
	npd_config_free(cfg);

	/* By default every mapped port, ascending. */
	cfg = load(
		"proxy_interfaces = { \"0.0.0.0\" }\n"
		"proxy_port_mappings = { [15269] = \"c2s\", [15222] = \"c2s\", [80] = \"c2s\" }\n" C2S);
	ok(cfg && cfg->nlisteners == 3 && cfg->listeners[0].port == 80 &&
		   cfg->listeners[1].port == 15222 && cfg->listeners[2].port == 15269 &&
		   !cfg->listeners[0].implicit,
	   "default ports: the mapped ones, ascending");
	npd_config_free(cfg);

	/* Transparent delivery and the identity to run as. */
	cfg = load("user = \"nobody\"\ngroup = \"nogroup\"\n" MAP
		   "services = { c2s = { connect = \"127.0.0.1:5222\", transparent = true,\n"
		   "\ttransparent_port = false, mark = 42 } }\n");
	if (ok(cfg != NULL, "transparent, transparent_port, mark, user, group")) {
		const struct npd_service *t = &cfg->services[0];
		ok(t->transparent && !t->transparent_port && t->mark == 42 &&
			   strcmp(cfg->user, "nobody") == 0 && strcmp(cfg->group, "nogroup") == 0,
		   "read as written");
		text = describe(cfg);
		ok(strstr(text, "c2s (127.0.0.1:5222, plain, transparent without ports, mark 42)") != NULL,
		   "described");
		free(text);
		npd_config_free(cfg);
	}
	cfg = load(MAP "services = { c2s = { connect = \"[::1]:5222\", transparent = true } }\n");
	if (ok(cfg != NULL, "transparent to an IPv6 backend")) {
		ok(cfg->services[0].transparent && cfg->services[0].transparent_port &&
			   cfg->services[0].mark == 0 && cfg->user[0] == 0,
		   "the client's port kept by default; no mark, no user");
		npd_config_free(cfg);
	}

	/* Prosody's default list pastes unchanged: "*" already covers "::" here. */
	cfg = load("proxy_interfaces = { \"*\", \"::\" }\n" MAP C2S);
	if (ok(cfg != NULL, "Prosody's { \"*\", \"::\" } loads")) {
		ok(cfg->nlisteners == 2 && strcmp(cfg->listeners[0].addr_text, "0.0.0.0:15222") == 0 &&
			   strcmp(cfg->listeners[1].addr_text, "[::]:15222") == 0,
		   "one listener each for 0.0.0.0 and ::");
		npd_config_free(cfg);
	}

	/* An "address:port" entry ignores the interfaces, even an empty list. */
	cfg = load("proxy_ports = { \"[::1]:15222\" }\nproxy_interfaces = {}\n" MAP C2S);
	ok(cfg && cfg->nlisteners == 1 && cfg->listeners[0].addr.ss_family == AF_INET6,
	   "\"[::1]:15222\" with no interfaces");
	npd_config_free(cfg);

	/* Settings built by code; locals and functions are not settings. */
	cfg = load("local base = 15000\n"
		   "local function port(n) return base + n end\n"
		   "function helper() end\n"
		   "proxy_port_mappings = {}\n"
		   "proxy_port_mappings[port(222)] = \"c2s\"\n"
		   "services = {}\n"
		   "services.c2s = { connect = \"127.0.0.1:\" .. (5000 + 222) }\n"
		   "proxy_ports = { port(222) }\n"
		   "table.insert(proxy_ports, \"127.0.0.1:\" .. port(223))\n");
	if (!ok(cfg && cfg->nlisteners == 3 && cfg->listeners[2].port == 15223 && warned.count == 1,
		"settings built by code"))
		diag("  %s", cfg ? warned.text : dg.error);
	npd_config_free(cfg);
}

static void test_services(void)
{
	struct npd_config *cfg;
	const struct npd_service *s;
	const struct sockaddr_in6 *sin6;
	char *text;

	cfg = load(
		"proxy_port_mappings = { [1] = \"v6\", [2] = \"unix\", [3] = \"name\", [4] = \"x.y-z_1\" }\n"
		"proxy_interfaces = { \"127.0.0.1\" }\n"
		"services = {\n"
		"\tv6 = { connect = \"[::1]:5222\", send_proxy = \"v2\", crc32c = true,\n"
		"\t\tpass_tlvs = { \"alpn\", \"AUTHORITY\", 0x42 }, connect_timeout = 2.5 },\n"
		"\tunix = { connect = \"unix:/run/prosody.sock\", send_proxy = \"v1\", idle_timeout = 300 },\n"
		"\tname = { connect = \"localhost:5269\", send_proxy = false, idle_timeout = 0,\n"
		"\t\tconnect_timeout = 0.0001, transparent = false },\n"
		"\t[\"x.y-z_1\"] = { connect = \"127.0.0.1:1\" },\n"
		"}\n");
	if (!ok(cfg != NULL, "every service form"))
		diag("  %s", dg.error);
	if (!cfg)
		return;
	is_int(cfg->nservices, 4, "four services");
	ok(strcmp(cfg->services[0].name, "name") == 0 &&
		   strcmp(cfg->services[1].name, "unix") == 0 &&
		   strcmp(cfg->services[2].name, "v6") == 0 &&
		   strcmp(cfg->services[3].name, "x.y-z_1") == 0,
	   "sorted by name");
	ok(cfg->listeners[0].service == 2 && cfg->listeners[1].service == 1 &&
		   cfg->listeners[2].service == 0 && cfg->listeners[3].service == 3,
	   "listeners point at the sorted services");

	s = &cfg->services[2];
	sin6 = (const struct sockaddr_in6 *)&s->target[0].addr;
	ok(s->ntargets == 1 && sin6->sin6_family == AF_INET6 &&
		   s->target[0].addrlen == sizeof(*sin6) && ntohs(sin6->sin6_port) == 5222 &&
		   IN6_IS_ADDR_LOOPBACK(&sin6->sin6_addr) && strcmp(s->target[0].text, "[::1]:5222") == 0,
	   "[::1]:5222");
	ok(s->send_proxy == NPD_SEND_V2 && s->crc32c && s->connect_timeout_ms == 2500 &&
		   s->prosody[0] == '\0',
	   "v2, crc32c, 2.5 s, its own address");
	ok(s->pass_tlvs[0] == 0x06 && s->pass_tlvs[0x42 / 8] == 1u << (0x42 % 8) &&
		   s->pass_tlvs[0xE0 / 8] == 0,
	   "pass_tlvs: ALPN, AUTHORITY (any case), 0x42");

	s = &cfg->services[1];
	ok(s->ntargets == 1 && s->target[0].addr.ss_family == AF_UNIX &&
		   strcmp(((const struct sockaddr_un *)&s->target[0].addr)->sun_path,
			  "/run/prosody.sock") == 0 &&
		   s->target[0].addrlen ==
			   offsetof(struct sockaddr_un, sun_path) + sizeof("/run/prosody.sock"),
	   "unix:/run/prosody.sock");
	ok(s->send_proxy == NPD_SEND_V1 && s->idle_timeout_ms == 300000, "v1, idle 300 s");

	s = &cfg->services[0];
	ok((s->target[0].addr.ss_family == AF_INET || s->target[0].addr.ss_family == AF_INET6) &&
		   ntohs(((const struct sockaddr_in *)&s->target[0].addr)->sin_port) == 5269 &&
		   strcmp(s->target[0].text, "localhost:5269") == 0,
	   "localhost resolved, port kept");
	ok(s->send_proxy == NPD_SEND_NONE && s->idle_timeout_ms == 0 && s->connect_timeout_ms == 1,
	   "plain; idle 0 is none; a fraction of a millisecond is 1 ms");

	text = describe(cfg);
	if (!ok(strstr(text, "listen 127.0.0.1:1 -> v6 ([::1]:5222, send_proxy v2, crc32c, "
			     "pass_tlvs ALPN AUTHORITY 0x42)\n") &&
			strstr(text, "listen 127.0.0.1:4 -> x.y-z_1 (127.0.0.1:1, plain)\n") &&
			strstr(text, "-> unix (unix:/run/prosody.sock, send_proxy v1)\n"),
		"describe names the delivery"))
		diag("%s", text);
	free(text);
	npd_config_free(cfg);
}

/* A client address for npd_backend_target(): "203.0.113.7" or "2001:db8::7"; NULL: none. */
static union npd_sockaddr client(const char *ip)
{
	union npd_sockaddr a;

	memset(&a, 0, sizeof(a));
	if (!ip)
		a.sa.sa_family = AF_UNSPEC;
	else if (inet_pton(AF_INET, ip, &a.in.sin_addr) == 1)
		a.sa.sa_family = AF_INET;
	else if (inet_pton(AF_INET6, ip, &a.in6.sin6_addr) == 1)
		a.sa.sa_family = AF_INET6;
	return a;
}

/* The address of s a client at ip is sent to, as text. */
static const char *target_for(const struct npd_service *s, const char *ip)
{
	union npd_sockaddr a = client(ip);

	return npd_backend_target(s, &a)->text;
}

/* connect as a list: an address per family, each connection to its client's. */
static void test_connect_lists(void)
{
	struct npd_config *cfg;
	const struct npd_service *s;
	char *text;

	cfg = load("proxy_port_mappings = { [1] = \"both\", [2] = \"one\", [3] = \"sock\", "
		   "[4] = \"mapped\", [5] = \"c2s\" }\n"
		   "proxy_interfaces = { \"127.0.0.1\" }\n"
		   "services = {\n"
		   "\tboth = { connect = { \"[::1]:5222\", \"127.0.0.1:5223\" }, transparent = true },\n"
		   "\tone = { connect = { \"127.0.0.1:5224\" }, send_proxy = \"v2\" },\n"
		   "\tsock = { connect = { \"unix:/run/s.sock\" } },\n"
		   "\tmapped = { connect = { \"[::ffff:127.0.0.1]:1\", \"[::1]:2\" } },\n"
		   "\tc2s = { connect = { \"127.0.0.1:6222\" } },\n"
		   "}\n");
	if (!ok(cfg != NULL && warned.count == 0, "connect lists load"))
		diag("  %s%s", cfg ? "" : dg.error, warned.text);
	if (!cfg)
		return;
	s = &cfg->services[0]; /* both */
	ok(s->ntargets == 2 && s->target[0].addr.ss_family == AF_INET6 &&
		   s->target[1].addr.ss_family == AF_INET &&
		   strcmp(s->target[0].text, "[::1]:5222") == 0 &&
		   strcmp(s->target[1].text, "127.0.0.1:5223") == 0 &&
		   ntohs(((const struct sockaddr_in *)&s->target[1].addr)->sin_port) == 5223,
	   "two addresses, in the order written");
	ok(strcmp(target_for(s, "203.0.113.7"), "127.0.0.1:5223") == 0 &&
		   strcmp(target_for(s, "2001:db8::7"), "[::1]:5222") == 0 &&
		   strcmp(target_for(s, "::ffff:203.0.113.7"), "127.0.0.1:5223") == 0 &&
		   strcmp(target_for(s, NULL), "[::1]:5222") == 0,
	   "a client goes to its family's address (v4-mapped is IPv4); none to the first");
	s = &cfg->services[3]; /* one */
	ok(s->ntargets == 1 && strcmp(s->target[0].text, "127.0.0.1:5224") == 0 &&
		   strcmp(target_for(s, "2001:db8::7"), "127.0.0.1:5224") == 0,
	   "a list of one; a client of another family goes to it");
	s = &cfg->services[2]; /* mapped */
	ok(npd_target_family(&s->target[0]) == AF_INET &&
		   npd_target_family(&s->target[1]) == AF_INET6 &&
		   strcmp(target_for(s, "203.0.113.7"), "[::ffff:127.0.0.1]:1") == 0 &&
		   strcmp(target_for(s, "2001:db8::7"), "[::1]:2") == 0,
	   "a v4-mapped address is the IPv4 one");
	s = &cfg->services[4]; /* sock */
	ok(s->ntargets == 1 && s->target[0].addr.ss_family == AF_UNIX &&
		   strcmp(target_for(s, "203.0.113.7"), "unix:/run/s.sock") == 0,
	   "a unix: socket in a list of one");
	s = &cfg->services[1]; /* c2s */
	ok(s->ntargets == 1 && strcmp(s->target[0].text, "127.0.0.1:6222") == 0 && !s->prosody[0],
	   "connect given for one of Prosody's services: just that");
	text = describe(cfg);
	if (!ok(strstr(text, "listen 127.0.0.1:1 -> both ([::1]:5222 and 127.0.0.1:5223, plain, "
			     "transparent)\n") &&
			strstr(text, "listen 127.0.0.1:2 -> one (127.0.0.1:5224, send_proxy v2)\n"),
		"-t shows every address"))
		diag("%s", text);
	free(text);
	npd_config_free(cfg);
}

/*
 * A mapping to a name that is no service: a warning, and its port unmapped
 * (connections closed after the header); the rest is served.
 */
static void test_missing_service(void)
{
	struct npd_config *cfg;
	char *text;

	cfg = load("proxy_interfaces = { \"127.0.0.1\" }\n"
		   "proxy_port_mappings = {\n"
		   "\t[15222] = \"c2s\",\n"
		   "\t[15998] = \"no_such_service\",\n"
		   "\t[15997] = \"a \\\"quoted\\\" \\\\ name\\n\",\n"
		   "\t[15996] = string.rep(\"x\", 80),\n"
		   "}\n" C2S);
	if (!ok(cfg != NULL, "a mapping to no service loads"))
		diag("  %s", dg.error);
	if (!cfg)
		return;
	if (!ok(matches(warned.text,
			"t.lua:6: proxy_port_mappings[15996]: maps to \"xxxxxxxxxx*x...\", "
		       "which services does not define and which is not one of Prosody's services "
		       "(c2s, s2s, c2s_direct_tls, s2s_direct_tls, legacy_ssl, http, https, "
		       "proxy65): its connections will be closed after the header\n"
		       "t.lua:5: proxy_port_mappings[15997]: maps to \"a \"quoted\" \\ name?\", *\n"
		       "t.lua:4: proxy_port_mappings[15998]: maps to \"no_such_service\", which "
		       "services does not define and which is not one of Prosody's services (c2s, "
		       "s2s, c2s_direct_tls, s2s_direct_tls, legacy_ssl, http, https, proxy65): its "
		       "connections will be closed after the header\n") &&
			warned.count == 3,
		"warned, each with its line, by port"))
		diag("%s", warned.text);
	ok(cfg->nservices == 1 && cfg->nlisteners == 4 && cfg->listeners[0].service == 0 &&
		   cfg->listeners[0].missing[0] == '\0' && cfg->listeners[3].service == -1 &&
		   strcmp(cfg->listeners[3].missing, "no_such_service") == 0,
	   "the port listens, unmapped, and knows the name it was given");
	ok(strcmp(cfg->listeners[2].missing, "a ?quoted? ? name?") == 0,
	   "the name made safe for the log: no quote, backslash or control byte");
	ok(strlen(cfg->listeners[1].missing) == NPD_NAME_MAX - 1 &&
		   strcmp(cfg->listeners[1].missing + NPD_NAME_MAX - 4, "...") == 0,
	   "a long name shortened, with \"...\"");
	text = describe(cfg);
	if (!ok(strstr(text, "listen 127.0.0.1:15222 -> c2s (127.0.0.1:5222, plain)\n"
			     "listen 127.0.0.1:15996 -> xxx") &&
			strstr(text, "listen 127.0.0.1:15998 -> no_such_service (not a service: "
				     "connections closed after the header)\n"),
		"-t says so"))
		diag("%s", text);
	free(text);
	npd_config_free(cfg);

	/* Not listed in proxy_ports: the mapping's two warnings. */
	cfg = load("proxy_ports = { 15222 }\nproxy_port_mappings = { [15222] = \"c2s\", "
		   "[15998] = \"nosuch\" }\n" C2S);
	ok(cfg && cfg->nlisteners == 2 && warned.count == 2 &&
		   matches(warned.text, "t.lua:2: proxy_port_mappings[15998]: maps to \"nosuch\"*\n"
					"t.lua:2: proxy_port_mappings[15998]: port 15998 is not in "
					"proxy_ports: it is not listened on\n"),
	   "a mapping to no service, not listened on");
	npd_config_free(cfg);

	/* Nothing but such mappings: it loads, and closes every connection. */
	cfg = load("proxy_port_mappings = { [15998] = \"nosuch\" }\n");
	ok(cfg && cfg->nservices == 0 && cfg->nlisteners == 2 && cfg->listeners[0].service == -1 &&
		   warned.count == 1,
	   "only a mapping to no service");
	npd_config_free(cfg);
}

static void test_tunables(void)
{
	struct npd_config *cfg;

	cfg = load(MAP C2S "proxy_header_timeout = 10\nproxy_max_header = 65551\nworkers = 4\n"
			   "max_connections = 5\nlog_level = \"debug\"\nlog_syslog = true\n");
	ok(cfg && cfg->header_timeout_ms == 10000 && cfg->max_header == 65551 &&
		   cfg->workers == 4 && cfg->max_connections == 5 && cfg->log_level == 2 &&
		   cfg->log_syslog && !warned.count,
	   "every tunable set");
	npd_config_free(cfg);

	cfg = load(MAP C2S "log_level = \"error\"\n");
	ok(cfg && cfg->log_level == 0, "log_level error is 0");
	npd_config_free(cfg);
	cfg = load(MAP C2S "log_level = \"warn\"\n");
	ok(cfg && cfg->log_level == 0, "log_level warn is 0");
	npd_config_free(cfg);

	cfg = load(MAP C2S "proxy_header_timeout = 2.5\n");
	if (!ok(cfg && cfg->header_timeout_ms == 2500 &&
			strcmp(warned.text,
			       "t.lua:3: proxy_header_timeout: 2.5 seconds is short: the PROXY "
			       "specification recommends at least 3 seconds\n") == 0,
		"a short header timeout is warned about"))
		diag("%s", warned.text);
	npd_config_free(cfg);

	cfg = load(MAP C2S "proxy_max_header = 16\n");
	if (!ok(cfg && cfg->max_header == 16 && warned.count == 2 &&
			strstr(warned.text,
			       "t.lua:3: proxy_max_header: 16 is less than 107: v1 lines longer "
			       "than 16 bytes") &&
			strstr(warned.text,
			       "t.lua:3: proxy_max_header: 16 is less than 232: v2 headers with "
			       "UNIX addresses"),
		"16 bytes: two warnings"))
		diag("%s", warned.text);
	npd_config_free(cfg);

	cfg = load(MAP C2S "proxy_max_header = 200\n");
	ok(cfg && warned.count == 1 && strstr(warned.text, "200 is less than 232"),
	   "200 bytes: the UNIX warning only");
	npd_config_free(cfg);

	cfg = load(MAP C2S "proxy_max_header = 232.0\n");
	ok(cfg && cfg->max_header == 232 && warned.count == 0, "232.0 bytes: no warning");
	npd_config_free(cfg);
}

static void test_unknown_keys(void)
{
	struct npd_config *cfg;

	cfg = load(MAP
		   "modules_enabled = { \"net_proxy\" }\n" C2S "\nproxy_port = {\n\t15222,\n}\n"
		   "helper = function() end\nlocal x = 1\n_ENV[\"odd key\"] = 1\nunset = nil\n");
	/*
	 * modules_enabled makes it Prosody's, services written into it and all:
	 * only a proxy_ key counts, and a misspelt one is an error.
	 */
	if (!ok(!cfg && strcmp(dg.error, "t.lua:5: unknown key proxy_port (did you mean "
					 "proxy_ports?)") == 0,
		"a Prosody file: a proxy_ typo is an error"))
		diag("%s", cfg ? warned.text : dg.error);
	npd_config_free(cfg);

	cfg = load(MAP "modules_enabled = { \"roster\" }\n" C2S
		   "\nproxy_secure_in = true\nproxy_secure = { 5222 }\nproxy_out = \"x\"\n"
		   "proxy_secure_out = true\nhelper = function() end\n");
	ok(cfg && warned.count == 0 && cfg->prosody_skipped == 4,
	   "a Prosody file: the module's own proxy_secure* and proxy_out keys skipped");
	npd_config_free(cfg);

	cfg = load(MAP C2S "\nhelper = function() end\nlocal x = 1\nunset = nil\n"
		   "_ENV[\"odd key\"] = 1\n");
	if (!ok(!cfg && strcmp(dg.error, "t.lua:7: unknown key \"odd key\"") == 0,
		"functions, locals and nils are not keys; an odd name is quoted"))
		diag("%s", cfg ? warned.text : dg.error);
	npd_config_free(cfg);
}

static bool trusts(const struct npd_config *cfg, const char *ip)
{
	struct sockaddr_storage ss;

	memset(&ss, 0, sizeof(ss));
	if (strchr(ip, ':')) {
		ss.ss_family = AF_INET6;
		inet_pton(AF_INET6, ip, &((struct sockaddr_in6 *)&ss)->sin6_addr);
	} else {
		ss.ss_family = AF_INET;
		inet_pton(AF_INET, ip, &((struct sockaddr_in *)&ss)->sin_addr);
	}
	return npd_config_trusts(cfg, (struct sockaddr *)&ss);
}

static void test_trusted(void)
{
	static const struct {
		const char *list;
		const char *ip;
		bool want;
	} cases[] = {
		{NULL, "127.0.0.1", true},
		{NULL, "::1", true},
		{NULL, "::ffff:127.0.0.1", true},
		{NULL, "127.0.0.2", false},
		{NULL, "10.0.0.1", false},
		{NULL, "::2", false},
		{"\"10.0.0.0/8\", \"192.168.1.7\", \"2001:db8::/32\"", "10.1.2.3", true},
		{"\"10.0.0.0/8\", \"192.168.1.7\", \"2001:db8::/32\"", "11.0.0.1", false},
		{"\"10.0.0.0/8\", \"192.168.1.7\", \"2001:db8::/32\"", "192.168.1.7", true},
		{"\"10.0.0.0/8\", \"192.168.1.7\", \"2001:db8::/32\"", "192.168.1.8", false},
		{"\"10.0.0.0/8\", \"192.168.1.7\", \"2001:db8::/32\"", "::ffff:10.9.9.9", true},
		{"\"10.0.0.0/8\", \"192.168.1.7\", \"2001:db8::/32\"", "::ffff:11.0.0.1", false},
		{"\"10.0.0.0/8\", \"192.168.1.7\", \"2001:db8::/32\"", "::10.9.9.9", false},
		{"\"10.0.0.0/8\", \"192.168.1.7\", \"2001:db8::/32\"", "2001:db8:1::5", true},
		{"\"10.0.0.0/8\", \"192.168.1.7\", \"2001:db8::/32\"", "2001:db9::", false},
		{"\"10.0.0.0/8\", \"192.168.1.7\", \"2001:db8::/32\"", "127.0.0.1", false},
		{"\"10.0.0.0/8\", \"192.168.1.7\", \"2001:db8::/32\"", "::1", false},
		{"\"0.0.0.0/0\"", "203.0.113.9", true},
		{"\"0.0.0.0/0\"", "::ffff:203.0.113.9", true},
		{"\"0.0.0.0/0\"", "2001:db8::1", false},
		{"\"::/0\"", "2001:db8::1", true},
		{"\"::/0\"", "203.0.113.9", false},
		{"\"2001:db8::1/128\"", "2001:db8::1", true},
		{"\"2001:db8::1/128\"", "2001:db8::2", false},
		{"\"172.16.0.0/12\"", "172.31.255.255", true},
		{"\"172.16.0.0/12\"", "172.32.0.0", false},
		{"", "203.0.113.9", true},
		{"", "2001:db8::1", true},
	};
	struct npd_config *cfg;
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	struct sockaddr_storage unspec = {.ss_family = AF_UNSPEC};
	char lua[512];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		if (cases[i].list)
			snprintf(lua, sizeof(lua), MAP C2S "proxy_trusted_proxies = { %s }\n",
				 cases[i].list);
		else
			snprintf(lua, sizeof(lua), MAP C2S);
		cfg = load(lua);
		if (!cfg) {
			ok(0, "trusted { %s }: %s", cases[i].list, dg.error);
			continue;
		}
		ok(trusts(cfg, cases[i].ip) == cases[i].want, "trusted { %s }: %s %s",
		   cases[i].list ? cases[i].list : "default", cases[i].ip,
		   cases[i].want ? "trusted" : "refused");
		npd_config_free(cfg);
	}

	cfg = load(MAP C2S "proxy_trusted_proxies = { \"10.0.0.0/8\" }\n");
	ok(cfg && npd_config_trusts(cfg, (struct sockaddr *)&sun), "AF_UNIX peers are trusted");
	ok(cfg && !npd_config_trusts(cfg, (struct sockaddr *)&unspec), "AF_UNSPEC is not");
	ok(!npd_config_trusts(cfg, NULL), "no address is not");
	npd_config_free(cfg);

	cfg = load(MAP C2S "proxy_trusted_proxies = {}\n");
	if (ok(cfg && cfg->ntrusted == 0 && cfg->trusted == NULL, "an empty list loads")) {
		char *text = describe(cfg);

		if (!ok(strcmp(warned.text,
			       "t.lua:3: proxy_trusted_proxies is empty: ANY host can send "
			       "PROXY headers and claim any address\n") == 0,
			"with a loud warning"))
			diag("%s", warned.text);
		ok(strstr(text, "\ntrusted: ANY (warning)\n") != NULL, "describe says ANY");
		free(text);
	}
	npd_config_free(cfg);

	cfg = load(MAP C2S "proxy_trusted_proxies = { \"10.0.0.1/8\", \"2001:db8::1/32\" }\n");
	if (!ok(cfg && cfg->ntrusted == 2 &&
			strcmp(warned.text,
			       "t.lua:3: proxy_trusted_proxies[1]: 10.0.0.1/8 has host bits set: it is read "
			       "as 10.0.0.0/8\n"
			       "t.lua:3: proxy_trusted_proxies[2]: 2001:db8::1/32 has host bits set: it is "
			       "read as 2001:db8::/32\n") == 0,
		"host bits set: warned about, masked"))
		diag("%s", warned.text);
	npd_config_free(cfg);

	cfg = load(MAP C2S "proxy_trusted_proxies = \"192.0.2.0/24\"\n");
	ok(cfg && cfg->ntrusted == 1 && trusts(cfg, "192.0.2.200"),
	   "a single string is a list of one");
	npd_config_free(cfg);
}

/* The sandbox: each of these fails with a message, quickly, and frees everything. */
static void test_sandbox(void)
{
	static const struct {
		const char *lua;
		const char *want;
	} cases[] = {
		{"x = io.open(\"/etc/passwd\")\n", "t.lua:1: attempt to index a nil value (global 'io')"},
		{"os.execute(\"true\")\n", "t.lua:1: attempt to index a nil value (global 'os')"},
		{"require(\"os\")\n", "t.lua:1: attempt to call a nil value (global 'require')"},
		{"x = load(\"return 1\")\n", "t.lua:1: attempt to call a nil value (global 'load')"},
		{"loadfile(\"/etc/passwd\")\n", "t.lua:1: attempt to call a nil value (global 'loadfile')"},
		{"dofile(\"/etc/passwd\")\n", "t.lua:1: attempt to call a nil value (global 'dofile')"},
		{"print(1)\n", "t.lua:1: attempt to call a nil value (global 'print')"},
		{"collectgarbage()\n", "t.lua:1: attempt to call a nil value (global 'collectgarbage')"},
		{"debug.sethook()\n", "t.lua:1: attempt to index a nil value (global 'debug')"},
		{"x = package.loaded\n", "t.lua:1: attempt to index a nil value (global 'package')"},
		{"setmetatable({}, {})\n", "t.lua:1: attempt to call a nil value (global 'setmetatable')"},
		/* string.rep is bounded: C code runs whole between two instruction counts. */
		{"x = (\"\").rep(\"x\", 1e9)\n",
		 "t.lua:1: string.rep: too large (at most 64 Mi pieces and 64 MiB)"},
		{"x = string.rep(\"x\", 1 << 40)\n", "t.lua:1: string.rep: too large*"},
		{"x = string.rep(\"\", math.maxinteger)\n", "t.lua:1: string.rep: too large*"},
		{"x = (\"ab\"):rep(1 << 30, \",\")\n", "t.lua:1: string.rep: too large*"},
		{"x = string.rep(\"x\", 1 << 25)\ny = x .. x .. x\n",
		 "t.lua: config uses too much memory (over 64 MiB)"},
		{"local s = \"x\"\nwhile true do s = s .. s end\n",
		 "t.lua: config uses too much memory (over 64 MiB)"},
		{"local t = {}\nfor i = 1, 1e9 do t[i] = i end\n",
		 "t.lua: config uses too much memory (over 64 MiB)"},
		{"\nwhile true do end\n",
		 "t.lua:2: config runs too long (over 100 million Lua instructions)"},
		/* pcall cannot catch the limit and carry on. */
		{"while true do pcall(function() while true do end end) end\n",
		 "t.lua:1: config runs too long*"},
		{"local function f() f() end\nf()\n", "t.lua: config uses too much memory*"},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		double start = now(), took;

		check_error(cases[i].lua, cases[i].want);
		took = now() - start;
		ok(took < 2.0, "  ... in %.2f s", took);
	}
	/* What is offered works. */
	{
		struct npd_config *cfg = load(
			MAP C2S "local ok = pcall(string.rep, \"x\", 1e9)\n"
				"assert(not ok and type(next) == \"function\")\n"
				"assert(select(\"#\", 1, 2) == 2 and tonumber(\"7\") == 7)\n"
				"assert(math.max(1, 2) == 2 and table.concat({1, 2}) == \"12\")\n"
				"assert(tostring(1) == \"1\" and xpcall(error, ipairs) == false)\n"
				"for _ in pairs({}) do end\n"
				"proxy_header_timeout = #(\"x\"):rep(4)\n");
		if (!ok(cfg && cfg->header_timeout_ms == 4000,
			"the safe functions and libraries are there; a caught memory error is survived"))
			diag("  %s", dg.error);
		npd_config_free(cfg);
	}
}

static void test_files(void)
{
	char path[] = "/tmp/test_npd_config-XXXXXX";
	char want[600];
	struct npd_config *cfg = NULL;
	struct npd_config_diag d = {0};
	int fd = mkstemp(path);
	const char *bad = "proxy_header_timeout = \"5\"\n";

	if (fd < 0) {
		skip("mkstemp failed");
		return;
	}
	ok(write(fd, npd_config_default_lua, strlen(npd_config_default_lua)) ==
		   (ssize_t)strlen(npd_config_default_lua),
	   "temp file written");
	if (!ok(npd_config_load_file(path, &cfg, &d) == 0 && cfg &&
			strcmp(cfg->source, path) == 0 && cfg->nlisteners == 4,
		"a file loads; source is its path"))
		diag("  %s", d.error);
	npd_config_free(cfg);

	ok(ftruncate(fd, 0) == 0 && pwrite(fd, bad, strlen(bad), 0) == (ssize_t)strlen(bad),
	   "temp file rewritten");
	ok(npd_config_load_file(path, &cfg, NULL) == -1 && cfg == NULL, "no diag: still refused");
	snprintf(want, sizeof(want),
		 "%s:1: proxy_header_timeout: expected a number of seconds, got string", path);
	if (!ok(npd_config_load_file(path, &cfg, &d) == -1 && strcmp(d.error, want) == 0,
		"messages name the file"))
		diag("  %s", d.error);
	close(fd);
	unlink(path);

	snprintf(want, sizeof(want), "%s: cannot open: No such file or directory", path);
	if (!ok(npd_config_load_file(path, &cfg, &d) == -1 && cfg == NULL &&
			strcmp(d.error, want) == 0,
		"a missing file: its name and strerror"))
		diag("  %s", d.error);
	if (!ok(npd_config_load_file("/", &cfg, &d) == -1 &&
			strcmp(d.error, "/: cannot read: Is a directory") == 0,
		"a directory"))
		diag("  %s", d.error);

	/* The example shows every key: it must load, and warn about nothing. */
	if (access("examples/netproxyd.conf.lua", R_OK) != 0) {
		skip("examples/netproxyd.conf.lua: run from the top of the tree");
		return;
	}
	forget_warnings();
	d.warn = collect_warning;
	if (!ok(npd_config_load_file("examples/netproxyd.conf.lua", &cfg, &d) == 0 &&
			cfg->nlisteners == 6 && cfg->nservices == 4 && cfg->ntrusted == 4 &&
			cfg->services[3].transparent &&
			warned.count == 0,
		"examples/netproxyd.conf.lua loads without warnings"))
		diag("  %s%s", d.error, warned.text);
	npd_config_free(cfg);
}

int main(void)
{
	test_default();
	test_errors();
	test_ports();
	test_services();
	test_connect_lists();
	test_missing_service();
	test_tunables();
	test_unknown_keys();
	test_trusted();
	test_sandbox();
	test_files();
	return done_testing();
}
