/*
 * config.c - netproxyd's configuration: a Lua 5.4 chunk evaluated in a
 * sandbox, then every setting checked and resolved into config.h's structs.
 *
 * The chunk's global assignments are the settings. It runs in a fresh state
 * that offers only functions without side effects, with its memory and its
 * instruction count capped, so a mistaken loop or a huge string ends in a
 * message instead of a daemon that hangs or swells at start or on reload.
 * Fatal messages read "FILE:LINE: KEY: what is wrong"; Lua's own syntax and
 * runtime errors keep Lua's wording.
 *
 * A Prosody config (prosody.cfg.lua) is read as Prosody reads it: the
 * sandbox also speaks its language (VirtualHost, Component, Include, ENV_),
 * only the global section counts, and a service Prosody runs takes its
 * address from Prosody's own keys (prosody.h). The same file can hold
 * netproxyd's own keys, or a netproxyd file can Include Prosody's.
 *
 * The parts of the loader, and which may use which: config_internal.h.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <sys/un.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "config.h"
#include "config_internal.h"
#include "config_settings.h"
#include "netproxy.h"
#include "perms.h"
#include "prosody.h"

#define STEP_INSNS  1000000 /* the count hook runs every million instructions */
#define MAX_STEPS   100	    /* so a config may run 100 million */
#define FILE_MAX    ((size_t)16 << 20)
#define FILES_MAX   256	    /* files one config may read, Include's among them */
#define DEPTH_MAX   16	    /* Includes within Includes */

/* c2s and s2s are Prosody's services, found at Prosody's default addresses. */
const char npd_config_default_lua[] =
	"-- netproxyd's built-in configuration: mod_net_proxy's README example.\n"
	"proxy_port_mappings = {\n"
	"\t[15222] = \"c2s\",\n"
	"\t[15269] = \"s2s\",\n"
	"}\n";

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
static bool is_setting(const char *name, size_t len)
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
		/* record_global() records string keys only. */
		const char *name = lua_tolstring(L, -2, &len);
		struct where at = cfg_where_unpack(lua_tointeger(L, -1));
		int t;

		lua_pop(L, 1);
		if (is_setting(name, len) || at.file < 0 || (size_t)at.file >= ld->nfiles)
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
	char path[64], buf[80], net[NP_ADDRSTRLEN];

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
		if (r == NP_EFAMILY)
			cfg_fail(ld, path, "%s is an IPv4-mapped block, which no peer matches: a "
				       "v4-mapped peer is matched as IPv4; write the IPv4 form "
				       "(\"127.0.0.0/8\" for \"::ffff:127.0.0.0/104\")",
				 cfg_show(L, -1, buf, sizeof(buf)));
		if (r != 0)
			cfg_fail(ld, path, "%s is not an IPv4 or IPv6 address or CIDR block",
				 cfg_show(L, -1, buf, sizeof(buf)));
		cfg->ntrusted++;
		/* The block's host bits are cleared; a typo such as 10.0.0.1/8 deserves a word. */
		slash = memchr(text, '/', len);
		if (slash && np_cidr_parse(text, (size_t)(slash - text), &host) == 0 &&
		    memcmp(host.addr, c->addr, 16) != 0) {
			cfg_format_addr(net, sizeof(net),
					c->family == NP_AF_INET ? AF_INET : AF_INET6, c->addr, -1);
			cfg_warn(ld, path, "%s has host bits set: it is read as %s/%u", text, net,
				 c->prefix);
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
	if (cfg_push_setting(ld, K_LOG_LEVEL) != LUA_TNIL) {
		for (i = 0; i < 4; i++)
			if (lua_type(L, 4) == LUA_TSTRING &&
			    strcmp(lua_tostring(L, 4), levels[i]) == 0)
				break;
		if (i == 4)
			cfg_fail(ld, "log_level",
				 "expected \"error\", \"warn\", \"info\" or \"debug\", got %s",
				 cfg_show(L, 4, buf, sizeof(buf)));
		cfg->log_level = level_values[i];
	}
	lua_settop(L, 3);

	if (cfg_push_setting(ld, K_LOG_SYSLOG) != LUA_TNIL)
		cfg->log_syslog = cfg_get_boolean(ld, 4, "log_syslog");
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
	read_trusted(ld);
	cfg_read_services(ld);
	cfg_read_mappings(ld);
	cfg_read_listeners(ld); /* last: "nothing to listen on" is about the whole file */
	return 0;
}

