/*
 * config_messages.c - where a config's values were written, and the
 * messages about them.
 *
 * Fatal messages read "FILE:LINE: KEY: what is wrong", warnings the same;
 * the line is found from the text itself (Lua reports an assignment where
 * its statement ends), narrowed to the line of a nested key when it is
 * written there. Lua's own syntax and runtime errors keep Lua's wording,
 * with the file's whole name put back. Names near a misspelt one are
 * offered as "did you mean".
 */
#include <ctype.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#include "config_internal.h"

bool cfg_is_ident(int c)
{
	return c != '\0' && strchr(CFG_IDENT_CHARS, c);
}

/* Write a user's string for a message: quoted, printable, shortened. */
const char *cfg_quote(char *buf, size_t cap, const char *s, size_t len)
{
	size_t i, w = 0;

	buf[w++] = '"';
	for (i = 0; i < len && w + 5 < cap; i++) /* 5: room for ...", NUL */
		buf[w++] = isprint((unsigned char)s[i]) ? s[i] : '?';
	if (i < len) {
		memcpy(buf + w, "...", 3);
		w += 3;
	}
	buf[w++] = '"';
	buf[w] = '\0';
	return buf;
}

/* A value as a message shows it: numbers and strings as written, anything else by its type. */
const char *cfg_show(lua_State *L, int idx, char *buf, size_t cap)
{
	size_t len;
	const char *s;

	switch (lua_type(L, idx)) {
	case LUA_TNUMBER:
		if (lua_isinteger(L, idx))
			snprintf(buf, cap, "%lld", (long long)lua_tointeger(L, idx));
		else
			snprintf(buf, cap, "%.14g", lua_tonumber(L, idx));
		return buf;
	case LUA_TSTRING:
		s = lua_tolstring(L, idx, &len);
		return cfg_quote(buf, cap, s, len);
	case LUA_TBOOLEAN:
		return lua_toboolean(L, idx) ? "true" : "false";
	default:
		return luaL_typename(L, idx);
	}
}

/*
 * The length of the line break at src[i], 0 if none: "\n", "\r", "\r\n"
 * and "\n\r" are each one, as Lua's lexer counts them, so that a line
 * number in Lua's messages names the same line here.
 */
static size_t line_break(const char *src, size_t i, size_t len)
{
	if (src[i] != '\n' && src[i] != '\r')
		return 0;
	return i + 1 < len && (src[i + 1] == '\n' || src[i + 1] == '\r') && src[i + 1] != src[i]
		       ? 2
		       : 1;
}

/* Line starts are indexed once, on the first message that needs a line. */
static bool index_lines(struct source *f)
{
	size_t n = 1, step;

	if (f->lines)
		return true;
	for (size_t i = 0; i < f->len; i += step ? step : 1)
		n += (step = line_break(f->src, i, f->len)) != 0;
	f->lines = malloc(n * sizeof(*f->lines));
	if (!f->lines)
		return false;
	f->lines[0] = 0;
	f->nlines = 1;
	for (size_t i = 0; i < f->len; i += step ? step : 1)
		if ((step = line_break(f->src, i, f->len)) != 0)
			f->lines[f->nlines++] = i + step;
	return true;
}

/* Whether line n assigns key, as a global or a table key: key =, ["key"] =, [key] =. */
static bool line_assigns(const struct source *f, int n, const char *key, size_t klen)
{
	const char *s = f->src + f->lines[n - 1];
	size_t len = ((size_t)n < f->nlines ? f->lines[n] : f->len) - f->lines[n - 1];

	for (size_t i = 0; i + klen <= len; i++) {
		size_t j = i + klen;

		if (memcmp(s + i, key, klen) != 0 || (i > 0 && cfg_is_ident(s[i - 1])) ||
		    (j < len && cfg_is_ident(s[j])))
			continue;
		while (j < len && strchr("\"']\t ", s[j]))
			j++;
		if (j < len && s[j] == '=' && (j + 1 == len || s[j + 1] != '='))
			return true;
	}
	return false;
}

/*
 * Lua reports an assignment at the line where its statement ends, the
 * closing brace of a table: walk back to where "name =" is written.
 */
int cfg_statement_line(struct source *f, int end, const char *name, size_t len)
{
	if (end <= 0 || !index_lines(f) || (size_t)end > f->nlines)
		return end;
	for (int n = end; n >= 1; n--)
		if (line_assigns(f, n, name, len))
			return n;
	return end;
}

