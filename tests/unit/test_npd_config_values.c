/*
 * test_npd_config_values.c - config_values.c on its own: host:port text, IP
 * addresses and their one text form, ports, integers, seconds, booleans,
 * lists (a single value standing for a list of one), a service's address
 * resolved into a sockaddr, TLV types, and reading a setting by its name;
 * each with the message its wrong values get.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "config_internal.h"
#include "loader_check.h"
#include "tap.h"

static void test_split_host_port(void)
{
	static const struct {
		const char *text;
		const char *host; /* NULL: an error */
		unsigned port;
		bool bracketed;
		const char *why;
	} cases[] = {
		{"127.0.0.1:5222", "127.0.0.1", 5222, false, NULL},
		{"localhost:1", "localhost", 1, false, NULL},
		{"[::1]:65535", "::1", 65535, true, NULL},
		{"[fe80::1%eth0]:80", "fe80::1%eth0", 80, true, NULL},
		{"h:05222", "h", 5222, false, NULL},
		{"127.0.0.1", NULL, 0, false, "expected \"host:port\""},
		{"[::1]5222", NULL, 0, true, "expected \"[address]:port\""},
		{"[::1", NULL, 0, true, "expected \"[address]:port\""},
		{"::1:5222", NULL, 0, false, "write an IPv6 address in brackets, as in \"[::1]:5222\""},
		{":5222", NULL, 0, false, "the address is empty"},
		{"[]:5222", NULL, 0, true, "the address is empty"},
		{"h:", NULL, 0, false, "the port must be a number from 1 to 65535"},
		{"h:0", NULL, 0, false, "the port must be a number from 1 to 65535"},
		{"h:65536", NULL, 0, false, "the port must be a number from 1 to 65535"},
		{"h:99999999999999999999", NULL, 0, false, "the port must be a number from 1 to 65535"},
		{"h:80x", NULL, 0, false, "the port must be a number from 1 to 65535"},
		{"h:-1", NULL, 0, false, "the port must be a number from 1 to 65535"},
		{"0123456789abcdef:1", NULL, 0, false, "the address is too long"}, /* 16 bytes */
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char host[16];
		uint16_t port = 0;
		bool bracketed = !cases[i].bracketed;
		const char *why = cfg_split_host_port(cases[i].text, host, sizeof(host), &port,
						      &bracketed);

		if (cases[i].host)
			ok(!why && strcmp(host, cases[i].host) == 0 && port == cases[i].port &&
				   bracketed == cases[i].bracketed,
			   "%s: host %s, port %u", cases[i].text, cases[i].host, cases[i].port);
		else if (!ok(why && strcmp(why, cases[i].why) == 0, "%s: %s", cases[i].text,
			     cases[i].why))
			diag("  got %s", why ? why : "(no error)");
	}
}

static void test_ip(void)
{
	static const struct {
		const char *text;
		sa_family_t family; /* 0: not an address */
		const char *with_port, *alone;
	} cases[] = {
		{"127.0.0.1", AF_INET, "127.0.0.1:15222", "127.0.0.1"},
		{"0.0.0.0", AF_INET, "0.0.0.0:15222", "0.0.0.0"},
		{"::", AF_INET6, "[::]:15222", "::"},
		{"0::1", AF_INET6, "[::1]:15222", "::1"},
		{"2001:DB8:0:0:0:0:0:1", AF_INET6, "[2001:db8::1]:15222", "2001:db8::1"},
		/* One text for one address: no dotted tail (RFC 5952 section 4 only). */
		{"::ffff:192.0.2.1", AF_INET6, "[::ffff:c000:201]:15222", "::ffff:c000:201"},
		{"localhost", 0, NULL, NULL},
		{"[::1]", 0, NULL, NULL},
		{"fe80::1%lo", 0, NULL, NULL},
		{"1.2.3", 0, NULL, NULL},
		{"", 0, NULL, NULL},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		sa_family_t family = 0;
		uint8_t addr[16];
		char text[NPD_ADDR_TEXT], alone[NPD_ADDR_TEXT];
		bool got = cfg_parse_ip(cases[i].text, &family, addr);

		if (!cases[i].family) {
			ok(!got, "\"%s\" is not a numeric address", cases[i].text);
			continue;
		}
		cfg_format_addr(text, sizeof(text), family, addr, 15222);
		cfg_format_addr(alone, sizeof(alone), family, addr, -1);
		if (!ok(got && family == cases[i].family && strcmp(text, cases[i].with_port) == 0 &&
				strcmp(alone, cases[i].alone) == 0,
			"%s: %s", cases[i].text, cases[i].with_port))
			diag("  got %s and %s", text, alone);
	}
}