static struct loader *loader_of(lua_State *L)
{
	void *ud;

	lua_getallocf(L, &ud);
	return ud;
}

/* Lua's allocator contract, with a cap; shrinking must never fail, so only growth is refused. */
static void *capped_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
	struct loader *ld = ud;
	size_t old = ptr ? osize : 0;
	void *p;

	if (nsize == 0) {
		free(ptr);
		ld->mem -= old;
		return NULL;
	}
	if (nsize > old && nsize - old > CFG_MEM_LIMIT - ld->mem)
		return NULL;
	p = realloc(ptr, nsize);
	if (p)
		ld->mem = ld->mem - old + nsize;
	return p;
}

/*
 * Each file's chunk is named "\1N", N its index in ld->files: short, since
 * Lua cuts long names ("...end/of/path.lua") in its messages, and
 * cfg_lua_failure() puts the file's whole name back. Returns N, or -1 for a
 * chunk that is not a config file's.
 */
static int chunk_file(const struct loader *ld, const char *source)
{
	char *end;
	unsigned long n;

	if (source[0] != '=' || source[1] != '\x01' || !isdigit((unsigned char)source[2]))
		return -1;
	n = strtoul(source + 2, &end, 10);
	return *end == '\0' && n < ld->nfiles ? (int)n : -1;
}

/* The config line running at stack level (1: the caller of a C function). */
static struct where running_at(lua_State *L, int level)
{
	struct loader *ld = loader_of(L);
	lua_Debug ar;

	for (; lua_getstack(L, level, &ar); level++) {
		int file;

		lua_getinfo(L, "Sl", &ar);
		file = chunk_file(ld, ar.source);
		if (ar.currentline > 0 && file >= 0)
			return (struct where){file, ar.currentline};
	}
	return (struct where){0, 0};
}

static void count_hook(lua_State *L, lua_Debug *ar)
{
	struct loader *ld = loader_of(L);
	struct where at;

	(void)ar;
	if (++ld->steps < MAX_STEPS)
		return;
	/* From now on every instruction raises: pcall in the config cannot catch it and go on. */
	lua_sethook(L, count_hook, LUA_MASKCOUNT, 1);
	at = running_at(L, 0);
	lua_pushfstring(L, "%s:%d: config runs too long (over %d million Lua instructions)",
			ld->files[at.file].name, at.line, MAX_STEPS * (STEP_INSNS / 1000000));
	lua_error(L);
}

/*
 * __newindex of the config's environment: each global goes to the values
 * table (never into the environment, so every assignment comes here) and
 * where it was made, file and line, to the lines table. An assignment from
 * inside a C function (table.insert(_ENV, ...)) is charged to the Lua line
 * calling it. As in Prosody, an assignment after VirtualHost or Component
 * is that host's, not a global: skipped, with a word if netproxyd reads it.
 */
