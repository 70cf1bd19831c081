/*
 * bench.h - what both halves of netproxy-bench, the load generator and the
 * backend (serve), share beyond the wire: the program's name, its exit
 * codes and limits, the signal that ends a run, and the command line's
 * number parsers (main.c).
 */
#ifndef NETPROXY_BENCH_H
#define NETPROXY_BENCH_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

#include "common.h"

#define PROG "netproxy-bench"

enum {
	EXIT_OK = 0,
	EXIT_FAIL = 1,
	EXIT_USAGE = TOOL_EXIT_USAGE,
};

#define MAX_SECONDS 1000000 /* -d, -w: about 11 days */
#define MAX_THREADS 256
#define MAX_CONNS 1000000u
#define MAX_MESSAGE (64u << 20) /* request and response sizes */
#define IO_BUF (256u * 1024u)	/* one recv() or send() at most */
#define SCAN_NS (100 * 1000000LL) /* how often timeouts are looked for */
#define WAKE_NS (50 * 1000000LL)  /* the longest epoll wait: signals are seen this soon */

/* The signal that ended the run (SIGINT or SIGTERM), or 0. */
extern volatile sig_atomic_t got_signal;

/*
 * SIGINT and SIGTERM end the run (or the backend) with its report; writes to
 * a closed connection fail with EPIPE instead of killing the process.
 */
void catch_signals(void);

/*
 * A whole number, optionally followed by k, M or G (either case): thousands,
 * millions, billions, or with binary set KiB, MiB, GiB. 0 when it is one and
 * lies in [min, max].
 */
int parse_number(const char *s, bool binary, uint64_t min, uint64_t max, uint64_t *out);

/*
 * Seconds as a decimal number ("2", "0.25"), read exactly into nanoseconds
 * (digits past the ninth decimal are ignored): above 0, at most MAX_SECONDS.
 */
int parse_seconds(const char *s, int64_t *ns);

#endif
