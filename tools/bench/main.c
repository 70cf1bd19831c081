/*
 * netproxy-bench - a load generator for PROXY protocol receivers, and the
 * small backend it talks to.
 *
 *   netproxy-bench [options] HOST PORT             the load generator
 *   netproxy-bench serve [options] -l ADDR:PORT    the backend
 *
 * The load generator opens connections to HOST PORT (a receiver such as
 * netproxyd, HAProxy or nginx, or the backend itself), starts each with a
 * PROXY header built by libnetproxy (or none), then sends requests in the
 * protocol below and measures what comes back: rate, latency percentiles,
 * throughput, errors by kind. Each thread runs one epoll loop over
 * non-blocking sockets, registered once, edge-triggered, for both
 * directions; a connection lives and dies in one thread. Every run is
 * bounded in count (-n) and in time (-d) and says which bound stopped it.
 *
 * The protocol is in wire.h. The load generator is client.c (the engine),
 * client_cli.c (its command line and the run), report.c (what it prints);
 * the backend is serve.c. This file holds main() and what both read from
 * the command line.
 *
 * Exit status: 0 a run without errors, 1 errors (the report says which) or
 * a failure to start, 64 usage error.
 */
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "bench.h"
#include "client.h"
#include "serve.h"

const char tool_name[] = PROG;

volatile sig_atomic_t got_signal;

static void on_signal(int sig)
{
	got_signal = sig;
}

void catch_signals(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
}

int parse_number(const char *s, bool binary, uint64_t min, uint64_t max, uint64_t *out)
{
	uint64_t v = 0, unit = 1;
	const char *p = s;

	if (*p < '0' || *p > '9')
		return -1;
	for (; *p >= '0' && *p <= '9'; p++) {
		if (v > (UINT64_MAX - 9) / 10)
			return -1;
		v = v * 10 + (uint64_t)(*p - '0');
	}
	if (*p) {
		switch (*p) {
		case 'k': case 'K': unit = binary ? 1ULL << 10 : 1000ULL; break;
		case 'm': case 'M': unit = binary ? 1ULL << 20 : 1000000ULL; break;
		case 'g': case 'G': unit = binary ? 1ULL << 30 : 1000000000ULL; break;
		default: return -1;
		}
		if (p[1] != '\0')
			return -1;
	}
	if (v > UINT64_MAX / unit)
		return -1;
	v *= unit;
	if (v < min || v > max)
		return -1;
	*out = v;
	return 0;
}

int parse_seconds(const char *s, int64_t *ns)
{
	int64_t whole = 0, fraction = 0, unit = NS_PER_S;
	const char *p = s;

	if (*p < '0' || *p > '9')
		return -1;
	for (; *p >= '0' && *p <= '9'; p++)
		if ((whole = whole * 10 + (*p - '0')) > MAX_SECONDS)
			return -1;
	if (*p == '.')
		for (p++; *p >= '0' && *p <= '9'; p++)
			if (unit > 1) {
				unit /= 10;
				fraction += (*p - '0') * unit;
			}
	if (*p != '\0' || whole * NS_PER_S + fraction == 0)
		return -1;
	*ns = whole * NS_PER_S + fraction;
	return 0;
}

int main(int argc, char **argv)
{
	if (argc > 1 && strcmp(argv[1], "serve") == 0)
		return serve_cmd(argc - 1, argv + 1);
	return client_main(argc, argv);
}