/* The sandbox's record_global() keeps a global's file and line in one integer. */
lua_Integer cfg_where_pack(struct where at)
{
	return ((lua_Integer)at.file << 32) | (lua_Integer)(uint32_t)at.line;
}

struct where cfg_where_unpack(lua_Integer v)
{
	return (struct where){(int)(v >> 32), (int)(uint32_t)v};
}

/*
 * Where the global name was last assigned, by the lines table (index 3
 * while the settings are read); file 0, line 0 when unknown.
 */
static struct where assigned_at(struct loader *ld, const char *name, size_t len)
{
	struct where at = {0, 0};
	char key[128];

	if (len >= sizeof(key))
		return at;
	memcpy(key, name, len);
	key[len] = '\0';
	if (lua_getfield(ld->L, 3, key) == LUA_TNUMBER)
		at = cfg_where_unpack(lua_tointeger(ld->L, -1));
	lua_pop(ld->L, 1);
	if (at.file < 0 || (size_t)at.file >= ld->nfiles)
		at = (struct where){0, 0};
	return at;
}

/*
 * The line of a key path such as services.c2s.connect, services["a-b"] or
 * proxy_port_mappings[15222]: the top-level assignment, narrowed to each
 * nested key found written inside that statement. Values built by code leave
 * no such trace; the statement's line is the best then. Line 0: unknown.
 */
struct where cfg_key_line(struct loader *ld, const char *path)
{
	size_t n = strcspn(path, ".[");
	struct where at = assigned_at(ld, path, n);
	struct source *f = &ld->files[at.file];
	const char *p = path + n;
	int end = at.line;

	if (end <= 0)
		return at;
	at.line = cfg_statement_line(f, end, path, n);
	if (!f->lines || (size_t)end > f->nlines)
		return at;
	while (*p) {
		const char *c;
		size_t clen;
		int found = 0;

		if (*p == '.') {
			c = ++p;
			while (cfg_is_ident(*p))
				p++;
			clen = (size_t)(p - c);
		} else if (*p == '[') {
			c = ++p;
			if (*c == '"')
				c++;
			p = strchr(c, ']');
			if (!p)
				break;
			clen = (size_t)(p - c) - (p[-1] == '"');
			p++;
		} else {
			break;
		}
		for (int l = at.line; l <= end && !found; l++)
			if (clen && line_assigns(f, l, c, clen))
				found = l;
		if (!found)
			break;
		at.line = found;
	}
	return at;
}

/* "FILE:LINE: PATH: text", without the parts that are unknown or not wanted. */
__attribute__((format(printf, 6, 0))) static void vformat(struct loader *ld, char *buf, size_t cap,
							  struct where at, const char *path,
							  const char *fmt, va_list ap)
{
	const char *name = ld->files[at.file].name;
	int n;

	if (at.line > 0)
		n = snprintf(buf, cap, "%s:%d: ", name, at.line);
	else
		n = snprintf(buf, cap, "%s: ", name);
	if (path && n >= 0 && (size_t)n < cap)
		n += snprintf(buf + n, cap - (size_t)n, "%s: ", path);
	if (n >= 0 && (size_t)n < cap)
		vsnprintf(buf + n, cap - (size_t)n, fmt, ap);
}

/*
 * A fatal config error: the message goes to diag->error, then a Lua error
 * unwinds to config.c's load(). Only called inside lua_pcall().
 */
__attribute__((format(printf, 3, 4))) _Noreturn void
cfg_fail(struct loader *ld, const char *path, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vformat(ld, ld->diag->error, sizeof(ld->diag->error), cfg_key_line(ld, path), path, fmt,
		ap);
	va_end(ap);
	ld->failed = true;
	lua_error(ld->L); /* longjmps: whatever value is on top does not matter */
	abort();	  /* not reached; tells the compiler so */
}

/* cfg_fail() at a place, without a key: the caller's text names what it is about. */
__attribute__((format(printf, 3, 4))) _Noreturn void cfg_fail_at(struct loader *ld, struct where at,
								   const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vformat(ld, ld->diag->error, sizeof(ld->diag->error), at, NULL, fmt, ap);
	va_end(ap);
	ld->failed = true;
	lua_error(ld->L);
	abort();
}