static void test_cidr(void)
{
	static const struct {
		const char *block, *want;
	} cases[] = {
		{"10.0.0.0/8", "10.0.0.0/8"},	 {"10.1.2.3/8", "10.0.0.0/8"},
		{"192.0.2.7", "192.0.2.7/32"},	 {"::1", "::1/128"},
		{"2001:db8::1/32", "2001:db8::/32"}, {"::/0", "::/0"},
	};
	char text[CFG_CIDRSTRLEN];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct np_cidr c;

		np_cidr_parse(cases[i].block, strlen(cases[i].block), &c);
		cfg_format_cidr(text, sizeof(text), &c);
		if (!ok(strcmp(text, cases[i].want) == 0, "%s as %s", cases[i].block, cases[i].want))
			diag("  got %s", text);
	}
	/* The longest: a full IPv6 address and /128 fit. */
	{
		struct np_cidr c;
		const char *block = "1111:2222:3333:4444:5555:6666:7777:8888/128";

		np_cidr_parse(block, strlen(block), &c);
		cfg_format_cidr(text, sizeof(text), &c);
		ok(strcmp(text, block) == 0, "the longest block fits CFG_CIDRSTRLEN");
	}
}

/* Values read from Lua: each case is the value of the setting v. */
static const struct {
	const char *lua;
	int port;	      /* cfg_to_port(): -1 when not a port */
	long long integer;    /* cfg_to_integer(): 0 with !is_integer */
	bool is_integer;
} numbers[] = {
	{"15222", 15222, 15222, true},
	{"15222.0", 15222, 15222, true},
	{"\"15222\"", 15222, 0, false},
	{"1", 1, 1, true},
	{"65535", 65535, 65535, true},
	{"0", -1, 0, true},
	{"65536", -1, 65536, true},
	{"-1", -1, -1, true},
	{"1.5", -1, 0, false},
	{"\"015222\"", -1, 0, false},
	{"\"\"", -1, 0, false},
	{"\"1a\"", -1, 0, false},
	{"\" 1\"", -1, 0, false},
	{"\"0\"", -1, 0, false},
	{"1e100", -1, 0, false},
	{"0/0", -1, 0, false},
	{"true", -1, 0, false},
	{"{}", -1, 0, false},
};

static void test_numbers(void)
{
	char values[128];

	for (size_t i = 0; i < sizeof(numbers) / sizeof(numbers[0]); i++) {
		uint16_t port = 0;
		lua_Integer v = 7;
		bool is_port, is_integer;

		snprintf(values, sizeof(values), "{ v = %s }", numbers[i].lua);
		loader_open("", values);
		lua_getfield(ld.L, 1, "v");
		is_port = cfg_to_port(ld.L, -1, &port);
		is_integer = cfg_to_integer(ld.L, -1, &v);
		if (numbers[i].port < 0)
			ok(!is_port, "%s is not a port", numbers[i].lua);
		else
			ok(is_port && port == numbers[i].port, "%s is port %d", numbers[i].lua,
			   numbers[i].port);
		ok(is_integer == numbers[i].is_integer && v == numbers[i].integer, "%s %s",
		   numbers[i].lua, numbers[i].is_integer ? "is an integer" : "is no integer");
		loader_close();
	}
}

