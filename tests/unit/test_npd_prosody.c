/*
 * test_npd_prosody.c - netproxyd reading a Prosody config as Prosody 0.12
 * does: sections (VirtualHost, Component), Include, ENV_, RunScript, the
 * address of each of Prosody's services from its own keys and defaults,
 * where the proxy ports listen, and which keys are warned about.
 *
 * Files for Include live in a fresh directory under /tmp, removed at the
 * end. Every load is freed, also on errors, for the ASan build's leak check.
 */
#include <errno.h>
#include <ftw.h>
#ifndef NP_SANITIZED
#include <malloc.h>
#endif
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "config_check.h"
#include "tap.h"

static char dir[] = "/tmp/test_npd_prosody-XXXXXX";

/* Write dir/name (making its directory), with text. */
static void put(const char *name, const char *text)
{
	char path[512], *slash;
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	slash = strrchr(path, '/');
	*slash = '\0';
	if (mkdir(path, 0700) != 0 && errno != EEXIST)
		diag("mkdir %s: %s", path, strerror(errno));
	*slash = '/';
	f = fopen(path, "w");
	if (!f || fputs(text, f) < 0 || fclose(f) != 0)
		diag("cannot write %s", path);
}

static struct npd_config *load_file(const char *name)
{
	char path[512];

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	return load_from(path, NULL);
}

/* The addresses of s as -t shows them, "127.0.0.1:5222 and [::1]:5222"; "(none)" for NULL. */
static const char *addrs(const struct npd_service *s)
{
	static char text[2 * NPD_ADDR_TEXT + 8];

	if (!s)
		return "(none)";
	snprintf(text, sizeof(text), "%s", s->target[0].text);
	if (s->ntargets > 1)
		snprintf(text + strlen(text), sizeof(text) - strlen(text), " and %s",
			 s->target[1].text);
	return text;
}

static const struct npd_service *service(const struct npd_config *cfg, const char *name);

/* The addresses of service name, or "(none)". */
static const char *addr_of(const struct npd_config *cfg, const char *name)
{
	return addrs(service(cfg, name));
}

static const struct npd_service *service(const struct npd_config *cfg, const char *name)
{
	for (size_t i = 0; cfg && i < cfg->nservices; i++)
		if (strcmp(cfg->services[i].name, name) == 0)
			return &cfg->services[i];
	return NULL;
}

