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
#include "config_sandbox.h"
#include "config_settings.h"
#include "netproxy.h"
#include "perms.h"
#include "prosody.h"

/* c2s and s2s are Prosody's services, found at Prosody's default addresses. */
const char npd_config_default_lua[] =
	"-- netproxyd's built-in configuration: mod_net_proxy's README example.\n"
	"proxy_port_mappings = {\n"
	"\t[15222] = \"c2s\",\n"
	"\t[15269] = \"s2s\",\n"
	"}\n";

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
