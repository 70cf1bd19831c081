/*
 * config_services.c - services = { name = { ... } }: each service's
 * options, and the addresses it connects to, read into config.h's struct
 * npd_service, kept sorted by name so that lookups and messages are stable.
 *
 * A service has connect, one address or two of different families, or
 * none when it is one of Prosody's, found where Prosody's keys say it
 * listens (prosody.c); a name a port is mapped to that services lacks may
 * be one of Prosody's too, added here with the defaults. Options that only
 * mean something with others (pass_tlvs and crc32c with send_proxy "v2",
 * transparent_port with transparent) are refused alone, and every key a
 * service does not have is named.
 */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <lauxlib.h>
#include <lua.h>

#include "config_internal.h"
#include "config_settings.h"
#include "netproxy.h"
#include "prosody.h"

static const char *const service_keys[] = {
	"connect",	   "send_proxy",   "pass_tlvs",	       "crc32c", "connect_timeout",
	"idle_timeout",	   "transparent",  "transparent_port", "mark",
};

static bool valid_name(const char *s, size_t len)
{
	/* "-" alone is what the log and the metrics call a port mapped to no service. */
	if (len < 1 || len >= NPD_NAME_MAX || (len == 1 && s[0] == '-'))
		return false;
	for (size_t i = 0; i < len; i++)
		if (!cfg_is_ident(s[i]) && s[i] != '.' && s[i] != '-')
			return false;
	return true;
}

/* services.c2s, or services["xmpp.c2s"] for a name Lua cannot write after a dot. */
static void service_path(char *buf, size_t cap, const char *name, const char *field)
{
	bool plain =
		!isdigit((unsigned char)name[0]) && strspn(name, CFG_IDENT_CHARS) == strlen(name);

	snprintf(buf, cap, plain ? "services.%s%s%s" : "services[\"%s\"]%s%s", name,
		 field ? "." : "", field ? field : "");
}

static int service_cmp(const void *a, const void *b)
{
	return strcmp(((const struct npd_service *)a)->name, ((const struct npd_service *)b)->name);
}

int cfg_find_service(const struct npd_config *cfg, const char *name)
{
	struct npd_service key;
	const struct npd_service *s;

	if (strlen(name) >= sizeof(key.name) || !cfg->nservices)
		return -1;
	strcpy(key.name, name);
	s = bsearch(&key, cfg->services, cfg->nservices, sizeof(key), service_cmp);
	return s ? (int)(s - cfg->services) : -1;
}

static int text_cmp(const void *a, const void *b)
{
	return strcmp(a, b);
}

/*
 * Write at list + *w what fmt says, and move *w on, never past the last
 * byte: a list cut short still ends in its NUL, and what follows is dropped.
 */
__attribute__((format(printf, 4, 5))) static void append(char *list, size_t cap, size_t *w,
							 const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(list + *w, cap - *w, fmt, ap);
	va_end(ap);
	if (n > 0)
		*w = (size_t)n < cap - *w ? *w + (size_t)n : cap - 1;
}

/* Typos must not be silent: name every key a service does not have, sorted. */
static void check_service_keys(struct loader *ld, int idx, const char *path)
{
	lua_State *L = ld->L;
	char bad[8][48], list[400] = "", buf[48];
	size_t nbad = 0, more = 0, w = 0;

	lua_pushnil(L);
	while (lua_next(L, idx)) {
		size_t i = 0, n = sizeof(service_keys) / sizeof(service_keys[0]);

		lua_pop(L, 1);
		if (lua_type(L, -1) != LUA_TSTRING)
			i = n;
		while (i < n && strcmp(service_keys[i], lua_tostring(L, -1)) != 0)
			i++;
		if (i < n)
			continue;
		if (nbad == 8) {
			more++;
			continue;
		}
		if (lua_type(L, -1) == LUA_TSTRING)
			snprintf(bad[nbad++], sizeof(bad[0]), "%s",
				 cfg_show(L, -1, buf, sizeof(buf)));
		else
			snprintf(bad[nbad++], sizeof(bad[0]), "[%s]",
				 cfg_show(L, -1, buf, sizeof(buf)));
	}
	if (!nbad)
		return;
	qsort(bad, nbad, sizeof(bad[0]), text_cmp);
	for (size_t i = 0; i < nbad; i++) {
		size_t blen = strlen(bad[i]);
		const char *near = NULL;

		/* bad[i] is quoted: "transparnt" */
		if (blen > 2 && bad[i][0] == '"' && blen - 2 < sizeof(buf)) {
			snprintf(buf, sizeof(buf), "%.*s", (int)(blen - 2), bad[i] + 1);
			near = cfg_nearest(buf, service_keys,
					   sizeof(service_keys) / sizeof(service_keys[0]));
		}
		append(list, sizeof(list), &w, "%s%s", i ? ", " : "", bad[i]);
		if (near)
			append(list, sizeof(list), &w, " (did you mean %s?)", near);
	}
	if (more)
		append(list, sizeof(list), &w, " and %zu more", more);
	cfg_fail(ld, path,
		 "unknown key%s %s; a service has connect, send_proxy, pass_tlvs, crc32c, "
		 "connect_timeout, idle_timeout, transparent, transparent_port, mark",
		 nbad + more > 1 ? "s" : "", list);
}