static int record_global(lua_State *L)
{
	struct loader *ld = loader_of(L);
	struct where at = running_at(L, 1);
	size_t len = 0;
	const char *key = lua_type(L, 2) == LUA_TSTRING ? lua_tolstring(L, 2, &len) : NULL;

	if (ld->section[0]) {
		/* Not modules_enabled: hosts have their own, and netproxyd reads it only to warn. */
		if (key && is_setting(key, len) &&
		    strcmp(key, cfg_key_names[K_MODULES_ENABLED]) != 0)
			cfg_warn_at(
				ld,
				(struct where){at.file, cfg_statement_line(&ld->files[at.file],
									   at.line, key, len)},
				"%s belongs to %s here, and Prosody reads it only in the global "
				"section (before the first VirtualHost or Component): ignored",
				key, ld->section);
		return 0;
	}
	if (key) {
		ld->files[at.file].services |= strcmp(key, cfg_key_names[K_SERVICES]) == 0;
		ld->files[at.file].prosody |= strcmp(key, cfg_key_names[K_MODULES_ENABLED]) == 0;
		lua_pushvalue(L, 2);
		lua_pushinteger(L, cfg_where_pack(at));
		lua_rawset(L, lua_upvalueindex(2));
	}
	lua_settop(L, 3);
	lua_rawset(L, lua_upvalueindex(1));
	return 0;
}

/*
 * __index of the environment: settings read back (services.c2s = { ... }),
 * and as in Prosody ENV_NAME for the environment variable NAME.
 */
static int read_global(lua_State *L)
{
	size_t len;
	const char *key = lua_type(L, 2) == LUA_TSTRING ? lua_tolstring(L, 2, &len) : NULL;

	if (key && len > 4 && memcmp(key, "ENV_", 4) == 0 && strlen(key) == len) {
		const char *value = getenv(key + 4);

		if (value)
			lua_pushstring(L, value);
		else
			lua_pushnil(L);
		return 1;
	}
	lua_pushvalue(L, 2);
	lua_rawget(L, lua_upvalueindex(1));
	return 1;
}

/* The { options } that may follow a section's name: the host's own, skipped; back to global. */
static int end_section(lua_State *L)
{
	loader_of(L)->section[0] = '\0';
	return 0;
}

/* After Component "name": a module name and then options, or options. */
static int component_module(lua_State *L)
{
	if (lua_type(L, 1) == LUA_TSTRING) {
		lua_pushcfunction(L, end_section);
		return 1;
	}
	return end_section(L);
}

/* VirtualHost "name" or Component "name": what follows is that host's. */
static int open_section(lua_State *L, const char *kind, lua_CFunction then)
{
	struct loader *ld = loader_of(L);
	char name[64];
	size_t len;
	const char *s;

	if (lua_type(L, 1) != LUA_TSTRING)
		return luaL_error(L, "%s needs a name, as in %s \"example.com\"", kind, kind);
	s = lua_tolstring(L, 1, &len);
	snprintf(ld->section, sizeof(ld->section), "%s %s", kind,
		 cfg_quote(name, sizeof(name), s, len));
	ld->files[running_at(L, 1).file].prosody = true;
	lua_pushcfunction(L, then);
	return 1;
}

static int prosody_virtualhost(lua_State *L)
{
	return open_section(L, "VirtualHost", end_section);
}

static int prosody_component(lua_State *L)
{
	return open_section(L, "Component", component_module);
}

/*
 * A file the config reads: its text read whole, or why not in err. An
 * included file must be a regular one: a FIFO or a terminal would hold the
 * load, and the daemon's reload with it, until someone writes to it.
 */
