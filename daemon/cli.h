/*
 * cli.h - netproxyd's command line: its help, and the config -l/-b stand for.
 */
#ifndef NPD_CLI_H
#define NPD_CLI_H

#include <stddef.h>
#include <stdio.h>

#define NPD_PROG "netproxyd"

/* The --help text. */
void npd_cli_usage(FILE *out);

/*
 * The config for -l/-b, written as Lua so that it goes through the same
 * checks as a file; its size is the command line's. Returns the text (free
 * it), or NULL with a message printed.
 */
char *npd_cli_config(const char *listen, const char *backend, const char *send_proxy,
		     char **trusted, int ntrusted);

/*
 * A message about the config that -l/-b wrote, in the command line's terms:
 * "command line:3: services.backend.connect: ..." becomes "-b: ...".
 * Returns msg itself when no flag is named, else out.
 */
const char *npd_cli_message(char *out, size_t cap, const char *msg);

#endif /* NPD_CLI_H */