/* A step reads setting v as the case says; the result or the message is checked. */
static const struct {
	const char *lua;
	char kind; /* 's' seconds, 'z' seconds or 0, 'i' integer in [1, 10], 'b' boolean, 'l' list */
	long long want;
	const char *error;
} reads[] = {
	{"2.5", 's', 2500, NULL},
	{"0.0001", 's', 1, NULL},
	{"2147483", 's', 2147483000, NULL},
	{"2147484", 's', 0, "t.lua:1: v: expected more than 0 seconds, at most 2147483, got 2147484"},
	{"0", 's', 0, "t.lua:1: v: expected more than 0 seconds, at most 2147483, got 0"},
	{"0", 'z', 0, NULL},
	{"-0.5", 'z', 0, "t.lua:1: v: expected 0 (none) or more seconds, at most 2147483, got -0.5"},
	{"\"5\"", 's', 0, "t.lua:1: v: expected a number of seconds, got string"},
	{"0/0", 's', 0, "t.lua:1: v: expected more than 0 seconds, at most 2147483, got *"},
	{"10", 'i', 10, NULL},
	{"10.0", 'i', 10, NULL},
	{"11", 'i', 0, "t.lua:1: v: expected a number from 1 to 10, got 11"},
	{"1.5", 'i', 0, "t.lua:1: v: expected a number from 1 to 10, got 1.5"},
	{"\"1\"", 'i', 0, "t.lua:1: v: expected a number from 1 to 10, got string"},
	{"true", 'b', 1, NULL},
	{"false", 'b', 0, NULL},
	{"1", 'b', 0, "t.lua:1: v: expected true or false, got number"},
	{"nil", 'b', 0, "t.lua:1: v: expected true or false, got nil"},
	{"5", 'l', 1, NULL}, /* a single value is a list of one */
	{"\"x\"", 'l', 1, NULL},
	{"{}", 'l', 0, NULL},
	{"{ 1, 2, 3 }", 'l', 3, NULL},
	{"{ c2s = 1 }", 'l', 0, "t.lua:1: v: expected a list, found the key \"c2s\""},
	{"{ [0] = 1 }", 'l', 0, "t.lua:1: v: expected a list, found the key 0"},
	{"{ [1.5] = 1 }", 'l', 0, "t.lua:1: v: expected a list, found the key 1.5"},
	{"{ 1, nil, 3 }", 'l', 0, "t.lua:1: v: expected a list, found one with holes (nil entries)"},
};
static size_t read_case;
static long long read_got;

static void read_step(void)
{
	int idx;

	lua_getfield(ld.L, 2, "v");
	idx = lua_gettop(ld.L);
	switch (reads[read_case].kind) {
	case 's':
		read_got = cfg_get_seconds(&ld, idx, "v", false);
		break;
	case 'z':
		read_got = cfg_get_seconds(&ld, idx, "v", true);
		break;
	case 'i':
		read_got = cfg_get_integer(&ld, idx, "v", 1, 10, "a number from 1 to 10");
		break;
	case 'b':
		read_got = cfg_get_boolean(&ld, idx, "v");
		break;
	default:
		read_got = (long long)cfg_list_len(&ld, idx, "v");
	}
}

/* want may end in '*', any text. */
static bool same(const char *got, const char *want)
{
	size_t n = strlen(want);

	return n && want[n - 1] == '*' ? strncmp(got, want, n - 1) == 0 : strcmp(got, want) == 0;
}

