/*
 * config_listeners.c - where netproxyd listens, and what each port is for:
 * proxy_port_mappings (port to service name), the interfaces
 * (proxy_interfaces, or as Prosody's portmanager would find them) and
 * proxy_ports, resolved into config.h's struct npd_listener.
 *
 * Each port of proxy_ports (by default every mapped port, ascending)
 * listens on each interface, or exactly where an "address:port" entry
 * says. A port without a mapping, or mapped to a name that is no service,
 * still listens and closes its connections after the header, with a
 * warning: mod_net_proxy ran such configs, and the other ports are served.
 */
#include <ctype.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <lauxlib.h>
#include <lua.h>

#include "config_internal.h"
#include "config_settings.h"
#include "prosody.h"

struct mapping {
	uint16_t port;
	bool string_key; /* ["15222"] = ...: Prosody's mod_net_proxy takes tonumber(key) */
	int service;	 /* -1: the name is no service (warned about) */
	bool listed;	 /* named by an explicit proxy_ports */
	char missing[NPD_NAME_MAX]; /* with service -1, the name, as npd_listener.missing */
};

/* An interface to listen on, with "*" already split into its two families. */
struct iface {
	sa_family_t family;
	uint8_t addr[16];
	bool implicit;
};

static int mapping_cmp(const void *a, const void *b)
{
	const struct mapping *x = a, *y = b;

	return (x->port > y->port) - (x->port < y->port);
}

static struct mapping *find_mapping(struct loader *ld, lua_Integer port)
{
	struct mapping key = {.port = (uint16_t)port};

	return ld->nmap ? bsearch(&key, ld->map, ld->nmap, sizeof(key), mapping_cmp) : NULL;
}

/* A name for a log line: printable, without quotes or backslashes, "..." when cut to fit. */
static void log_name(char *out, size_t cap, const char *s, size_t len)
{
	bool cut = len >= cap;
	size_t n = cut ? cap - 4 : len;

	for (size_t i = 0; i < n; i++)
		out[i] = isprint((unsigned char)s[i]) && s[i] != '"' && s[i] != '\\' ? s[i] : '?';
	if (cut) {
		memcpy(out + n, "...", 3);
		n += 3;
	}
	out[n] = '\0';
}

/* Push proxy_port_mappings' value for m. */
static int push_mapped(lua_State *L, int idx, const struct mapping *m)
{
	if (!m->string_key)
		return lua_rawgeti(L, idx, m->port);
	lua_pushfstring(L, "%d", (int)m->port);
	return lua_rawget(L, idx);
}

/*
 * proxy_port_mappings = { [15222] = "c2s" }. A name that is no service is
 * not fatal, as in mod_net_proxy: Prosody runs such a config, and the
 * other ports are served. It is warned about, and its port is unmapped.
 */