/* Where Prosody listens, so where netproxyd connects, and what -t says it came from. */
static const struct {
	const char *lua;
	const char *service, *addr, *from;
} addresses[] = {
	{"", "c2s", "127.0.0.1:5222 and [::1]:5222", "Prosody's defaults for c2s"},
	{"", "s2s", "127.0.0.1:5269 and [::1]:5269", "Prosody's defaults for s2s"},
	{"", "http", "127.0.0.1:5280 and [::1]:5280", "Prosody's defaults for http"},
	{"", "https", "127.0.0.1:5281 and [::1]:5281", "Prosody's defaults for https"},
	{"", "proxy65", "127.0.0.1:5000 and [::1]:5000", "Prosody's defaults for proxy65"},
	/* A single value stands for a list; ports may be strings, as tonumber() takes them. */
	{"c2s_ports = 5300\n", "c2s", "127.0.0.1:5300 and [::1]:5300",
	 "Prosody's c2s_ports and default interfaces"},
	{"c2s_ports = { \"5301\", 5302 }\n", "c2s", "127.0.0.1:5301 and [::1]:5301", "*"},
	{"c2s_direct_tls_ports = { 5223 }\n", "c2s_direct_tls", "127.0.0.1:5223 and [::1]:5223",
	 "Prosody's c2s_direct_tls_ports and default interfaces"},
	{"s2s_direct_tls_ports = 5270\nuse_ipv6 = false\n", "s2s_direct_tls", "127.0.0.1:5270",
	 "*"},
	{"legacy_ssl_ports = { 5223 }\nuse_ipv4 = false\n", "legacy_ssl", "[::1]:5223", "*"},
	{"proxy65_ports = { 5001 }\n", "proxy65", "127.0.0.1:5001 and [::1]:5001", "*"},
	/*
	 * The first interface of each family, a wildcard reached on loopback: as
	 * in Prosody, "*" is IPv4 only, and "::" IPv6 only.
	 */
	{"interfaces = { \"::\" }\n", "c2s", "[::1]:5222", "Prosody's default port and interfaces"},
	{"interfaces = \"192.0.2.1\"\n", "s2s", "192.0.2.1:5269", "*"},
	{"interfaces = { \"0.0.0.0\", \"::\" }\n", "c2s", "127.0.0.1:5222 and [::1]:5222", "*"},
	{"interfaces = { \"::\", \"*\" }\n", "c2s", "[::1]:5222 and 127.0.0.1:5222", "*"},
	{"interfaces = { \"127.0.0.1\", \"::1\" }\n", "c2s", "127.0.0.1:5222 and [::1]:5222", "*"},
	{"interfaces = { \"192.0.2.1\", \"192.0.2.2\", \"2001:db8::1\", \"::1\" }\n", "c2s",
	 "192.0.2.1:5222 and [2001:db8::1]:5222", "*"},
	{"interfaces = { \"2001:db8::1\" }\n", "c2s", "[2001:db8::1]:5222", "*"},
	{"interfaces = { \"::ffff:127.0.0.1\", \"127.0.0.2\" }\n", "c2s", "[::ffff:127.0.0.1]:5222",
	 "*"},
	{"interfaces = { \"::\" }\nc2s_interfaces = { \"*\" }\n", "c2s", "127.0.0.1:5222",
	 "Prosody's default port and c2s_interfaces"},
	{"use_ipv4 = false\n", "c2s", "[::1]:5222", "Prosody's defaults for c2s"},
	{"use_ipv6 = false\n", "c2s", "127.0.0.1:5222", "*"},
	/* use_ipv4 and use_ipv6 only shape Prosody's defaults. */
	{"use_ipv6 = false\ninterfaces = { \"*\", \"::\" }\n", "c2s", "127.0.0.1:5222 and [::1]:5222",
	 "*"},
	/* http is private: local_interfaces, not interfaces. */
	{"interfaces = { \"192.0.2.1\" }\n", "http", "127.0.0.1:5280 and [::1]:5280",
	 "Prosody's defaults for http"},
	{"interfaces = { \"192.0.2.1\" }\n", "https", "192.0.2.1:5281", "*"},
	{"local_interfaces = { \"::1\" }\nhttp_ports = { 8080 }\n", "http", "[::1]:8080",
	 "Prosody's http_ports and local_interfaces"},
	{"use_ipv4 = false\n", "http", "[::1]:5280", "*"},
	{"http_interfaces = { \"*\" }\nlocal_interfaces = { \"::1\" }\n", "http", "127.0.0.1:5280",
	 "*"},
	/* The singular spellings Prosody still reads. */
	{"c2s_interface = \"192.0.2.7\"\ninterfaces = { \"::\" }\n", "c2s", "192.0.2.7:5222",
	 "Prosody's default port and c2s_interface"},
	{"interface = \"192.0.2.8\"\n", "s2s", "192.0.2.8:5269",
	 "Prosody's default port and interface"},
	{"interfaces = { \"192.0.2.9\" }\ninterface = \"192.0.2.8\"\n", "s2s", "192.0.2.9:5269", "*"},
};

static void test_addresses(void)
{
	char lua[512], name[512];

	for (size_t i = 0; i < sizeof(addresses) / sizeof(addresses[0]); i++) {
		struct npd_config *cfg;
		const struct npd_service *s;

		snprintf(lua, sizeof(lua), "%sproxy_port_mappings = { [15222] = \"%s\" }\n",
			 addresses[i].lua, addresses[i].service);
		cfg = load(lua);
		s = service(cfg, addresses[i].service);
		snprintf(name, sizeof(name), "%s", addresses[i].lua);
		for (char *nl = strchr(name, '\n'); nl; nl = strchr(nl, '\n'))
			*nl = ' '; /* one line a test point */
		if (!ok(s && strcmp(addrs(s), addresses[i].addr) == 0 &&
				matches(s->prosody, addresses[i].from) && warned.count == 0 &&
				cfg->nservices == 1 && cfg->listeners[0].service == 0,
			"%s%s at %s", name, addresses[i].service, addresses[i].addr))
			diag("  got %s from \"%s\"%s%s", addrs(s),
			     s ? s->prosody : "", cfg ? warned.text : dg.error, "");
		npd_config_free(cfg);
	}
}

