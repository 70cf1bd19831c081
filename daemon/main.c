/*
 * main.c - netproxyd: the command line, start-up, signals and reloads.
 *
 * The main thread loads the config, opens every listening socket (so a bad
 * address fails before anything runs), starts the workers and then only
 * waits for signals: SIGHUP reloads, SIGTERM and SIGINT stop (gracefully:
 * stop.c).
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <lua.h>

#include "activation.h"
#include "cli.h"
#include "config.h"
#include "listen.h"
#include "log.h"
#include "netproxy.h"
#include "notify.h"
#include "privs.h"
#include "routing.h"
#include "stats.h"
#include "stats_server.h"
#include "stop.h"
#include "trial.h"
#include "worker.h"

#define PROG NPD_PROG

/* Where the config comes from, for start-up and every reload. */
struct source {
	const char *path; /* a file, or NULL */
	const char *lua;  /* else Lua source: the default or the command line's */
	const char *name;
	bool cli;	  /* lua is the command line's: messages name its flags */
};

/* The loader's error for src, in the terms its user wrote it in. */
static const char *error_text(const struct source *src, const struct npd_config_diag *diag,
			      char *buf, size_t cap)
{
	return src->cli ? npd_cli_message(buf, cap, diag->error) : diag->error;
}

static void warn_to_log(void *ctx, const char *text)
{
	(void)ctx;
	npd_log(NPD_LOG_WARN, "%s", text);
}

static void warn_to_stderr(void *ctx, const char *text)
{
	(void)ctx;
	fprintf(stderr, PROG ": warning: %s\n", text);
}

/*
 * The config of src, evaluated apart first (trial.h) so that no config can
 * hang the daemon, then loaded here. Returns it, or NULL with the cause
 * logged and copied to why; *stop_sig is set when a signal of stop_sigs
 * ended the trial.
 */
static struct npd_config *load(const struct source *src, void (*warn)(void *, const char *),
			       const sigset_t *stop_sigs, int *stop_sig, char *why, size_t cap)
{
	struct npd_config_diag diag = {.warn = warn};
	struct npd_config *cfg = NULL;
	char buf[sizeof(diag.error)];
	int r = npd_config_trial(src->path, src->name, src->lua, stop_sigs, stop_sig, diag.error,
				 sizeof(diag.error));

	if (r == NPD_TRIAL_STOPPED)
		return NULL;
	if (r == NPD_TRIAL_OK)
		r = src->path ? npd_config_load_file(src->path, &cfg, &diag)
			      : npd_config_load_string(src->name, src->lua, &cfg, &diag);
	if (r != 0) {
		npd_log(NPD_LOG_ERROR, "%s", error_text(src, &diag, buf, sizeof(buf)));
		snprintf(why, cap, "%s", error_text(src, &diag, buf, sizeof(buf)));
		return NULL;
	}
	return cfg;
}

/* Log what npd_config_describe() says, line by line. */
static void log_description(const struct npd_config *cfg)
{
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);

	if (!f)
		return;
	npd_config_describe(cfg, f);
	fclose(f);
	for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n"))
		npd_log(NPD_LOG_INFO, "%s", line);
	free(text);
}

/*
 * The listening sockets, one per listener and worker. Index i matches the
 * running generation's listener i; fds[i * nworkers + w] is worker w's.
 */
struct sockets {
	const struct npd_config *cfg;
	int *fds;
};

static bool same_address(const struct npd_listener *a, const struct npd_listener *b)
{
	return a->addrlen == b->addrlen && memcmp(&a->addr, &b->addr, a->addrlen) == 0;
}

/*
 * Sockets for every listener of cfg: those already open in old (same
 * address) are taken over, those the service manager passed are shared
 * (activation.h), the others opened. On failure nothing changes (new
 * sockets are closed) and -1 is returned with the cause logged and copied
 * to why.
 */
static int open_sockets(const struct npd_config *cfg, int nworkers, const struct sockets *old,
			struct sockets *out, char *why, size_t cap)
{
	size_t n = cfg->nlisteners * (size_t)nworkers;
	int *fds = malloc((n ? n : 1) * sizeof(*fds));
	bool *fresh = calloc(n ? n : 1, sizeof(*fresh));

