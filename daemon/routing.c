/*
 * routing.c - find, or install, the policy routing that brings a backend's
 * replies to spoofed client addresses back to netproxyd.
 *
 * What is needed, per transparent backend: a rule that sends the backend's
 * packets to a table holding a local route for every address ("local
 * 0.0.0.0/0 dev lo"). The rule must catch nothing else, or the host's own
 * traffic would be turned back to it:
 *   - a backend on loopback: "from 127.0.0.0/8 iif lo" (nothing else on the
 *     host sends from loopback to outside addresses);
 *   - any other backend, here or on another host: "from ADDR ipproto tcp
 *     sport PORT", only the service's own replies.
 *
 * The kernel is asked over rtnetlink for its rules and routes. The start-up
 * check is lenient: any rule leading to a table with a local default route
 * counts (people set this up in their own ways, go-mmproxy's table 123 for
 * one). --setup-routing is exact: it adds, in table 7001, each rule and route
 * that is not there yet, so running it again changes nothing.
 */
#include <netinet/in.h>
#include <errno.h>
#include <linux/fib_rules.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "netproxy.h"
#include "routing.h"

/* A policy rule, as much of it as matters here. */
struct rule {
	int family;
	uint8_t src[16];
	uint8_t src_len;
	bool iif_lo;
	uint16_t sport; /* a single source port, or 0 for any */
	unsigned table;
};

struct rules {
	struct rule r[256];
	size_t n;
};

/* Tables holding a local route for every address. */
struct tables {
	unsigned ids[64];
	size_t n;
};

typedef void (*nl_visit)(const struct nlmsghdr *h, void *ctx);

/* One rtnetlink dump; calls visit for each message. Returns 0 or -1. */
static int nl_dump(int type, int family, nl_visit visit, void *ctx)
{
	int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
	struct {
		struct nlmsghdr h;
		struct rtmsg r; /* fib_rule_hdr has the same size and family position */
	} req = {
		.h = {.nlmsg_len = sizeof(req), .nlmsg_type = (__u16)type,
		      .nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP, .nlmsg_seq = 1},
		.r = {.rtm_family = (unsigned char)family},
	};
	static _Thread_local char buf[32768];
	int r = -1;

	if (fd < 0)
		return -1;
	if (send(fd, &req, sizeof(req), 0) < 0)
		goto out;
	for (;;) {
		ssize_t n = recv(fd, buf, sizeof(buf), 0);
		if (n <= 0)
			goto out;
		for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, (size_t)n);
		     h = NLMSG_NEXT(h, n)) {
			if (h->nlmsg_type == NLMSG_DONE) {
				r = 0;
				goto out;
			}
			if (h->nlmsg_type == NLMSG_ERROR)
				goto out;
			visit(h, ctx);
		}
	}
out:
	close(fd);
	return r;
}

static void visit_rule(const struct nlmsghdr *h, void *ctx)
{
	struct rules *rs = ctx;
	const struct fib_rule_hdr *f = NLMSG_DATA(h);
	int len = (int)h->nlmsg_len - (int)NLMSG_LENGTH(sizeof(*f));

	if (h->nlmsg_type != RTM_NEWRULE || len < 0 || f->action != FR_ACT_TO_TBL ||
	    rs->n == sizeof(rs->r) / sizeof(rs->r[0]))
		return;
	struct rule *r = &rs->r[rs->n];
	memset(r, 0, sizeof(*r));
	r->family = f->family;
	r->src_len = f->src_len;
	r->table = f->table;
	for (const struct rtattr *a = (const void *)(f + 1); RTA_OK(a, len); a = RTA_NEXT(a, len)) {
		const void *v = RTA_DATA(a);
		size_t n = RTA_PAYLOAD(a);
		if (a->rta_type == FRA_TABLE && n >= 4)
			r->table = *(const unsigned *)v;
		else if (a->rta_type == FRA_SRC && n <= 16)
			memcpy(r->src, v, n);
		else if (a->rta_type == FRA_IIFNAME)
			r->iif_lo = npd_routing_is_lo(v, n);
		else if (a->rta_type == FRA_SPORT_RANGE && n >= sizeof(struct fib_rule_port_range)) {
			const struct fib_rule_port_range *p = v;
			r->sport = p->start == p->end ? p->start : 0;
		}
	}
	if (r->table != RT_TABLE_LOCAL && r->table != RT_TABLE_MAIN && r->table != RT_TABLE_DEFAULT)
		rs->n++;
}

