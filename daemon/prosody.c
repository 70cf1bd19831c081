/*
 * prosody.c - Prosody's network services and Include, as Prosody 0.12 has
 * them (core/portmanager.lua, core/configmanager.lua and each module's
 * module:provides("net", ...)), for reading its config: which services a
 * proxy port may be mapped to, and the ports and interfaces Prosody's own
 * keys (or its defaults) give each, so that netproxyd connects where
 * Prosody listens.
 */
#include <dirent.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#include "config_internal.h"
#include "prosody.h"

/*
 * The services a PROXY port can usefully reach. c2s_direct_tls,
 * s2s_direct_tls and legacy_ssl (0.12's c2s_direct_tls under its old name)
 * have no default port: Prosody listens for them only where the config
 * says. http is private since 0.12: it listens on loopback unless told.
 */
static const struct npd_prosody_service services[] = {
	{"c2s", 5222, false},		 {"s2s", 5269, false},	 {"c2s_direct_tls", 0, false},
	{"s2s_direct_tls", 0, false},	 {"legacy_ssl", 0, false}, {"http", 5280, true},
	{"https", 5281, false},		 {"proxy65", 5000, false},
};

const char npd_prosody_service_names[] =
	"c2s, s2s, c2s_direct_tls, s2s_direct_tls, legacy_ssl, http, https, proxy65";

const struct npd_prosody_service *npd_prosody_service(const char *name)
{
	for (size_t i = 0; i < sizeof(services) / sizeof(services[0]); i++)
		if (strcmp(services[i].name, name) == 0)
			return &services[i];
	return NULL;
}

const char *npd_prosody_connect_host(const char *iface)
{
	if (strcmp(iface, "*") == 0 || strcmp(iface, "0.0.0.0") == 0)
		return "127.0.0.1";
	if (strcmp(iface, "::") == 0)
		return "::1";
	return iface;
}

/*
 * Prosody's glob: '*' any run of characters, '?' any one; nothing else is
 * special. On a mismatch only the last '*' takes one more character, which
 * is enough for this kind of pattern: time at most the product of the two
 * lengths, where trying every '*' in turn would grow exponentially.
 */
static bool glob_match(const char *pat, const char *s)
{
	const char *star = NULL, *resume = NULL;

	while (*s) {
		if (*pat == '*') {
			star = pat++;
			resume = s;
		} else if (*pat && (*pat == '?' || *pat == *s)) {
			pat++;
			s++;
		} else if (star) {
			pat = star + 1;
			s = ++resume;
		} else {
			return false;
		}
	}
	while (*pat == '*')
		pat++;
	return !*pat;
}

static int path_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The names that match pattern in dir, as "dir/name" each, sorted, in one block. */
static char *expand(const char *dir, const char *pattern, size_t *count, char *err,
		    size_t errcap)
{
	char **names = NULL, *out = NULL;
	size_t n = 0, cap = 0, total = 0, w = 0;
	bool oom = false;
	struct dirent *e;
	DIR *d = opendir(*dir ? dir : "/");

	if (!d) {
		snprintf(err, errcap, "cannot open the directory %s: %s", *dir ? dir : "/",
			 strerror(errno));
		return NULL;
	}
	while (!oom && (e = readdir(d)) != NULL) {
		if (e->d_name[0] == '.' || !glob_match(pattern, e->d_name))
			continue;
		if (n == cap) {
			char **grown = realloc(names, (cap ? 2 * cap : 8) * sizeof(*names));
			if (!grown) {
				oom = true;
				break;
			}
			names = grown;
			cap = cap ? 2 * cap : 8;
		}
		names[n] = strdup(e->d_name);
		oom = !names[n];
		n += !oom;
		total += strlen(dir) + strlen(e->d_name) + 2;
	}
	closedir(d);
	if (!oom && !(out = malloc(total ? total : 1)))
		oom = true;
	if (n)
		qsort(names, n, sizeof(*names), path_cmp);
	for (size_t i = 0; i < n; i++) {
		if (out)
			w += (size_t)sprintf(out + w, "%s/%s", dir, names[i]) + 1;
		free(names[i]);
	}
	free(names);
	if (oom)
		snprintf(err, errcap, "out of memory");
	*count = oom ? 0 : n;
	return oom ? NULL : out;
}

