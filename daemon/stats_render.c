/*
 * stats_render.c - what the stats listener serves, as text: the counters in
 * Prometheus' text exposition format (version 0.0.4), and the list of live
 * connections as text and as JSON.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "netproxy.h"
#include "stats.h"
#include "stats_render.h"
#include "stats_snapshot.h"
#include "worker.h"

/* A label value: backslash, double quote and newline escaped, as the format asks. */
static void label_value(FILE *out, const char *s)
{
	for (; *s; s++) {
		if (*s == '\\' || *s == '"')
			fprintf(out, "\\%c", *s);
		else if (*s == '\n')
			fputs("\\n", out);
		else
			fputc(*s, out);
	}
}

static void help(FILE *out, const char *name, const char *type, const char *text)
{
	fprintf(out, "# HELP %s %s\n# TYPE %s %s\n", name, text, name, type);
}

/* One service name's counters, summed over the workers. */
struct sum {
	const char *name;
	uint64_t accepted, closed[NPD_RESULT_COUNT], up, down;
	uint64_t connect[NPD_STATS_BUCKETS + 1], connect_ms;
};

struct totals {
	struct sum *svc;
	size_t nsvc;
	uint64_t rejected[NPD_REJECT_COUNT];
	uint64_t header_failed[NPD_STATS_HEADER_ERRORS];
	uint64_t headers[2][2];
	uint64_t wait[NPD_STATS_BUCKETS + 1], wait_ms;
};

static void add_hist(uint64_t *counts, uint64_t *sum_ms, struct npd_stats_hist *h)
{
	for (int b = 0; b <= NPD_STATS_BUCKETS; b++)
		counts[b] += npd_stat_get(&h->count[b]);
	*sum_ms += npd_stat_get(&h->sum_ms);
}

static void add_service(struct totals *t, struct npd_stats_service *s)
{
	struct sum *m = NULL;

	for (size_t i = 0; i < t->nsvc && !m; i++)
		if (strcmp(t->svc[i].name, s->name) == 0)
			m = &t->svc[i];
	if (!m) {
		m = &t->svc[t->nsvc++];
		memset(m, 0, sizeof(*m));
		m->name = s->name;
	}
	/* Closes before accepts: a connection is accepted before it closes, so active stays >= 0. */
	for (int r = 0; r < NPD_RESULT_COUNT; r++)
		m->closed[r] += npd_stat_get(&s->closed[r]);
	m->accepted += npd_stat_get(&s->accepted);
	m->up += npd_stat_get(&s->bytes_up);
	m->down += npd_stat_get(&s->bytes_down);
	add_hist(m->connect, &m->connect_ms, &s->connect);
}

static void sum_workers(struct totals *t, struct npd_worker *workers, int nworkers)
{
	for (int k = 0; k < nworkers; k++) {
		struct npd_stats *st = &workers[k].stats;
		/* Acquire: every slot counted here has its name written. */
		size_t n = atomic_load_explicit(&st->nservices, memory_order_acquire);

		for (size_t i = 0; i < n; i++)
			add_service(t, &st->service[i]);
		for (int r = 0; r < NPD_REJECT_COUNT; r++)
			t->rejected[r] += npd_stat_get(&st->rejected[r]);
		for (int e = 0; e < NPD_STATS_HEADER_ERRORS; e++)
			t->header_failed[e] += npd_stat_get(&st->header_failed[e]);
		for (int v = 0; v < 2; v++)
			for (int c = 0; c < 2; c++)
				t->headers[v][c] += npd_stat_get(&st->headers[v][c]);
		add_hist(t->wait, &t->wait_ms, &st->header_wait);
	}
}

