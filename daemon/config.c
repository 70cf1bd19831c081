/*
 * config.c - netproxyd's configuration: a Lua 5.4 chunk evaluated in a
 * sandbox, then every setting checked and resolved into config.h's structs.
 * This file is the interface and the loader's life: it reads the file, runs
 * the sandbox and then the settings' checks, turns Lua's failures into
 * messages, and frees what the loader held, whatever happened.
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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lua.h>

#include "config.h"
#include "config_internal.h"
#include "config_sandbox.h"
#include "config_settings.h"

/* c2s and s2s are Prosody's services, found at Prosody's default addresses. */
const char npd_config_default_lua[] =
	"-- netproxyd's built-in configuration: mod_net_proxy's README example.\n"
	"proxy_port_mappings = {\n"
	"\t[15222] = \"c2s\",\n"
	"\t[15269] = \"s2s\",\n"
	"}\n";

/*
 * Run the config in the sandbox, then read its settings into ld->cfg.
 * Returns 0, or -1 with diag->error set.
 */
static int load(struct loader *ld)
{
	int status;
	lua_State *L;

	L = cfg_sandbox_new(ld);
	if (!L) {
		snprintf(ld->diag->error, sizeof(ld->diag->error), "%s: out of memory",
			 ld->files[0].name);
		return -1;
	}
	status = cfg_sandbox_run(ld);
	if (status == LUA_OK)
		status = cfg_settings_read(ld);
	if (status != LUA_OK && !ld->failed)
		cfg_lua_failure(ld, status);
	lua_close(L);
	return status == LUA_OK ? 0 : -1;
}

/*
 * Load len bytes of src, called name in messages. owned (src when the
 * caller read it, else NULL) is freed here whatever happens, as is all the
 * loader held.
 */
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
	if (ld.cfg && cfg_add_source(&ld) && (ld.files[0].name = strdup(name))) {
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
	free(ld.map);
	free(ld.ifaces);
	free(ld.listener_slots);
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
	buf = cfg_read_file(path, false, &len, diag->error, sizeof(diag->error));
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

