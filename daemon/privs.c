/*
 * privs.c - run with no more privilege than the config needs.
 *
 * After the listening sockets are bound, netproxyd becomes `user`/`group`
 * (nobody when started as root without them: never root after binding) and
 * keeps exactly these capabilities, in every set, the bounding set included:
 *   CAP_NET_ADMIN         while some service is transparent or sets a mark
 *                         (IP_TRANSPARENT, SO_MARK);
 *   CAP_NET_BIND_SERVICE  while some listener has a port below 1024, so a
 *                         reload can bind such ports again.
 * Capabilities belong to threads: this runs before the workers start, and
 * they inherit the result. PR_SET_NO_NEW_PRIVS is set in every case, so no
 * program netproxyd could be made to run gains privileges.
 */
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <string.h>
#include <sys/capability.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "privs.h"

static bool needs_net_admin(const struct npd_config *cfg)
{
	for (size_t i = 0; i < cfg->nservices; i++)
		if (cfg->services[i].transparent || cfg->services[i].mark)
			return true;
	return false;
}

static bool needs_low_ports(const struct npd_config *cfg)
{
	for (size_t i = 0; i < cfg->nlisteners; i++)
		if (cfg->listeners[i].port < 1024)
			return true;
	return false;
}

/* The user a start as root without user becomes: nginx's choice, and Debian's unprivileged user. */
#define DEFAULT_USER "nobody"

/*
 * Remove every capability but keep[0..n) from the bounding set, so that not
 * even an exec of a file with capabilities brings one back. Needs
 * CAP_SETPCAP: call while still root.
 */
static int bound_caps(const cap_value_t *keep, int n, char *why, size_t cap)
{
	for (cap_value_t c = 0; c <= CAP_LAST_CAP; c++) {
		bool kept = false;

		for (int i = 0; i < n; i++)
			kept |= keep[i] == c;
		if (!kept && prctl(PR_CAPBSET_DROP, c, 0, 0, 0) != 0 && errno != EINVAL) {
			snprintf(why, cap, "dropping capability %d from the bounding set: %s", (int)c,
				 strerror(errno));
			return -1;
		}
	}
	return 0;
}

static int no_new_privs(char *why, size_t cap)
{
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
		snprintf(why, cap, "PR_SET_NO_NEW_PRIVS: %s", strerror(errno));
		return -1;
	}
	return 0;
}

/* Keep exactly the capabilities in keep[0..n) (permitted and effective); drop the rest. */
static int keep_caps(const cap_value_t *keep, int n, char *why, size_t cap)
{
	cap_t caps = cap_init(); /* all clear */
	int r = -1;

	if (!caps) {
		snprintf(why, cap, "cap_init: %s", strerror(errno));
		return -1;
	}
	if (n > 0 && (cap_set_flag(caps, CAP_PERMITTED, n, keep, CAP_SET) != 0 ||
		      cap_set_flag(caps, CAP_EFFECTIVE, n, keep, CAP_SET) != 0))
		snprintf(why, cap, "cap_set_flag: %s", strerror(errno));
	else if (cap_set_proc(caps) != 0)
		snprintf(why, cap, "cap_set_proc: %s", strerror(errno));
	else
		r = 0;
	cap_free(caps);
	return r;
}

bool npd_privs_have_net_admin(void)
{
	cap_t caps = cap_get_proc();
	cap_flag_value_t v = CAP_CLEAR;

	if (caps) {
		cap_get_flag(caps, CAP_NET_ADMIN, CAP_EFFECTIVE, &v);
		cap_free(caps);
	}
	return v == CAP_SET;
}

int npd_privs_check(const struct npd_config *cfg, char *why, size_t cap)
{
	if (cfg->group[0] && !cfg->user[0]) {
		snprintf(why, cap, "group: it needs user too");
		return -1;
	}
	const struct passwd *pw = cfg->user[0] ? getpwnam(cfg->user) : NULL;

	if (cfg->user[0] && !pw) {
		snprintf(why, cap, "user: there is no user %s", cfg->user);
		return -1;
	}
	if (pw && pw->pw_uid == 0) {
		snprintf(why, cap, "user: %s is root: netproxyd does not run as root after binding; "
				   "choose an unprivileged user", cfg->user);
		return -1;
	}
	if (cfg->group[0] && !getgrnam(cfg->group)) {
		snprintf(why, cap, "group: there is no group %s", cfg->group);
		return -1;
	}
	return 0;
}

int npd_privs_drop(const struct npd_config *cfg, char *why, size_t cap)
{
	cap_value_t keep[2];
	int n = 0;

	if (needs_net_admin(cfg))
		keep[n++] = CAP_NET_ADMIN;
	if (needs_low_ports(cfg))
		keep[n++] = CAP_NET_BIND_SERVICE;

	const char *user = cfg->user;

	if (!user[0]) {
		if (cfg->group[0]) {
			snprintf(why, cap, "group: it needs user too");
			return -1;
		}
		if (geteuid() == 0)
			user = DEFAULT_USER; /* main says so */
	}
	if (!user[0]) {
		/* Capabilities given to an unprivileged start (systemd): keep the needed ones. */
		cap_t caps = cap_get_proc();
		cap_value_t have[2];
		int m = 0;
		for (int i = 0; i < n && caps; i++) {
			cap_flag_value_t v = CAP_CLEAR;
			cap_get_flag(caps, keep[i], CAP_PERMITTED, &v);
			if (v == CAP_SET)
				have[m++] = keep[i];
		}
		if (caps)
			cap_free(caps);
		if (keep_caps(have, m, why, cap) != 0)
			return -1;
		return no_new_privs(why, cap);
	}

	struct passwd *pw = getpwnam(user);
	if (!pw) {
		snprintf(why, cap, cfg->user[0] ? "user: there is no user %s"
						 : "started as root without user, and there is no user %s "
						   "to become: set user in the config",
			 user);
		return -1;
	}
	gid_t gid = pw->pw_gid;
	if (cfg->group[0]) {
		struct group *gr = getgrnam(cfg->group);
		if (!gr) {
			snprintf(why, cap, "group: there is no group %s", cfg->group);
			return -1;
		}
		gid = gr->gr_gid;
	}
	if (pw->pw_uid == 0) {
		snprintf(why, cap, "user: %s is root: netproxyd does not run as root after binding; "
				   "choose an unprivileged user", user);
		return -1;
	}
	if (bound_caps(keep, n, why, cap) != 0)
		return -1;
	/* Keep the permitted set across setuid(); keep_caps() sets the effective one. */
	if (prctl(PR_SET_KEEPCAPS, 1) != 0 || setgroups(1, &gid) != 0 || setgid(gid) != 0 ||
	    setuid(pw->pw_uid) != 0) {
		snprintf(why, cap, "becoming %s: %s", user, strerror(errno));
		return -1;
	}
	prctl(PR_SET_KEEPCAPS, 0);
	if (keep_caps(keep, n, why, cap) != 0)
		return -1;
	return no_new_privs(why, cap);
}