/* A histogram's series; labels is "" or `service="x",`. */
static void histogram(FILE *out, const char *name, const char *labels, const uint64_t *counts,
		      uint64_t sum_ms)
{
	uint64_t cumulative = 0;

	for (int b = 0; b < NPD_STATS_BUCKETS; b++) {
		cumulative += counts[b];
		fprintf(out, "%s_bucket{%sle=\"%g\"} %llu\n", name, labels,
			npd_stats_bucket_ms[b] / 1000.0, (unsigned long long)cumulative);
	}
	cumulative += counts[NPD_STATS_BUCKETS];
	fprintf(out, "%s_bucket{%sle=\"+Inf\"} %llu\n", name, labels, (unsigned long long)cumulative);
	/* Labels without the trailing comma for _sum and _count. */
	int len = (int)strlen(labels);
	fprintf(out, "%s_sum%s%.*s%s %.3f\n", name, len ? "{" : "", len ? len - 1 : 0, labels,
		len ? "}" : "", sum_ms / 1000.0);
	fprintf(out, "%s_count%s%.*s%s %llu\n", name, len ? "{" : "", len ? len - 1 : 0, labels,
		len ? "}" : "", (unsigned long long)cumulative);
}

/* The header failure reason of -code e: "notproxy" for NP_ENOTPROXY; "other" for [0]. */
static void failure_reason(char *out, size_t cap, int e)
{
	const char *name = e ? np_errname(-e) : NULL;

	if (!name || strncmp(name, "NP_E", 4) != 0) {
		snprintf(out, cap, "other");
		return;
	}
	size_t i = 0;
	for (name += 4; *name && i + 1 < cap; name++)
		out[i++] = (char)(*name >= 'A' && *name <= 'Z' ? *name - 'A' + 'a' : *name);
	out[i] = '\0';
}