void cfg_read_mappings(struct loader *ld)
{
	lua_State *L = ld->L;
	size_t n = 0;
	int idx;
	char path[64], buf[80];

	if (cfg_push_setting(ld, K_PORT_MAPPINGS) == LUA_TNIL)
		goto out;
	idx = lua_gettop(L);
	if (!lua_istable(L, idx))
		cfg_fail(ld, "proxy_port_mappings",
			 "expected a table such as { [15222] = \"c2s\" }, got %s",
			 luaL_typename(L, idx));
	n = cfg_table_size(L, idx);
	ld->map = calloc(n ? n : 1, sizeof(*ld->map));
	if (!ld->map)
		cfg_fail(ld, "proxy_port_mappings", "out of memory");
	/* Ports first, sorted, so the first bad value reported is the same on every run. */
	lua_pushnil(L);
	while (lua_next(L, idx)) {
		uint16_t port;

		lua_pop(L, 1);
		if (!cfg_to_port(L, -1, &port))
			cfg_fail(ld, "proxy_port_mappings",
				 "expected port numbers from 1 to 65535 as keys, got %s",
				 cfg_show(L, -1, buf, sizeof(buf)));
		ld->map[ld->nmap].string_key = lua_type(L, -1) == LUA_TSTRING;
		ld->map[ld->nmap++].port = port;
	}
	qsort(ld->map, ld->nmap, sizeof(*ld->map), mapping_cmp);
	for (size_t i = 0; i + 1 < ld->nmap; i++)
		if (ld->map[i].port == ld->map[i + 1].port)
			cfg_fail(ld, "proxy_port_mappings",
				 "port %u is mapped twice (as %u and as \"%u\")", ld->map[i].port,
				 ld->map[i].port, ld->map[i].port);
	/* Then the names; one that services lacks may be Prosody's, added now. */
	for (size_t i = 0; i < ld->nmap; i++) {
		struct mapping *m = &ld->map[i];
		size_t len;
		const char *name;

		snprintf(path, sizeof(path), "proxy_port_mappings[%u]", m->port);
		if (push_mapped(L, idx, m) != LUA_TSTRING || lua_rawlen(L, -1) == 0)
			cfg_fail(ld, path, "expected a service name, got %s",
				 lua_type(L, -1) == LUA_TSTRING ? "\"\"" : luaL_typename(L, -1));
		name = lua_tolstring(L, -1, &len);
		if (cfg_find_service(ld->cfg, name) < 0 &&
		    !cfg_add_prosody_service(ld, name, path)) {
			cfg_warn(ld, path,
				 "maps to %s, which services does not define and which is not one "
				 "of Prosody's services (%s): its connections will be closed after "
				 "the header",
				 cfg_quote(buf, sizeof(buf), name, len), npd_prosody_service_names);
			log_name(m->missing, sizeof(m->missing), name, len);
		}
		lua_pop(L, 1);
	}
	/* Indices last: adding a service re-sorts them. */
	for (size_t i = 0; i < ld->nmap; i++) {
		push_mapped(L, idx, &ld->map[i]);
		ld->map[i].service = cfg_find_service(ld->cfg, lua_tostring(L, -1));
		lua_pop(L, 1);
	}
out:
	lua_settop(L, 3);
}

/*
 * proxy_interfaces = { "*" }, or as in Prosody interfaces, else every
 * address: "*" is both wildcards, marked implicit. key names the setting
 * at idx; nil there means the default, which use_ipv4 = false or use_ipv6 =
 * false narrow as in Prosody.
 */
static void read_interfaces(struct loader *ld, int idx, const char *key)
{
	lua_State *L = ld->L;
	size_t n;
	char path[64], buf[80];

	if (lua_isnil(L, idx)) {
		bool v4, v6;

		npd_prosody_families(ld, &v4, &v6);
		npd_prosody_check_families(ld, v4, v6);
		if (v4 && v6)
			lua_pushliteral(L, "*");
		else
			lua_pushstring(L, v4 ? "0.0.0.0" : "::");
		lua_replace(L, idx);
	}
	n = cfg_list_len(ld, idx, key);
	ld->ifaces = calloc(2 * n + 1, sizeof(*ld->ifaces));
	if (!ld->ifaces)
		cfg_fail(ld, key, "out of memory");
	for (size_t i = 1; i <= n; i++) {
		struct iface add[2] = {{0}};
		size_t nadd = 1;

		cfg_push_item(L, idx, i);
		cfg_item_path(path, sizeof(path), L, idx, key, i);
		if (lua_type(L, -1) == LUA_TSTRING && strcmp(lua_tostring(L, -1), "*") == 0) {
			add[0] = (struct iface){.family = AF_INET, .implicit = true};
			add[1] = (struct iface){.family = AF_INET6, .implicit = true};
			nadd = 2;
		} else if (lua_type(L, -1) != LUA_TSTRING ||
			   !cfg_parse_ip(lua_tostring(L, -1), &add[0].family, add[0].addr)) {
			cfg_fail(ld, path,
				 "expected \"*\", \"::\", \"0.0.0.0\" or a numeric IP address, got "
				 "%s",
				 cfg_show(L, -1, buf, sizeof(buf)));
		}
		for (size_t a = 0; a < nadd; a++) {
			bool merged = false;
			for (size_t j = 0; j < ld->nifaces && !merged; j++) {
				struct iface *have = &ld->ifaces[j];
				if (have->family != add[a].family ||
				    memcmp(have->addr, add[a].addr, 16) != 0)
					continue;
				/*
				 * Prosody's own default is { "*", "::" }, where "*" is IPv4
				 * only; here "*" covers "::" too. Users paste that line, so
				 * an address that "*" implies may be named again.
				 */
				if (!have->implicit && !add[a].implicit)
					cfg_fail(ld, path, "%s repeats an address listed before",
						 cfg_show(L, -1, buf, sizeof(buf)));
				have->implicit = have->implicit || add[a].implicit;
				merged = true;
			}
			if (!merged)
				ld->ifaces[ld->nifaces++] = add[a];
		}
		lua_pop(L, 1);
	}
}

