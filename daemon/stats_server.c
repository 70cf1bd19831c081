/*
 * stats_server.c - the stats listener's thread: accept, read one request
 * within its size cap and deadline, answer it, close. poll() over a few
 * clients; the answers are built in memory and written as the client reads.
 */
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "conn.h"
#include "log.h"
#include "stats_render.h"
#include "stats_server.h"
#include "stats_snapshot.h"
#include "loop.h"

struct client {
	int fd;
	int64_t deadline;
	int64_t accepted; /* which is oldest */
	char peer[64];
	size_t len;
	char req[NPD_STATS_REQUEST_MAX + 1];
	char *resp; /* the whole answer once known; NULL while reading */
	size_t resp_len, off;
	/*
	 * The answer is sent and our side shut: what the client still sends
	 * is read and discarded until its close, as nginx's lingering close,
	 * because closing with unread bytes makes the kernel send a reset that
	 * discards the answer's tail still in flight.
	 */
	bool linger;
	size_t discarded;
};

struct npd_stats_server {
	pthread_t thread;
	int fd, stopfd;
	char where[NPD_ADDR_TEXT];
	struct npd_worker *workers;
	int nworkers;
	struct client clients[NPD_STATS_CLIENTS];
	int64_t accepts; /* counts accepts, to find the oldest client */
	int64_t log_until; /* rate limit of the lines about clients, as the workers' rejections */
	unsigned unlogged;
};