void npd_stats_render(FILE *out, struct npd_worker *workers, int nworkers)
{
	struct totals t;
	/* Room for every slot of every worker, as if no two workers shared a name. */
	struct sum *all = calloc((size_t)(nworkers > 0 ? nworkers : 1) * NPD_STATS_SERVICES,
				 sizeof(*all));

	memset(&t, 0, sizeof(t));
	t.svc = all;
	if (!all)
		nworkers = 0; /* out of memory: the process-wide figures only */
	sum_workers(&t, workers, nworkers);

	help(out, "netproxyd_build_info", "gauge", "netproxyd's version, in the version label; always 1.");
	fprintf(out, "netproxyd_build_info{version=\"%s\"} 1\n", NP_VERSION_STRING);
	help(out, "netproxyd_start_time_seconds", "gauge",
	     "When netproxyd started, in seconds since the Unix epoch.");
	fprintf(out, "netproxyd_start_time_seconds %.3f\n", npd_stats_start_time());
	help(out, "netproxyd_workers", "gauge", "Worker threads, each with its own event loop.");
	fprintf(out, "netproxyd_workers %d\n", nworkers);
	help(out, "netproxyd_config_generation", "gauge",
	     "The config running: 1 at start, one more per successful reload.");
	fprintf(out, "netproxyd_config_generation %u\n", npd_stats_generation_now());
	help(out, "netproxyd_config_reload_failures_total", "counter",
	     "Reloads that failed, leaving the running config in place.");
	fprintf(out, "netproxyd_config_reload_failures_total %llu\n",
		(unsigned long long)npd_stats_reload_failures());

	help(out, "netproxyd_connections_accepted_total", "counter",
	     "Connections accepted from trusted senders, by service (\"-\": a port mapped to none).");
	for (size_t i = 0; i < t.nsvc; i++) {
		fputs("netproxyd_connections_accepted_total{service=\"", out);
		label_value(out, t.svc[i].name);
		fprintf(out, "\"} %llu\n", (unsigned long long)t.svc[i].accepted);
	}
	help(out, "netproxyd_connections_closed_total", "counter",
	     "Connections closed, by service and result.");
	for (size_t i = 0; i < t.nsvc; i++)
		for (int r = NPD_RESULT_NONE + 1; r < NPD_RESULT_COUNT; r++) {
			fputs("netproxyd_connections_closed_total{service=\"", out);
			label_value(out, t.svc[i].name);
			fprintf(out, "\",result=\"%s\"} %llu\n", npd_result_name((enum npd_result)r),
				(unsigned long long)t.svc[i].closed[r]);
		}
	help(out, "netproxyd_connections_active", "gauge", "Connections open now, by service.");
	for (size_t i = 0; i < t.nsvc; i++) {
		uint64_t closed = 0;
		for (int r = 0; r < NPD_RESULT_COUNT; r++)
			closed += t.svc[i].closed[r];
		fputs("netproxyd_connections_active{service=\"", out);
		label_value(out, t.svc[i].name);
		fprintf(out, "\"} %llu\n",
			(unsigned long long)(t.svc[i].accepted > closed ? t.svc[i].accepted - closed : 0));
	}
	help(out, "netproxyd_rejected_connections_total", "counter",
	     "Connections closed at accept, before a byte was read, by reason.");
	for (int r = 0; r < NPD_REJECT_COUNT; r++)
		fprintf(out, "netproxyd_rejected_connections_total{reason=\"%s\"} %llu\n",
			npd_reject_name((enum npd_reject)r), (unsigned long long)t.rejected[r]);
	help(out, "netproxyd_headers_total", "counter",
	     "PROXY headers received complete and valid, by version and command (a v1 UNKNOWN is local).");
	for (int v = 0; v < 2; v++)
		for (int c = 0; c < 2; c++)
			fprintf(out, "netproxyd_headers_total{version=\"%d\",command=\"%s\"} %llu\n",
				v + 1, c ? "proxy" : "local", (unsigned long long)t.headers[v][c]);
	help(out, "netproxyd_header_failures_total", "counter",
	     "Connections closed for a malformed or oversized PROXY header, by reason "
	     "(libnetproxy's NP_E* code).");
	for (int e = 0; e < NPD_STATS_HEADER_ERRORS; e++) {
		char reason[32];
		/* The parser's own reasons always; NP_EAGAIN (1) and the rest only when counted. */
		bool parser = e >= -NP_ENOTPROXY && e <= -NP_ECRC;
		if (!parser && !t.header_failed[e])
			continue;
		failure_reason(reason, sizeof(reason), e);
		fprintf(out, "netproxyd_header_failures_total{reason=\"%s\"} %llu\n", reason,
			(unsigned long long)t.header_failed[e]);
	}
	help(out, "netproxyd_relayed_bytes_total", "counter",
	     "Bytes relayed, by service and direction (up: read from clients; down: read from backends).");
	for (size_t i = 0; i < t.nsvc; i++)
		for (int d = 0; d < 2; d++) {
			fputs("netproxyd_relayed_bytes_total{service=\"", out);
			label_value(out, t.svc[i].name);
			fprintf(out, "\",direction=\"%s\"} %llu\n", d ? "down" : "up",
				(unsigned long long)(d ? t.svc[i].down : t.svc[i].up));
		}
	help(out, "netproxyd_header_wait_seconds", "histogram",
	     "From accept to a complete PROXY header, on the worker's millisecond clock.");
	histogram(out, "netproxyd_header_wait_seconds", "", t.wait, t.wait_ms);
	help(out, "netproxyd_backend_connect_seconds", "histogram",
	     "From a complete header to the backend connected, by service, on the worker's "
	     "millisecond clock.");
	for (size_t i = 0; i < t.nsvc; i++) {
		char labels[NPD_NAME_MAX * 2 + 16];
		FILE *f = fmemopen(labels, sizeof(labels), "w");
		if (!f)
			continue;
		fputs("service=\"", f);
		label_value(f, t.svc[i].name);
		fputs("\",", f);
		fclose(f);
		labels[sizeof(labels) - 1] = '\0';
		histogram(out, "netproxyd_backend_connect_seconds", labels, t.svc[i].connect,
			  t.svc[i].connect_ms);
	}
	free(all);
}

static const char *state_name(uint8_t state)
{
	switch (state) {
	case NPD_CONN_HEADER:
		return "header";
	case NPD_CONN_CONNECTING:
		return "connecting";
	case NPD_CONN_RELAY:
		return "relay";
	case NPD_CONN_LINGER:
		return "linger";
	default:
		return "closed";
	}
}

