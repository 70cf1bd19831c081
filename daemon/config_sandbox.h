/*
 * config_sandbox.h - the Lua state a config runs in (config_sandbox.c),
 * for config.c, which loads a config. Order and dependencies:
 * config_internal.h.
 */
#ifndef NPD_CONFIG_SANDBOX_H
#define NPD_CONFIG_SANDBOX_H

#include <stdbool.h>
#include <stddef.h>

#include <lua.h>

#include "config_internal.h"

/*
 * A new Lua state for ld, in ld->L, whose memory counts against
 * CFG_MEM_LIMIT; NULL when even that fails. The caller closes it.
 */
lua_State *cfg_sandbox_new(struct loader *ld);

/*
 * Run ld->files[0] in the sandbox, in a protected call, with the
 * instruction count capped. Returns a Lua status: with LUA_OK the stack
 * holds the environment, the values table and the lines table; otherwise
 * the error value is on top, unless ld->failed (diag->error is set).
 */
int cfg_sandbox_run(struct loader *ld);

/*
 * A file the config reads, whole: its text (malloc'd, *out_len bytes), or
 * NULL with why, naming the file, in err. regular_only refuses anything
 * but a regular file (a FIFO or a terminal would hold the load), as for
 * an included file. Either way the file must be one only root and this
 * user can write (perms.h).
 */
char *cfg_read_file(const char *path, bool regular_only, size_t *out_len, char *err, size_t errcap);

/* Room for one more file in ld->files, zeroed; NULL when out of memory. */
struct source *cfg_add_source(struct loader *ld);

#endif /* NPD_CONFIG_SANDBOX_H */
