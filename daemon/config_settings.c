/*
 * config_settings.c - which globals of a config are settings, and reading
 * them all, in order, once the sandbox has run the config: the keys that
 * are not settings, the tunables, the trusted senders, then the services,
 * the mappings and the listeners (config_services.c, config_listeners.c).
 *
 * A global that is no setting is an error naming the key meant, so that -t
 * catches a typo; a Prosody config is full of Prosody's own options, which
 * are skipped and counted, but a misspelt proxy_ key is still an error.
 */
#include <arpa/inet.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#include "config_internal.h"
#include "config_settings.h"
#include "netproxy.h"
#include "prosody.h"

/*
 * Keys of mod_net_proxy's later versions that only mean something inside
 * Prosody (sessions counted as secure, outgoing s2s through a proxy):
 * netproxyd accepts them in a Prosody config and does nothing with them.
 */
static const char *const module_only_keys[] = {
	"proxy_secure", "proxy_secure_in", "proxy_secure_out", "proxy_out",
};

static int key_index(const char *name, size_t len)
{
	for (int k = 0; k < K_COUNT; k++)
		if (strlen(cfg_key_names[k]) == len && memcmp(cfg_key_names[k], name, len) == 0)
			return k;
	return -1;
}

/* A key netproxyd reads. */
bool cfg_is_setting(const char *name, size_t len)
{
	return key_index(name, len) >= 0 || npd_prosody_is_service_key(name, len);
}

static bool in_list(const char *name, const char *const *list, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(name, list[i]) == 0)
			return true;
	return false;
}

struct unknown {
	const char *name;
	struct where at;
};

static int unknown_cmp(const void *a, const void *b)
{
	const struct unknown *x = a, *y = b;

	if (x->at.file != y->at.file)
		return (x->at.file > y->at.file) - (x->at.file < y->at.file);
	if (x->at.line != y->at.line)
		return (x->at.line > y->at.line) - (x->at.line < y->at.line);
	return strcmp(x->name, y->name);
}

/*
 * Warn about every global that is not a setting, in the order of the files;
 * functions are helpers, not settings. A Prosody config is full of
 * Prosody's own options: those are skipped without a word, and counted,
 * except in netproxyd's own file, one that sets services without being
 * Prosody's itself (services may also be written into prosody.cfg.lua),
 * and except for keys starting with proxy_, the prefix of the keys that
 * matter here: such a key that is not a setting is a typo.
 */
static void read_unknown(struct loader *ld)
{
	lua_State *L = ld->L;
	struct unknown *u;
	size_t n = 0, nu = 0;
	char buf[80];

	lua_pushnil(L);
	while (lua_next(L, 3)) {
		lua_pop(L, 1);
		n++;
	}
	u = lua_newuserdatauv(L, (n ? n : 1) * sizeof(*u), 0); /* freed with the state */
	lua_pushnil(L);
	while (lua_next(L, 3)) {
		size_t len;
		/* The sandbox's record_global() records string keys only. */
		const char *name = lua_tolstring(L, -2, &len);
		struct where at = cfg_where_unpack(lua_tointeger(L, -1));
		int t;

		lua_pop(L, 1);
		if (cfg_is_setting(name, len) || at.file < 0 || (size_t)at.file >= ld->nfiles)
			continue;
		t = lua_getfield(L, 2, name);
		lua_pop(L, 1);
		if (t == LUA_TNIL || t == LUA_TFUNCTION)
			continue;
		if (ld->cfg->prosody &&
		    in_list(name, module_only_keys,
			    sizeof(module_only_keys) / sizeof(module_only_keys[0]))) {
			ld->cfg->prosody_skipped++;
			continue;
		}
		/*
		 * netproxyd's own file: one that sets services and is not Prosody's
		 * itself. A proxy_ key is mod_net_proxy's or netproxyd's: misspelt.
		 */
		if (ld->cfg->prosody &&
		    !(ld->files[at.file].services && !ld->files[at.file].prosody) &&
		    strncmp(name, "proxy_", 6) != 0) {
			ld->cfg->prosody_skipped++;
			continue;
		}
		at.line = cfg_statement_line(&ld->files[at.file], at.line, name, len);
		u[nu++] = (struct unknown){name, at};
	}
	if (!nu) {
		lua_pop(L, 1);
		return;
	}
	/*
	 * A misspelt key is a setting lost without a word, possibly a trusted
	 * list: an error, as in a service, so that -t catches it.
	 */
	qsort(u, nu, sizeof(*u), unknown_cmp);
	const char *name = u[0].name;
	size_t len = strlen(name);
	char hint[96], more[48] = "";

	if (nu > 1)
		snprintf(more, sizeof(more), "; and %zu more unknown key%s", nu - 1,
			 nu > 2 ? "s" : "");
	cfg_fail_at(ld, u[0].at, "unknown key %s%s%s",
		    strspn(name, CFG_IDENT_CHARS) == len ? name
							 : cfg_quote(buf, sizeof(buf), name, len),
		    cfg_did_you_mean(hint, sizeof(hint), name, cfg_key_names, K_COUNT), more);
}

