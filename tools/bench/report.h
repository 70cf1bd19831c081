/*
 * report.h - the load generator's results, summed over its threads, as
 * text for people or one JSON object for bench/compare.py.
 */
#ifndef NETPROXY_BENCH_REPORT_H
#define NETPROXY_BENCH_REPORT_H

#include <stdbool.h>
#include <stdint.h>

#include "client.h"

struct totals {
	uint64_t completed, in_flight_at_stop, bytes_sent, bytes_received, stream_bytes;
	uint64_t errors[ERR_COUNT], error_sum;
	unsigned established, target;
	int first_other;
	int64_t t0, t_end, establish_ns;
	bool hit_deadline;
	struct histogram hist;
	double user_s, system_s;
};

/* Sum the n workers' counts into *t, with this process's CPU time. */
void add_up(struct worker *ws, unsigned n, struct totals *t);

/* Why the run ended, one word: signal, errors, count, time, no-connections. */
const char *stop_reason(const struct totals *t, bool measured);

/* The report, over elapsed seconds of measurement, on standard output. */
void report_text(const struct totals *t, const char *reason, double elapsed);
void report_json(const struct totals *t, const char *reason, double elapsed);

#endif
