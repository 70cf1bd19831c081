/*
 * activation.c - sockets passed by the service manager (activation.h).
 *
 * Why one shared socket and not one per worker: the manager holds exactly
 * the sockets its .socket unit lists, and a restart keeps no connection
 * waiting unless every connection goes to one of those. Opening our own
 * SO_REUSEPORT sockets beside a passed one would let the kernel hand
 * connections to queues that die with the process. So every worker waits
 * on the same queue through its own descriptor; a connection wakes the
 * workers whose loops watch it and one accept4() wins, the others get
 * EAGAIN (the socket is non-blocking), which the accept loop already ends
 * on.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "activation.h"
#include "log.h"
#include "netproxy.h"

#define FIRST_FD 3  /* SD_LISTEN_FDS_START */
#define MAX_FDS 256 /* far more than the ports of any config */

struct passed {
	int fd;
	char name[64];
	struct sockaddr_storage addr;
	socklen_t addrlen;
	bool dual_stack; /* an IPv6 socket that takes IPv4 too */
	char text[80];
};

static struct passed *passed;
static size_t npassed;

static void addr_text(const struct sockaddr_storage *a, char *out, size_t cap)
{
	if (np_format_sockaddr(out, cap, (const struct sockaddr *)a, sizeof(*a)) < 0)
		snprintf(out, cap, "(family %d)", (int)a->ss_family);
}

/* The next name of LISTEN_FDNAMES (colon-separated) into out; advances *names. */
static void next_name(const char **names, char *out, size_t cap)
{
	const char *p = *names ? *names : "";
	size_t len = strcspn(p, ":");

	snprintf(out, cap, "%.*s", (int)len, p);
	*names = p[len] ? p + len + 1 : NULL;
}

/* Whether fd is a listening stream socket; if so its address goes to p. */
static bool usable(int fd, struct passed *p, char *why, size_t cap)
{
	int type = 0, listening = 0;
	socklen_t len = sizeof(type);
	struct stat st;

	if (fstat(fd, &st) != 0) {
		snprintf(why, cap, "%s", strerror(errno));
		return false;
	}
	if (!S_ISSOCK(st.st_mode)) {
		snprintf(why, cap, "not a socket");
		return false;
	}
	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0 || type != SOCK_STREAM) {
		snprintf(why, cap, "not a stream socket (ListenStream=)");
		return false;
	}
	len = sizeof(listening);
	if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) != 0 || !listening) {
		snprintf(why, cap, "not listening (Accept=yes passes connections, not listeners)");
		return false;
	}
	p->addrlen = sizeof(p->addr);
	if (getsockname(fd, (struct sockaddr *)&p->addr, &p->addrlen) != 0) {
		snprintf(why, cap, "getsockname: %s", strerror(errno));
		return false;
	}
	if (p->addr.ss_family != AF_INET && p->addr.ss_family != AF_INET6) {
		snprintf(why, cap, "not a TCP socket: PROXY ports are TCP");
		return false;
	}
	if (p->addr.ss_family == AF_INET6) {
		int v6only = 1;
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&p->addr;
		len = sizeof(v6only);
		getsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, &len);
		p->dual_stack = !v6only && IN6_IS_ADDR_UNSPECIFIED(&in6->sin6_addr);
	}
	return true;
}