int npd_stats_listen(const struct npd_target *t, char *why, size_t cap)
{
	int one = 1;
	int fd = socket(t->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	if (fd < 0) {
		snprintf(why, cap, "stats_listen %s: %s", t->text, strerror(errno));
		return -1;
	}
	if (t->addr.ss_family == AF_UNIX) {
		const char *path = ((const struct sockaddr_un *)&t->addr)->sun_path;
		struct stat st;
		/*
		 * A socket file left by an earlier run would make bind() fail;
		 * anything else at the path is not ours to remove.
		 */
		if (lstat(path, &st) == 0) {
			if (!S_ISSOCK(st.st_mode)) {
				snprintf(why, cap, "stats_listen %s: the path exists and is not a socket",
					 t->text);
				close(fd);
				return -1;
			}
			unlink(path);
		}
	} else {
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	}
	if (bind(fd, (const struct sockaddr *)&t->addr, t->addrlen) != 0 || listen(fd, 64) != 0) {
		snprintf(why, cap, "stats_listen %s: %s", t->text, strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

/*
 * A stats client's trouble: a burst of ten lines, then one a second at most,
 * with the count of those left out, so that a flood of bad clients cannot
 * flood the log.
 */
__attribute__((format(printf, 3, 4))) static void log_client(struct npd_stats_server *s,
							      const struct client *c,
							      const char *fmt, ...)
{
	char what[256];
	va_list ap;
	int64_t now = npd_now_ms();

	if (now < s->log_until - 9000) {
		s->unlogged++;
		return;
	}
	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	if (s->unlogged)
		npd_log(NPD_LOG_WARN, "stats %s: client %s: %s (and %u more not logged)", s->where,
			c->peer, what, s->unlogged);
	else
		npd_log(NPD_LOG_WARN, "stats %s: client %s: %s", s->where, c->peer, what);
	s->unlogged = 0;
	s->log_until = (s->log_until > now ? s->log_until : now) + 1000;
	if (s->log_until > now + 10000)
		s->log_until = now + 10000;
}

static void drop(struct client *c)
{
	close(c->fd);
	free(c->resp);
	c->fd = -1;
	c->resp = NULL;
	c->linger = false;
}

/* Set c's answer: status line, headers, and body unless the request was HEAD. */
static void answer(struct client *c, const char *status, const char *type, const char *extra,
		   const char *body, size_t len, bool head)
{
	char *text = NULL;
	size_t size = 0;
	FILE *f = open_memstream(&text, &size);

	if (!f) {
		drop(c);
		return;
	}
	fprintf(f, "HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%sConnection: close\r\n\r\n",
		status, type, len, extra ? extra : "");
	if (!head)
		fwrite(body, 1, len, f);
	if (fclose(f) != 0) {
		free(text);
		drop(c);
		return;
	}
	c->resp = text;
	c->resp_len = size;
	c->off = 0;
}

static void answer_text(struct client *c, const char *status, const char *body, bool head)
{
	answer(c, status, "text/plain; charset=utf-8", NULL, body, strlen(body), head);
}

/* ?limit=N in query, or the default; 0 when it is not a number in range. */
static size_t limit_of(const char *query)
{
	const char *p = query ? strstr(query, "limit=") : NULL;

	if (!p)
		return NPD_CONNECTIONS_LIMIT;
	if (p != query && p[-1] != '&')
		return NPD_CONNECTIONS_LIMIT;
	char *end;
	errno = 0;
	unsigned long v = strtoul(p + 6, &end, 10);
	if (end == p + 6 || (*end && *end != '&') || errno || v < 1 || v > NPD_CONNECTIONS_LIMIT_MAX)
		return 0;
	return v;
}

static void serve_connections(struct npd_stats_server *s, struct client *c, bool json,
			      const char *query, bool head)
{
	struct npd_connections_view v = {.limit = limit_of(query)};
	struct npd_conn_info *list;
	char *body = NULL;
	size_t len = 0;

	if (v.limit == 0) {
		answer_text(c, "400 Bad Request", "limit: expected a number from 1 to 10000\n", head);
		return;
	}
	long n = npd_snapshot_take(s->workers, s->nworkers, v.limit, &list, &v.total, &v.missing);
	v.now_ms = npd_now_ms();
	FILE *f = n < 0 ? NULL : open_memstream(&body, &len);
	if (!f) {
		free(list);
		answer_text(c, "503 Service Unavailable", "out of memory\n", head);
		return;
	}
	npd_connections_render(f, json, list, (size_t)n, &v);
	free(list);
	if (fclose(f) != 0) {
		free(body);
		answer_text(c, "503 Service Unavailable", "out of memory\n", head);
		return;
	}
	answer(c, "200 OK", json ? "application/json" : "text/plain; charset=utf-8", NULL, body, len,
	       head);
	free(body);
}

static void serve_metrics(struct npd_stats_server *s, struct client *c, bool head)
{
	char *body = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&body, &len);

	if (!f) {
		answer_text(c, "503 Service Unavailable", "out of memory\n", head);
		return;
	}
	npd_stats_render(f, s->workers, s->nworkers);
	if (fclose(f) != 0) {
		free(body);
		answer_text(c, "503 Service Unavailable", "out of memory\n", head);
		return;
	}
	answer(c, "200 OK", "text/plain; version=0.0.4; charset=utf-8", NULL, body, len, head);
	free(body);
}

/* The request is complete in c->req: its first line says what to send. */
static void serve(struct npd_stats_server *s, struct client *c)
{
	char *line = c->req, *eol = strpbrk(line, "\r\n");
	char *method, *target, *version, *save;

	*eol = '\0';
	method = strtok_r(line, " ", &save);
	target = method ? strtok_r(NULL, " ", &save) : NULL;
	version = target ? strtok_r(NULL, " ", &save) : NULL;
	if (!version || strtok_r(NULL, " ", &save) || strncmp(version, "HTTP/1.", 7) != 0 ||
	    target[0] != '/') {
		log_client(s, c, "not an HTTP/1.x request line");
		answer_text(c, "400 Bad Request", "expected an HTTP/1.x request line\n", false);
		return;
	}
	bool head = strcmp(method, "HEAD") == 0;
	if (!head && strcmp(method, "GET") != 0) {
		answer(c, "405 Method Not Allowed", "text/plain; charset=utf-8", "Allow: GET, HEAD\r\n",
		       "only GET and HEAD\n", 18, false);
		return;
	}
	char *query = strchr(target, '?');
	if (query)
		*query++ = '\0';
	if (strcmp(target, "/metrics") == 0)
		serve_metrics(s, c, head);
	else if (strcmp(target, "/connections") == 0)
		serve_connections(s, c, false, query, head);
	else if (strcmp(target, "/connections.json") == 0)
		serve_connections(s, c, true, query, head);
	else if (strcmp(target, "/") == 0)
		answer_text(c, "200 OK",
			    "netproxyd\n/metrics           counters, Prometheus text format\n"
			    "/connections       live connections, one a line (?limit=N, default 1000)\n"
			    "/connections.json  the same as JSON\n",
			    head);
	else
		answer_text(c, "404 Not Found", "no such page: try /metrics or /connections\n", head);
}

static void readable(struct npd_stats_server *s, struct client *c)
{
	ssize_t n = recv(c->fd, c->req + c->len, NPD_STATS_REQUEST_MAX - c->len, 0);

	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) {
		if (n < 0 || c->len)
			log_client(s, c, "%s before the request was complete (%zu bytes)",
				   n < 0 ? strerror(errno) : "closed", c->len);
		drop(c);
		return;
	}
	c->len += (size_t)n;
	c->req[c->len] = '\0';
	if (memchr(c->req, '\0', c->len)) {
		log_client(s, c, "a NUL byte in the request");
		answer_text(c, "400 Bad Request", "a NUL byte in the request\n", false);
		return;
	}
	/* The headers say nothing we need: their end is the request's. */
	if (strstr(c->req, "\r\n\r\n") || strstr(c->req, "\n\n")) {
		serve(s, c);
	} else if (c->len == NPD_STATS_REQUEST_MAX) {
		log_client(s, c, "request larger than %d bytes", NPD_STATS_REQUEST_MAX);
		answer_text(c, "431 Request Header Fields Too Large", "request too large\n", false);
	}
}

static void writable(struct client *c)
{
	ssize_t n = send(c->fd, c->resp + c->off, c->resp_len - c->off, MSG_NOSIGNAL);

	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n < 0) {
		drop(c);
		return;
	}
	c->off += (size_t)n;
	if (c->off < c->resp_len)
		return;
	/* HTTP/1.0 style: the close ends the answer; our FIN follows its last byte. */
	free(c->resp);
	c->resp = NULL;
	if (shutdown(c->fd, SHUT_WR) != 0) {
		drop(c);
		return;
	}
	c->linger = true;
	c->discarded = 0;
	int64_t until = npd_now_ms() + NPD_STATS_LINGER_MS;
	if (until < c->deadline)
		c->deadline = until;
}

/* A lingering client sent more, or closed: read it away, close at its end. */
static void drain(struct client *c)
{
	char junk[4096];
	ssize_t n = recv(c->fd, junk, sizeof(junk), 0);

	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n > 0 && (c->discarded += (size_t)n) <= NPD_STATS_LINGER_BYTES)
		return;
	drop(c); /* its close, an error, or more than it may send after its answer */
}