static char *read_file(const char *path, bool regular_only, size_t *out_len, char *err,
		       size_t errcap)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | (regular_only ? O_NONBLOCK : 0));
	FILE *f;
	struct stat st;
	char *buf = NULL, *grown;
	size_t len = 0, cap = 0, n;
	int e;

	if (fd < 0) {
		snprintf(err, errcap, "%s: cannot open: %s", path, strerror(errno));
		return NULL;
	}
	if (regular_only && (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))) {
		snprintf(err, errcap, "%s: not a regular file", path);
		close(fd);
		return NULL;
	}
	if (!npd_file_safe(fd, path, err, errcap)) {
		close(fd);
		return NULL;
	}
	if (!(f = fdopen(fd, "r"))) {
		snprintf(err, errcap, "%s: cannot read: %s", path, strerror(errno));
		close(fd);
		return NULL;
	}
	do {
		if (len == cap) {
			/* One byte more than the limit tells a file of exactly 16 MiB from a larger one. */
			cap = cap ? (2 * cap < FILE_MAX + 1 ? 2 * cap : FILE_MAX + 1) : 8192;
			grown = len <= FILE_MAX ? realloc(buf, cap) : NULL;
			if (!grown) {
				snprintf(err, errcap, "%s: %s", path,
					 len > FILE_MAX ? "larger than 16 MiB" : "out of memory");
				free(buf);
				fclose(f);
				return NULL;
			}
			buf = grown;
		}
		n = fread(buf + len, 1, cap - len, f);
		len += n;
	} while (n > 0);
	e = ferror(f) ? errno : 0;
	fclose(f);
	if (e) {
		snprintf(err, errcap, "%s: cannot read: %s", path, strerror(e));
		free(buf);
		return NULL;
	}
	*out_len = len;
	return buf;
}

/* Room for one more file in ld->files, zeroed; NULL when out of memory. */
static struct source *add_source(struct loader *ld)
{
	struct source *grown = realloc(ld->files, (ld->nfiles + 1) * sizeof(*grown));

	if (!grown)
		return NULL;
	ld->files = grown;
	return memset(&grown[ld->nfiles++], 0, sizeof(*grown));
}

/* Run one included file in the environment (upvalue 1), in the global section. */
static void include_file(lua_State *L, struct loader *ld, const char *path)
{
	char err[400], chunk[24], saved[sizeof(ld->section)];
	struct source *f;

	if (ld->depth >= DEPTH_MAX)
		luaL_error(L, "Include of %s: Includes nest more than %d deep (does a file include "
			      "itself?)",
			   path, DEPTH_MAX);
	if (ld->nfiles >= FILES_MAX)
		luaL_error(L, "Include of %s: a config may read at most %d files", path, FILES_MAX);
	f = add_source(ld);
	if (!f || !(f->name = strdup(path)))
		luaL_error(L, "out of memory");
	f->owned = read_file(path, true, &f->len, err, sizeof(err));
	if (!f->owned)
		luaL_error(L, "Include: %s", err);
	/* Included text is the config's memory too: it counts against the same cap. */
	if (f->len > CFG_MEM_LIMIT - ld->mem)
		luaL_error(L, "Include of %s: the config's files and Lua would use over %d MiB",
			   path, (int)(CFG_MEM_LIMIT >> 20));
	ld->mem += f->len;
	f->src = f->owned;
	snprintf(chunk, sizeof(chunk), "=\x01%zu", ld->nfiles - 1);
	if (luaL_loadbufferx(L, f->src, f->len, chunk, "t") != LUA_OK)
		lua_error(L);
	lua_pushvalue(L, lua_upvalueindex(1));
	lua_setupvalue(L, -2, 1); /* _ENV */
	memcpy(saved, ld->section, sizeof(saved));
	ld->section[0] = '\0';
	ld->depth++;
	/* Protected, so that a pcall(Include, ...) that fails leaves the state as it was. */
	int status = lua_pcall(L, 0, 0, 0);
	ld->depth--;
	memcpy(ld->section, saved, sizeof(saved));
	if (status != LUA_OK)
		lua_error(L); /* the same error, on to whoever catches it */
}

/*
 * Include "file": as Prosody, relative to the including file, '*' and '?'
 * in the file name (prosody.h); each file runs in the same environment.
 */
