/*
 * config_describe.c - a loaded config as netproxyd -t writes it: each
 * listener and where its connections go, with how the service learns the
 * client, then the trusted senders, the header limits and the stats listener.
 */
#include <inttypes.h>
#include <stdio.h>
#include <sys/socket.h>

#include "config_internal.h"
#include "netproxy.h"

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
	char net[CFG_CIDRSTRLEN];

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
		cfg_format_cidr(net, sizeof(net), &cfg->trusted[i]);
		fprintf(out, " %s", net);
	}
	fprintf(out, "\nheader timeout: %g s\nmax header: %zu bytes\n",
		cfg->header_timeout_ms / 1000.0, cfg->max_header);
	if (cfg->stats_listen.addrlen)
		fprintf(out, "stats: %s (/metrics, /connections; read at start only)\n",
			cfg->stats_listen.text);
	if (cfg->prosody)
		fprintf(out, "a Prosody config: %d file%s read, %d of Prosody's own settings "
			     "skipped\n",
			cfg->nfiles, cfg->nfiles == 1 ? "" : "s", cfg->prosody_skipped);
	else if (cfg->nfiles > 1)
		fprintf(out, "%d files read\n", cfg->nfiles);
}
