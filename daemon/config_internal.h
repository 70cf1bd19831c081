/*
 * config_internal.h - what the parts of netproxyd's config loader share:
 * the loader's state, and the two parts at the bottom that every other part
 * may use. The rest of the daemon knows only config.h.
 *
 * Each part depends only on the parts below it in this list, and on the
 * bottom two:
 *
 *   config.c            the interface (load, free) and the loader's life
 *   config_sandbox.c    the Lua state: its caps, the safe library, the
 *                       environment that records each global and Prosody's
 *                       words (Include, VirtualHost, Component, ENV_)
 *   config_settings.c   which globals are settings; the tunables and trusted
 *                       senders; the order in which settings are read
 *   config_listeners.c  proxy_port_mappings, the interfaces and proxy_ports,
 *                       resolved into listeners
 *   config_services.c   services, and the addresses they connect to
 *   prosody.c           Prosody's services, with the ports and interfaces
 *                       its own keys give them
 *   config_describe.c   a loaded config as netproxyd -t writes it
 *   config_values.c     the settings' names; integers, seconds, booleans,
 *                       lists, ports and addresses read from Lua values
 *   config_messages.c   where a value was written; "FILE:LINE: KEY: what"
 *
 * Checking runs inside lua_pcall(): cfg_fail() sets diag->error and raises
 * a Lua error, which unwinds to config.c's load() and lets lua_close() free
 * every Lua value. So everything a part allocates in C hangs off the config
 * or the loader the moment it exists, and the caller's single free releases
 * it.
 *
 * While the settings are read, the Lua stack holds the values assigned at
 * index 2 (a plain table, global name to value) and where each was assigned
 * at index 3 (global name to cfg_where_pack()'s integer).
 */
#ifndef NPD_CONFIG_INTERNAL_H
#define NPD_CONFIG_INTERNAL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <lua.h>

#include "config.h"

/* What the Lua state may hold, the config's own files included. */
#define CFG_MEM_LIMIT ((size_t)64 << 20)

/* A file of the config: the one loaded, or one it included. */
struct source {
	char *name; /* the path, as messages show it */
	const char *src;
	size_t len;
	char *owned;   /* src, when the loader read it */
	size_t *lines; /* offset of each line, built when a message needs it */
	size_t nlines;
	bool services; /* assigns services */
	bool prosody;  /* has a VirtualHost or Component, or assigns modules_enabled */
};

/* Where a value was assigned: a file of the config and the line; line 0: unknown. */
struct where {
	int file;
	int line;
};

struct mapping; /* config_listeners.c */
struct iface;

struct loader {
	struct source *files; /* files[0] is the config itself */
	size_t nfiles;
	struct npd_config_diag *diag;
	struct npd_config *cfg;
	lua_State *L;
	size_t mem;	   /* bytes the Lua state holds */
	size_t handed;	   /* bytes handed to it in all, capped in the fuzz build only */
	int steps;	   /* count hook calls so far */
	bool failed;	   /* diag->error holds a config error */
	int depth;	   /* Includes being run, one within another */
	char section[80];  /* the VirtualHost or Component assignments go to now; "": global */
	struct mapping *map; /* proxy_port_mappings, ascending by port */
	size_t nmap;
	struct iface *ifaces;
	size_t nifaces;
	size_t listeners_cap;	/* cfg->listeners has room for this many */
	/*
	 * The listeners' addresses as a hash set (open addressing; a slot holds
	 * a listener's index + 1, 0 when free), so that finding one listed
	 * twice stays linear in their number: 20,000 ports on "*" are 40,000.
	 */
	size_t *listener_slots;
	size_t nlistener_slots; /* a power of two, or 0 */
};

/* --- messages (config_messages.c) ---------------------------------------- */

/* The characters of a Lua name. */
#define CFG_IDENT_CHARS "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_"

/* Whether c is one of CFG_IDENT_CHARS (never for '\0'). */
bool cfg_is_ident(int c);