/* Which client a new one displaces first: the lowest rank, then the oldest. */
static int rank(const struct client *c)
{
	return c->linger ? 0 : c->resp ? 2 : 1;
}

static void accept_client(struct npd_stats_server *s)
{
	union npd_sockaddr peer;
	socklen_t plen = sizeof(peer);
	int fd = accept4(s->fd, &peer.sa, &plen, SOCK_NONBLOCK | SOCK_CLOEXEC);
	struct client *slot = NULL, *oldest = NULL;

	if (fd < 0)
		return; /* EAGAIN, a client gone, or out of descriptors: the next poll tries again */
	/*
	 * No free slot: the oldest of those who have had their answer goes
	 * first, then of those who have not sent a complete request, and only
	 * then of those being answered, so that a flood of connections that
	 * say nothing cannot cut a scrape in the middle of its answer.
	 */
	for (int i = 0; i < NPD_STATS_CLIENTS && !slot; i++) {
		struct client *c = &s->clients[i];
		if (c->fd < 0)
			slot = c;
		else if (!oldest || rank(c) < rank(oldest) ||
			 (rank(c) == rank(oldest) && c->accepted < oldest->accepted))
			oldest = c;
	}
	if (!slot) {
		if (!oldest->linger)
			log_client(s, oldest, "dropped: %d stats clients at once, and a new one came",
				   NPD_STATS_CLIENTS);
		drop(oldest);
		slot = oldest;
	}
	slot->fd = fd;
	slot->len = 0;
	slot->resp = NULL;
	slot->accepted = s->accepts++;
	slot->deadline = npd_now_ms() + NPD_STATS_CLIENT_MS;
	if (peer.sa.sa_family == AF_UNIX)
		snprintf(slot->peer, sizeof(slot->peer), "(unix socket)");
	else
		npd_sockaddr_text(&peer, slot->peer, sizeof(slot->peer));
}