int npd_activation_init(void)
{
	const char *pid_text = getenv("LISTEN_PID"), *fds_text = getenv("LISTEN_FDS");
	const char *names = getenv("LISTEN_FDNAMES");
	char *end;
	long n = 0;

	if (pid_text && fds_text) {
		long pid = strtol(pid_text, &end, 10);
		if (*end != '\0' || pid != (long)getpid()) {
			n = 0; /* meant for another process (an ancestor that did not clear them) */
		} else {
			n = strtol(fds_text, &end, 10);
			if (*end != '\0' || n < 0 || n > MAX_FDS) {
				npd_log(NPD_LOG_WARN, "LISTEN_FDS=%s: not a count of descriptors: "
						      "ignored", fds_text);
				n = 0;
			}
		}
	}
	passed = calloc(n > 0 ? (size_t)n : 1, sizeof(*passed));
	if (!passed)
		n = 0;
	for (int fd = FIRST_FD; fd < FIRST_FD + n; fd++) {
		struct passed *p = &passed[npassed];
		char why[128];

		memset(p, 0, sizeof(*p));
		next_name(&names, p->name, sizeof(p->name));
		if (!usable(fd, p, why, sizeof(why))) {
			npd_log(NPD_LOG_WARN, "passed descriptor %d (%s): %s: not used", fd,
				p->name[0] ? p->name : "unnamed", why);
			close(fd);
			continue;
		}
		int one = 1, flags = fcntl(fd, F_GETFL);
		/* Non-blocking: workers share the queue, and only one accept4() of several wins. */
		if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0 ||
		    fcntl(fd, F_SETFD, FD_CLOEXEC) != 0) {
			npd_log(NPD_LOG_WARN, "passed descriptor %d (%s): fcntl: %s: not used", fd,
				p->name, strerror(errno));
			close(fd);
			continue;
		}
		/* As npd_listen_open() does: accepted sockets inherit it. */
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		p->fd = fd;
		addr_text(&p->addr, p->text, sizeof(p->text));
		npd_log(NPD_LOG_INFO, "passed socket %s (%s) from the service manager%s", p->text,
			p->name[0] ? p->name : "unnamed", p->dual_stack ? ", IPv4 and IPv6" : "");
		npassed++;
	}
	unsetenv("LISTEN_PID");
	unsetenv("LISTEN_FDS");
	unsetenv("LISTEN_FDNAMES");
	return (int)npassed;
}

static bool same(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
	if (a->ss_family != b->ss_family)
		return false;
	if (a->ss_family == AF_INET) {
		const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
		return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
	}
	if (a->ss_family == AF_INET6) {
		const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
		return x->sin6_port == y->sin6_port && x->sin6_scope_id == y->sin6_scope_id &&
		       memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) == 0;
	}
	return false;
}

static const struct passed *find(const struct npd_listener *l)
{
	for (size_t i = 0; i < npassed; i++)
		if (same(&passed[i].addr, &l->addr))
			return &passed[i];
	return NULL;
}

static uint16_t port_of(const struct sockaddr_storage *a)
{
	return ntohs(a->ss_family == AF_INET ? ((const struct sockaddr_in *)a)->sin_port
					     : ((const struct sockaddr_in6 *)a)->sin6_port);
}

int npd_activation_socket(const struct npd_config *cfg, const struct npd_listener *l)
{
	const struct passed *p = find(l);

	if (p) {
		int fd = fcntl(p->fd, F_DUPFD_CLOEXEC, FIRST_FD);
		return fd >= 0 ? fd : NPD_ACTIVATION_ERROR;
	}
	if (l->addr.ss_family != AF_INET)
		return NPD_ACTIVATION_NONE;
	for (size_t i = 0; i < npassed; i++) {
		if (!passed[i].dual_stack || port_of(&passed[i].addr) != l->port)
			continue;
		for (size_t j = 0; j < cfg->nlisteners; j++)
			if (same(&passed[i].addr, &cfg->listeners[j].addr))
				return NPD_ACTIVATION_COVERED;
	}
	return NPD_ACTIVATION_NONE;
}

size_t npd_activation_used(const struct npd_config *cfg, bool warn)
{
	size_t used = 0;

	for (size_t i = 0; i < npassed; i++) {
		bool taken = false;
		for (size_t j = 0; j < cfg->nlisteners && !taken; j++)
			taken = same(&passed[i].addr, &cfg->listeners[j].addr);
		if (taken)
			used++;
		else if (warn)
			npd_log(NPD_LOG_WARN, "passed socket %s (%s): no listener of the config has "
					      "this address: its connections wait unanswered (add it "
					      "to proxy_ports, or remove it from the .socket unit)",
				passed[i].text, passed[i].name[0] ? passed[i].name : "unnamed");
	}
	return used;
}