static int prosody_include(lua_State *L)
{
	struct loader *ld = loader_of(L);
	const char *file = luaL_checkstring(L, 1);
	struct where at = running_at(L, 1);
	char err[400], *paths, *p, **grown;
	size_t count;

	paths = npd_prosody_include_paths(ld->files[at.file].name, file, &count, err,
					  sizeof(err));
	if (!paths)
		return luaL_error(L, "Include \"%s\": %s", file, err);
	/* Owned by the loader at once: an error in an included file unwinds past here. */
	grown = realloc(ld->owned, (ld->nowned + 1) * sizeof(*grown));
	if (!grown) {
		free(paths);
		return luaL_error(L, "out of memory");
	}
	ld->owned = grown;
	ld->owned[ld->nowned++] = paths;
	for (p = paths; count > 0; count--, p += strlen(p) + 1)
		include_file(L, ld, p);
	return 0;
}

/* RunScript "file" runs any Lua with all of Prosody's powers: not in this sandbox. */
static int prosody_runscript(lua_State *L)
{
	struct loader *ld = loader_of(L);
	char buf[80];
	size_t len = 0;
	const char *file = lua_tolstring(L, 1, &len);

	cfg_warn_at(ld, running_at(L, 1), "RunScript %s skipped: netproxyd runs no scripts",
		    file ? cfg_quote(buf, sizeof(buf), file, len) : "(no file)");
	return 0;
}

/*
 * string.rep, bounded. The instruction count never sees inside a C
 * function, and string.rep("", math.maxinteger) would loop there for
 * hours: a result over the memory cap, or that many empty pieces, is an
 * error instead. (Upvalue 1: the library's own rep.)
 */
static int bounded_rep(lua_State *L)
{
	size_t len, seplen = 0;
	lua_Integer n = luaL_checkinteger(L, 2);

	luaL_checklstring(L, 1, &len);
	luaL_optlstring(L, 3, "", &seplen);
	if (n > 0 && ((lua_Unsigned)n > CFG_MEM_LIMIT ||
		      (len + seplen) > CFG_MEM_LIMIT / (lua_Unsigned)n))
		return luaL_error(L, "string.rep: too large (at most %d Mi pieces and %d MiB)",
				  (int)(CFG_MEM_LIMIT >> 20), (int)(CFG_MEM_LIMIT >> 20));
	lua_pushvalue(L, lua_upvalueindex(1));
	lua_insert(L, 1);
	lua_call(L, lua_gettop(L) - 1, 1);
	return 1;
}

/* Runs in lua_pcall(): returns the environment, the values table and the lines table. */
static int open_sandbox(lua_State *L)
{
	static const luaL_Reg libs[] = {
		{LUA_GNAME, luaopen_base},
		{LUA_STRLIBNAME, luaopen_string},
		{LUA_TABLIBNAME, luaopen_table},
		{LUA_MATHLIBNAME, luaopen_math},
	};
	/* No io, os, require, package, debug, load, loadfile, dofile, collectgarbage, print. */
	static const char *const safe[] = {
		"assert", "error",	  "ipairs",	  "next",	   "pairs",
		"pcall",  "select",	  "tonumber",	  "tostring",	   "type",
		"xpcall", LUA_STRLIBNAME, LUA_TABLIBNAME, LUA_MATHLIBNAME,
	};
	/* Prosody's own words, with its lower-case spellings. */
	static const luaL_Reg prosody[] = {
		{"VirtualHost", prosody_virtualhost}, {"Host", prosody_virtualhost},
		{"host", prosody_virtualhost},	      {"Component", prosody_component},
		{"component", prosody_component},     {"RunScript", prosody_runscript},
	};

	for (size_t i = 0; i < sizeof(libs) / sizeof(libs[0]); i++) {
		luaL_requiref(L, libs[i].name, libs[i].func, 1);
		lua_pop(L, 1);
	}
	/* In the library itself, so that ("x"):rep(n) is bounded too. */
	lua_getglobal(L, LUA_STRLIBNAME);
	lua_getfield(L, -1, "rep");
	lua_pushcclosure(L, bounded_rep, 1);
	lua_setfield(L, -2, "rep");
	lua_pop(L, 1);
	lua_newtable(L); /* 1: the environment */
	lua_pushglobaltable(L);
	for (size_t i = 0; i < sizeof(safe) / sizeof(safe[0]); i++) {
		lua_getfield(L, 2, safe[i]);
		lua_setfield(L, 1, safe[i]);
	}
	lua_pop(L, 1);
	for (size_t i = 0; i < sizeof(prosody) / sizeof(prosody[0]); i++) {
		lua_pushcfunction(L, prosody[i].func);
		lua_setfield(L, 1, prosody[i].name);
	}
	for (int i = 0; i < 2; i++) { /* Include runs files in the environment */
		lua_pushvalue(L, 1);
		lua_pushcclosure(L, prosody_include, 1);
		lua_setfield(L, 1, i ? "include" : "Include");
	}
	lua_newtable(L); /* 2: values */
	lua_newtable(L); /* 3: lines */
	lua_createtable(L, 0, 2);
	lua_pushvalue(L, 2);
	lua_pushcclosure(L, read_global, 1);
	lua_setfield(L, -2, "__index");
	lua_pushvalue(L, 2);
	lua_pushvalue(L, 3);
	lua_pushcclosure(L, record_global, 2);
	lua_setfield(L, -2, "__newindex");
	lua_setmetatable(L, 1);
	return 3;
}