static const struct {
	const char *lua;
	const char *want;
} errors[] = {
	{"proxy_port_mappings = { [15223] = \"c2s_direct_tls\" }\n",
	 "t.lua:1: proxy_port_mappings[15223]: Prosody does not listen for c2s_direct_tls: set "
	 "c2s_direct_tls_ports, as in c2s_direct_tls_ports = { 5223 } (it has no default port)"},
	{"proxy_port_mappings = { [1] = \"c2s\" }\nc2s_ports = {}\n",
	 "t.lua:2: c2s_ports: the list is empty: Prosody does not listen for c2s, so "
	 "proxy_port_mappings[1] cannot reach it"},
	{"proxy_port_mappings = { [1] = \"c2s\" }\nc2s_ports = { 0 }\n",
	 "t.lua:2: c2s_ports[1]: expected a port from 1 to 65535, got 0"},
	{"proxy_port_mappings = { [1] = \"c2s\" }\nc2s_ports = \"x\"\n",
	 "t.lua:2: c2s_ports: expected a port from 1 to 65535, got \"x\""},
	{"proxy_port_mappings = { [1] = \"c2s\" }\ninterfaces = { 5 }\n",
	 "t.lua:2: interfaces[1]: expected an address such as \"*\", \"::\" or \"127.0.0.1\", got 5"},
	{"proxy_port_mappings = { [1] = \"http\" }\nlocal_interfaces = {}\n",
	 "t.lua:2: local_interfaces: the list is empty: Prosody does not listen for http, so "
	 "proxy_port_mappings[1] cannot reach it"},
	{"proxy_port_mappings = { [1] = \"c2s\" }\nc2s_interfaces = { \"[::1]\" }\n",
	 "t.lua:2: c2s_interfaces[1]: expected an address such as \"*\", \"::\" or "
	 "\"127.0.0.1\", got \"[::1]\""},
	/* A service entry without connect: its line, not the mapping's. */
	{"proxy_port_mappings = { [1] = \"s2s_direct_tls\" }\n"
	 "services = {\n\ts2s_direct_tls = { transparent = true },\n}\n",
	 "t.lua:3: services.s2s_direct_tls: Prosody does not listen for s2s_direct_tls*"},
	{"proxy_port_mappings = { [1] = \"c2s\" }\nuse_ipv4 = false\nuse_ipv6 = false\n",
	 "t.lua:3: use_ipv6: use_ipv4 and use_ipv6 are both false: without interfaces, Prosody "
	 "listens nowhere"},
	/* Sections. */
	{"VirtualHost()\n", "t.lua:1: VirtualHost needs a name, as in VirtualHost \"example.com\""},
	{"\nComponent { }\n", "t.lua:2: Component needs a name, as in Component \"example.com\""},
};

static void test_errors(void)
{
	for (size_t i = 0; i < sizeof(errors) / sizeof(errors[0]); i++)
		check_error(errors[i].lua, errors[i].want);
}

static void test_services(void)
{
	struct npd_config *cfg;
	const struct npd_service *s;

	/* Options for one of Prosody's services, its address from Prosody's keys. */
	cfg = load("proxy_port_mappings = { [1] = \"c2s\", [2] = \"c2s\", [3] = \"s2s\", [4] = \"x\" }\n"
		   "c2s_ports = { 5400 }\n"
		   "services = {\n"
		   "\tc2s = { transparent = true, idle_timeout = 60 },\n"
		   "\ts2s = { connect = \"127.0.0.1:6000\", send_proxy = \"v2\" },\n"
		   "\tx = { connect = \"127.0.0.1:7000\" },\n"
		   "}\n");
	s = service(cfg, "c2s");
	if (!ok(s && strcmp(addrs(s), "127.0.0.1:5400 and [::1]:5400") == 0 && s->transparent &&
			s->idle_timeout_ms == 60000 &&
			strcmp(s->prosody, "Prosody's c2s_ports and default interfaces") == 0,
		"services.c2s without connect: Prosody's address, netproxyd's options"))
		diag("  %s", cfg ? addrs(s) : dg.error);
	s = service(cfg, "s2s");
	ok(s && strcmp(addrs(s), "127.0.0.1:6000") == 0 && s->prosody[0] == '\0' &&
		   s->send_proxy == NPD_SEND_V2,
	   "connect wins over Prosody's keys");
	ok(cfg && cfg->nservices == 3 && cfg->nlisteners == 8 && warned.count == 0,
	   "two ports to one service: one service");
	npd_config_free(cfg);

	/* A derived service is like one with no options: plain, default timeouts. */
	cfg = load("proxy_port_mappings = { [2] = \"s2s\", [1] = \"c2s\" }\n"
		   "services = { z = { connect = \"127.0.0.1:1\" } }\n");
	ok(cfg && cfg->nservices == 3 && strcmp(cfg->services[0].name, "c2s") == 0 &&
		   strcmp(cfg->services[1].name, "s2s") == 0 &&
		   strcmp(cfg->services[2].name, "z") == 0 &&
		   cfg->listeners[0].service == 0 && cfg->listeners[2].service == 1,
	   "added services are sorted in; listeners point at them");
	s = service(cfg, "s2s");
	ok(s && s->send_proxy == NPD_SEND_NONE && !s->transparent && s->transparent_port &&
		   s->connect_timeout_ms == NPD_DEFAULT_CONNECT_TIMEOUT_MS && s->idle_timeout_ms == 0,
	   "an added service has the defaults");
	npd_config_free(cfg);

	/* mod_net_proxy reads ports with tonumber(): "15222" is a port. */
	cfg = load("proxy_port_mappings = { [\"15222\"] = \"c2s\" }\nproxy_ports = { \"15222\" }\n");
	ok(cfg && cfg->nlisteners == 2 && cfg->listeners[0].port == 15222 &&
		   cfg->listeners[0].service == 0 && warned.count == 0,
	   "ports written as strings");
	npd_config_free(cfg);
}