static void visit_route(const struct nlmsghdr *h, void *ctx)
{
	struct tables *t = ctx;
	const struct rtmsg *r = NLMSG_DATA(h);
	int len = (int)h->nlmsg_len - (int)NLMSG_LENGTH(sizeof(*r));
	unsigned id = r->rtm_table;

	if (h->nlmsg_type != RTM_NEWROUTE || len < 0 || r->rtm_type != RTN_LOCAL ||
	    r->rtm_dst_len != 0)
		return;
	for (const struct rtattr *a = RTM_RTA(r); RTA_OK(a, len); a = RTA_NEXT(a, len))
		if (a->rta_type == RTA_TABLE && RTA_PAYLOAD(a) >= 4)
			id = *(const unsigned *)RTA_DATA(a);
	if (t->n < sizeof(t->ids) / sizeof(t->ids[0]))
		t->ids[t->n++] = id;
}

static bool has_table(const struct tables *t, unsigned id)
{
	for (size_t i = 0; i < t->n; i++)
		if (t->ids[i] == id)
			return true;
	return false;
}

/* What the kernel has, for one family. */
struct state {
	struct rules rules;
	struct tables local;
};

static int read_state(int family, struct state *s)
{
	s->rules.n = s->local.n = 0;
	if (nl_dump(RTM_GETRULE, family, visit_rule, &s->rules) != 0 ||
	    nl_dump(RTM_GETROUTE, family, visit_route, &s->local) != 0)
		return -1;
	return 0;
}

/* The rules cfg's transparent services need, without duplicates. */
static size_t wanted_rules(const struct npd_config *cfg, struct rule *out, size_t cap)
{
	size_t n = 0;

	/* Each address of a service: a connection goes to the one of its client's family. */
	for (size_t t = 0; t < cfg->nservices * NPD_TARGETS_MAX; t++) {
		const struct npd_service *svc = &cfg->services[t / NPD_TARGETS_MAX];
		const struct npd_target *s = &svc->target[t % NPD_TARGETS_MAX];
		struct rule w;
		uint8_t v4[4];

		memset(&w, 0, sizeof(w)); /* padding too: rules are compared with memcmp */
		w.table = NPD_ROUTING_TABLE;

		if (!svc->transparent || (int)(t % NPD_TARGETS_MAX) >= svc->ntargets)
			continue;
		if (s->addr.ss_family == AF_INET) {
			const struct sockaddr_in *in = (const void *)&s->addr;
			memcpy(v4, &in->sin_addr, 4);
			w.sport = ntohs(in->sin_port);
			w.family = AF_INET;
		} else {
			const struct sockaddr_in6 *in6 = (const void *)&s->addr;
			w.sport = ntohs(in6->sin6_port);
			if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
				memcpy(v4, &in6->sin6_addr.s6_addr[12], 4);
				w.family = AF_INET;
			} else {
				w.family = AF_INET6;
				memcpy(w.src, &in6->sin6_addr, 16);
				w.src_len = 128;
				if (IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr))
					w.iif_lo = true, w.sport = 0;
			}
		}
		if (w.family == AF_INET) {
			memcpy(w.src, v4, 4);
			w.src_len = 32;
			if (v4[0] == 127) {
				memset(w.src, 0, 4);
				w.src[0] = 127;
				w.src_len = 8;
				w.iif_lo = true;
				w.sport = 0;
			}
		}
		bool dup = false;
		for (size_t j = 0; j < n && !dup; j++)
			dup = memcmp(&out[j], &w, sizeof(w)) == 0;
		if (!dup && n < cap)
			out[n++] = w;
	}
	return n;
}

static bool rule_present(const struct state *s, const struct rule *w)
{
	size_t alen = w->family == AF_INET ? 4 : 16;

	for (size_t i = 0; i < s->rules.n; i++) {
		const struct rule *r = &s->rules.r[i];
		if (r->table == w->table && r->src_len == w->src_len && r->iif_lo == w->iif_lo &&
		    r->sport == w->sport && memcmp(r->src, w->src, alen) == 0)
			return true;
	}
	return false;
}

static void rule_command(const struct rule *w, char *out, size_t cap)
{
	char ip[NP_ADDRSTRLEN];
	struct np_endpoint ep = {0};
	int n;

	memcpy(ep.ip6, w->src, w->family == AF_INET ? 4 : 16);
	np_format_addr(ip, sizeof(ip), w->family == AF_INET ? NP_AF_INET : NP_AF_INET6, &ep);
	n = snprintf(out, cap, "ip%s rule add from %s/%u%s", w->family == AF_INET6 ? " -6" : "", ip,
		     w->src_len, w->iif_lo ? " iif lo" : "");
	if (w->sport && n > 0 && (size_t)n < cap)
		n += snprintf(out + n, cap - (size_t)n, " ipproto tcp sport %u", w->sport);
	if (n > 0 && (size_t)n < cap)
		snprintf(out + n, cap - (size_t)n, " table %d", NPD_ROUTING_TABLE);
}

