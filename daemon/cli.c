/*
 * cli.c - netproxyd's command line: the help, and -l/-b/--send-proxy/--trusted
 * turned into a config (and its messages back into the flags' terms).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

void npd_cli_usage(FILE *out)
{
	fputs("usage: " NPD_PROG " [-c FILE] [-t] [-d] [--syslog]\n"
	      "       " NPD_PROG " -l [ADDR:]PORT -b BACKEND [--send-proxy v1|v2] [--trusted CIDR]...\n"
	      "       " NPD_PROG " -h | -v | -V\n"
	      "\n"
	      "Receive PROXY protocol connections on the PROXY ports, check the sender is\n"
	      "trusted, read the header and relay each connection to the service its port\n"
	      "is mapped to. Runs in the foreground and logs to standard error.\n"
	      "\n"
	      "options:\n"
	      "  -c, --config FILE     the Lua config (netproxyd.conf(5)), or Prosody's own\n"
	      "                        prosody.cfg.lua; without it and without -l:\n"
	      "                        15222 -> 127.0.0.1:5222, 15269 -> 127.0.0.1:5269\n"
	      "  -t, --test            check the config (or -l/-b), print what it listens on,\n"
	      "                        exit 0 or 1\n"
	      "  -d, --debug           log more (debug)\n"
	      "      --syslog          log to syslog instead of standard error\n"
	      "  -l, --listen [ADDR:]PORT   one PROXY port, without a config file\n"
	      "  -b, --backend HOST:PORT|[V6]:PORT|unix:PATH   where -l's connections go\n"
	      "      --send-proxy v1|v2    pass the client on in a PROXY header (default: none)\n"
	      "      --trusted CIDR    a trusted sender for -l (repeatable; default 127.0.0.1\n"
	      "                        and ::1)\n"
	      "      --setup-routing   install the policy routing transparent services need\n"
	      "                        (ip rule/route, table 7001), then exit\n"
	      "  -h, --help            this help\n"
	      "  -v, --version         the version\n"
	      "  -V                    the version and how it was built\n"
	      "\n"
	      "signals: SIGHUP reloads the config; SIGTERM and SIGINT stop accepting and\n"
	      "let relayed connections finish for up to shutdown_grace (a second one closes\n"
	      "them at once); SIGUSR1 and SIGUSR2 are logged and otherwise ignored.\n",
	      out);
}

/* A Lua string literal for s: every byte that is not plain becomes \ddd. */
static void lua_quote(FILE *out, const char *s)
{
	fputc('"', out);
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		    strchr(".:[]/_-", c))
			fputc(c, out);
		else
			fprintf(out, "\\%03u", c);
	}
	fputc('"', out);
}

char *npd_cli_config(const char *listen, const char *backend, const char *send_proxy,
		     char **trusted, int ntrusted)
{
	const char *colon = strrchr(listen, ':');
	const char *port_text = colon ? colon + 1 : listen;
	char *end, *text = NULL;
	long port = strtol(port_text, &end, 10);
	size_t len = 0;
	FILE *out;

	if (*port_text == '\0' || *end != '\0' || port < 1 || port > 65535) {
		fprintf(stderr, NPD_PROG ": -l %s: expected [ADDR:]PORT with a port from 1 to 65535\n",
			listen);
		return NULL;
	}
	if (send_proxy && strcmp(send_proxy, "v1") != 0 && strcmp(send_proxy, "v2") != 0) {
		fprintf(stderr, NPD_PROG ": --send-proxy %s: expected v1 or v2\n", send_proxy);
		return NULL;
	}
	out = open_memstream(&text, &len);
	if (!out) {
		fprintf(stderr, NPD_PROG ": %s\n", strerror(errno));
		return NULL;
	}
	fputs("proxy_ports = { ", out);
	if (colon)
		lua_quote(out, listen);
	else
		fprintf(out, "%ld", port);
	fprintf(out, " }\nproxy_port_mappings = { [%ld] = \"backend\" }\n"
		     "services = { backend = { connect = ", port);
	lua_quote(out, backend);
	if (send_proxy)
		fprintf(out, ", send_proxy = \"%s\"", send_proxy);
	fputs(" } }\n", out);
	if (ntrusted > 0) {
		fputs("proxy_trusted_proxies = {", out);
		for (int i = 0; i < ntrusted; i++) {
			fputc(' ', out);
			lua_quote(out, trusted[i]);
			fputc(',', out);
		}
		fputs(" }\n", out);
	}
	if (fclose(out) != 0) {
		free(text);
		fprintf(stderr, NPD_PROG ": %s\n", strerror(errno));
		return NULL;
	}
	return text;
}

const char *npd_cli_message(char *out, size_t cap, const char *msg)
{
	static const struct {
		const char *key, *flag;
	} flags[] = {
		{"proxy_ports[1]: ", "-l"},
		{"services.backend.connect: ", "-b"},
		{"services.backend.send_proxy: ", "--send-proxy"},
		{"proxy_trusted_proxies[", "--trusted"},
	};
	const char *p = strstr(msg, ": ");

	for (size_t i = 0; p && i < sizeof(flags) / sizeof(flags[0]); i++) {
		size_t klen = strlen(flags[i].key);

		if (strncmp(p + 2, flags[i].key, klen) != 0)
			continue;
		const char *rest = p + 2 + klen;
		if (flags[i].key[klen - 1] == '[' && strstr(rest, "]: ")) /* "proxy_trusted_proxies[2]: " */
			rest = strstr(rest, "]: ") + 3;
		snprintf(out, cap, "%s: %s", flags[i].flag, rest);
		return out;
	}
	return msg;
}