/* proxy_trusted_proxies = { "127.0.0.1", "10.0.0.0/8", "2001:db8::/32" } */
static void read_trusted(struct loader *ld)
{
	static const char *const defaults[] = {"127.0.0.1", "::1"};
	lua_State *L = ld->L;
	struct npd_config *cfg = ld->cfg;
	size_t n;
	int idx;
	char path[64], buf[80], net[CFG_CIDRSTRLEN];

	if (cfg_push_setting(ld, K_TRUSTED) == LUA_TNIL) {
		cfg->trusted = calloc(2, sizeof(*cfg->trusted));
		if (!cfg->trusted)
			cfg_fail(ld, "proxy_trusted_proxies", "out of memory");
		for (size_t i = 0; i < 2; i++)
			np_cidr_parse(defaults[i], strlen(defaults[i]),
				      &cfg->trusted[cfg->ntrusted++]);
		goto out;
	}
	idx = lua_gettop(L);
	n = cfg_list_len(ld, idx, "proxy_trusted_proxies");
	if (n == 0) {
		cfg_warn_at(ld, cfg_key_line(ld, "proxy_trusted_proxies"),
			    "proxy_trusted_proxies is empty: ANY host can send PROXY headers and "
			    "claim any address");
		goto out;
	}
	cfg->trusted = calloc(n, sizeof(*cfg->trusted));
	if (!cfg->trusted)
		cfg_fail(ld, "proxy_trusted_proxies", "out of memory");
	for (size_t i = 1; i <= n; i++) {
		struct np_cidr *c = &cfg->trusted[cfg->ntrusted], host;
		const char *text, *slash;
		size_t len;
		int r;

		cfg_push_item(L, idx, i);
		cfg_item_path(path, sizeof(path), L, idx, "proxy_trusted_proxies", i);
		if (lua_type(L, -1) != LUA_TSTRING)
			cfg_fail(ld, path,
				 "expected an address or a CIDR block such as \"10.0.0.0/8\", got "
				 "%s",
				 luaL_typename(L, -1));
		text = lua_tolstring(L, -1, &len);
		r = np_cidr_parse(text, len, c);
		if (r == NP_EFAMILY) {
			struct np_endpoint ep = {0};
			char v4[NP_ADDRSTRLEN] = "";

			memcpy(ep.ip4, c->addr, 4);
			np_format_addr(v4, sizeof(v4), NP_AF_INET, &ep);
			cfg_fail(ld, path, "%s is an IPv4-mapped block, which no peer matches: a "
				       "v4-mapped peer is matched as IPv4; write \"%s/%u\"",
				 cfg_show(L, -1, buf, sizeof(buf)), v4, (unsigned)c->prefix);
		}
		if (r != 0)
			cfg_fail(ld, path, "%s is not an IPv4 or IPv6 address or CIDR block",
				 cfg_show(L, -1, buf, sizeof(buf)));
		cfg->ntrusted++;
		/* The block's host bits are cleared; a typo such as 10.0.0.1/8 deserves a word. */
		slash = memchr(text, '/', len);
		if (slash && np_cidr_parse(text, (size_t)(slash - text), &host) == 0 &&
		    memcmp(host.addr, c->addr, 16) != 0) {
			cfg_format_cidr(net, sizeof(net), c);
			cfg_warn(ld, path, "%s has host bits set: it is read as %s", text, net);
		}
		lua_pop(L, 1);
	}
out:
	lua_settop(L, 3);
}