/* Where the proxy ports listen: proxy_interfaces, else interfaces, else every address. */
static void test_listen(void)
{
	struct npd_config *cfg;

	cfg = load("proxy_port_mappings = { [15222] = \"c2s\" }\ninterfaces = { \"127.0.0.1\" }\n");
	ok(cfg && cfg->nlisteners == 1 &&
		   strcmp(cfg->listeners[0].addr_text, "127.0.0.1:15222") == 0 &&
		   strcmp(addr_of(cfg, "c2s"), "127.0.0.1:5222") == 0,
	   "interfaces: where proxy ports listen, when proxy_interfaces is not set");
	npd_config_free(cfg);
	cfg = load("proxy_port_mappings = { [15222] = \"c2s\" }\ninterfaces = { \"127.0.0.1\" }\n"
		   "proxy_interfaces = { \"::1\" }\n");
	ok(cfg && cfg->nlisteners == 1 && strcmp(cfg->listeners[0].addr_text, "[::1]:15222") == 0,
	   "proxy_interfaces wins");
	npd_config_free(cfg);
	cfg = load("proxy_port_mappings = { [15222] = \"c2s\" }\nuse_ipv6 = false\n");
	ok(cfg && cfg->nlisteners == 1 &&
		   strcmp(cfg->listeners[0].addr_text, "0.0.0.0:15222") == 0,
	   "use_ipv6 = false: IPv4 only");
	npd_config_free(cfg);
	cfg = load("proxy_port_mappings = { [15222] = \"c2s\" }\nuse_ipv4 = false\n");
	ok(cfg && cfg->nlisteners == 1 && strcmp(cfg->listeners[0].addr_text, "[::]:15222") == 0,
	   "use_ipv4 = false: IPv6 only");
	npd_config_free(cfg);
	cfg = load("proxy_port_mappings = { [15222] = \"c2s\" }\ninterface = \"127.0.0.2\"\n"
		   "proxy_interface = \"127.0.0.3\"\n");
	ok(cfg && cfg->nlisteners == 1 &&
		   strcmp(cfg->listeners[0].addr_text, "127.0.0.3:15222") == 0 &&
		   strcmp(addr_of(cfg, "c2s"), "127.0.0.2:5222") == 0 && warned.count == 0,
	   "proxy_interface, then interface: Prosody's singular spellings");
	npd_config_free(cfg);
	check_error("proxy_port_mappings = { [15222] = \"c2s\" }\ninterfaces = {}\n",
		    "t.lua:2: interfaces: the list is empty: Prosody does not listen for c2s, so "
		    "proxy_port_mappings[15222] cannot reach it");
	check_error("proxy_port_mappings = { [15222] = \"c2s\" }\nproxy_interfaces = {}\n",
		    "t.lua:2: proxy_interfaces: the list is empty: nothing to listen on");
}

