/*
 * routing.c - find, or install, the policy routing that brings a backend's
 * replies to spoofed client addresses back to netproxyd.
 *
 * The check asks the kernel over rtnetlink for its policy rules and routes:
 * it wants a rule that sends the backend's packets to a table holding a
 * local route for every address ("local 0.0.0.0/0 dev lo"). It does not
 * prove that the rule's selector matches the backend's packets (that
 * depends on the network), only that the routing exists at all; the log and
 * the man page say what the selector should be.
 */
#include <arpa/inet.h>
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

#include "routing.h"

/* Tables a rule of family `family` sends lookups to, other than the kernel's own. */
struct tables {
	unsigned ids[64];
	size_t n;
};

typedef void (*nl_visit)(const struct nlmsghdr *h, void *ctx);

/* One rtnetlink dump request; calls visit for each message. Returns 0 or -1. */
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
	static char buf[32768];
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

static unsigned attr_table(const struct rtattr *a, int len, unsigned dflt)
{
	for (; RTA_OK(a, len); a = RTA_NEXT(a, len))
		if (a->rta_type == RTA_TABLE /* == FRA_TABLE */ && RTA_PAYLOAD(a) >= 4)
			return *(const unsigned *)RTA_DATA(a);
	return dflt;
}

static void visit_rule(const struct nlmsghdr *h, void *ctx)
{
	struct tables *t = ctx;
	const struct fib_rule_hdr *f = NLMSG_DATA(h);
	int len = (int)h->nlmsg_len - (int)NLMSG_LENGTH(sizeof(*f));

	if (h->nlmsg_type != RTM_NEWRULE || len < 0 || f->action != FR_ACT_TO_TBL)
		return;
	unsigned id = attr_table((const struct rtattr *)(f + 1), len, f->table);
	if (id == RT_TABLE_LOCAL || id == RT_TABLE_MAIN || id == RT_TABLE_DEFAULT)
		return;
	if (t->n < sizeof(t->ids) / sizeof(t->ids[0]))
		t->ids[t->n++] = id;
}

struct route_search {
	const struct tables *tables;
	unsigned found; /* a table with "local <any>/0", or 0 */
};

static void visit_route(const struct nlmsghdr *h, void *ctx)
{
	struct route_search *s = ctx;
	const struct rtmsg *r = NLMSG_DATA(h);
	int len = (int)h->nlmsg_len - (int)NLMSG_LENGTH(sizeof(*r));

	if (h->nlmsg_type != RTM_NEWROUTE || len < 0 || r->rtm_type != RTN_LOCAL ||
	    r->rtm_dst_len != 0)
		return;
	unsigned id = attr_table(RTM_RTA(r), len, r->rtm_table);
	for (size_t i = 0; i < s->tables->n; i++)
		if (s->tables->ids[i] == id)
			s->found = id;
}

/* The table (> 0) a rule leads to that routes every address locally, or 0. */
static unsigned find_local_table(int family)
{
	struct tables t = {.n = 0};
	struct route_search s = {.tables = &t};

	if (nl_dump(RTM_GETRULE, family, visit_rule, &t) != 0 || t.n == 0)
		return 0;
	if (nl_dump(RTM_GETROUTE, family, visit_route, &s) != 0)
		return 0;
	return s.found;
}

/* Which families transparent services need, and one rule selector per backend. */
struct need {
	bool family[2]; /* [0] IPv4, [1] IPv6 */
	char rules[32][96];
	size_t nrules;
};

static void add_rule(struct need *n, const char *rule)
{
	for (size_t i = 0; i < n->nrules; i++)
		if (strcmp(n->rules[i], rule) == 0)
			return;
	if (n->nrules < sizeof(n->rules) / sizeof(n->rules[0]))
		snprintf(n->rules[n->nrules++], sizeof(n->rules[0]), "%s", rule);
}

