/*
 * config_values.c - the settings' names, and the values a config gives
 * them, read from Lua: integers, seconds, booleans, lists (a single value
 * standing for a list of one, as in Prosody), ports, host:port text, IP
 * addresses, a service's address resolved into a sockaddr, TLV types.
 *
 * A value of the wrong type or out of range is a cfg_fail() naming the
 * setting; every function here reads, none keeps anything.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/un.h>

#include <lauxlib.h>
#include <lua.h>

#include "config_internal.h"
#include "netproxy.h"

#define SECONDS_MAX (INT_MAX / 1000) /* timeouts are kept as int milliseconds */

const char *const cfg_key_names[K_COUNT] = {
	[K_PORT_MAPPINGS] = "proxy_port_mappings",
	[K_PORTS] = "proxy_ports",
	[K_PROXY_INTERFACES] = "proxy_interfaces",
	[K_PROXY_INTERFACE] = "proxy_interface",
	[K_INTERFACES] = "interfaces",
	[K_INTERFACE] = "interface",
	[K_TRUSTED] = "proxy_trusted_proxies",
	[K_HEADER_TIMEOUT] = "proxy_header_timeout",
	[K_MAX_HEADER] = "proxy_max_header",
	[K_SERVICES] = "services",
	[K_WORKERS] = "workers",
	[K_MAX_CONNECTIONS] = "max_connections",
	[K_SHUTDOWN_GRACE] = "shutdown_grace",
	[K_LOG_LEVEL] = "log_level",
	[K_LOG_SYSLOG] = "log_syslog",
	[K_LOG_CONNECTIONS] = "log_connections",
	[K_USER] = "user",
	[K_GROUP] = "group",
	[K_STATS_LISTEN] = "stats_listen",
	[K_LOCAL_INTERFACES] = "local_interfaces",
	[K_USE_IPV4] = "use_ipv4",
	[K_USE_IPV6] = "use_ipv6",
	[K_MODULES_ENABLED] = "modules_enabled",
};

static const struct {
	const char *name;
	uint8_t type;
} tlv_names[] = {
	{"ALPN", NP_TLV_ALPN},		 {"AUTHORITY", NP_TLV_AUTHORITY},
	{"CRC32C", NP_TLV_CRC32C},	 {"NOOP", NP_TLV_NOOP},
	{"UNIQUE_ID", NP_TLV_UNIQUE_ID}, {"SSL", NP_TLV_SSL},
	{"NETNS", NP_TLV_NETNS},	 {"AWS", NP_TLV_AWS},
	{"AZURE", NP_TLV_AZURE},	 {"GCP", NP_TLV_GCP},
};

/* A number with an integral value; strings that look like numbers are not. */
bool cfg_to_integer(lua_State *L, int idx, lua_Integer *v)
{
	int isnum = 0;

	*v = 0;
	if (lua_type(L, idx) == LUA_TNUMBER)
		*v = lua_tointegerx(L, idx, &isnum);
	return isnum;
}

/* An integer in [min, max]; what says what is expected, in words. */
lua_Integer cfg_get_integer(struct loader *ld, int idx, const char *path, lua_Integer min,
			    lua_Integer max, const char *what)
{
	lua_Integer v;
	char buf[80];

	if (lua_type(ld->L, idx) != LUA_TNUMBER)
		cfg_fail(ld, path, "expected %s, got %s", what, luaL_typename(ld->L, idx));
	if (!cfg_to_integer(ld->L, idx, &v) || v < min || v > max)
		cfg_fail(ld, path, "expected %s, got %s", what,
			 cfg_show(ld->L, idx, buf, sizeof(buf)));
	return v;
}

/* Seconds, fractions allowed, as milliseconds (at least 1); 0 only when zero_ok. */
int cfg_get_seconds(struct loader *ld, int idx, const char *path, bool zero_ok)
{
	double s;
	char buf[80];

	if (lua_type(ld->L, idx) != LUA_TNUMBER)
		cfg_fail(ld, path, "expected a number of seconds, got %s",
			 luaL_typename(ld->L, idx));
	s = lua_tonumber(ld->L, idx);
	if (!(s > 0 || (zero_ok && s == 0)) || s > SECONDS_MAX)
		cfg_fail(ld, path, "expected %s seconds, at most %d, got %s",
			 zero_ok ? "0 (none) or more" : "more than 0", SECONDS_MAX,
			 cfg_show(ld->L, idx, buf, sizeof(buf)));
	if (s == 0)
		return 0;
	return s * 1000 < 1 ? 1 : (int)lround(s * 1000);
}

bool cfg_get_boolean(struct loader *ld, int idx, const char *path)
{
	if (lua_type(ld->L, idx) != LUA_TBOOLEAN)
		cfg_fail(ld, path, "expected true or false, got %s", luaL_typename(ld->L, idx));
	return lua_toboolean(ld->L, idx);
}