char *npd_prosody_include_paths(const char *from, const char *file, size_t *count, char *err,
				size_t errcap)
{
	const char *slash = strrchr(from, '/');
	char *full = NULL, *name, *out;
	int dirlen = slash ? (int)(slash - from) : 1;

	*count = 0;
	while (strncmp(file, "./", 2) == 0) /* as Prosody: "./x" is "x" */
		file += 2 + strspn(file + 2, "/");
	if (*file == '\0') {
		snprintf(err, errcap, "Include needs a file name");
		return NULL;
	}
	if (file[0] == '/')
		full = strdup(file);
	else if (asprintf(&full, "%.*s/%s", dirlen, slash ? from : ".", file) < 0)
		full = NULL;
	if (!full) {
		snprintf(err, errcap, "out of memory");
		return NULL;
	}
	name = strrchr(full, '/'); /* there is one: full is absolute or starts with a directory */
	*name++ = '\0';
	if (strpbrk(full, "*?")) {
		snprintf(err, errcap, "'*' and '?' work only in the file name, not in %s", full);
		out = NULL;
	} else if (strpbrk(name, "*?")) {
		out = expand(full, name, count, err, errcap);
	} else {
		name[-1] = '/';
		out = full;
		full = NULL;
		*count = 1;
	}
	free(full);
	return out;
}

/* --- Prosody's keys in a config being loaded (config_internal.h) ---------- */

/* <service>_ports or <service>_interfaces of one of Prosody's services. */
bool npd_prosody_is_service_key(const char *name, size_t len)
{
	static const char *const suffixes[] = {"_ports", "_interfaces", "_interface"};
	char service[NPD_NAME_MAX];

	for (size_t i = 0; i < sizeof(suffixes) / sizeof(suffixes[0]); i++) {
		size_t slen = strlen(suffixes[i]);

		if (len <= slen || len - slen >= sizeof(service) ||
		    memcmp(name + len - slen, suffixes[i], slen) != 0)
			continue;
		memcpy(service, name, len - slen);
		service[len - slen] = '\0';
		if (npd_prosody_service(service))
			return true;
	}
	return false;
}

/* A boolean of Prosody's that is true unless set to false (use_ipv4, use_ipv6). */
static bool prosody_flag(struct loader *ld, enum key k)
{
	bool on = cfg_push_setting(ld, k) == LUA_TNIL || lua_toboolean(ld->L, -1);

	lua_pop(ld->L, 1);
	return on;
}

void npd_prosody_families(struct loader *ld, bool *v4, bool *v6)
{
	*v4 = prosody_flag(ld, K_USE_IPV4);
	*v6 = prosody_flag(ld, K_USE_IPV6);
}

/* Prosody listens nowhere by default with both families turned off: say so. */
void npd_prosody_check_families(struct loader *ld, bool v4, bool v6)
{
	if (!v4 && !v6)
		cfg_fail(ld, cfg_key_names[K_USE_IPV6],
			 "use_ipv4 and use_ipv6 are both false: without interfaces, Prosody "
			 "listens nowhere");
}

/*
 * Push the interfaces Prosody's portmanager gives a service (prosody.h) and
 * return the key they came from, or NULL for Prosody's defaults. key holds
 * the service's own two key names.
 */
static const char *push_prosody_interfaces(struct loader *ld, const struct npd_prosody_service *ps,
					   char (*key)[NPD_NAME_MAX + 16])
{
	lua_State *L = ld->L;
	bool v4 = prosody_flag(ld, K_USE_IPV4), v6 = prosody_flag(ld, K_USE_IPV6);
	const char *keys[4], *from;
	size_t n = 0;

	snprintf(key[0], sizeof(key[0]), "%s_interfaces", ps->name);
	snprintf(key[1], sizeof(key[1]), "%s_interface", ps->name);
	keys[n++] = key[0];
	keys[n++] = key[1];
	if (ps->private) {
		keys[n++] = cfg_key_names[K_LOCAL_INTERFACES];
	} else {
		keys[n++] = cfg_key_names[K_INTERFACES];
		keys[n++] = cfg_key_names[K_INTERFACE];
	}
	if ((from = cfg_push_first(ld, keys, n)))
		return from;
	npd_prosody_check_families(ld, v4, v6);
	/* Prosody's own defaults: "*" is IPv4 alone there, "::" IPv6 alone. */
	lua_createtable(L, 2, 0);
	n = 0;
	if (v4) {
		lua_pushstring(L, ps->private ? "127.0.0.1" : "*");
		lua_rawseti(L, -2, (lua_Integer)++n);
	}
	if (v6) {
		lua_pushstring(L, ps->private ? "::1" : "::");
		lua_rawseti(L, -2, (lua_Integer)++n);
	}
	return NULL;
}

