/*
 * config_sandbox.c - the Lua state a config runs in, and the words it may
 * use.
 *
 * A fresh state offers only functions without side effects (base functions
 * that compute, string, table and math; no io, os, require, load, debug or
 * print), with its memory and its instruction count capped, so a mistaken
 * loop or a huge string ends in a message instead of a daemon that hangs or
 * swells at start or on reload. string.rep is bounded too: the instruction
 * count never sees inside a C function.
 *
 * The chunk's global assignments are the settings: the environment keeps
 * each in a values table, and the file and line it was made at in a lines
 * table, for config_settings.c and its messages. It also speaks Prosody's
 * config language: VirtualHost and Component open a host's section, whose
 * assignments are not global; Include runs other files in the same
 * environment (found as prosody.h says, read whole, counted against the
 * caps); ENV_NAME reads the environment variable NAME; RunScript is skipped.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "config_internal.h"
#include "config_sandbox.h"
#include "config_settings.h"
#include "perms.h"
#include "prosody.h"

/*
 * The count hook runs every million instructions, and a config may run
 * MAX_STEPS million. The fuzz build (fuzz/fuzz_config.c) allows 1 million:
 * a spinning input would otherwise cost it a third of a second each.
 */
#ifndef NPD_CONFIG_MAX_STEPS
#define NPD_CONFIG_MAX_STEPS 100
#endif
#define STEP_INSNS  1000000
#define MAX_STEPS   NPD_CONFIG_MAX_STEPS
#define FILE_MAX    ((size_t)16 << 20)
#define FILES_MAX   256	    /* files one config may read, Include's among them */
#define DEPTH_MAX   16	    /* Includes within Includes */

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
#ifdef NPD_CONFIG_ALLOC_BUDGET
	/*
	 * The fuzz build also caps the bytes handed out in all: a config that
	 * builds ever longer strings allocates without end within the
	 * instruction cap, and the daemon relies on its trial (trial.h) to
	 * stop it, which a fuzzer does not run.
	 */
	if (nsize > old && (ld->handed += nsize - old) > NPD_CONFIG_ALLOC_BUDGET)
		return NULL;
#endif
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
		if (key && cfg_is_setting(key, len) &&
		    strcmp(key, cfg_key_names[K_MODULES_ENABLED]) != 0) {
			at.line = cfg_statement_line(&ld->files[at.file], at.line, key, len);
			cfg_warn_at(ld, at,
				    "%s belongs to %s here, and Prosody reads it only in the "
				    "global section (before the first VirtualHost or Component): "
				    "ignored",
				    key, ld->section);
		}
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
char *cfg_read_file(const char *path, bool regular_only, size_t *out_len, char *err,
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
struct source *cfg_add_source(struct loader *ld)
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
	f = cfg_add_source(ld);
	if (!f || !(f->name = strdup(path)))
		luaL_error(L, "out of memory");
	f->owned = cfg_read_file(path, true, &f->len, err, sizeof(err));
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

/* __close of the box that holds Include's paths. */
static int free_paths(lua_State *L)
{
	char **paths = lua_touserdata(L, 1);

	free(*paths);
	*paths = NULL;
	return 0;
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
	char err[400], **paths, *p;
	size_t count;

	/*
	 * The paths are held by a box closed when this call ends, whichever way:
	 * an error in an included file unwinds past here, and a config that
	 * calls Include in a loop must not pile them up outside the memory cap.
	 */
	paths = lua_newuserdatauv(L, sizeof(*paths), 0);
	*paths = NULL;
	if (luaL_newmetatable(L, "netproxyd.include")) {
		lua_pushcfunction(L, free_paths);
		lua_setfield(L, -2, "__close");
	}
	lua_setmetatable(L, -2);
	lua_toclose(L, -1);
	*paths = npd_prosody_include_paths(ld->files[at.file].name, file, &count, err,
					   sizeof(err));
	if (!*paths)
		return luaL_error(L, "Include \"%s\": %s", file, err);
	for (p = *paths; count > 0; count--, p += strlen(p) + 1)
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

lua_State *cfg_sandbox_new(struct loader *ld)
{
	return ld->L = lua_newstate(capped_alloc, ld);
}

int cfg_sandbox_run(struct loader *ld)
{
	lua_State *L = ld->L;
	int status;

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
	return status;
}