/* A warning at a place, without a key: the caller's text names what it is about. */
__attribute__((format(printf, 3, 4))) void cfg_warn_at(struct loader *ld, struct where at,
						       const char *fmt, ...)
{
	char text[512];
	va_list ap;

	if (!ld->diag->warn)
		return;
	va_start(ap, fmt);
	vformat(ld, text, sizeof(text), at, NULL, fmt, ap);
	va_end(ap);
	ld->diag->warn(ld->diag->ctx, text);
}

__attribute__((format(printf, 3, 4))) void cfg_warn(struct loader *ld, const char *path,
						    const char *fmt, ...)
{
	char text[512];
	va_list ap;

	if (!ld->diag->warn)
		return;
	va_start(ap, fmt);
	vformat(ld, text, sizeof(text), cfg_key_line(ld, path), path, fmt, ap);
	va_end(ap);
	ld->diag->warn(ld->diag->ctx, text);
}

/*
 * The restricted edit distance (insertions, deletions, substitutions and
 * swaps of two neighbours) between a and b, both shorter than 64 bytes.
 */
static size_t edit_distance(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b), d[64][64];

	if (la >= 64 || lb >= 64)
		return SIZE_MAX;
	for (size_t i = 0; i <= la; i++)
		d[i][0] = i;
	for (size_t j = 0; j <= lb; j++)
		d[0][j] = j;
	for (size_t i = 1; i <= la; i++) {
		for (size_t j = 1; j <= lb; j++) {
			size_t best = d[i - 1][j - 1] + (a[i - 1] != b[j - 1]);

			if (d[i - 1][j] + 1 < best)
				best = d[i - 1][j] + 1;
			if (d[i][j - 1] + 1 < best)
				best = d[i][j - 1] + 1;
			if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] &&
			    d[i - 2][j - 2] + 1 < best)
				best = d[i - 2][j - 2] + 1;
			d[i][j] = best;
		}
	}
	return d[la][lb];
}

/*
 * The name of list nearest to name, when it is near enough to be what was
 * meant (a third of its letters wrong at most, or one letter in a short
 * name); else NULL. The first of equally near names wins.
 */
const char *cfg_nearest(const char *name, const char *const *list, size_t n)
{
	const char *best = NULL;
	size_t best_d = SIZE_MAX, len = strlen(name);
	size_t limit = len / 3 > 1 ? len / 3 : 1;

	for (size_t i = 0; i < n; i++) {
		size_t d = edit_distance(name, list[i]);

		if (d < best_d) {
			best = list[i];
			best_d = d;
		}
	}
	return best_d <= limit ? best : NULL;
}

/* " (did you mean X?)" when a known name is near, else "". */
const char *cfg_did_you_mean(char *buf, size_t cap, const char *name, const char *const *list,
			     size_t n)
{
	const char *near = cfg_nearest(name, list, n);

	if (!near)
		return "";
	snprintf(buf, cap, " (did you mean %s?)", near);
	return buf;
}

/* Lua's message for a failed step; a message without a position gets the file's name. */
void cfg_lua_failure(struct loader *ld, int status)
{
	char *err = ld->diag->error;
	size_t cap = sizeof(ld->diag->error);
	const char *msg, *p, *name = ld->files[0].name;

	if (status == LUA_ERRMEM) {
		snprintf(err, cap, "%s: config uses too much memory (over %zu MiB)", name,
			 CFG_MEM_LIMIT >> 20);
		return;
	}
	if (lua_type(ld->L, -1) != LUA_TSTRING) {
		snprintf(err, cap, "%s: config raised an error that is a %s, not a message", name,
			 luaL_typename(ld->L, -1));
		return;
	}
	msg = lua_tostring(ld->L, -1);
	/* "\1N:LINE: ...": a file's chunk (config_sandbox.c); give it its whole name back. */
	if (msg[0] == '\x01' && isdigit((unsigned char)msg[1])) {
		char *end;
		unsigned long n = strtoul(msg + 1, &end, 10);

		if (*end == ':' && n < ld->nfiles) {
			snprintf(err, cap, "%s%s", ld->files[n].name, end);
			return;
		}
	}
	for (p = strchr(msg, ':'); p; p = strchr(p + 1, ':'))
		if (isdigit((unsigned char)p[1]) && p[1 + strspn(p + 1, "0123456789")] == ':')
			break;
	if (p && !memchr(msg, '\n', (size_t)(p - msg)))
		snprintf(err, cap, "%s", msg);
	else
		snprintf(err, cap, "%s: %s", name, msg);
}
