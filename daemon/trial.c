/*
 * trial.c - evaluate a config in a child process, under limits (trial.h).
 *
 * The child inherits the daemon's memory copy-on-write, loads the config
 * with the same loader, writes the loader's message (or nothing) to a pipe
 * and exits. RLIMIT_CPU ends a child that computes too long (SIGXCPU), an
 * alarm one that waits too long; the parent also kills it past the wall
 * limit, and at once when told to stop. glibc's fork() leaves malloc usable
 * in the child of a threaded process; the child logs nothing (the log's
 * batches belong to the parent's threads) and leaves with _exit().
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "loop.h"
#include "trial.h"

static _Noreturn void child(int out, const char *path, const char *name, const char *lua)
{
	struct rlimit cpu = {NPD_TRIAL_CPU_SECONDS, NPD_TRIAL_CPU_SECONDS + 1};
	struct npd_config_diag diag = {0};
	struct npd_config *cfg = NULL;
	sigset_t fatal;
	int r;

	signal(SIGXCPU, SIG_DFL);
	signal(SIGALRM, SIG_DFL);
	sigemptyset(&fatal);
	sigaddset(&fatal, SIGXCPU);
	sigaddset(&fatal, SIGALRM);
	sigprocmask(SIG_UNBLOCK, &fatal, NULL);
	if (setrlimit(RLIMIT_CPU, &cpu) != 0)
		_exit(3);
	alarm(NPD_TRIAL_WALL_SECONDS);
	r = path ? npd_config_load_file(path, &cfg, &diag)
		 : npd_config_load_string(name, lua, &cfg, &diag);
	if (r != 0) {
		size_t len = strnlen(diag.error, sizeof(diag.error));

		while (len > 0 && write(out, diag.error, len) < 0 && errno == EINTR)
			;
		_exit(1);
	}
	_exit(0);
}

/* Whether one of sigs is pending; it is then taken and stored in *sig. */
static bool stop_pending(const sigset_t *sigs, int *sig)
{
	static const struct timespec now = {0, 0};
	int s;

	if (!sigs)
		return false;
	s = sigtimedwait(sigs, NULL, &now);
	if (s <= 0)
		return false;
	*sig = s;
	return true;
}

int npd_config_trial(const char *path, const char *name, const char *lua, const sigset_t *stop_sigs,
		     int *stop_sig, char *error, size_t cap)
{
	int64_t deadline = npd_now_ms() + (NPD_TRIAL_WALL_SECONDS + 2) * 1000;
	char msg[512];
	size_t len = 0;
	int fds[2], status = 0;
	bool stopped = false, killed = false;
	pid_t pid;

	error[0] = '\0';
	if (pipe2(fds, O_CLOEXEC) != 0) {
		snprintf(error, cap, "%s: cannot evaluate the config apart: pipe: %s", name,
			 strerror(errno));
		return NPD_TRIAL_FAILED;
	}
	pid = fork();
	if (pid < 0) {
		snprintf(error, cap, "%s: cannot evaluate the config apart: fork: %s", name,
			 strerror(errno));
		close(fds[0]);
		close(fds[1]);
		return NPD_TRIAL_FAILED;
	}
	if (pid == 0) {
		close(fds[0]);
		child(fds[1], path, name, lua);
	}
	close(fds[1]);
	for (;;) {
		struct pollfd p = {.fd = fds[0], .events = POLLIN};
		ssize_t n;

		if (stop_pending(stop_sigs, stop_sig)) {
			stopped = true;
			break;
		}
		if (npd_now_ms() > deadline) {
			killed = true;
			break;
		}
		if (poll(&p, 1, 100) <= 0)
			continue;
		n = read(fds[0], msg + len, sizeof(msg) - 1 - len);
		if (n > 0 && (len += (size_t)n) < sizeof(msg) - 1)
			continue;
		if (n < 0 && errno == EINTR)
			continue;
		break; /* EOF: the child has exited, or is about to */
	}
	close(fds[0]);
	if (stopped || killed)
		kill(pid, SIGKILL);
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	msg[len] = '\0';
	if (stopped)
		return NPD_TRIAL_STOPPED;
	if (!killed && WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return NPD_TRIAL_OK;
	if (!killed && WIFEXITED(status) && WEXITSTATUS(status) == 1 && len > 0)
		snprintf(error, cap, "%s", msg);
	else if (killed || (WIFSIGNALED(status) &&
			    (WTERMSIG(status) == SIGXCPU || WTERMSIG(status) == SIGKILL ||
			     WTERMSIG(status) == SIGALRM)))
		snprintf(error, cap,
			 "%s: evaluating the config took too long (over %d s of CPU or %d s in "
			 "all): a loop, or a string function such as a pattern match or "
			 "table.concat that runs without end",
			 name, NPD_TRIAL_CPU_SECONDS, NPD_TRIAL_WALL_SECONDS);
	else if (WIFSIGNALED(status))
		snprintf(error, cap, "%s: evaluating the config failed: %s", name,
			 strsignal(WTERMSIG(status)));
	else
		snprintf(error, cap, "%s: evaluating the config failed (exit status %d)", name,
			 WEXITSTATUS(status));
	return NPD_TRIAL_FAILED;
}