	if (!fds || !fresh) {
		free(fds);
		free(fresh);
		npd_log(NPD_LOG_ERROR, "out of memory");
		snprintf(why, cap, "out of memory");
		return -1;
	}
	for (size_t i = 0; i < cfg->nlisteners; i++) {
		const struct npd_listener *l = &cfg->listeners[i];
		size_t from = SIZE_MAX;

		for (size_t j = 0; old && j < old->cfg->nlisteners && from == SIZE_MAX; j++)
			if (same_address(&old->cfg->listeners[j], l))
				from = j;
		for (int k = 0; k < nworkers; k++) {
			size_t at = i * (size_t)nworkers + (size_t)k;
			if (from != SIZE_MAX) {
				fds[at] = old->fds[from * (size_t)nworkers + (size_t)k];
				continue;
			}
			int fd = npd_activation_socket(cfg, l);
			if (fd == NPD_ACTIVATION_COVERED) {
				if (k == 0)
					npd_log(NPD_LOG_INFO, "%s: served by the passed IPv6 socket of "
							      "port %u, which takes IPv4 too",
						l->addr_text, (unsigned)l->port);
				fds[at] = -1;
				continue;
			}
			if (fd == NPD_ACTIVATION_NONE)
				fd = k == 0 && npd_listen_probe(l) != 0 ? -1 : npd_listen_open(l);
			fds[at] = fd < 0 ? -1 : fd;
			fresh[at] = fds[at] >= 0;
			if (fds[at] >= 0)
				continue;
			int err = errno;
			if (l->implicit && (err == EAFNOSUPPORT || err == EADDRNOTAVAIL)) {
				if (k == 0)
					npd_log(NPD_LOG_WARN, "not listening on %s: %s (no such address family here)",
						l->addr_text, strerror(err));
				continue;
			}
			npd_log(NPD_LOG_ERROR, "cannot listen on %s: %s%s", l->addr_text, strerror(err),
				err == EADDRINUSE ? " (another program, or netproxyd, listens there)" : "");
			snprintf(why, cap, "cannot listen on %s: %s", l->addr_text, strerror(err));
			for (size_t m = 0; m < n; m++)
				if (fresh[m])
					close(fds[m]);
			free(fds);
			free(fresh);
			return -1;
		}
	}
	free(fresh);
	out->cfg = cfg;
	out->fds = fds;
	return 0;
}

/* Hand each worker gen and its sockets; each update holds a reference to gen. */
static int post_updates(struct npd_worker *workers, int nworkers, struct npd_gen *gen,
			const struct sockets *s)
{
	size_t nl = gen->cfg->nlisteners;

	for (int k = 0; k < nworkers; k++) {
		struct npd_worker_update *u = malloc(sizeof(*u) + nl * sizeof(u->socks[0]));
		if (!u)
			return -1;
		u->gen = gen;
		npd_gen_hold(gen);
		u->nsocks = 0;
		for (size_t i = 0; i < nl; i++) {
			int fd = s->fds[i * (size_t)nworkers + (size_t)k];
			if (fd < 0)
				continue; /* an implicit address family the host lacks */
			u->socks[u->nsocks].fd = fd;
			u->socks[u->nsocks].listener = (int)i;
			u->nsocks++;
		}
		npd_worker_post(&workers[k], u);
	}
	return 0;
}

static int worker_count(const struct npd_config *cfg)
{
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);

	if (cfg->workers > 0)
		return cfg->workers;
	return cpus > 0 ? (int)cpus : 1;
}

/* What the command line said about logging: it wins over the config's keys. */
static struct {
	bool syslog;
	int verbose;
} cli_log;

static void apply_log_settings(const struct npd_config *cfg)
{
	int level = cli_log.verbose ? NPD_LOG_INFO + cli_log.verbose : cfg->log_level;

	npd_log_setup(cli_log.syslog || cfg->log_syslog, level);
}

/*
 * Every connection costs two descriptors, its two sockets: take all the
 * soft limit may be raised to.
 */
static void raise_fd_limit(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
		return;
	if (rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
		getrlimit(RLIMIT_NOFILE, &rl);
	}
	npd_fd_limit = rl.rlim_cur > (1u << 30) ? (1u << 30) : (size_t)rl.rlim_cur;
	npd_log(NPD_LOG_INFO, "file descriptor limit: %llu", (unsigned long long)rl.rlim_cur);
}

