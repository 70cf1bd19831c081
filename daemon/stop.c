/*
 * stop.c - the graceful stop: the workers stop accepting and let their
 * relayed connections finish for up to shutdown_grace, while main publishes
 * how many are left and takes a second stop signal as "close them now".
 */
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <time.h>

#include "log.h"
#include "notify.h"
#include "stop.h"

const char *npd_signal_name(int sig)
{
	return sig == SIGTERM ? "SIGTERM" : sig == SIGINT ? "SIGINT" : "signal";
}

static int64_t stop_began_ms;
static pthread_t main_thread;

/* A worker ended: wake main's wait in npd_stop_drain() at once (SIGRTMIN, blocked everywhere). */
static void wake_main(void)
{
	pthread_kill(main_thread, SIGRTMIN);
}

void npd_stop_prepare(void)
{
	sigset_t wake_sig;

	sigemptyset(&wake_sig);
	sigaddset(&wake_sig, SIGRTMIN);
	pthread_sigmask(SIG_BLOCK, &wake_sig, NULL);
	main_thread = pthread_self();
	npd_worker_ended = wake_main;
}

void npd_stop_drain(struct npd_worker *workers, int nworkers, int grace_ms,
		    const sigset_t *stop_sigs)
{
	size_t shown = SIZE_MAX;
	bool forced = false;
	sigset_t waited = *stop_sigs;

	sigaddset(&waited, SIGRTMIN);

	stop_began_ms = npd_now_ms();
	for (int k = 0; k < nworkers; k++)
		npd_worker_drain(&workers[k], grace_ms);
	if (grace_ms > 0)
		npd_log(NPD_LOG_INFO, "not accepting; relayed connections have up to %d.%03d s to "
				      "finish (shutdown_grace); SIGTERM again closes them at once",
			grace_ms / 1000, grace_ms % 1000);
	for (;;) {
		bool all_done = true, known = true;
		size_t left = 0;

		for (int k = 0; k < nworkers; k++) {
			all_done = all_done && npd_worker_done(&workers[k]);
			size_t n = atomic_load(&workers[k].drain_left);
			if (n == SIZE_MAX)
				known = false;
			else if (!npd_worker_done(&workers[k]))
				left += n;
		}
		if (all_done)
			return;
		if (known && left != shown && !forced) {
			npd_notify("STATUS=draining %zu connection%s", left, left == 1 ? "" : "s");
			shown = left;
		}
		struct timespec tick = {.tv_sec = 0, .tv_nsec = 100 * 1000 * 1000};
		siginfo_t si;
		int sig = sigtimedwait(&waited, &si, &tick);
		if (sig > 0 && sig != SIGRTMIN && !forced) {
			npd_log(NPD_LOG_INFO, "%s again: closing the connections left at once",
				npd_signal_name(sig));
			npd_notify("STATUS=closing the connections left");
			for (int k = 0; k < nworkers; k++)
				npd_worker_stop(&workers[k]);
			forced = true;
		}
	}
}

void npd_stop_summary(const struct npd_worker *workers, int nworkers)
{
	size_t relayed = 0, unheaded = 0, cut = 0;
	int64_t ms = npd_now_ms() - stop_began_ms;

	for (int k = 0; k < nworkers; k++) {
		relayed += workers[k].drain_relayed;
		unheaded += workers[k].drain_unheaded;
		cut += workers[k].drain_cut;
	}
	npd_log(NPD_LOG_INFO, "stopped after %lld.%03lld s: %zu of %zu connections finished, "
			      "%zu closed \"shutting down\" (%zu of them waiting for their header)",
		(long long)(ms / 1000), (long long)(ms % 1000), relayed - cut, relayed, cut,
		unheaded);
}