/*
 * The addresses of one of Prosody's services, from Prosody's keys: its
 * first port, on the first of its interfaces of each address family, as
 * npd_prosody_connect_host() reaches them. path names the setting that
 * needs it.
 */
void npd_prosody_read_address(struct loader *ld, const char *path, struct npd_service *svc,
			      const struct npd_prosody_service *ps)
{
	lua_State *L = ld->L;
	int top = lua_gettop(L), list;
	char ports_key[NPD_NAME_MAX + 16], ifaces_keys[2][NPD_NAME_MAX + 16], item[160];
	char text[NPD_ADDR_TEXT], buf[80];
	const char *ifaces_from, *host;
	uint16_t port = ps->default_port;
	bool ports_set;
	size_t n;

	snprintf(ports_key, sizeof(ports_key), "%s_ports", ps->name);
	ports_set = lua_getfield(L, 2, ports_key) != LUA_TNIL;
	if (!ports_set && !port)
		cfg_fail(ld, path,
			 "Prosody does not listen for %s: set %s, as in %s = { 5223 } (it has no "
			 "default port)",
			 ps->name, ports_key, ports_key);
	if (ports_set) {
		if (cfg_list_len(ld, top + 1, ports_key) == 0)
			cfg_fail(ld, ports_key,
				 "the list is empty: Prosody does not listen for %s, so %s "
				 "cannot reach it",
				 ps->name, path);
		cfg_push_item(L, top + 1, 1);
		cfg_item_path(item, sizeof(item), L, top + 1, ports_key, 1);
		if (!cfg_to_port(L, -1, &port))
			cfg_fail(ld, item, "expected a port from 1 to 65535, got %s",
				 cfg_show(L, -1, buf, sizeof(buf)));
	}

	ifaces_from = push_prosody_interfaces(ld, ps, ifaces_keys);
	list = lua_gettop(L);
	n = cfg_list_len(ld, list, ifaces_from ? ifaces_from : path);
	if (n == 0)
		cfg_fail(ld, ifaces_from,
			 "the list is empty: Prosody does not listen for %s, so %s "
			 "cannot reach it",
			 ps->name, path);
	for (size_t i = 1; i <= n; i++) {
		struct npd_target t;
		bool have = false;

		cfg_push_item(L, list, i);
		cfg_item_path(item, sizeof(item), L, list, ifaces_from ? ifaces_from : path, i);
		/* Prosody binds to what it is given: no brackets, no port. */
		if (lua_type(L, -1) != LUA_TSTRING || lua_rawlen(L, -1) == 0 ||
		    strpbrk(lua_tostring(L, -1), "[] /") ||
		    strlen(lua_tostring(L, -1)) != lua_rawlen(L, -1))
			cfg_fail(ld, item,
				 "expected an address such as \"*\", \"::\" or \"127.0.0.1\", got "
				 "%s",
				 cfg_show(L, -1, buf, sizeof(buf)));
		host = npd_prosody_connect_host(lua_tostring(L, -1));
		snprintf(text, sizeof(text), strchr(host, ':') ? "[%s]:%u" : "%s:%u", host, port);
		cfg_parse_target(ld, item, text, &t);
		/* Prosody listens on each; one of each family is all a connection picks from. */
		for (int j = 0; j < svc->ntargets; j++)
			have |= npd_target_family(&svc->target[j]) == npd_target_family(&t);
		if (!have)
			svc->target[svc->ntargets++] = t;
		lua_pop(L, 1);
	}
	if (!ports_set && !ifaces_from)
		snprintf(svc->prosody, sizeof(svc->prosody), "Prosody's defaults for %s", ps->name);
	else
		snprintf(svc->prosody, sizeof(svc->prosody), "Prosody's %s and %s",
			 ports_set ? ports_key : "default port",
			 ifaces_from	? ifaces_from
			 : ps->private ? "default local_interfaces"
				       : "default interfaces");
	lua_settop(L, top);
}