static const char *family_name(int family)
{
	return family == AF_INET ? "IPv4" : family == AF_INET6 ? "IPv6" : "UNIX";
}

/*
 * connect's address text, at path: one more address for svc, of a family
 * it has none of yet; a UNIX socket only alone.
 */
static void add_target(struct loader *ld, const char *path, const char *text,
		       struct npd_service *svc)
{
	struct npd_target t;
	int family;
	char a[80], b[80];

	cfg_parse_target(ld, path, text, &t);
	family = npd_target_family(&t);
	for (int i = 0; i < svc->ntargets; i++) {
		const struct npd_target *have = &svc->target[i];

		cfg_quote(a, sizeof(a), have->text, strlen(have->text));
		cfg_quote(b, sizeof(b), t.text, strlen(t.text));
		if (family == AF_UNIX || have->addr.ss_family == AF_UNIX)
			cfg_fail(ld, path, "%s and %s: a unix: socket is a service's only address",
				 a, b);
		if (npd_target_family(have) == family)
			cfg_fail(ld, path,
				 "%s is a second %s address, after %s: a service has at most one "
				 "address per family",
				 b, family_name(family), a);
	}
	svc->target[svc->ntargets++] = t; /* at most one per family: there is room */
}

/*
 * connect = "host:port" | "[v6]:port" | "unix:/path", or a list of one
 * address, or of two of different families; or nothing for one of
 * Prosody's services, whose addresses come from Prosody's keys. mapped
 * names the mapping that needs a service services does not have, else NULL.
 */
static void read_connect(struct loader *ld, int idx, struct npd_service *svc, const char *mapped)
{
	lua_State *L = ld->L;
	char path[128], item[sizeof(path) + 24];
	const char *text;
	size_t len, n;
	const struct npd_prosody_service *ps = npd_prosody_service(svc->name);

	if (lua_type(L, idx) == LUA_TNIL && ps) {
		service_path(path, sizeof(path), svc->name, NULL);
		npd_prosody_read_address(ld, mapped ? mapped : path, svc, ps);
		return;
	}
	service_path(path, sizeof(path), svc->name, "connect");
	if (lua_type(L, idx) == LUA_TNIL)
		cfg_fail(ld, path,
			 "missing: say where the service is, as \"127.0.0.1:5222\", \"[::1]:5222\" "
			 "or \"unix:/run/service.sock\" (only Prosody's services, %s, can do "
			 "without: they are found where Prosody's config says)",
			 npd_prosody_service_names);
	if (lua_type(L, idx) != LUA_TSTRING && lua_type(L, idx) != LUA_TTABLE)
		cfg_fail(ld, path,
			 "expected \"host:port\", \"[address]:port\", \"unix:/path\" or a list of "
			 "them, got %s",
			 luaL_typename(L, idx));
	n = cfg_list_len(ld, idx, path);
	if (n == 0)
		cfg_fail(ld, path,
			 "the list is empty: say where the service is, as { \"127.0.0.1:5222\", "
			 "\"[::1]:5222\" }");
	for (size_t i = 1; i <= n; i++) {
		cfg_push_item(L, idx, i);
		cfg_item_path(item, sizeof(item), L, idx, path, i);
		if (lua_type(L, -1) != LUA_TSTRING)
			cfg_fail(ld, item,
				 "expected \"host:port\", \"[address]:port\" or \"unix:/path\", "
				 "got %s",
				 luaL_typename(L, -1));
		text = lua_tolstring(L, -1, &len);
		if (strlen(text) != len)
			cfg_fail(ld, item, "contains a NUL byte");
		add_target(ld, item, text, svc);
		lua_pop(L, 1);
	}
}