/*
 * A user's string s[0..len) for a message, written to buf: quoted, each
 * unprintable byte as '?', shortened with "..." to fit cap (at least 6).
 * Returns buf.
 */
const char *cfg_quote(char *buf, size_t cap, const char *s, size_t len);

/*
 * The value at idx as a message shows it: a number or a string as written
 * (strings through cfg_quote()), a boolean as true or false, anything else
 * by its type name. Returns buf, or a constant.
 */
const char *cfg_show(lua_State *L, int idx, char *buf, size_t cap);

/*
 * Lua reports an assignment at the line where its statement ends: the line
 * at or before end in f where name[0..len) is assigned (name =, ["name"] =,
 * [name] =); end itself when there is none.
 */
int cfg_statement_line(struct source *f, int end, const char *name, size_t len);

/* A place as one integer, for the lines table, and back. */
lua_Integer cfg_where_pack(struct where at);
struct where cfg_where_unpack(lua_Integer v);

/*
 * Where the setting at path was written: path names a global and keys
 * within it (services.c2s.connect, services["a-b"], proxy_port_mappings[1]);
 * the global's statement, narrowed to the line of each nested key found
 * written inside it. Reads the lines table; file 0, line 0 when unknown.
 */
struct where cfg_key_line(struct loader *ld, const char *path);

/*
 * A fatal config error, "FILE:LINE: PATH: text" with the place of path
 * (cfg_key_line()): sets diag->error and raises a Lua error. Only inside
 * lua_pcall().
 */
__attribute__((format(printf, 3, 4))) _Noreturn void cfg_fail(struct loader *ld, const char *path,
							      const char *fmt, ...);

/* cfg_fail() at a place, without a key: the text names what it is about. */
__attribute__((format(printf, 3, 4))) _Noreturn void cfg_fail_at(struct loader *ld, struct where at,
								 const char *fmt, ...);

/* A warning, "FILE:LINE: PATH: text", passed to diag->warn if set. */
__attribute__((format(printf, 3, 4))) void cfg_warn(struct loader *ld, const char *path,
						    const char *fmt, ...);

/* cfg_warn() at a place, without a key. */
__attribute__((format(printf, 3, 4))) void cfg_warn_at(struct loader *ld, struct where at,
						       const char *fmt, ...);

/*
 * The name of list (n names) nearest to name, when near enough to be what
 * was meant; else NULL.
 */
const char *cfg_nearest(const char *name, const char *const *list, size_t n);

/* " (did you mean X?)", written to buf, when a name of list is near; else "". */
const char *cfg_did_you_mean(char *buf, size_t cap, const char *name, const char *const *list,
			     size_t n);

/*
 * diag->error for a Lua status that is not LUA_OK and not a cfg_fail():
 * Lua's own message with the file's whole name, "too much memory", or why
 * the error has no message. The error value is on top of the stack.
 */
void cfg_lua_failure(struct loader *ld, int status);

/* --- values (config_values.c) -------------------------------------------- */

/* The settings; any other global assigned is an error (config_settings.c). */
enum key {
	K_PORT_MAPPINGS,
	K_PORTS,
	/*
	 * Where the proxy ports listen: the first of these four that is set,
	 * as Prosody's portmanager looks for mod_net_proxy's service; the last
	 * two, Prosody's own, are also where its services listen. The singular
	 * spellings are ones Prosody still reads (pre-0.9).
	 */
	K_PROXY_INTERFACES,
	K_PROXY_INTERFACE,
	K_INTERFACES,
	K_INTERFACE,
	K_TRUSTED,
	K_HEADER_TIMEOUT,
	K_MAX_HEADER,
	K_SERVICES,
	K_WORKERS,
	K_MAX_CONNECTIONS,
	K_SHUTDOWN_GRACE,
	K_LOG_LEVEL,
	K_LOG_SYSLOG,
	K_LOG_CONNECTIONS,
	K_USER,
	K_GROUP,
	K_STATS_LISTEN,
	/* Prosody's keys that say where it listens (with <service>_ports and _interfaces). */
	K_LOCAL_INTERFACES,
	K_USE_IPV4,
	K_USE_IPV6,
	K_MODULES_ENABLED, /* only to warn when it still loads mod_net_proxy */
	K_COUNT
};