/* FNV-1a over a listener's address: family, IP and port (the rest is zero). */
static size_t address_hash(const struct npd_listener *l)
{
	const unsigned char *p = (const unsigned char *)&l->addr;
	uint64_t h = 14695981039346656037u;

	for (socklen_t i = 0; i < l->addrlen; i++)
		h = (h ^ p[i]) * 1099511628211u;
	return (size_t)h;
}

/*
 * The listener before cfg->listeners[n] with the same address as it, or
 * NULL after adding it to the set. Fails the load when out of memory.
 */
static const struct npd_listener *listed_before(struct loader *ld, const char *path, size_t n)
{
	const struct npd_listener *all = ld->cfg->listeners, *l = &all[n];

	if (2 * (n + 1) > ld->nlistener_slots) {
		size_t cap = ld->nlistener_slots ? 2 * ld->nlistener_slots : 64;
		size_t *slots = calloc(cap, sizeof(*slots));

		if (!slots)
			cfg_fail(ld, path, "out of memory");
		for (size_t i = 0; i < n; i++) {
			size_t at = address_hash(&all[i]) & (cap - 1);
			while (slots[at])
				at = (at + 1) & (cap - 1);
			slots[at] = i + 1;
		}
		free(ld->listener_slots);
		ld->listener_slots = slots;
		ld->nlistener_slots = cap;
	}
	size_t mask = ld->nlistener_slots - 1, at = address_hash(l) & mask;
	for (; ld->listener_slots[at]; at = (at + 1) & mask) {
		const struct npd_listener *have = &all[ld->listener_slots[at] - 1];
		if (have->addrlen == l->addrlen && memcmp(&have->addr, &l->addr, l->addrlen) == 0)
			return have;
	}
	ld->listener_slots[at] = n + 1;
	return NULL;
}

static void add_listener(struct loader *ld, const char *path, sa_family_t family,
			 const uint8_t *addr, uint16_t port, const struct mapping *m, bool implicit)
{
	struct npd_config *cfg = ld->cfg;
	struct npd_listener *l, *grown;

	if (cfg->nlisteners == ld->listeners_cap) {
		size_t cap = ld->listeners_cap ? 2 * ld->listeners_cap : 8;

		grown = realloc(cfg->listeners, cap * sizeof(*grown));
		if (!grown)
			cfg_fail(ld, path, "out of memory");
		cfg->listeners = grown;
		ld->listeners_cap = cap;
	}
	grown = cfg->listeners;
	l = memset(&grown[cfg->nlisteners], 0, sizeof(*l));
	if (family == AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)&l->addr;

		sin->sin_family = AF_INET;
		sin->sin_port = htons(port);
		memcpy(&sin->sin_addr, addr, 4);
		l->addrlen = sizeof(*sin);
	} else {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&l->addr;

		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(port);
		memcpy(&sin6->sin6_addr, addr, 16);
		l->addrlen = sizeof(*sin6);
	}
	cfg_format_addr(l->addr_text, sizeof(l->addr_text), family, addr, port);
	l->port = port;
	l->service = m ? m->service : -1;
	if (m)
		memcpy(l->missing, m->missing, sizeof(l->missing));
	l->implicit = implicit;
	if (listed_before(ld, path, cfg->nlisteners))
		cfg_fail(ld, path, "%s is listed twice", l->addr_text);
	cfg->nlisteners++;
}