/* A service name in a column: bytes outside printable ASCII, spaces and backslash as \xNN. */
static void text_field(FILE *out, const char *s)
{
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c <= ' ' || c >= 0x7f || c == '\\')
			fprintf(out, "\\x%02X", c);
		else
			fputc(c, out);
	}
}

/* A JSON string's contents: quote, backslash and control bytes escaped; other bytes as they are. */
static void json_string(FILE *out, const char *s)
{
	fputc('"', out);
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '"' || c == '\\')
			fprintf(out, "\\%c", c);
		else if (c < 0x20 || c >= 0x7f)
			fprintf(out, "\\u%04x", c); /* a name is bytes, maybe not UTF-8: the JSON stays valid */
		else
			fputc(c, out);
	}
	fputc('"', out);
}

void npd_connections_render(FILE *out, bool json, const struct npd_conn_info *list, size_t n,
			    const struct npd_connections_view *v)
{
	char client[NPD_SOCKADDR_TEXT], peer[NPD_SOCKADDR_TEXT], local[NPD_SOCKADDR_TEXT];

	if (json) {
		fprintf(out, "{\"total\":%zu,\"shown\":%zu,\"omitted\":%zu,\"limit\":%zu,"
			     "\"workers_not_answering\":%d,\"connections\":[",
			v->total, n, v->total > n ? v->total - n : 0, v->limit, v->missing);
		for (size_t i = 0; i < n; i++) {
			const struct npd_conn_info *e = &list[i];
			int64_t age = v->now_ms - e->start_ms;
			fprintf(out, "%s\n{\"id\":%llu,\"service\":", i ? "," : "",
				(unsigned long long)e->id);
			json_string(out, e->service);
			fputs(",\"client\":", out);
			json_string(out, npd_sockaddr_text(&e->client, client, sizeof(client)));
			fputs(",\"peer\":", out);
			json_string(out, npd_sockaddr_text(&e->peer, peer, sizeof(peer)));
			fputs(",\"local\":", out);
			json_string(out, npd_sockaddr_text(&e->local, local, sizeof(local)));
			fprintf(out, ",\"state\":\"%s\",\"age_seconds\":%lld.%03lld,\"up_bytes\":%llu,"
				     "\"down_bytes\":%llu}",
				state_name(e->state), (long long)(age / 1000), (long long)(age % 1000),
				(unsigned long long)e->up, (unsigned long long)e->down);
		}
		fputs("]}\n", out);
		return;
	}
	fputs("# id service client peer local state age_seconds up_bytes down_bytes\n", out);
	for (size_t i = 0; i < n; i++) {
		const struct npd_conn_info *e = &list[i];
		int64_t age = v->now_ms - e->start_ms;
		fprintf(out, "%llu ", (unsigned long long)e->id);
		text_field(out, e->service);
		fprintf(out, " %s %s %s %s %lld.%03lld %llu %llu\n",
			npd_sockaddr_text(&e->client, client, sizeof(client)),
			npd_sockaddr_text(&e->peer, peer, sizeof(peer)),
			npd_sockaddr_text(&e->local, local, sizeof(local)), state_name(e->state),
			(long long)(age / 1000), (long long)(age % 1000), (unsigned long long)e->up,
			(unsigned long long)e->down);
	}
	if (v->total > n)
		fprintf(out, "# %zu of %zu connections shown (limit %zu): %zu more not shown\n", n,
			v->total, v->limit, v->total - n);
	else
		fprintf(out, "# %zu connection%s\n", n, n == 1 ? "" : "s");
	if (v->missing)
		fprintf(out, "# %d worker%s did not answer within %d ms: %s connections are not "
			     "counted\n",
			v->missing, v->missing == 1 ? "" : "s", NPD_SNAPSHOT_WAIT_MS,
			v->missing == 1 ? "its" : "their");
}