/* Each setting's name, as written in a config. */
extern const char *const cfg_key_names[K_COUNT];

/* Push a setting's value from the values table; returns its Lua type. */
int cfg_push_setting(struct loader *ld, enum key k);

/*
 * Push the value of the first of keys (n of them) that is set, and return
 * its name; or push nothing and return NULL.
 */
const char *cfg_push_first(struct loader *ld, const char *const *keys, size_t n);

/* A number with an integral value, in *v; strings that look like numbers are not. */
bool cfg_to_integer(lua_State *L, int idx, lua_Integer *v);

/*
 * The value at idx, an integer in [min, max]; else cfg_fail() at path,
 * what saying what is expected, in words.
 */
lua_Integer cfg_get_integer(struct loader *ld, int idx, const char *path, lua_Integer min,
			    lua_Integer max, const char *what);

/* Seconds, fractions allowed, as milliseconds (at least 1); 0 only when zero_ok. */
int cfg_get_seconds(struct loader *ld, int idx, const char *path, bool zero_ok);

/* true or false; anything else is cfg_fail() at path. */
bool cfg_get_boolean(struct loader *ld, int idx, const char *path);

/*
 * One of the n strings of names, as its index; anything else is cfg_fail()
 * at path, naming them all: expected "a", "b" or "c", got ...
 */
size_t cfg_get_choice(struct loader *ld, int idx, const char *path, const char *const *names,
		      size_t n);

/* How many keys the table at idx has (lua_rawlen counts only the sequence). */
size_t cfg_table_size(lua_State *L, int idx);

/*
 * The length of the list at idx: a single value stands for a list of one,
 * as in Prosody; a table must be a proper sequence (else cfg_fail() at path).
 */
size_t cfg_list_len(struct loader *ld, int idx, const char *path);

/* Push item i (from 1) of the list at idx. */
void cfg_push_item(lua_State *L, int idx, size_t i);

/* The path of item i of the list at idx: "path[i]", or path for a single value. */
void cfg_item_path(char *buf, size_t cap, lua_State *L, int idx, const char *path, size_t i);

/* A port from 1 to 65535: an integer, or a string of digits as Prosody takes it (tonumber). */
bool cfg_to_port(lua_State *L, int idx, uint16_t *port);

/*
 * Split "host:port" or "[v6]:port" into host (cap bytes) and *port, and say
 * whether the host was in brackets. Returns NULL, or what is wrong.
 */
const char *cfg_split_host_port(const char *text, char *host, size_t cap, uint16_t *port,
				bool *bracketed);

/* A numeric IPv4 or IPv6 address into *family and addr; false when text is neither. */
bool cfg_parse_ip(const char *text, sa_family_t *family, uint8_t addr[16]);

/*
 * The project's one text form of an address (RFC 5952, no dotted tail),
 * with ":port" ("[v6]:port") unless port is negative.
 */
void cfg_format_addr(char *out, size_t cap, sa_family_t family, const uint8_t *addr, int port);

/* A CIDR block in the same form, "10.0.0.0/8" or "2001:db8::/32". */
#define CFG_CIDRSTRLEN (NP_ADDRSTRLEN + 4) /* NUL included */
void cfg_format_cidr(char *out, size_t cap, const struct np_cidr *c);

/*
 * A service's address: "host:port", "[v6]:port" or "unix:/path" into *t;
 * names are resolved now, first answer. Else cfg_fail() at path.
 */
void cfg_parse_target(struct loader *ld, const char *path, const char *text, struct npd_target *t);

/* The TLV type called name (any case), or -1. */
int cfg_tlv_type(const char *name);

/* The name of TLV type, or NULL when it has none. */
const char *cfg_tlv_name(uint8_t type);

#endif /* NPD_CONFIG_INTERNAL_H */