/* Only the global section counts; a host's settings are skipped. */
static void test_sections(void)
{
	struct npd_config *cfg;

	cfg = load("proxy_port_mappings = { [15222] = \"c2s\" }\n"
		   "VirtualHost \"example.com\"\n"
		   "\tc2s_ports = { 1 }\n"
		   "\tmodules_enabled = { \"net_proxy\" }\n"
		   "Component \"conference.example.com\" \"muc\"\n"
		   "\tproxy_ports = {\n\t\t2,\n\t}\n"
		   "VirtualHost \"b.example\" { c2s_ports = { 3 } }\n"
		   "Component \"c.example\" { s2s_ports = 4 }\n"
		   "component \"d.example\" \"muc\" { s2s_ports = 5 }\n"
		   "c2s_ports = { 5000 }\n"
		   "host \"e.example\"\n"
		   "Host \"f.example\"\n"
		   "\tservices = { }\n");
	if (!ok(cfg && strcmp(addr_of(cfg, "c2s"), "127.0.0.1:5000 and [::1]:5000") == 0 &&
			cfg->nlisteners == 2 &&
			cfg->prosody,
		"a host's options are its own; { options } return to the global section"))
		diag("  %s", cfg ? addr_of(cfg, "c2s") : dg.error);
	if (!ok(matches(warned.text, "t.lua:3: c2s_ports belongs to VirtualHost \"example.com\" "
				     "here, and Prosody reads it only in the global section "
				     "(before the first VirtualHost or Component): ignored\n"
				     "t.lua:6: proxy_ports belongs to Component "
				     "\"conference.example.com\"*ignored\n"
				     "t.lua:15: services belongs to VirtualHost \"f.example\"*"
				     "ignored\n"),
		"a setting netproxyd reads, in a host's section, is warned about with its line"))
		diag("%s", warned.text);
	npd_config_free(cfg);
}

static void test_prosody_keys(void)
{
	struct npd_config *cfg;
	char *text;

	/* A Prosody config is full of Prosody's options: skipped, counted, not warned about. */
	cfg = load("admins = { \"admin@example.com\" }\n"
		   "modules_enabled = { \"roster\"; \"saslauth\"; \"tls\" }\n"
		   "pidfile = \"/run/prosody/prosody.pid\"\n"
		   "log = { info = \"/var/log/prosody/prosody.log\"; { levels = { \"error\" }; to = "
		   "\"syslog\" } }\n"
		   "limits = { c2s = { rate = \"10kb/s\" } }\n"
		   "proxy_port_mappings = { [15222] = \"c2s\" }\n"
		   "VirtualHost \"localhost\"\n");
	ok(cfg && warned.count == 0 && cfg->prosody && cfg->prosody_skipped == 4 && cfg->nfiles == 1,
	   "Prosody's own options: four skipped without a word");
	text = cfg ? describe(cfg) : NULL;
	if (!ok(text && strstr(text, "\na Prosody config: 1 file read, 4 of Prosody's own "
				     "settings skipped\n"),
		"-t says so"))
		diag("%s", text ? text : dg.error);
	free(text);
	npd_config_free(cfg);

	/* services written into Prosody's own file: still Prosody's, no noise; proxy_ typos said. */
	cfg = load("admins = { }\npidfile = \"x\"\nproxy_port_mapping = { }\n"
		   "proxy_port_mappings = { [15222] = \"c2s\" }\n"
		   "services = { c2s = { transparent = true } }\nVirtualHost \"localhost\"\n");
	ok(!cfg && strcmp(dg.error, "t.lua:3: unknown key proxy_port_mapping (did you mean "
				    "proxy_port_mappings?)") == 0,
	   "services inside prosody.cfg.lua: Prosody's options skipped, a proxy_ typo an error");
	npd_config_free(cfg);

	/* Without VirtualHost, Component or modules_enabled: netproxyd's, typos warned. */
	cfg = load("proxy_port_mappings = { [15222] = \"c2s\" }\nadmins = { }\n");
	ok(!cfg && strcmp(dg.error, "t.lua:2: unknown key admins") == 0,
	   "not a Prosody config: an unknown key is an error");
	npd_config_free(cfg);

	cfg = load("modules_enabled = {\n\t\"roster\",\n\t\"net_proxy\",\n}\n"
		   "proxy_port_mappings = { [15222] = \"c2s\" }\n");
	ok(cfg && strcmp(warned.text, "t.lua:1: modules_enabled: loads net_proxy: Prosody would "
				      "listen on the proxy ports itself; remove it, netproxyd "
				      "takes its place\n") == 0,
	   "mod_net_proxy still enabled: warned");
	npd_config_free(cfg);

	/* ENV_NAME reads the environment variable NAME, as in Prosody. */
	setenv("NPD_TEST_C2S_PORT", "6222", 1);
	unsetenv("NPD_TEST_UNSET");
	cfg = load("proxy_port_mappings = { [15222] = \"c2s\", [15269] = \"s2s\" }\n"
		   "c2s_ports = { ENV_NPD_TEST_C2S_PORT }\ns2s_ports = ENV_NPD_TEST_UNSET\n");
	ok(cfg && strcmp(addr_of(cfg, "c2s"), "127.0.0.1:6222 and [::1]:6222") == 0 &&
		   strcmp(addr_of(cfg, "s2s"), "127.0.0.1:5269 and [::1]:5269") == 0,
	   "ENV_: set, and unset (nil)");
	npd_config_free(cfg);

	cfg = load("proxy_port_mappings = { [15222] = \"c2s\" }\n\nRunScript \"/etc/x.lua\"\n");
	ok(cfg && strcmp(warned.text, "t.lua:3: RunScript \"/etc/x.lua\" skipped: netproxyd runs "
				      "no scripts\n") == 0,
	   "RunScript: skipped, with a word");
	npd_config_free(cfg);
}

