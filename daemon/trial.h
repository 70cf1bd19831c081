/*
 * trial.h - a config evaluated apart first, in a child process with a CPU
 * and a wall-clock limit, so that no config can hang the daemon.
 *
 * The Lua sandbox caps instructions and memory, but C functions such as a
 * pattern match that backtracks or table.concat run whole between two
 * instruction counts: only a process can be stopped in the middle of one.
 * A config that the trial passed is then loaded in the daemon itself, which
 * takes about as long as the trial did (the sandbox has no clock, no
 * randomness and no I/O but reading the config's own files).
 */
#ifndef NPD_TRIAL_H
#define NPD_TRIAL_H

#include <signal.h>
#include <stddef.h>

/* What the child may spend: CPU seconds, and wall-clock seconds (a hung read). */
#define NPD_TRIAL_CPU_SECONDS 4
#define NPD_TRIAL_WALL_SECONDS 10

enum npd_trial_result {
	NPD_TRIAL_OK = 0,
	NPD_TRIAL_FAILED = -1,	/* the config is refused: error says why */
	NPD_TRIAL_STOPPED = -2, /* a signal of stop_sigs came first: the child was killed */
};

/*
 * Load the config from path (or, when path is NULL, the Lua source lua,
 * called name in messages) in a child process under the limits above.
 * While waiting, signals of stop_sigs (blocked in every thread by the
 * caller; NULL for none) are taken with sigtimedwait(): the first one ends
 * the trial and is stored in *stop_sig. Returns an enum npd_trial_result;
 * with NPD_TRIAL_FAILED, error[0..cap) holds the message.
 */
int npd_config_trial(const char *path, const char *name, const char *lua, const sigset_t *stop_sigs,
		     int *stop_sig, char *error, size_t cap);

#endif /* NPD_TRIAL_H */
