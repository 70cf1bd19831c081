/*
 * loader_check.h - what the tests of the config loader's parts share
 * (daemon/config_internal.h): a loader over one source text named "t.lua",
 * the values a config assigned and where, and a step run as the settings'
 * checks run, in a protected call, so that cfg_fail() can unwind from it.
 *
 * Header-only, like tap.h: each test is one program from one .c file.
 */
#ifndef NPD_LOADER_CHECK_H
#define NPD_LOADER_CHECK_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "config_internal.h"
#include "tap.h"
#include "warnings_check.h"

static struct loader ld;
static struct source ld_file;
static struct npd_config ld_cfg;
static struct npd_config_diag ld_diag;
static char ld_name[] = "t.lua";

/*
 * A loader over src, the text of t.lua, whose settings are those of the
 * table the Lua expression values evaluates to ("{ workers = 4 }"). Where
 * each was assigned is set with loader_line(). The base of the stack holds
 * 1 the values table and 2 the lines table.
 */
static inline void loader_open(const char *src, const char *values)
{
	char chunk[4096];

	memset(&ld, 0, sizeof(ld));
	memset(&ld_file, 0, sizeof(ld_file));
	memset(&ld_cfg, 0, sizeof(ld_cfg));
	memset(&ld_diag, 0, sizeof(ld_diag));
	forget_warnings();
	ld_file.name = ld_name;
	ld_file.src = src;
	ld_file.len = strlen(src);
	ld.files = &ld_file;
	ld.nfiles = 1;
	ld.cfg = &ld_cfg;
	ld_diag.warn = collect_warning;
	ld.diag = &ld_diag;
	ld.L = luaL_newstate();
	luaL_openlibs(ld.L);
	snprintf(chunk, sizeof(chunk), "return %s", values);
	if (luaL_dostring(ld.L, chunk) != LUA_OK || !lua_istable(ld.L, -1)) {
		diag("bad values %s: %s", values, lua_tostring(ld.L, -1));
		lua_settop(ld.L, 0);
		lua_newtable(ld.L);
	}
	lua_newtable(ld.L);
}

/* The global name was assigned at line of t.lua, as the sandbox records it. */
static inline void loader_line(const char *name, int line)
{
	lua_pushinteger(ld.L, cfg_where_pack((struct where){0, line}));
	lua_setfield(ld.L, 2, name);
}

static inline void loader_close(void)
{
	lua_close(ld.L);
	free(ld_file.lines);
	ld.L = NULL;
}

static void (*ld_step)(void);

static inline int ld_run(lua_State *L)
{
	(void)L;
	ld_step();
	return 0;
}

/*
 * Run step with the stack as the settings' checks see it (1 the loader, 2
 * the values, 3 the lines). Returns the Lua status: LUA_ERRRUN after a
 * cfg_fail(), with its message in ld_diag.error.
 */
static inline int loader_run(void (*step)(void))
{
	int status;

	ld_step = step;
	ld.failed = false;
	ld_diag.error[0] = '\0';
	lua_pushcfunction(ld.L, ld_run);
	lua_pushlightuserdata(ld.L, &ld);
	lua_pushvalue(ld.L, 1);
	lua_pushvalue(ld.L, 2);
	status = lua_pcall(ld.L, 3, 0, 0);
	if (status != LUA_OK)
		lua_pop(ld.L, 1);
	return status;
}

#endif /* NPD_LOADER_CHECK_H */