size_t cfg_get_choice(struct loader *ld, int idx, const char *path, const char *const *names,
		      size_t n)
{
	char expected[256], got[80];
	size_t len = 0;

	for (size_t i = 0; i < n; i++)
		if (lua_type(ld->L, idx) == LUA_TSTRING && strcmp(lua_tostring(ld->L, idx), names[i]) == 0)
			return i;
	for (size_t i = 0; i < n && len < sizeof(expected); i++)
		len += (size_t)snprintf(expected + len, sizeof(expected) - len, "%s\"%s\"",
					i == 0 ? "" : i + 1 < n ? ", " : " or ", names[i]);
	cfg_fail(ld, path, "expected %s, got %s", expected, cfg_show(ld->L, idx, got, sizeof(got)));
}

/* How many keys the table at idx has (lua_rawlen counts only the sequence). */
size_t cfg_table_size(lua_State *L, int idx)
{
	size_t n = 0;

	lua_pushnil(L);
	while (lua_next(L, idx)) {
		lua_pop(L, 1);
		n++;
	}
	return n;
}

/* Push a setting's value; returns its type. */
int cfg_push_setting(struct loader *ld, enum key k)
{
	return lua_getfield(ld->L, 2, cfg_key_names[k]); /* the values table, a plain one */
}

/*
 * Lists. As in Prosody, a single value stands for a list of one
 * (proxy_ports = 15222). A table must be a proper sequence: a stray
 * key is a mistake ({ c2s = 15222 }) and must not vanish silently.
 */
size_t cfg_list_len(struct loader *ld, int idx, const char *path)
{
	lua_State *L = ld->L;
	lua_Integer n, k, count = 0;
	char buf[80];

	if (lua_type(L, idx) != LUA_TTABLE)
		return 1;
	n = (lua_Integer)lua_rawlen(L, idx);
	lua_pushnil(L);
	while (lua_next(L, idx)) {
		lua_pop(L, 1);
		if (!cfg_to_integer(L, -1, &k) || k < 1 || k > n)
			cfg_fail(ld, path, "expected a list, found the key %s",
				 cfg_show(L, -1, buf, sizeof(buf)));
		count++;
	}
	if (count != n)
		cfg_fail(ld, path, "expected a list, found one with holes (nil entries)");
	return (size_t)n;
}

void cfg_push_item(lua_State *L, int idx, size_t i)
{
	if (lua_type(L, idx) == LUA_TTABLE)
		lua_rawgeti(L, idx, (lua_Integer)i);
	else
		lua_pushvalue(L, idx);
}

void cfg_item_path(char *buf, size_t cap, lua_State *L, int idx, const char *path, size_t i)
{
	if (lua_type(L, idx) == LUA_TTABLE)
		snprintf(buf, cap, "%s[%zu]", path, i);
	else
		snprintf(buf, cap, "%s", path);
}

/* Split "host:port" or "[v6]:port"; returns NULL or what is wrong. */
const char *cfg_split_host_port(const char *text, char *host, size_t cap, uint16_t *port,
				bool *bracketed)
{
	const char *colon, *p;
	size_t hlen;
	unsigned long v = 0;

	*bracketed = text[0] == '[';
	if (*bracketed) {
		const char *close = strchr(text, ']');

		if (!close || close[1] != ':')
			return "expected \"[address]:port\"";
		text++;
		hlen = (size_t)(close - text);
		colon = close + 1;
	} else {
		colon = strchr(text, ':');
		if (!colon)
			return "expected \"host:port\"";
		if (strchr(colon + 1, ':'))
			return "write an IPv6 address in brackets, as in \"[::1]:5222\"";
		hlen = (size_t)(colon - text);
	}
	if (hlen == 0)
		return "the address is empty";
	if (hlen >= cap)
		return "the address is too long";
	for (p = colon + 1; *p >= '0' && *p <= '9' && v <= 65535; p++)
		v = v * 10 + (unsigned long)(*p - '0');
	if (p == colon + 1 || *p || v < 1 || v > 65535)
		return "the port must be a number from 1 to 65535";
	memcpy(host, text, hlen);
	host[hlen] = '\0';
	*port = (uint16_t)v;
	return NULL;
}

/* A numeric address for listening: IPv4 or IPv6 text. */
bool cfg_parse_ip(const char *text, sa_family_t *family, uint8_t addr[16])
{
	memset(addr, 0, 16);
	if (inet_pton(AF_INET, text, addr) == 1)
		*family = AF_INET;
	else if (inet_pton(AF_INET6, text, addr) == 1)
		*family = AF_INET6;
	else
		return false;
	return true;
}

/* The project's one text form of an address (RFC 5952, no dotted tail), with the port. */
void cfg_format_addr(char *out, size_t cap, sa_family_t family, const uint8_t *addr, int port)
{
	struct np_endpoint ep;
	char ip[NP_ADDRSTRLEN];

	memcpy(ep.ip6, addr, family == AF_INET ? 4 : 16);
	np_format_addr(ip, sizeof(ip), family == AF_INET ? NP_AF_INET : NP_AF_INET6, &ep);
	if (port < 0)
		snprintf(out, cap, "%s", ip);
	else
		snprintf(out, cap, family == AF_INET ? "%s:%d" : "[%s]:%d", ip, port);
}