static void read_tunables(struct loader *ld)
{
	static const char *const levels[] = {"error", "warn", "info", "debug"};
	static const int level_values[] = {0, 0, 1, 2};
	lua_State *L = ld->L;
	struct npd_config *cfg = ld->cfg;
	char buf[80];
	size_t i;

	cfg->header_timeout_ms = NPD_DEFAULT_HEADER_TIMEOUT_MS;
	if (cfg_push_setting(ld, K_HEADER_TIMEOUT) != LUA_TNIL) {
		cfg->header_timeout_ms = cfg_get_seconds(ld, 4, "proxy_header_timeout", false);
		if (cfg->header_timeout_ms < 3000)
			cfg_warn(ld, "proxy_header_timeout",
				 "%s seconds is short: the PROXY specification recommends at least "
				 "3 seconds",
				 cfg_show(L, 4, buf, sizeof(buf)));
	}
	lua_settop(L, 3);

	cfg->max_header = NPD_DEFAULT_MAX_HEADER;
	if (cfg_push_setting(ld, K_MAX_HEADER) != LUA_TNIL) {
		cfg->max_header = (size_t)cfg_get_integer(ld, 4, "proxy_max_header", NP_V2_MIN_LEN,
							  NP_V2_MAX_LEN,
							  "a number of bytes from 16 to 65551");
		if (cfg->max_header < NP_V1_MAX_LEN)
			cfg_warn(ld, "proxy_max_header",
				 "%zu is less than 107: v1 lines longer than %zu bytes (they may "
				 "have 107) will be refused",
				 cfg->max_header, cfg->max_header);
		if (cfg->max_header < 232)
			cfg_warn(ld, "proxy_max_header",
				 "%zu is less than 232: v2 headers with UNIX addresses (232 bytes) "
				 "will be refused",
				 cfg->max_header);
	}
	lua_settop(L, 3);

	cfg->shutdown_grace_ms = NPD_DEFAULT_SHUTDOWN_GRACE_MS;
	if (cfg_push_setting(ld, K_SHUTDOWN_GRACE) != LUA_TNIL)
		cfg->shutdown_grace_ms = cfg_get_seconds(ld, 4, "shutdown_grace", true);
	lua_settop(L, 3);

	if (cfg_push_setting(ld, K_WORKERS) != LUA_TNIL)
		cfg->workers = (int)cfg_get_integer(ld, 4, "workers", 0, 256,
						    "a number of threads from 0 (one per CPU) to "
						    "256");
	lua_settop(L, 3);

	cfg->max_connections = NPD_DEFAULT_MAX_CONNECTIONS;
	if (cfg_push_setting(ld, K_MAX_CONNECTIONS) != LUA_TNIL)
		cfg->max_connections = (int)cfg_get_integer(ld, 4, "max_connections", 1, INT_MAX,
							    "a number of connections, at least 1");
	lua_settop(L, 3);

	cfg->log_level = 1;
	if (cfg_push_setting(ld, K_LOG_LEVEL) != LUA_TNIL)
		cfg->log_level = level_values[cfg_get_choice(ld, 4, "log_level", levels, 4)];
	lua_settop(L, 3);

	if (cfg_push_setting(ld, K_LOG_SYSLOG) != LUA_TNIL)
		cfg->log_syslog = cfg_get_boolean(ld, 4, "log_syslog");
	lua_settop(L, 3);

	static const char *const conn_lines[] = {
		[NPD_LOG_CONN_ESTABLISHED] = "established",
		[NPD_LOG_CONN_CLOSED] = "closed",
		[NPD_LOG_CONN_BOTH] = "both",
	};
	cfg->log_connections = NPD_LOG_CONN_ESTABLISHED;
	if (cfg_push_setting(ld, K_LOG_CONNECTIONS) != LUA_TNIL)
		cfg->log_connections = (enum npd_log_connections)cfg_get_choice(
			ld, 4, "log_connections", conn_lines, 3);
	lua_settop(L, 3);

	/* Names only: whether they exist is for the start, where they are used. */
	static const enum key ids[] = {K_USER, K_GROUP};
	char *dst[] = {cfg->user, cfg->group};
	for (i = 0; i < 2; i++) {
		const char *name = cfg_key_names[ids[i]];
		if (cfg_push_setting(ld, ids[i]) != LUA_TNIL) {
			size_t len;
			const char *v =
				lua_type(L, 4) == LUA_TSTRING ? lua_tolstring(L, 4, &len) : NULL;
			if (!v || len == 0 || len >= sizeof(cfg->user) || strlen(v) != len)
				cfg_fail(ld, name, "expected a %s name, got %s", name,
					 cfg_show(L, 4, buf, sizeof(buf)));
			memcpy(dst[i], v, len + 1);
		}
		lua_settop(L, 3);
	}
}