static void test_reads(void)
{
	char values[128];

	for (read_case = 0; read_case < sizeof(reads) / sizeof(reads[0]); read_case++) {
		int status;

		snprintf(values, sizeof(values), "{ v = %s }", reads[read_case].lua);
		loader_open("v = ...\n", values);
		loader_line("v", 1);
		read_got = -1;
		status = loader_run(read_step);
		if (!reads[read_case].error)
			is_int(status == LUA_OK ? read_got : -1, reads[read_case].want,
			       "%c %s: %lld", reads[read_case].kind, reads[read_case].lua,
			       reads[read_case].want);
		else if (!ok(status == LUA_ERRRUN && same(ld_diag.error, reads[read_case].error),
			     "%c %s: %s", reads[read_case].kind, reads[read_case].lua,
			     reads[read_case].error))
			diag("  got %s", status == LUA_OK ? "no error" : ld_diag.error);
		loader_close();
	}
}

/* Items of a list and their paths: a single value is item 1 at the setting's own path. */
static void test_items(void)
{
	char path[64];

	loader_open("", "{ list = { \"a\", \"b\" }, one = \"c\" }");
	lua_getfield(ld.L, 1, "list");
	cfg_push_item(ld.L, 2 + 1, 2);
	cfg_item_path(path, sizeof(path), ld.L, 3, "proxy_ports", 2);
	ok(strcmp(lua_tostring(ld.L, -1), "b") == 0 && strcmp(path, "proxy_ports[2]") == 0,
	   "item 2 of a list: proxy_ports[2]");
	lua_settop(ld.L, 2);
	lua_getfield(ld.L, 1, "one");
	cfg_push_item(ld.L, 3, 1);
	cfg_item_path(path, sizeof(path), ld.L, 3, "proxy_ports", 1);
	ok(strcmp(lua_tostring(ld.L, -1), "c") == 0 && strcmp(path, "proxy_ports") == 0,
	   "a single value: itself, at the setting's path");
	lua_settop(ld.L, 2);
	lua_getfield(ld.L, 1, "list");
	is_int(cfg_table_size(ld.L, 3), 2, "table_size counts keys");
	loader_close();
}

/* A setting by its name; the first of several that is set. */
static const char *first_got;
static int setting_type;

static void settings_step(void)
{
	setting_type = cfg_push_setting(&ld, K_WORKERS);
	lua_pop(ld.L, 1);
	first_got = cfg_push_first(&ld, &cfg_key_names[K_PROXY_INTERFACES], 4);
}

static void test_settings(void)
{
	loader_open("", "{ workers = 4, interfaces = { \"::\" }, interface = \"x\" }");
	loader_run(settings_step);
	ok(setting_type == LUA_TNUMBER, "workers by its name");
	ok(first_got && strcmp(first_got, "interfaces") == 0,
	   "proxy_interfaces, proxy_interface, interfaces, interface: interfaces is the first set");
	loader_close();
	loader_open("", "{}");
	loader_run(settings_step);
	ok(setting_type == LUA_TNIL && first_got == NULL, "none set: nothing pushed");
	loader_close();
	ok(strcmp(cfg_key_names[K_TRUSTED], "proxy_trusted_proxies") == 0 &&
		   strcmp(cfg_key_names[K_MODULES_ENABLED], "modules_enabled") == 0,
	   "every key has its name");
	for (int k = 0; k < K_COUNT; k++)
		if (!cfg_key_names[k])
			ok(0, "key %d has no name", k);
}

/* A service's address, into a sockaddr. */
static const struct {
	const char *text;
	int family;	   /* the sockaddr's; 0: an error */
	int wire_family;   /* npd_target_family() */
	unsigned port;
	const char *error; /* with family 0 */
} targets[] = {
	{"127.0.0.1:5222", AF_INET, AF_INET, 5222, NULL},
	{"[::1]:5222", AF_INET6, AF_INET6, 5222, NULL},
	{"[::ffff:127.0.0.1]:1", AF_INET6, AF_INET, 1, NULL},
	{"unix:/run/prosody.sock", AF_UNIX, AF_UNIX, 0, NULL},
	{"unix:", 0, 0, 0,
	 "t.lua: c: expected \"unix:\" and a socket path of 1 to 107 bytes, got \"unix:\""},
	{"127.0.0.1", 0, 0, 0, "t.lua: c: \"127.0.0.1\": expected \"host:port\""},
	{"[not-an-ip]:1", 0, 0, 0, "t.lua: c: cannot resolve \"not-an-ip\": *"},
	{"[127.0.0.1]:1", 0, 0, 0, "t.lua: c: cannot resolve \"127.0.0.1\": *"},
};
static size_t target_case;
static struct npd_target target_got;

