/*
 * config_internal.h - what the parts of netproxyd's config loader share:
 * the loader's state, and the part at the bottom that every other part may
 * use. The rest of the daemon knows only config.h.
 *
 * Each part depends only on the parts below it in this list, and on the
 * bottom one:
 *
 *   config.c            the interface (load, free) and the loader's life
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
	int steps;	   /* count hook calls so far */
	bool failed;	   /* diag->error holds a config error */
	int depth;	   /* Includes being run, one within another */
	char section[80];  /* the VirtualHost or Component assignments go to now; "": global */
	char **owned;	     /* what Include allocated, freed with the loader */
	size_t nowned;
	struct mapping *map; /* proxy_port_mappings, ascending by port */
	size_t nmap;
	struct iface *ifaces;
	size_t nifaces;
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

#endif /* NPD_CONFIG_INTERNAL_H */