/* Include's errors: e.lua, and another file; '*' stands for the directory. */
static const struct {
	const char *main, *other, *text, *want;
} include_errors[] = {
	/* Messages name the file and line a bad value is in. */
	{"proxy_port_mappings = { [15222] = \"c2s\" }\nInclude \"e1.lua\"\n", "e1.lua",
	 "\nproxy_header_timeout = \"5\"\n",
	 "*/e1.lua:2: proxy_header_timeout: expected a number of seconds, got string"},
	{"Include \"e2.lua\"\n", "e2.lua", "x = = 1\n", "*/e2.lua:1: unexpected symbol near '='"},
	{"\nInclude \"missing.lua\"\n", NULL, NULL,
	 "*/e.lua:2: Include: */missing.lua: cannot open: No such file or directory"},
	{"Include \"nodir/*.lua\"\n", NULL, NULL,
	 "*/e.lua:1: Include \"nodir/*.lua\": cannot open the directory */nodir: No such file or "
	 "directory"},
	{"Include \"conf*/a.cfg.lua\"\n", NULL, NULL,
	 "*/e.lua:1: Include \"conf*/a.cfg.lua\": '*' and '?' work only in the file name, not in "
	 "*/conf*"},
	{"Include \"e.lua\"\n", NULL, NULL,
	 "*/e.lua:1: Include of */e.lua: Includes nest more than 16 deep (does a file include "
	 "itself?)"},
	{"Include()\n", NULL, NULL,
	 "*/e.lua:1: bad argument #1 to 'Include' (string expected, got no value)"},
	{"Include \"fifo\"\n", NULL, NULL, "*/e.lua:1: Include: */fifo: not a regular file"},
	/* Included text counts against the memory cap: five 14 MiB files are over 64 MiB. */
	{"for i = 1, 5 do Include \"big.lua\" end\n", NULL, NULL,
	 "*/e.lua:1: Include of */big.lua: the config's files and Lua would use over 64 MiB"},
};