static void target_step(void)
{
	cfg_parse_target(&ld, "c", targets[target_case].text, &target_got);
}

static void test_targets(void)
{
	for (target_case = 0; target_case < sizeof(targets) / sizeof(targets[0]); target_case++) {
		int status;

		loader_open("", "{}");
		status = loader_run(target_step);
		if (!targets[target_case].family) {
			if (!ok(status == LUA_ERRRUN && same(ld_diag.error, targets[target_case].error),
				"%s: %s", targets[target_case].text, targets[target_case].error))
				diag("  got %s", status == LUA_OK ? "no error" : ld_diag.error);
		} else if (targets[target_case].family == AF_UNIX) {
			const struct sockaddr_un *sun = (const struct sockaddr_un *)&target_got.addr;

			ok(status == LUA_OK && sun->sun_family == AF_UNIX &&
				   strcmp(sun->sun_path, "/run/prosody.sock") == 0 &&
				   target_got.addrlen == offsetof(struct sockaddr_un, sun_path) +
								 sizeof("/run/prosody.sock") &&
				   npd_target_family(&target_got) == AF_UNIX &&
				   strcmp(target_got.text, targets[target_case].text) == 0,
			   "%s: the path, its length with the NUL", targets[target_case].text);
		} else {
			const struct sockaddr_in *sin = (const struct sockaddr_in *)&target_got.addr;
			const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)&target_got.addr;
			unsigned port = ntohs(target_got.addr.ss_family == AF_INET ? sin->sin_port
										   : sin6->sin6_port);

			ok(status == LUA_OK && target_got.addr.ss_family == targets[target_case].family &&
				   npd_target_family(&target_got) == targets[target_case].wire_family &&
				   port == targets[target_case].port &&
				   strcmp(target_got.text, targets[target_case].text) == 0,
			   "%s: family %d (%d on the wire), port %u", targets[target_case].text,
			   targets[target_case].family, targets[target_case].wire_family,
			   targets[target_case].port);
		}
		loader_close();
	}
}

static void test_tlvs(void)
{
	is_int(cfg_tlv_type("ALPN"), NP_TLV_ALPN, "ALPN");
	is_int(cfg_tlv_type("alpn"), NP_TLV_ALPN, "alpn: any case");
	is_int(cfg_tlv_type("Unique_Id"), NP_TLV_UNIQUE_ID, "Unique_Id");
	is_int(cfg_tlv_type("GCP"), NP_TLV_GCP, "GCP");
	is_int(cfg_tlv_type("ALPN2"), -1, "ALPN2 is no TLV");
	is_int(cfg_tlv_type(""), -1, "nor is \"\"");
	ok(strcmp(cfg_tlv_name(NP_TLV_SSL), "SSL") == 0, "0x20 is SSL");
	ok(strcmp(cfg_tlv_name(NP_TLV_AZURE), "AZURE") == 0, "0xEE is AZURE");
	ok(cfg_tlv_name(0x42) == NULL, "0x42 has no name");
	for (int t = 0; t < 256; t++) {
		const char *name = cfg_tlv_name((uint8_t)t);

		if (name && cfg_tlv_type(name) != t)
			ok(0, "TLV 0x%02X: %s names another type", t, name);
	}
}

int main(void)
{
	test_split_host_port();
	test_ip();
	test_cidr();
	test_numbers();
	test_reads();
	test_items();
	test_settings();
	test_targets();
	test_tlvs();
	return done_testing();
}