/* What the connection limit is and where it comes from; a max_connections the descriptors cannot hold is warned about. */
static void log_connection_limit(const struct npd_config *cfg, int nworkers)
{
	struct npd_config fds_only = *cfg;

	fds_only.max_connections = 0;
	size_t limit = npd_connection_limit(cfg, nworkers);
	size_t fits = npd_connection_limit(&fds_only, nworkers);
	if (cfg->max_connections == 0)
		npd_log(NPD_LOG_INFO, "connection limit: %zu, from the descriptor limit %zu (set "
				      "max_connections to choose)", limit, npd_fd_limit);
	else if (limit > fits)
		npd_log(NPD_LOG_WARN, "max_connections (%zu) needs about %zu descriptors, more than "
				      "the limit of %zu: past about %zu connections, accept fails and "
				      "connections are shed (raise LimitNOFILE, or lower max_connections)",
			limit, 2 * limit + (npd_fd_limit - 2 * fits), npd_fd_limit, fits);
	else
		npd_log(NPD_LOG_INFO, "connection limit: %zu (max_connections)", limit);
}

static bool any_transparent(const struct npd_config *cfg, bool or_mark)
{
	for (size_t i = 0; i < cfg->nservices; i++)
		if (cfg->services[i].transparent || (or_mark && cfg->services[i].mark))
			return true;
	return false;
}

/*
 * Say what transparent delivery still lacks: the capability, or routing for
 * the replies. Not fatal: a service that is not transparent works without,
 * and the routing may be added while netproxyd runs.
 */
static void check_privileges_and_routing(const struct npd_config *cfg)
{
	if (any_transparent(cfg, true) && !npd_privs_have_net_admin())
		npd_log(NPD_LOG_WARN, "transparent services and marks need CAP_NET_ADMIN, which this "
				      "process lacks: their connections will fail (see netproxyd(8), "
				      "PRIVILEGES)");
	if (!any_transparent(cfg, false))
		return;
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);
	if (!f)
		return;
	bool ok = npd_routing_check(cfg, f);
	fclose(f);
	if (ok) {
		npd_log(NPD_LOG_INFO, "transparent delivery: replies to client addresses are "
				      "routed locally");
	} else {
		npd_log(NPD_LOG_WARN, "transparent delivery: no policy routing brings the backends' "
				      "replies to client addresses back here; install it with "
				      "netproxyd --setup-routing, or:");
		char *save;
		for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
			npd_log(NPD_LOG_WARN, "    %s", line);
	}
	free(text);
}

/*
 * Tell the service manager that gen runs (READY=1), with a STATUS saying
 * what runs; after failed, the cause of a failed reload, when given.
 */
static void notify_ready(const char *failed, const struct npd_gen *gen, int nworkers,
			 const struct sockets *s)
{
	const struct npd_config *cfg = gen->cfg;
	size_t addrs = 0, passed = npd_activation_used(cfg, false);
	char flat[600], extra[64] = "";

	for (size_t i = 0; i < cfg->nlisteners; i++)
		addrs += s->fds[i * (size_t)nworkers] >= 0;
	if (passed)
		snprintf(extra, sizeof(extra), " (%zu passed by the service manager)", passed);
	if (failed)
		snprintf(flat, sizeof(flat), "reload failed: %s; still running", failed);
	npd_notify("READY=1\nSTATUS=%s generation %u: %d worker%s, %zu listening address%s%s",
		   failed ? npd_notify_flatten(flat, sizeof(flat), flat) : "running", gen->number,
		   nworkers, nworkers == 1 ? "" : "s", addrs, addrs == 1 ? "" : "es", extra);
}

/* What stats_listen was at start: the listener is opened once, before privileges go. */
static char stats_listen_started[NPD_ADDR_TEXT];

static void warn_stats_listen_changed(const struct npd_config *cfg)
{
	if (strcmp(cfg->stats_listen.text, stats_listen_started) == 0)
		return;
	npd_log(NPD_LOG_WARN, "stats_listen changed to %s: takes effect at the next start (%s %s)",
		cfg->stats_listen.text[0] ? cfg->stats_listen.text : "none",
		stats_listen_started[0] ? "still serving on" : "still", 
		stats_listen_started[0] ? stats_listen_started : "none");
}