static void needs_of(const struct npd_config *cfg, struct need *n)
{
	memset(n, 0, sizeof(*n));
	for (size_t i = 0; i < cfg->nservices; i++) {
		const struct npd_service *s = &cfg->services[i];
		char ip[INET6_ADDRSTRLEN], rule[96];

		if (!s->transparent)
			continue;
		if (s->addr.ss_family == AF_INET) {
			const struct sockaddr_in *in = (const struct sockaddr_in *)&s->addr;
			inet_ntop(AF_INET, &in->sin_addr, ip, sizeof(ip));
			n->family[0] = true;
			/* Replies from a local backend are "from" it and "iif lo". */
			if ((ntohl(in->sin_addr.s_addr) >> 24) == 127)
				snprintf(rule, sizeof(rule), "ip rule add from 127.0.0.0/8 iif lo table %d",
					 NPD_ROUTING_TABLE);
			else
				snprintf(rule, sizeof(rule), "ip rule add from %s table %d", ip,
					 NPD_ROUTING_TABLE);
		} else {
			const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&s->addr;
			inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof(ip));
			bool mapped = IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr);
			n->family[mapped ? 0 : 1] = true;
			if (IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr))
				snprintf(rule, sizeof(rule), "ip -6 rule add from ::1/128 iif lo table %d",
					 NPD_ROUTING_TABLE);
			else if (mapped)
				snprintf(rule, sizeof(rule), "ip rule add from %s table %d", ip + 7,
					 NPD_ROUTING_TABLE);
			else
				snprintf(rule, sizeof(rule), "ip -6 rule add from %s table %d", ip,
					 NPD_ROUTING_TABLE);
		}
		add_rule(n, rule);
	}
}

static const char *const route_cmds[2] = {
	"ip route add local 0.0.0.0/0 dev lo table 7001",
	"ip -6 route add local ::/0 dev lo table 7001",
};

_Static_assert(NPD_ROUTING_TABLE == 7001, "route_cmds spell the table out");

/* The commands still missing for family f (0 IPv4, 1 IPv6), written to out. */
static bool check_family(const struct need *n, int f, FILE *out)
{
	if (!n->family[f] || find_local_table(f ? AF_INET6 : AF_INET))
		return true;
	if (out) {
		for (size_t i = 0; i < n->nrules; i++)
			if ((strncmp(n->rules[i], "ip -6 ", 6) == 0) == (f == 1))
				fprintf(out, "%s\n", n->rules[i]);
		fprintf(out, "%s\n", route_cmds[f]);
	}
	return false;
}

bool npd_routing_check(const struct npd_config *cfg, FILE *out)
{
	struct need n;

	needs_of(cfg, &n);
	bool v4 = check_family(&n, 0, out);
	bool v6 = check_family(&n, 1, out);
	return v4 && v6;
}

/* Run one "ip ..." command line (words separated by single spaces). */
static int run(const char *cmd)
{
	char copy[128], *argv[16], *save;
	int argc = 0, status;

	snprintf(copy, sizeof(copy), "%s", cmd);
	for (char *w = strtok_r(copy, " ", &save); w && argc < 15; w = strtok_r(NULL, " ", &save))
		argv[argc++] = w;
	argv[argc] = NULL;
	fprintf(stderr, "netproxyd: %s\n", cmd);
	pid_t pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		execvp(argv[0], argv);
		fprintf(stderr, "netproxyd: %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return -1;
	return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
}

int npd_routing_setup(const struct npd_config *cfg)
{
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);
	int r = 0;

	if (!f)
		return -1;
	bool ok = npd_routing_check(cfg, f);
	fclose(f);
	if (ok) {
		fprintf(stderr, "netproxyd: the routing for transparent delivery is in place\n");
		free(text);
		return 0;
	}
	char *save;
	for (char *line = strtok_r(text, "\n", &save); line && r == 0;
	     line = strtok_r(NULL, "\n", &save))
		r = run(line);
	free(text);
	if (r == 0 && !npd_routing_check(cfg, NULL)) {
		fprintf(stderr, "netproxyd: the commands ran, but the routing is still not found\n");
		r = -1;
	}
	return r;
}