/* pass_tlvs = { "ALPN", 0xE0, ... }: the types re-emitted in the v2 header. */
static void read_pass_tlvs(struct loader *ld, int idx, struct npd_service *svc, const char *base)
{
	lua_State *L = ld->L;
	size_t n = cfg_list_len(ld, idx, base);
	char path[200], buf[80];

	for (size_t i = 1; i <= n; i++) {
		lua_Integer type = -1;

		cfg_push_item(L, idx, i);
		cfg_item_path(path, sizeof(path), L, idx, base, i);
		if (lua_type(L, -1) == LUA_TSTRING) {
			type = cfg_tlv_type(lua_tostring(L, -1));
		} else if (!cfg_to_integer(L, -1, &type) || type > 255) {
			type = -1;
		}
		if (type < 0)
			cfg_fail(ld, path,
				 "expected a TLV type (ALPN, AUTHORITY, NOOP, UNIQUE_ID, SSL, "
				 "NETNS, AWS, AZURE, GCP) or a number from 0 to 255, got %s",
				 cfg_show(L, -1, buf, sizeof(buf)));
		/* A checksum covers the header it arrived in; the one sent is a new header. */
		if (type == NP_TLV_CRC32C)
			cfg_fail(ld, path,
				 "CRC32C is never passed on: set crc32c = true to checksum the "
				 "header sent to the service");
		svc->pass_tlvs[type / 8] |= (uint8_t)(1u << (type % 8));
		lua_pop(L, 1);
	}
}

/* A service's table at idx; mapped as for read_connect(). */
static void read_service(struct loader *ld, int idx, struct npd_service *svc, const char *mapped)
{
	lua_State *L = ld->L;
	char path[128], field[160], buf[80];
	int top = lua_gettop(L);

	service_path(path, sizeof(path), svc->name, NULL);
	if (lua_type(L, idx) != LUA_TTABLE)
		cfg_fail(ld, path,
			 "expected a table such as { connect = \"127.0.0.1:5222\" }, got %s",
			 luaL_typename(L, idx));
	check_service_keys(ld, idx, path);

	lua_getfield(L, idx, "connect");
	read_connect(ld, lua_gettop(L), svc, mapped);

	/* Transparent delivery: connect from the client's own address. */
	service_path(field, sizeof(field), svc->name, "transparent");
	if (lua_getfield(L, idx, "transparent") != LUA_TNIL)
		svc->transparent = cfg_get_boolean(ld, -1, field);
	if (svc->transparent && svc->target[0].addr.ss_family == AF_UNIX)
		cfg_fail(ld, field,
			 "a unix: backend cannot see a client address: connect over TCP");
	svc->transparent_port = true;
	service_path(field, sizeof(field), svc->name, "transparent_port");
	if (lua_getfield(L, idx, "transparent_port") != LUA_TNIL) {
		if (!svc->transparent)
			cfg_fail(ld, field, "only means something with transparent = true");
		svc->transparent_port = cfg_get_boolean(ld, -1, field);
	}
	service_path(field, sizeof(field), svc->name, "mark");
	if (lua_getfield(L, idx, "mark") != LUA_TNIL) {
		svc->mark = (uint32_t)cfg_get_integer(ld, lua_gettop(L), field, 1, UINT32_MAX,
						      "a firewall mark from 1 to 4294967295");
		if (svc->target[0].addr.ss_family == AF_UNIX)
			cfg_fail(ld, field, "a unix: backend is not routed: a mark means nothing");
	}

	service_path(field, sizeof(field), svc->name, "send_proxy");
	lua_getfield(L, idx, "send_proxy");
	if (lua_isnil(L, -1) || (lua_isboolean(L, -1) && !lua_toboolean(L, -1)))
		svc->send_proxy = NPD_SEND_NONE;
	else if (lua_type(L, -1) == LUA_TSTRING && strcmp(lua_tostring(L, -1), "v1") == 0)
		svc->send_proxy = NPD_SEND_V1;
	else if (lua_type(L, -1) == LUA_TSTRING && strcmp(lua_tostring(L, -1), "v2") == 0)
		svc->send_proxy = NPD_SEND_V2;
	else
		cfg_fail(ld, field, "expected \"v1\", \"v2\" or false, got %s",
			 cfg_show(L, -1, buf, sizeof(buf)));

	/* Both shape a v2 header: anywhere else they would be ignored, and that would mislead. */
	service_path(field, sizeof(field), svc->name, "pass_tlvs");
	if (lua_getfield(L, idx, "pass_tlvs") != LUA_TNIL) {
		if (svc->send_proxy != NPD_SEND_V2)
			cfg_fail(ld, field, "TLVs are only passed on with send_proxy = \"v2\"");
		read_pass_tlvs(ld, lua_gettop(L), svc, field);
	}
	service_path(field, sizeof(field), svc->name, "crc32c");
	if (lua_getfield(L, idx, "crc32c") != LUA_TNIL) {
		if (svc->send_proxy != NPD_SEND_V2)
			cfg_fail(ld, field, "a checksum is only sent with send_proxy = \"v2\"");
		svc->crc32c = cfg_get_boolean(ld, -1, field);
	}

	service_path(field, sizeof(field), svc->name, "connect_timeout");
	svc->connect_timeout_ms = NPD_DEFAULT_CONNECT_TIMEOUT_MS;
	if (lua_getfield(L, idx, "connect_timeout") != LUA_TNIL)
		svc->connect_timeout_ms = cfg_get_seconds(ld, lua_gettop(L), field, false);
	service_path(field, sizeof(field), svc->name, "idle_timeout");
	if (lua_getfield(L, idx, "idle_timeout") != LUA_TNIL)
		svc->idle_timeout_ms = cfg_get_seconds(ld, lua_gettop(L), field, true);
	lua_settop(L, top);
}