static void *server_main(void *arg)
{
	struct npd_stats_server *s = arg;
	struct pollfd pfd[2 + NPD_STATS_CLIENTS];
	struct client *of[2 + NPD_STATS_CLIENTS];

	npd_log(NPD_LOG_INFO, "stats: serving /metrics and /connections on %s", s->where);
	for (;;) {
		int64_t now = npd_now_ms(), first = -1;
		nfds_t n = 0;

		pfd[n++] = (struct pollfd){.fd = s->stopfd, .events = POLLIN};
		pfd[n++] = (struct pollfd){.fd = s->fd, .events = POLLIN};
		for (int i = 0; i < NPD_STATS_CLIENTS; i++) {
			struct client *c = &s->clients[i];
			if (c->fd < 0)
				continue;
			if (now >= c->deadline) {
				if (!c->linger)
					log_client(s, c, "%s within %d ms: closed",
						   c->resp ? "did not read the answer"
							   : "no complete request",
						   NPD_STATS_CLIENT_MS);
				drop(c);
				continue;
			}
			if (first < 0 || c->deadline < first)
				first = c->deadline;
			of[n] = c;
			pfd[n++] = (struct pollfd){.fd = c->fd, .events = c->resp ? POLLOUT : POLLIN};
		}
		int r = poll(pfd, n, first < 0 ? -1 : (int)(first - now));
		if (r < 0 && errno != EINTR) {
			npd_log(NPD_LOG_ERROR, "stats %s: poll: %s", s->where, strerror(errno));
			break;
		}
		if (r <= 0)
			continue;
		if (pfd[0].revents)
			break;
		for (nfds_t i = 2; i < n; i++) {
			struct client *c = of[i];
			if (!pfd[i].revents || c->fd < 0)
				continue;
			if (c->linger)
				drain(c);
			else if (c->resp)
				writable(c);
			else
				readable(s, c);
			/* Answered at once: the socket is usually writable, no need to poll first. */
			if (c->fd >= 0 && c->resp && c->off == 0 && !c->linger)
				writable(c);
		}
		if (pfd[1].revents)
			accept_client(s);
	}
	return NULL;
}

struct npd_stats_server *npd_stats_server_start(int fd, const char *where,
						struct npd_worker *workers, int nworkers)
{
	struct npd_stats_server *s = calloc(1, sizeof(*s));

	if (!s) {
		npd_log(NPD_LOG_ERROR, "stats %s: out of memory", where);
		close(fd);
		return NULL;
	}
	s->fd = fd;
	snprintf(s->where, sizeof(s->where), "%s", where);
	s->workers = workers;
	s->nworkers = nworkers;
	for (int i = 0; i < NPD_STATS_CLIENTS; i++)
		s->clients[i].fd = -1;
	s->stopfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	int err = s->stopfd < 0 ? errno : pthread_create(&s->thread, NULL, server_main, s);
	if (err) {
		npd_log(NPD_LOG_ERROR, "stats %s: cannot start its thread: %s", where, strerror(err));
		if (s->stopfd >= 0)
			close(s->stopfd);
		close(fd);
		free(s);
		return NULL;
	}
	return s;
}

void npd_stats_server_stop(struct npd_stats_server *s)
{
	uint64_t one = 1;

	if (!s)
		return;
	ssize_t n = write(s->stopfd, &one, sizeof(one));
	(void)n;
	pthread_join(s->thread, NULL);
	for (int i = 0; i < NPD_STATS_CLIENTS; i++)
		if (s->clients[i].fd >= 0)
			drop(&s->clients[i]);
	close(s->stopfd);
	close(s->fd);
	free(s);
}