static int load(struct loader *ld)
{
	int status;
	lua_State *L;

	L = ld->L = lua_newstate(capped_alloc, ld);
	if (!L) {
		snprintf(ld->diag->error, sizeof(ld->diag->error), "%s: out of memory",
			 ld->files[0].name);
		return -1;
	}
	lua_pushcfunction(L, open_sandbox);
	status = lua_pcall(L, 0, 3, 0);
	if (status == LUA_OK) /* text only: precompiled chunks can crash the VM */
		status = luaL_loadbufferx(L, ld->files[0].src, ld->files[0].len, "=\x01" "0", "t");
	if (status == LUA_OK) {
		lua_pushvalue(L, 1);
		lua_setupvalue(L, -2, 1); /* _ENV */
		lua_sethook(L, count_hook, LUA_MASKCOUNT, STEP_INSNS);
		status = lua_pcall(L, 0, 0, 0);
		lua_sethook(L, NULL, 0, 0);
	}
	if (status == LUA_OK) {
		/* check() sees: the loader, values, lines. */
		lua_remove(L, 1); /* the environment */
		lua_pushcfunction(L, check);
		lua_insert(L, 1);
		lua_pushlightuserdata(L, ld);
		lua_insert(L, 2);
		status = lua_pcall(L, 3, 0, 0);
	}
	if (status != LUA_OK && !ld->failed)
		cfg_lua_failure(ld, status);
	lua_close(L);
	return status == LUA_OK ? 0 : -1;
}

static int load_buffer(const char *name, const char *src, size_t len, char *owned,
		       struct npd_config **out, struct npd_config_diag *diag)
{
	struct npd_config_diag quiet = {0};
	struct loader ld = {0};
	int rc = -1;

	name = name ? name : "config";
	ld.diag = diag ? diag : &quiet;
	ld.diag->error[0] = '\0';
	*out = NULL;
	ld.cfg = calloc(1, sizeof(*ld.cfg));
	if (ld.cfg && add_source(&ld) && (ld.files[0].name = strdup(name))) {
		ld.files[0].src = src;
		ld.files[0].len = len;
		ld.files[0].owned = owned;
		owned = NULL;
		snprintf(ld.cfg->source, sizeof(ld.cfg->source), "%s", name);
		rc = load(&ld);
	} else {
		snprintf(ld.diag->error, sizeof(ld.diag->error), "%s: out of memory", name);
	}
	free(owned);
	for (size_t i = 0; i < ld.nfiles; i++) {
		free(ld.files[i].name);
		free(ld.files[i].owned);
		free(ld.files[i].lines);
	}
	free(ld.files);
	for (size_t i = 0; i < ld.nowned; i++)
		free(ld.owned[i]);
	free(ld.owned);
	free(ld.map);
	free(ld.ifaces);
	if (rc != 0) {
		npd_config_free(ld.cfg);
		return -1;
	}
	*out = ld.cfg;
	return 0;
}

