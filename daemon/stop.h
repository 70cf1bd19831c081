/*
 * stop.h - netproxyd's graceful stop, run by main once a stop signal came.
 */
#ifndef NPD_STOP_H
#define NPD_STOP_H

#include <signal.h>

#include "worker.h"

/* "SIGTERM", "SIGINT", or "signal". */
const char *npd_signal_name(int sig);

/*
 * Before the workers start, in main's thread: block SIGRTMIN everywhere
 * (the workers inherit the mask) and let a worker that ends wake the drain
 * with it.
 */
void npd_stop_prepare(void);

/*
 * Ask every worker to drain: stop accepting and let relayed connections
 * finish for up to grace_ms (shutdown_grace); meanwhile STATUS says how many
 * are left, and a second signal of stop_sigs closes them at once. Returns
 * when every worker has ended its loop.
 */
void npd_stop_drain(struct npd_worker *workers, int nworkers, int grace_ms,
		    const sigset_t *stop_sigs);

/* The stop's one summary line, from the joined (npd_worker_join) workers' counts. */
void npd_stop_summary(const struct npd_worker *workers, int nworkers);

#endif /* NPD_STOP_H */
