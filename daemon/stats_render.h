/*
 * stats_render.h - the stats listener's documents: the counters in
 * Prometheus' text exposition format 0.0.4, and the live connections as
 * text or JSON.
 */
#ifndef NPD_STATS_RENDER_H
#define NPD_STATS_RENDER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

struct npd_worker;
struct npd_conn_info;

/* Every counter, summed over the nworkers workers, to out. */
void npd_stats_render(FILE *out, struct npd_worker *workers, int nworkers);

/* What npd_snapshot_take() said besides the list, and when it was taken. */
struct npd_connections_view {
	size_t total;	/* connections open in all */
	size_t limit;	/* the most listed */
	int missing;	/* workers that did not answer in time */
	int64_t now_ms; /* the monotonic clock when the list was taken: ages count to it */
};

/*
 * The n connections of list, one line each (a comment line first names the
 * columns; one last says how many were left out), or as one JSON object.
 */
void npd_connections_render(FILE *out, bool json, const struct npd_conn_info *list, size_t n,
			    const struct npd_connections_view *v);

#endif /* NPD_STATS_RENDER_H */
