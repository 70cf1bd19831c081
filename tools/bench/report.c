/*
 * report.c - what the load generator prints at the end (report.h).
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>

#include "bench.h"
#include "report.h"

void add_up(struct worker *ws, unsigned n, struct totals *t)
{
	struct rusage ru;

	memset(t, 0, sizeof(*t));
	for (unsigned i = 0; i < n; i++) {
		struct worker *w = &ws[i];
		t->completed += w->completed;
		t->in_flight_at_stop += w->in_flight_at_stop;
		t->bytes_sent += w->bytes_sent;
		t->bytes_received += w->bytes_received;
		t->stream_bytes += w->stream_bytes;
		for (int k = 0; k < ERR_COUNT; k++) {
			t->errors[k] += w->errors[k];
			t->error_sum += w->errors[k];
		}
		if (!t->first_other)
			t->first_other = w->first_other;
		t->established += w->established;
		t->target += w->target;
		if (i == 0 || w->t0 < t->t0)
			t->t0 = w->t0;
		if (w->t_end > t->t_end)
			t->t_end = w->t_end;
		if (w->establish_ns > t->establish_ns)
			t->establish_ns = w->establish_ns;
		t->hit_deadline |= w->hit_deadline;
		hist_merge(&t->hist, &w->hist);
	}
	if (getrusage(RUSAGE_SELF, &ru) == 0) {
		t->user_s = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6;
		t->system_s = (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
	}
}

const char *stop_reason(const struct totals *t, bool measured)
{
	if (got_signal)
		return "signal";
	if (t->error_sum >= opt.max_errors)
		return "errors";
	if (!measured)
		return t->established == 0 ? "no-connections" : "time";
	if (atomic_load(&budget_spent))
		return "count";
	if (t->hit_deadline)
		return "time";
	return opt.mode == MODE_CONN ? "count" : "no-connections";
}

static const char *reason_text(const char *reason)
{
	if (strcmp(reason, "signal") == 0)
		return "a signal";
	if (strcmp(reason, "errors") == 0)
		return "the error limit (--max-errors)";
	if (strcmp(reason, "count") == 0)
		return "the count (-n)";
	if (strcmp(reason, "time") == 0)
		return "the time limit (-d)";
	return "every connection was lost";
}

/* A duration in ns as text with a fitting unit. */
static void duration_text(double ns, char *out, size_t cap)
{
	if (ns < 1e3)
		snprintf(out, cap, "%.0f ns", ns);
	else if (ns < 1e6)
		snprintf(out, cap, "%.1f \xc2\xb5s", ns / 1e3);
	else if (ns < 1e9)
		snprintf(out, cap, "%.2f ms", ns / 1e6);
	else
		snprintf(out, cap, "%.2f s", ns / 1e9);
}

static void bytes_text(uint64_t b, char *out, size_t cap)
{
	if (b < 1024)
		snprintf(out, cap, "%" PRIu64 " B", b);
	else if (b < (1u << 20))
		snprintf(out, cap, "%.1f KiB", (double)b / 1024);
	else if (b < (1u << 30))
		snprintf(out, cap, "%.1f MiB", (double)b / (1 << 20));
	else
		snprintf(out, cap, "%.2f GiB", (double)b / (1 << 30));
}

static const char *header_name(void)
{
	return opt.header == 0 ? "none" : opt.header == 1 ? "v1" : "v2";
}