static bool is_loopback(const struct sockaddr_storage *ss)
{
	const struct sockaddr_in *in = (const struct sockaddr_in *)ss;
	const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;

	if (ss->ss_family == AF_INET)
		return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
	if (ss->ss_family == AF_INET6)
		return IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr) ||
		       (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr) && in6->sin6_addr.s6_addr[12] == 127);
	return true; /* a UNIX socket: its file's permissions say who may connect */
}

/*
 * stats_listen = "127.0.0.1:9100" | "[::1]:9100" | "/run/netproxyd/stats.sock":
 * an address as a service's, or an absolute path for a UNIX socket (also
 * written "unix:/path").
 */
static void read_stats_listen(struct loader *ld)
{
	lua_State *L = ld->L;
	char buf[80], text[NPD_ADDR_TEXT + 8];
	size_t len;

	if (cfg_push_setting(ld, K_STATS_LISTEN) != LUA_TNIL) {
		const char *v = lua_type(L, 4) == LUA_TSTRING ? lua_tolstring(L, 4, &len) : NULL;
		if (!v || len == 0 || strlen(v) != len)
			cfg_fail(ld, "stats_listen",
				 "expected an address such as \"127.0.0.1:9100\" or \"[::1]:9100\", or "
				 "the path of a UNIX socket, got %s",
				 cfg_show(L, 4, buf, sizeof(buf)));
		snprintf(text, sizeof(text), "%s%s", v[0] == '/' ? "unix:" : "", v);
		cfg_parse_target(ld, "stats_listen", text, &ld->cfg->stats_listen);
		if (!is_loopback(&ld->cfg->stats_listen.addr))
			cfg_warn(ld, "stats_listen",
				 "%s is not a loopback address: whoever reaches it reads the counters "
				 "and every connection's client address",
				 v);
	}
	lua_settop(L, 3);
}

/* Prosody would load mod_net_proxy and listen on the proxy ports itself. */
static void warn_net_proxy(struct loader *ld)
{
	lua_State *L = ld->L;

	if (cfg_push_setting(ld, K_MODULES_ENABLED) == LUA_TTABLE)
		for (lua_Integer i = 1; lua_rawgeti(L, -1, i) != LUA_TNIL; i++) {
			bool found = lua_type(L, -1) == LUA_TSTRING &&
				     strcmp(lua_tostring(L, -1), "net_proxy") == 0;

			lua_pop(L, 1);
			if (found) {
				cfg_warn(ld, "modules_enabled",
					 "loads net_proxy: Prosody would listen on the proxy ports "
					 "itself; remove it, netproxyd takes its place");
				break;
			}
		}
	lua_settop(L, 3);
}

/* Runs in lua_pcall(): 1 the loader, 2 the values assigned, 3 where each was. */
static int check(lua_State *L)
{
	struct loader *ld = lua_touserdata(L, 1);

	ld->cfg->nfiles = (int)ld->nfiles;
	for (size_t i = 0; i < ld->nfiles; i++) /* any of its files is Prosody's */
		ld->cfg->prosody |= ld->files[i].prosody;
	read_unknown(ld);
	warn_net_proxy(ld);
	read_tunables(ld);
	read_stats_listen(ld);
	read_trusted(ld);
	cfg_read_services(ld);
	cfg_read_mappings(ld);
	cfg_read_listeners(ld); /* last: "nothing to listen on" is about the whole file */
	return 0;
}

int cfg_settings_read(struct loader *ld)
{
	lua_State *L = ld->L;

	/* check() sees: the loader, values, lines. */
	lua_remove(L, 1); /* the environment */
	lua_pushcfunction(L, check);
	lua_insert(L, 1);
	lua_pushlightuserdata(L, ld);
	lua_insert(L, 2);
	return lua_pcall(L, 3, 0, 0);
}