/* services = { name = { ... } }, kept sorted by name so lookups and messages are stable. */
void cfg_read_services(struct loader *ld)
{
	lua_State *L = ld->L;
	struct npd_config *cfg = ld->cfg;
	size_t n = 0;
	int idx;
	char buf[80];

	if (cfg_push_setting(ld, K_SERVICES) == LUA_TNIL)
		goto out;
	idx = lua_gettop(L);
	if (!lua_istable(L, idx))
		cfg_fail(ld, "services",
			 "expected a table such as { c2s = { connect = \"127.0.0.1:5222\" } }, got "
			 "%s",
			 luaL_typename(L, idx));
	n = cfg_table_size(L, idx);
	if (n == 0)
		goto out;
	cfg->services = calloc(n, sizeof(*cfg->services));
	if (!cfg->services)
		cfg_fail(ld, "services", "out of memory");
	lua_pushnil(L);
	while (lua_next(L, idx)) {
		size_t len;
		const char *name;

		lua_pop(L, 1);
		if (lua_type(L, -1) != LUA_TSTRING)
			cfg_fail(ld, "services", "expected service names as keys, got %s",
				 cfg_show(L, -1, buf, sizeof(buf)));
		name = lua_tolstring(L, -1, &len);
		if (!valid_name(name, len))
			cfg_fail(ld, "services",
				 "invalid service name %s: use 1 to %d letters, digits, '_', '.' "
				 "or '-' (not \"-\" alone)",
				 cfg_show(L, -1, buf, sizeof(buf)), NPD_NAME_MAX - 1);
		memcpy(cfg->services[cfg->nservices++].name, name, len + 1);
	}
	qsort(cfg->services, n, sizeof(*cfg->services), service_cmp);
	for (size_t i = 0; i < n; i++) {
		lua_getfield(L, idx, cfg->services[i].name);
		read_service(ld, lua_gettop(L), &cfg->services[i], NULL);
		lua_pop(L, 1);
	}
out:
	lua_settop(L, 3);
}

/*
 * A service for a mapped name that services lacks: one of Prosody's, found
 * where Prosody's config says, delivered plain. Kept sorted by name.
 * Returns false, adding nothing, when name is not one of Prosody's.
 */
bool cfg_add_prosody_service(struct loader *ld, const char *name, const char *path)
{
	struct npd_config *cfg = ld->cfg;
	struct npd_service *grown, *svc;

	if (!npd_prosody_service(name))
		return false;
	grown = realloc(cfg->services, (cfg->nservices + 1) * sizeof(*grown));
	if (!grown)
		cfg_fail(ld, path, "out of memory");
	cfg->services = grown;
	svc = memset(&grown[cfg->nservices++], 0, sizeof(*svc));
	snprintf(svc->name, sizeof(svc->name), "%s", name);
	lua_newtable(ld->L); /* no options: the defaults */
	read_service(ld, lua_gettop(ld->L), svc, path);
	lua_pop(ld->L, 1);
	qsort(cfg->services, cfg->nservices, sizeof(*svc), service_cmp);
	return true;
}