/* Returns 0, or the stop signal that came while the new config was evaluated. */
static int reload(const struct source *src, const sigset_t *stop_sigs, struct npd_worker *workers,
		  int nworkers, struct npd_gen **gen, struct sockets *socks)
{
	int stop_sig = 0;
	char why[512];

	npd_log(NPD_LOG_INFO, "SIGHUP: reloading %s", src->name);
	/* Before anything is read: Type=notify-reload waits for this, then READY=1. */
	npd_notify_reloading("reloading the config");
	struct npd_config *cfg = load(src, warn_to_log, stop_sigs, &stop_sig, why, sizeof(why));
	if (!cfg) {
		if (stop_sig)
			return stop_sig;
		npd_stats_reload_failed();
		npd_log(NPD_LOG_ERROR, "reload failed: keeping the running config");
		notify_ready(why, *gen, nworkers, socks);
		return 0;
	}
	if (worker_count(cfg) != nworkers)
		npd_log(NPD_LOG_WARN, "workers changed: takes effect at the next start (running %d)",
			nworkers);
	warn_stats_listen_changed(cfg);

	struct sockets fresh;
	if (open_sockets(cfg, nworkers, socks, &fresh, why, sizeof(why)) != 0) {
		npd_config_free(cfg);
		npd_stats_reload_failed();
		npd_log(NPD_LOG_ERROR, "reload failed: keeping the running config");
		notify_ready(why, *gen, nworkers, socks);
		return 0;
	}
	apply_log_settings(cfg);
	check_privileges_and_routing(cfg);
	struct npd_gen *g = npd_gen_new(cfg, (*gen)->number + 1);
	if (!g || post_updates(workers, nworkers, g, &fresh) != 0) {
		npd_log(NPD_LOG_ERROR, "reload failed: out of memory");
		exit(1); /* the workers may hold a mix of old and new: do not go on */
	}
	/* Sockets of listeners that are gone are closed by their workers. */
	free(socks->fds);
	*socks = fresh;
	npd_gen_release(*gen);
	*gen = g;
	npd_stats_generation(g->number);
	npd_log(NPD_LOG_INFO, "reloaded: generation %u", g->number);
	log_description(cfg);
	log_connection_limit(cfg, nworkers);
	npd_activation_used(cfg, true);
	notify_ready(NULL, g, nworkers, socks);
	return 0;
}