/*
 * The listeners: each port of proxy_ports (default: every mapped port) on
 * each interface, or on exactly the address an "address:port" entry names.
 */
void cfg_read_listeners(struct loader *ld)
{
	lua_State *L = ld->L;
	struct npd_config *cfg = ld->cfg;
	int ports, ifaces;
	size_t n = 0, numeric = 0;
	char path[64], buf[80];
	const char *iface_key;

	cfg_push_setting(ld, K_PORTS);
	ports = lua_gettop(L);
	if (!(iface_key = cfg_push_first(ld, &cfg_key_names[K_PROXY_INTERFACES], 4))) {
		iface_key = cfg_key_names[K_PROXY_INTERFACES];
		lua_pushnil(L);
	}
	ifaces = lua_gettop(L);
	read_interfaces(ld, ifaces, iface_key);

	if (lua_isnil(L, ports)) {
		for (size_t i = 0; i < ld->nmap; i++) {
			snprintf(path, sizeof(path), "proxy_port_mappings[%u]", ld->map[i].port);
			for (size_t j = 0; j < ld->nifaces; j++)
				add_listener(ld, path, ld->ifaces[j].family, ld->ifaces[j].addr,
					     ld->map[i].port, &ld->map[i], ld->ifaces[j].implicit);
		}
		numeric = ld->nmap;
	} else {
		n = cfg_list_len(ld, ports, "proxy_ports");
	}
	for (size_t i = 1; i <= n; i++) {
		uint16_t port;
		struct mapping *m;

		cfg_push_item(L, ports, i);
		cfg_item_path(path, sizeof(path), L, ports, "proxy_ports", i);
		if (cfg_to_port(L, -1, &port)) {
			m = find_mapping(ld, port);
			for (size_t j = 0; j < ld->nifaces; j++)
				add_listener(ld, path, ld->ifaces[j].family, ld->ifaces[j].addr,
					     port, m, ld->ifaces[j].implicit);
			numeric++;
		} else if (lua_type(L, -1) == LUA_TSTRING) {
			char host[NPD_ADDR_TEXT];
			uint16_t p;
			bool bracketed;
			sa_family_t family;
			uint8_t addr[16];
			const char *why = cfg_split_host_port(lua_tostring(L, -1), host,
							      sizeof(host), &p, &bracketed);

			if (!why && (!cfg_parse_ip(host, &family, addr) ||
				     (family == AF_INET6) != bracketed))
				why = "expected a numeric IPv4 address or an IPv6 one in brackets";
			if (why)
				cfg_fail(ld, path, "%s: %s", cfg_show(L, -1, buf, sizeof(buf)),
					 why);
			port = p;
			m = find_mapping(ld, port);
			add_listener(ld, path, family, addr, p, m, false);
		} else {
			cfg_fail(ld, path,
				 "expected a port from 1 to 65535 or \"address:port\", got %s",
				 cfg_show(L, -1, buf, sizeof(buf)));
		}
		if (m)
			m->listed = true;
		else
			cfg_warn(ld, path,
				 "port %u has no mapping in proxy_port_mappings: its connections "
				 "will be closed after the header",
				 port);
		lua_pop(L, 1);
	}
	if (!lua_isnil(L, ports))
		for (size_t i = 0; i < ld->nmap; i++)
			if (!ld->map[i].listed) {
				snprintf(path, sizeof(path), "proxy_port_mappings[%u]",
					 ld->map[i].port);
				cfg_warn(ld, path,
					 "port %u is not in proxy_ports: it is not listened on",
					 ld->map[i].port);
			}

	if (cfg->nlisteners == 0) {
		if (numeric && ld->nifaces == 0)
			cfg_fail(ld, iface_key, "the list is empty: nothing to listen on");
		if (!lua_isnil(L, ports))
			cfg_fail(ld, "proxy_ports", "the list is empty: nothing to listen on");
		cfg_fail(ld, "proxy_port_mappings",
			 "nothing to listen on: map a port to a service, as in "
			 "proxy_port_mappings = { [15222] = \"c2s\" }");
	}
	lua_settop(L, 3);
}