void report_text(const struct totals *t, const char *reason, double elapsed)
{
	char a[32], b[32], c[32], d[32], e[32], f[32];
	const char *what = opt.mode == MODE_CONN ? "connections" : "requests";

	printf(PROG ": %s to %s, PROXY header %s, ", mode_name[opt.mode], opt.target_text,
	       header_name());
	if (opt.mode == MODE_IDLE)
		printf("%" PRIu64 " connections (%u opened at once)", opt.count, opt.concurrency);
	else
		printf("%u %s", opt.concurrency,
		       streaming() ? (opt.concurrency == 1 ? "stream" : "streams")
		       : opt.mode == MODE_CONN ? "in flight"
		       : opt.concurrency == 1 ? "connection" : "connections");
	printf(", %u thread%s\n", opt.threads, opt.threads == 1 ? "" : "s");
	printf("  stopped by     %s\n", reason_text(reason));
	if (opt.mode != MODE_CONN) {
		duration_text((double)t->establish_ns, a, sizeof(a));
		printf("  established    %u of %u in %s\n", t->established, t->target, a);
	}
	if (opt.mode == MODE_CONN || opt.mode == MODE_KEPT) {
		printf("  %-14s %" PRIu64 " in %.3f s: %.0f/s", what, t->completed, elapsed,
		       elapsed > 0 ? (double)t->completed / elapsed : 0.0);
		if (opt.rate > 0)
			printf(" (paced at %.0f/s)", opt.rate);
		putchar('\n');
		if (t->in_flight_at_stop)
			printf("  not counted    %" PRIu64 " in flight at the stop (left to finish)\n",
			       t->in_flight_at_stop);
		if (t->hist.count) {
			duration_text((double)hist_percentile(&t->hist, 500), a, sizeof(a));
			duration_text((double)hist_percentile(&t->hist, 990), b, sizeof(b));
			duration_text((double)hist_percentile(&t->hist, 999), c, sizeof(c));
			duration_text((double)t->hist.min, d, sizeof(d));
			duration_text((double)t->hist.max, e, sizeof(e));
			duration_text((double)t->hist.sum / (double)t->hist.count, f, sizeof(f));
			printf("  latency        p50 %s, p99 %s, p99.9 %s (min %s, max %s, mean %s)\n",
			       a, b, c, d, e, f);
		}
	} else if (streaming()) {
		bytes_text(t->stream_bytes, a, sizeof(a));
		double mib = elapsed > 0 ? (double)t->stream_bytes / elapsed / (1 << 20) : 0;
		printf("  %-14s %s in %.3f s: %.1f MiB/s (%.2f Gbit/s)\n",
		       opt.mode == MODE_UP ? "uploaded" : "downloaded", a, elapsed, mib,
		       mib * 8 * (1 << 20) / 1e9);
	} else {
		printf("  held           %u connections for %.3f s\n", t->established, elapsed);
	}
	bytes_text(t->bytes_sent, a, sizeof(a));
	bytes_text(t->bytes_received, b, sizeof(b));
	printf("  bytes          sent %s, received %s\n", a, b);
	if (t->error_sum == 0) {
		printf("  errors         none\n");
	} else {
		printf("  errors         %" PRIu64 ":", t->error_sum);
		const char *sep = " ";
		for (int k = 0; k < ERR_COUNT; k++) {
			if (!t->errors[k])
				continue;
			printf("%s%s %" PRIu64 " (%s", sep, error_kinds[k].key, t->errors[k],
			       error_kinds[k].text);
			if (k == ERR_OTHER && t->first_other)
				printf("; first: %s", strerror(t->first_other));
			putchar(')');
			sep = ", ";
		}
		putchar('\n');
	}
	printf("  client CPU     user %.2f s, system %.2f s\n", t->user_s, t->system_s);
}

void report_json(const struct totals *t, const char *reason, double elapsed)
{
	printf("{\"mode\":\"%s\",\"target\":\"%s\",\"header\":\"%s\",\"threads\":%u,"
	       "\"concurrency\":%u,\"request_size\":%u,\"response_size\":%" PRIu64 ","
	       "\"count_limit\":%" PRIu64 ",\"duration_limit_s\":%.3f,\"rate_limit\":%.1f,",
	       mode_name[opt.mode], opt.target_text, header_name(), opt.threads, opt.concurrency,
	       opt.request_size, response_want(), opt.count, (double)opt.duration_ns / 1e9,
	       opt.rate);
	printf("\"stop\":\"%s\",\"elapsed_s\":%.6f,\"completed\":%" PRIu64 ",\"rate_per_s\":%.1f,"
	       "\"in_flight_at_stop\":%" PRIu64 ",",
	       reason, elapsed, t->completed,
	       elapsed > 0 ? (double)t->completed / elapsed : 0.0, t->in_flight_at_stop);
	if (t->hist.count)
		printf("\"latency_us\":{\"samples\":%" PRIu64 ",\"min\":%.3f,\"p50\":%.3f,\"p99\":%.3f,"
		       "\"p999\":%.3f,\"max\":%.3f,\"mean\":%.3f},",
		       t->hist.count, (double)t->hist.min / 1e3,
		       (double)hist_percentile(&t->hist, 500) / 1e3,
		       (double)hist_percentile(&t->hist, 990) / 1e3,
		       (double)hist_percentile(&t->hist, 999) / 1e3, (double)t->hist.max / 1e3,
		       (double)t->hist.sum / (double)t->hist.count / 1e3);
	else
		printf("\"latency_us\":null,");
	printf("\"established\":%u,\"establish_target\":%u,\"establish_s\":%.6f,"
	       "\"stream_bytes\":%" PRIu64 ",\"throughput_mib_s\":%.3f,"
	       "\"bytes_sent\":%" PRIu64 ",\"bytes_received\":%" PRIu64 ",",
	       t->established, t->target, (double)t->establish_ns / 1e9, t->stream_bytes,
	       elapsed > 0 ? (double)t->stream_bytes / elapsed / (1 << 20) : 0.0, t->bytes_sent,
	       t->bytes_received);
	print_error_json(t->errors, CLIENT);
	printf(",\"client_cpu_s\":{\"user\":%.3f,\"system\":%.3f}}\n", t->user_s, t->system_s);
}