static const char *route_command(int family)
{
	return family == AF_INET ? "ip route add local 0.0.0.0/0 dev lo table 7001"
				 : "ip -6 route add local ::/0 dev lo table 7001";
}

_Static_assert(NPD_ROUTING_TABLE == 7001, "route_command() spells the table out");

/*
 * The commands that would install, in table 7001, what cfg needs for one
 * family and the kernel lacks (exact = true), or nothing when some rule to
 * some table with a local default route is there already (exact = false).
 * Each goes to emit(line, ctx). Returns how many were emitted, -1 when the
 * kernel could not be asked.
 */
static int missing(const struct npd_config *cfg, int family, bool exact,
		   int (*emit)(const char *, void *), void *ctx)
{
	struct rule want[64];
	size_t n = wanted_rules(cfg, want, sizeof(want) / sizeof(want[0])), nfam = 0;
	static _Thread_local struct state s;
	char line[160];
	int count = 0;

	for (size_t i = 0; i < n; i++)
		nfam += want[i].family == family;
	if (nfam == 0)
		return 0;
	if (read_state(family, &s) != 0)
		return -1;
	if (!exact) {
		for (size_t i = 0; i < s.rules.n; i++)
			if (s.rules.r[i].family == family && has_table(&s.local, s.rules.r[i].table))
				return 0;
	}
	for (size_t i = 0; i < n; i++) {
		if (want[i].family != family || rule_present(&s, &want[i]))
			continue;
		rule_command(&want[i], line, sizeof(line));
		if (emit(line, ctx) != 0)
			return -1;
		count++;
	}
	if (!has_table(&s.local, NPD_ROUTING_TABLE)) {
		if (emit(route_command(family), ctx) != 0)
			return -1;
		count++;
	}
	return count;
}

static int print_line(const char *line, void *ctx)
{
	if (ctx)
		fprintf(ctx, "%s\n", line);
	return 0;
}

bool npd_routing_check(const struct npd_config *cfg, FILE *out)
{
	int v4 = missing(cfg, AF_INET, false, print_line, out);
	int v6 = missing(cfg, AF_INET6, false, print_line, out);

	return v4 == 0 && v6 == 0;
}

bool npd_routing_is_lo(const void *name, size_t len)
{
	/* The kernel's attribute holds the name and its NUL; never read past len. */
	return (len == 2 || (len > 2 && ((const char *)name)[2] == '\0')) &&
	       memcmp(name, "lo", 2) == 0;
}

/*
 * ip(8) from the system's own directories, never from PATH: --setup-routing
 * runs as root, and a PATH that someone else chose must not pick the program.
 */
static const char *ip_program(void)
{
	static const char *const places[] = {"/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"};

	for (size_t i = 0; i < sizeof(places) / sizeof(places[0]); i++)
		if (access(places[i], X_OK) == 0)
			return places[i];
	return NULL;
}

/* Run one "ip ..." command line (words separated by single spaces). */
static int run(const char *cmd, void *ctx)
{
	static char *const env[] = {"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C", NULL};
	const char *ip = ip_program();
	char copy[160], *argv[20], *save;
	int argc = 0, status;

	(void)ctx;
	if (!ip) {
		fprintf(stderr, "netproxyd: ip(8) is not installed (package iproute2): looked in "
				"/usr/sbin, /sbin, /usr/bin and /bin\n");
		return -1;
	}
	snprintf(copy, sizeof(copy), "%s", cmd);
	for (char *w = strtok_r(copy, " ", &save); w && argc < 19; w = strtok_r(NULL, " ", &save))
		argv[argc++] = w;
	argv[argc] = NULL;
	fprintf(stderr, "netproxyd: %s\n", cmd);
	pid_t pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		execve(ip, argv, env);
		fprintf(stderr, "netproxyd: %s: %s\n", ip, strerror(errno));
		_exit(127);
	}
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return -1;
	return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
}

int npd_routing_setup(const struct npd_config *cfg)
{
	int v4 = missing(cfg, AF_INET, true, run, NULL);
	int v6 = v4 < 0 ? -1 : missing(cfg, AF_INET6, true, run, NULL);

	if (v4 < 0 || v6 < 0) {
		fprintf(stderr, "netproxyd: setting up the routing for transparent delivery failed\n");
		return -1;
	}
	if (v4 + v6 == 0)
		fprintf(stderr, "netproxyd: the routing for transparent delivery is in place\n");
	return 0;
}