int npd_config_load_string(const char *name, const char *lua, struct npd_config **out,
			   struct npd_config_diag *diag)
{
	return load_buffer(name, lua ? lua : "", lua ? strlen(lua) : 0, NULL, out, diag);
}

int npd_config_load_file(const char *path, struct npd_config **out, struct npd_config_diag *diag)
{
	struct npd_config_diag quiet = {0};
	size_t len = 0;
	char *buf;

	if (!diag)
		diag = &quiet;
	*out = NULL;
	buf = read_file(path, false, &len, diag->error, sizeof(diag->error));
	if (!buf)
		return -1;
	return load_buffer(path, buf, len, buf, out, diag);
}

void npd_config_free(struct npd_config *cfg)
{
	if (!cfg)
		return;
	free(cfg->listeners);
	free(cfg->services);
	free(cfg->trusted);
	free(cfg);
}

static void describe_service(const struct npd_service *s, FILE *out)
{
	static const char *const modes[] = {"plain", "send_proxy v1", "send_proxy v2"};
	bool first = true;

	fprintf(out, "%s (%s", s->name, s->target[0].text);
	for (int i = 1; i < s->ntargets; i++)
		fprintf(out, " and %s", s->target[i].text);
	if (s->prosody[0])
		fprintf(out, " from %s", s->prosody);
	fprintf(out, ", %s", modes[s->send_proxy]);
	if (s->transparent)
		fputs(s->transparent_port ? ", transparent" : ", transparent without ports", out);
	if (s->mark)
		fprintf(out, ", mark %" PRIu32, s->mark);
	if (s->crc32c)
		fputs(", crc32c", out);
	for (int t = 0; t < 256; t++) {
		const char *name;

		if (!(s->pass_tlvs[t / 8] & (1u << (t % 8))))
			continue;
		name = cfg_tlv_name((uint8_t)t);
		fputs(first ? ", pass_tlvs " : " ", out);
		if (name)
			fputs(name, out);
		else
			fprintf(out, "0x%02X", t);
		first = false;
	}
	fputs(")", out);
}

void npd_config_describe(const struct npd_config *cfg, FILE *out)
{
	char net[NP_ADDRSTRLEN];

	for (size_t i = 0; i < cfg->nlisteners; i++) {
		const struct npd_listener *l = &cfg->listeners[i];

		fprintf(out, "listen %s -> ", l->addr_text);
		if (l->service < 0 && l->missing[0])
			fprintf(out, "%s (not a service: connections closed after the header)",
				l->missing);
		else if (l->service < 0)
			fputs("(unmapped: connections closed after the header)", out);
		else
			describe_service(&cfg->services[l->service], out);
		fputc('\n', out);
	}
	fputs("trusted:", out);
	if (cfg->ntrusted == 0)
		fputs(" ANY (warning)", out);
	for (size_t i = 0; i < cfg->ntrusted; i++) {
		cfg_format_addr(net, sizeof(net),
				cfg->trusted[i].family == NP_AF_INET ? AF_INET : AF_INET6,
				cfg->trusted[i].addr, -1);
		fprintf(out, " %s/%u", net, cfg->trusted[i].prefix);
	}
	fprintf(out, "\nheader timeout: %g s\nmax header: %zu bytes\n",
		cfg->header_timeout_ms / 1000.0, cfg->max_header);
	if (cfg->prosody)
		fprintf(out, "a Prosody config: %d file%s read, %d of Prosody's own settings "
			     "skipped\n",
			cfg->nfiles, cfg->nfiles == 1 ? "" : "s", cfg->prosody_skipped);
	else if (cfg->nfiles > 1)
		fprintf(out, "%d files read\n", cfg->nfiles);
}