static void test_include(void)
{
	struct npd_config *cfg;
	char want[1024], *text;

	put("main.lua", "proxy_port_mappings = { [15222] = \"c2s\", [15269] = \"s2s\" }\n"
			"Include \"conf.d/*.cfg.lua\"\n"
			"include \"./sub/first.lua\"\n"
			"VirtualHost \"h.example\"\n"
			"Include \"sub/global.lua\"\n"
			"c2s_ports = { 1 }\n");
	put("conf.d/a.cfg.lua", "c2s_ports = { 6000 }\n");
	put("conf.d/b.cfg.lua", "c2s_ports = { 6001 }\nVirtualHost \"x\"\nc2s_ports = { 7 }\n");
	put("conf.d/.hidden.cfg.lua", "error(\"a hidden file ran\")\n");
	put("conf.d/c.cfg.lua.txt", "error(\"an unmatched file ran\")\n");
	put("sub/first.lua", "Include \"second.lua\"\nInclude \"nothing-*.lua\"\n");
	put("sub/second.lua", "s2s_ports = { 6100 }\n");
	put("sub/global.lua", "proxy_interfaces = { \"127.0.0.1\" }\n");
	cfg = load_file("main.lua");
	if (!ok(cfg && strcmp(addr_of(cfg, "c2s"), "127.0.0.1:6001 and [::1]:6001") == 0,
		"conf.d/*.cfg.lua: both files, in sorted order, not the hidden one"))
		diag("  %s", cfg ? addr_of(cfg, "c2s") : dg.error);
	ok(cfg && strcmp(addr_of(cfg, "s2s"), "127.0.0.1:6100 and [::1]:6100") == 0,
	   "a relative path is relative to the including file");
	ok(cfg && cfg->nlisteners == 2 && strcmp(cfg->listeners[0].addr_text,
						 "127.0.0.1:15222") == 0,
	   "an included file starts in the global section");
	ok(cfg && cfg->nfiles == 6, "six files read");
	snprintf(want, sizeof(want),
		 "%s/conf.d/b.cfg.lua:3: c2s_ports belongs to VirtualHost \"x\" here*\n"
		 "%s/main.lua:6: c2s_ports belongs to VirtualHost \"h.example\" here*\n",
		 dir, dir);
	if (!ok(matches(warned.text, want),
		"the including file's section goes on after the Include; warnings name their file"))
		diag("%s", warned.text);
	text = cfg ? describe(cfg) : NULL;
	ok(text && strstr(text, "\na Prosody config: 6 files read, 0 of Prosody's own settings "
				"skipped\n"),
	   "-t counts the files");
	free(text);
	npd_config_free(cfg);

	/* netproxyd's own file including Prosody's: Prosody's options skipped, its own typos errors. */
	put("prosody/prosody.cfg.lua", "admins = { }\nproxy_port_mappings = { [15222] = \"c2s\" }\n"
				       "VirtualHost \"localhost\"\n");
	snprintf(want, sizeof(want),
		 "Include \"%s/prosody/prosody.cfg.lua\"\nservices = { c2s = { transparent = true } }\n",
		 dir);
	put("netproxyd.lua", want);
	cfg = load_file("netproxyd.lua");
	if (!ok(cfg && cfg->services[0].transparent &&
			strcmp(addrs(&cfg->services[0]), "127.0.0.1:5222 and [::1]:5222") == 0 &&
			warned.count == 0 && cfg->prosody_skipped == 1,
		"an absolute Include; Prosody's options skipped without a word"))
		diag("%s%s", warned.text, cfg ? "" : dg.error);
	npd_config_free(cfg);
	snprintf(want + strlen(want), sizeof(want) - strlen(want), "servces = { }\n");
	put("netproxyd.lua", want);
	cfg = load_file("netproxyd.lua");
	snprintf(want, sizeof(want), "%s/netproxyd.lua:3: unknown key servces (did you mean services?)",
		 dir);
	if (!ok(!cfg && strcmp(dg.error, want) == 0, "and netproxyd's own file's typo is an error"))
		diag("%s%s", warned.text, cfg ? "" : dg.error);
	npd_config_free(cfg);

	/* A failed Include caught by pcall leaves the section and the nesting as they were. */
	put("pc.lua", "VirtualHost \"x\"\nerror(\"no\")\n");
	put("pcall.lua", "for i = 1, 20 do assert(not pcall(Include, \"pc.lua\")) end\n"
			 "Include \"sub/second.lua\"\n"
			 "proxy_port_mappings = { [15222] = \"c2s\", [15269] = \"s2s\" }\n");
	cfg = load_file("pcall.lua");
	if (!ok(cfg && strcmp(addr_of(cfg, "s2s"), "127.0.0.1:6100 and [::1]:6100") == 0 &&
			warned.count == 0,
		"pcall(Include) that fails: still the global section, still 16 deep to go"))
		diag("  %s%s", cfg ? "" : dg.error, warned.text);
	npd_config_free(cfg);

	/* netproxyd's own files, included: counted too, with no word of Prosody. */
	put("own.lua", "Include \"own-timeout.lua\"\nproxy_port_mappings = { [1] = \"c2s\" }\n");
	put("own-timeout.lua", "proxy_header_timeout = 4\n");
	cfg = load_file("own.lua");
	text = cfg ? describe(cfg) : NULL;
	ok(text && cfg->header_timeout_ms == 4000 && strstr(text, "\nmax header: 4096 bytes\n"
								 "2 files read\n"),
	   "-t counts the files of a config that is not Prosody's");
	free(text);
	npd_config_free(cfg);

	/* Patterns match in time linear-ish in their length, not exponential. */
	put("glob/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "local x = 1\n");
	put("globbed.lua", "Include \"glob/*a*a*a*a*a*a*a*a*a*a*a*a*b\"\n"
			   "Include \"glob/*a*a*a\"\nproxy_port_mappings = { [1] = \"c2s\" }\n");
	cfg = load_file("globbed.lua");
	ok(cfg && cfg->nfiles == 2, "a pattern with many '*': one matched no file, one a file");
	npd_config_free(cfg);

	for (size_t i = 0; i < sizeof(include_errors) / sizeof(include_errors[0]); i++) {
		put("e.lua", include_errors[i].main);
		if (include_errors[i].other)
			put(include_errors[i].other, include_errors[i].text);
		cfg = load_file("e.lua");
		if (!ok(!cfg && matches(dg.error, include_errors[i].want), "%s",
			include_errors[i].want))
			diag("  got: %s", cfg ? "(it loaded)" : dg.error);
		npd_config_free(cfg);
	}
}

#ifndef NP_SANITIZED
static size_t heap_at_probe;

static void probe(void *ctx, const char *text)
{
	(void)ctx;
	(void)text;
	heap_at_probe = mallinfo2().uordblks;
}
#endif

/*
 * Include called in a loop keeps nothing in C from one call to the next:
 * its paths once piled up outside the memory cap, 60 bytes a call, until
 * the load ended. RunScript's warning measures the heap in the middle.
 */
static void test_include_loop(void)
{
#ifdef NP_SANITIZED
	skip("the C heap is measured with mallinfo2(), which ASan's allocator does not keep");
#else
	struct npd_config_diag d = {.warn = probe};
	struct npd_config *cfg = NULL;
	size_t before = mallinfo2().uordblks;

	heap_at_probe = before;
	ok(npd_config_load_string("t.lua",
				  "for i = 1, 200000 do pcall(Include, \"/nonexistent/x.lua\") end\n"
				  "RunScript \"probe\"\n"
				  "proxy_port_mappings = { [15222] = \"c2s\" }\n",
				  &cfg, &d) == 0,
	   "Include 200000 times, caught each time");
	if (!ok(heap_at_probe < before + (1 << 20), "the C heap grew by under 1 MiB"))
		diag("  it grew by %zu bytes", heap_at_probe - before);
	npd_config_free(cfg);
#endif
}

/* The config Debian's prosody package installs, with the proxy keys added by a file of ours. */
static void test_system_prosody(void)
{
	const char *system = "/etc/prosody/prosody.cfg.lua";
	char lua[512];
	struct npd_config *cfg;

	if (access(system, R_OK) != 0) {
		skip("%s: not installed (Debian's prosody package)", system);
		return;
	}
	snprintf(lua, sizeof(lua),
		 "Include \"%s\"\nproxy_port_mappings = { [15222] = \"c2s\", [15269] = \"s2s\" }\n",
		 system);
	put("system.lua", lua);
	cfg = load_file("system.lua");
	if (!ok(cfg && cfg->prosody && warned.count == 0 && cfg->nservices == 2,
		"%s loads, without a warning", system))
		diag("  %s%s", cfg ? "" : dg.error, warned.text);
	npd_config_free(cfg);
}

/* A FIFO, and a 14 MiB file of one comment line, for Include's errors. */
static void make_special_files(void)
{
	char path[512];
	FILE *f;

	snprintf(path, sizeof(path), "%s/fifo", dir);
	if (mkfifo(path, 0600) != 0)
		diag("mkfifo %s: %s", path, strerror(errno));
	snprintf(path, sizeof(path), "%s/big.lua", dir);
	f = fopen(path, "w");
	if (f) {
		fputs("--", f);
		for (int i = 0; i < 14 << 10; i++)
			for (int j = 0; j < 1024; j++)
				fputc('x', f);
		fputs("\n", f);
		fclose(f);
	}
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

int main(void)
{
	if (!mkdtemp(dir))
		skip_all("mkdtemp failed");
	make_special_files();
	test_addresses();
	test_errors();
	test_services();
	test_listen();
	test_sections();
	test_prosody_keys();
	test_include();
	test_include_loop();
	test_system_prosody();
	nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
	return done_testing();
}