int main(int argc, char **argv)
{
	enum { OPT_SYSLOG = 256, OPT_SEND_PROXY, OPT_TRUSTED, OPT_SETUP_ROUTING };
	static const struct option options[] = {
		{"config", required_argument, NULL, 'c'},
		{"test", no_argument, NULL, 't'},
		{"debug", no_argument, NULL, 'd'},
		{"syslog", no_argument, NULL, OPT_SYSLOG},
		{"listen", required_argument, NULL, 'l'},
		{"backend", required_argument, NULL, 'b'},
		{"send-proxy", required_argument, NULL, OPT_SEND_PROXY},
		{"trusted", required_argument, NULL, OPT_TRUSTED},
		{"setup-routing", no_argument, NULL, OPT_SETUP_ROUTING},
		{"help", no_argument, NULL, 'h'},
		{"version", no_argument, NULL, 'v'},
		{NULL, 0, NULL, 0},
	};
	const char *config_path = NULL, *listen = NULL, *backend = NULL, *send_proxy = NULL;
	char **trusted = calloc((size_t)argc, sizeof(*trusted)); /* at most one per argument */
	int ntrusted = 0, verbose = 0, opt;
	bool test = false, use_syslog = false, setup_routing = false;

	if (!trusted) {
		fprintf(stderr, PROG ": out of memory\n");
		return 1;
	}
	while ((opt = getopt_long(argc, argv, "c:tdl:b:hvV", options, NULL)) != -1) {
		switch (opt) {
		case 'c':
			config_path = optarg;
			break;
		case 't':
			test = true;
			break;
		case 'd':
			verbose++;
			break;
		case OPT_SYSLOG:
			use_syslog = true;
			break;
		case OPT_SETUP_ROUTING:
			setup_routing = true;
			break;
		case 'l':
			listen = optarg;
			break;
		case 'b':
			backend = optarg;
			break;
		case OPT_SEND_PROXY:
			send_proxy = optarg;
			break;
		case OPT_TRUSTED:
			trusted[ntrusted++] = optarg;
			break;
		case 'h':
			npd_cli_usage(stdout);
			return 0;
		case 'v':
			printf(PROG " " NP_VERSION_STRING "\n");
			return 0;
		case 'V':
			printf(PROG " " NP_VERSION_STRING "\nbuilt with %s, " LUA_RELEASE
			       ", libcap; compiler " __VERSION__ "\n",
			       "libnetproxy " NP_VERSION_STRING);
			return 0;
		default:
			fprintf(stderr, "Try '" PROG " --help'.\n");
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, PROG ": unexpected argument '%s'\nTry '" PROG " --help'.\n", argv[optind]);
		return 2;
	}
	if ((listen || backend || send_proxy || ntrusted) && (!listen || !backend)) {
		fprintf(stderr, PROG ": -l and -b go together (and --send-proxy, --trusted need them)\n");
		return 2;
	}
	if (listen && config_path) {
		fprintf(stderr, PROG ": -c and -l exclude each other\n");
		return 2;
	}

	struct source src = {.path = config_path, .name = config_path};
	if (listen) {
		src.lua = npd_cli_config(listen, backend, send_proxy, trusted, ntrusted);
		if (!src.lua)
			return 2;
		src.name = "command line";
		src.cli = true;
	} else if (!config_path) {
		src.lua = npd_config_default_lua;
		src.name = "built-in default";
	}

	if (test || setup_routing) {
		struct npd_config_diag diag = {.warn = warn_to_stderr};
		struct npd_config *cfg = NULL;
		int r = npd_config_trial(src.path, src.name, src.lua, NULL, NULL, diag.error,
					 sizeof(diag.error));
		if (r == 0)
			r = src.path ? npd_config_load_file(src.path, &cfg, &diag)
				     : npd_config_load_string(src.name, src.lua, &cfg, &diag);
		if (r != 0) {
			char buf[sizeof(diag.error)];

			fprintf(stderr, PROG ": %s\n", error_text(&src, &diag, buf, sizeof(buf)));
			return 1;
		}
		char why[256];
		if (setup_routing) {
			r = npd_routing_setup(cfg) == 0 ? 0 : 1;
		} else if (npd_privs_check(cfg, why, sizeof(why)) != 0) {
			fprintf(stderr, PROG ": %s: %s\n", src.name, why);
			r = 1;
		} else {
			npd_config_describe(cfg, stdout);
			printf("config %s is valid\n", src.name);
		}
		npd_config_free(cfg);
		return r;
	}

	cli_log.syslog = use_syslog;
	cli_log.verbose = verbose;
	npd_log_setup(use_syslog, NPD_LOG_INFO + verbose);
	/*
	 * Signals are taken by sigwaitinfo() below, in this thread only (the
	 * workers inherit the mask), and by the config's trial while it waits.
	 */
	sigset_t sigs, stop_sigs;
	sigemptyset(&stop_sigs);
	sigaddset(&stop_sigs, SIGTERM);
	sigaddset(&stop_sigs, SIGINT);
	sigs = stop_sigs;
	sigaddset(&sigs, SIGHUP);
	sigaddset(&sigs, SIGUSR1);
	sigaddset(&sigs, SIGUSR2);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	npd_stop_prepare();
	signal(SIGPIPE, SIG_IGN);

	npd_log(NPD_LOG_INFO, PROG " " NP_VERSION_STRING " starting with %s", src.name);
	/* Both read and clear environment variables: before any thread or child. */
	npd_notify_init();
	npd_activation_init();
	int stop_sig = 0;
	char why[512];
	struct npd_config *cfg = load(&src, warn_to_log, &stop_sigs, &stop_sig, why, sizeof(why));
	if (!cfg) {
		if (!stop_sig) {
			npd_notify("STATUS=not started: %s", npd_notify_flatten(why, sizeof(why), why));
			return 1;
		}
		npd_log(NPD_LOG_INFO, "%s: stopping", npd_signal_name(stop_sig));
		npd_notify("STOPPING=1");
		return 0;
	}
	apply_log_settings(cfg);
	raise_fd_limit();

	int nworkers = worker_count(cfg);
	struct sockets socks;
	npd_activation_used(cfg, true);
	if (open_sockets(cfg, nworkers, NULL, &socks, why, sizeof(why)) != 0) {
		npd_notify("STATUS=not started: %s", npd_notify_flatten(why, sizeof(why), why));
		return 1;
	}
	/* Before privileges go: a port below 1024, or a socket in a directory of root's. */
	int stats_fd = -1;
	if (cfg->stats_listen.addrlen) {
		stats_fd = npd_stats_listen(&cfg->stats_listen, why, sizeof(why));
		if (stats_fd < 0) {
			npd_log(NPD_LOG_ERROR, "%s", why);
			npd_notify("STATUS=not started: %s", npd_notify_flatten(why, sizeof(why), why));
			return 1;
		}
		snprintf(stats_listen_started, sizeof(stats_listen_started), "%s",
			 cfg->stats_listen.text);
	}
	bool was_root = geteuid() == 0;
	if (npd_privs_drop(cfg, why, sizeof(why)) != 0) {
		npd_log(NPD_LOG_ERROR, "%s: %s", src.name, why);
		npd_notify("STATUS=not started: %s", npd_notify_flatten(why, sizeof(why), why));
		return 1;
	}
	if (was_root && !cfg->user[0])
		npd_log(NPD_LOG_INFO, "started as root without user: running as nobody (set user "
				      "and group in the config to choose)");
	/* A reload reads the file again, as the user netproxyd has become. */
	if (src.path && access(src.path, R_OK) != 0)
		npd_log(NPD_LOG_WARN, "%s: %s, now that netproxyd runs as uid %u: reloads will fail; "
				      "make it readable by this user or group (set user and group)",
			src.path, strerror(errno), (unsigned)geteuid());
	check_privileges_and_routing(cfg);
	struct npd_gen *gen = npd_gen_new(cfg, 1);
	struct npd_worker *workers = calloc((size_t)nworkers, sizeof(*workers));
	if (!gen || !workers) {
		npd_log(NPD_LOG_ERROR, "out of memory");
		return 1;
	}
	for (int k = 0; k < nworkers; k++) {
		if (npd_worker_init(&workers[k], k, nworkers) != 0) {
			npd_log(NPD_LOG_ERROR, "worker %d: %s", k, strerror(errno));
			return 1;
		}
	}
	if (post_updates(workers, nworkers, gen, &socks) != 0) {
		npd_log(NPD_LOG_ERROR, "out of memory");
		return 1;
	}
	for (int k = 0; k < nworkers; k++) {
		if (npd_worker_start(&workers[k]) != 0) {
			npd_log(NPD_LOG_ERROR, "cannot start worker %d", k);
			return 1;
		}
	}
	npd_stats_generation(gen->number);
	struct npd_stats_server *stats = NULL;
	if (stats_fd >= 0 &&
	    !(stats = npd_stats_server_start(stats_fd, cfg->stats_listen.text, workers, nworkers)))
		return 1;
	log_description(cfg);
	log_connection_limit(cfg, nworkers);
	npd_log(NPD_LOG_INFO, "running: %d worker%s, pid %d", nworkers, nworkers == 1 ? "" : "s",
		(int)getpid());
	notify_ready(NULL, gen, nworkers, &socks);

	for (;;) {
		siginfo_t si;
		int sig = sigwaitinfo(&sigs, &si);
		if (sig < 0)
			continue; /* EINTR */
		if (sig == SIGHUP)
			sig = reload(&src, &stop_sigs, workers, nworkers, &gen, &socks);
		if (sig == 0)
			continue;
		if (sig == SIGUSR1 || sig == SIGUSR2) {
			/*
			 * nginx reopens its logs on SIGUSR1 and HAProxy stops softly: a
			 * signal sent out of habit must not kill, as its default would.
			 */
			npd_log(NPD_LOG_INFO, "%s: ignored (SIGHUP reloads, SIGTERM stops; the log "
					      "is standard error or syslog, with nothing to reopen)",
				sig == SIGUSR1 ? "SIGUSR1" : "SIGUSR2");
			continue;
		}
		npd_log(NPD_LOG_INFO, "%s: stopping", npd_signal_name(sig));
		npd_notify("STOPPING=1\nSTATUS=stopping on %s", npd_signal_name(sig));
		break;
	}
	npd_stop_drain(workers, nworkers, gen->cfg->shutdown_grace_ms, &stop_sigs);
	/* It reads the workers and writes to their wake-ups: it stops before they are joined. */
	npd_stats_server_stop(stats);
	for (int k = 0; k < nworkers; k++)
		npd_worker_join(&workers[k]);
	npd_stop_summary(workers, nworkers);
	free(workers);
	free(socks.fds);
	npd_gen_release(gen);
	return 0;
}