void cfg_format_cidr(char *out, size_t cap, const struct np_cidr *c)
{
	char net[NP_ADDRSTRLEN];

	cfg_format_addr(net, sizeof(net), c->family == NP_AF_INET ? AF_INET : AF_INET6, c->addr, -1);
	snprintf(out, cap, "%s/%u", net, c->prefix);
}

int npd_target_family(const struct npd_target *t)
{
	const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&t->addr;

	if (t->addr.ss_family == AF_INET6 && IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr))
		return AF_INET;
	return t->addr.ss_family;
}

/*
 * One address of a service: "host:port", "[v6]:port" or "unix:/path";
 * names are resolved now, first answer. path names the setting in messages.
 */
void cfg_parse_target(struct loader *ld, const char *path, const char *text,
		      struct npd_target *t)
{
	char host[NPD_ADDR_TEXT], buf[80];
	const char *why;
	size_t len = strlen(text);
	uint16_t port;
	bool bracketed;
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res;
	int rc;

	memset(t, 0, sizeof(*t));
	if (len >= sizeof(t->text))
		cfg_fail(ld, path, "%s is too long (at most %zu bytes)",
			 cfg_quote(buf, sizeof(buf), text, len), sizeof(t->text) - 1);
	memcpy(t->text, text, len + 1);
	if (strncmp(text, "unix:", 5) == 0) {
		struct sockaddr_un *sun = (struct sockaddr_un *)&t->addr;

		if (len == 5 || len - 5 >= sizeof(sun->sun_path))
			cfg_fail(ld, path,
				 "expected \"unix:\" and a socket path of 1 to %zu bytes, got %s",
				 sizeof(sun->sun_path) - 1, cfg_quote(buf, sizeof(buf), text, len));
		sun->sun_family = AF_UNIX;
		memcpy(sun->sun_path, text + 5, len - 5 + 1);
		t->addrlen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len - 5 + 1);
		return;
	}
	why = cfg_split_host_port(text, host, sizeof(host), &port, &bracketed);
	if (why)
		cfg_fail(ld, path, "%s: %s", cfg_quote(buf, sizeof(buf), text, len), why);
	/* Brackets hold a numeric IPv6 address; the resolver reads the scope (fe80::1%eth0). */
	if (bracketed) {
		hints.ai_family = AF_INET6;
		hints.ai_flags = AI_NUMERICHOST;
	}
	rc = getaddrinfo(host, NULL, &hints, &res);
	if (rc != 0)
		cfg_fail(ld, path, "cannot resolve %s: %s",
			 cfg_quote(buf, sizeof(buf), host, strlen(host)),
			 rc == EAI_SYSTEM ? strerror(errno) : gai_strerror(rc));
	if (res->ai_addrlen > sizeof(t->addr) ||
	    (res->ai_family != AF_INET && res->ai_family != AF_INET6)) {
		freeaddrinfo(res);
		cfg_fail(ld, path, "%s resolves to an address of an unknown family", host);
	}
	memcpy(&t->addr, res->ai_addr, res->ai_addrlen);
	t->addrlen = res->ai_addrlen;
	freeaddrinfo(res);
	if (t->addr.ss_family == AF_INET)
		((struct sockaddr_in *)&t->addr)->sin_port = htons(port);
	else
		((struct sockaddr_in6 *)&t->addr)->sin6_port = htons(port);
}

/* A port: an integer, or a string of digits as Prosody takes it (tonumber). */
bool cfg_to_port(lua_State *L, int idx, uint16_t *port)
{
	lua_Integer v = 0;
	size_t len;
	const char *s;

	if (lua_type(L, idx) == LUA_TSTRING) {
		s = lua_tolstring(L, idx, &len);
		if (len == 0 || len > 5 || strspn(s, "0123456789") != len)
			return false;
		v = strtol(s, NULL, 10);
	} else if (!cfg_to_integer(L, idx, &v)) {
		return false;
	}
	*port = (uint16_t)v;
	return v >= 1 && v <= 65535;
}

/*
 * Push the value of the first of keys (n of them) that is set, and return
 * its name; or push nothing and return NULL.
 */
const char *cfg_push_first(struct loader *ld, const char *const *keys, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (lua_getfield(ld->L, 2, keys[i]) != LUA_TNIL)
			return keys[i];
		lua_pop(ld->L, 1);
	}
	return NULL;
}

int cfg_tlv_type(const char *name)
{
	int type = -1;

	for (size_t t = 0; t < sizeof(tlv_names) / sizeof(tlv_names[0]); t++)
		if (strcasecmp(tlv_names[t].name, name) == 0)
			type = tlv_names[t].type;
	return type;
}

const char *cfg_tlv_name(uint8_t type)
{
	const char *name = NULL;

	for (size_t i = 0; i < sizeof(tlv_names) / sizeof(tlv_names[0]); i++)
		if (tlv_names[i].type == type)
			name = tlv_names[i].name;
	return name;
}
