/*
 * accept_latency.c - how long accept() takes for connections already waiting
 * with their PROXY header: run once plainly and once under the preload shim,
 * the difference is what the shim adds to each accept.
 *
 *   accept-latency -p PORT [-n CONNS] [-b BATCHES]
 *   LD_PRELOAD=libnetproxy_preload.so NETPROXY_PORTS=PORT accept-latency -p PORT ...
 *
 * It listens on 127.0.0.1:PORT (blocking, as a simple server does). Each
 * batch connects CONNS clients from this same process, each sending at once
 * a v2 header that claims the source 127.0.0.9 and the client's own port,
 * waits a moment so every header is in its socket's queue, then accepts them
 * one by one, timing each accept() alone with the monotonic clock. Closing
 * and connecting are not timed.
 *
 * The claimed source tells whether the shim was at work: accept() reports it
 * under the shim, the real 127.0.0.1 without. The result is one JSON line:
 * accepts timed, how many reported the claimed address, and min, median,
 * mean and p99 of the accept times in nanoseconds.
 *
 * Exit status: 0 measured, 1 a system call failed (named on standard error),
 * 64 usage error.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "netproxy.h"

#define MAX_CONNS 4000
#define MAX_BATCHES 1000
#define CLAIMED_SOURCE "127.0.0.9"

static int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int fail(const char *what)
{
	fprintf(stderr, "accept-latency: %s: %s\n", what, strerror(errno));
	return 1;
}

static int compare_ns(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return (x > y) - (x < y);
}

/* Connect one client and send its header; the socket, or -1 with errno set. */
static int client(const struct sockaddr_in *server)
{
	struct sockaddr_in self;
	socklen_t len = sizeof(self);
	struct np_header h;
	uint8_t header[64];
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -1;
	memset(&self, 0, sizeof(self));
	if (connect(fd, (const struct sockaddr *)server, sizeof(*server)) != 0 ||
	    getsockname(fd, (struct sockaddr *)&self, &len) != 0)
		goto failed;
	inet_pton(AF_INET, CLAIMED_SOURCE, &self.sin_addr);
	if (np_header_from_sockaddr(&h, (struct sockaddr *)&self, (const struct sockaddr *)server) != 0)
		goto failed;
	int n = np_build_v2(header, sizeof(header), &h, NULL, 0, 0);
	if (n < 0 || send(fd, header, (size_t)n, MSG_NOSIGNAL) != n)
		goto failed;
	return fd;
failed:
	close(fd);
	return -1;
}

int main(int argc, char **argv)
{
	long port = 0, conns = 500, batches = 40;
	int c;

	while ((c = getopt(argc, argv, "p:n:b:")) != -1) {
		char *end;
		long v = strtol(optarg, &end, 10);
		if (*end || v < 1 || (c == 'p' && v > 65535) || (c == 'n' && v > MAX_CONNS) ||
		    (c == 'b' && v > MAX_BATCHES)) {
			fprintf(stderr, "accept-latency: -%c: out of range: '%s'\n", c, optarg);
			return 64;
		}
		if (c == 'p')
			port = v;
		else if (c == 'n')
			conns = v;
		else if (c == 'b')
			batches = v;
		else
			return 64;
	}
	if (port == 0 || optind != argc) {
		fputs("usage: accept-latency -p PORT [-n CONNS] [-b BATCHES]\n", stderr);
		return 64;
	}

	struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
	int one = 1, lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (lfd < 0 || setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
	    bind(lfd, (struct sockaddr *)&addr, sizeof(addr)) != 0 || listen(lfd, MAX_CONNS) != 0)
		return fail("listen on 127.0.0.1");

	int *clients = calloc((size_t)conns, sizeof(int));
	int64_t *took = calloc((size_t)(conns * batches), sizeof(int64_t));
	if (!clients || !took)
		return fail("calloc");
	long timed = 0, claimed = 0;
	struct in_addr claim;
	inet_pton(AF_INET, CLAIMED_SOURCE, &claim);
	for (long b = 0; b < batches; b++) {
		for (long i = 0; i < conns; i++)
			if ((clients[i] = client(&addr)) < 0)
				return fail("connect and send the header");
		/* Loopback delivers within the send; the pause only makes it certain. */
		struct timespec pause = {.tv_nsec = 20 * 1000000};
		nanosleep(&pause, NULL);
		for (long i = 0; i < conns; i++) {
			struct sockaddr_in peer;
			socklen_t len = sizeof(peer);
			int64_t t0 = now_ns();
			int fd = accept(lfd, (struct sockaddr *)&peer, &len);
			int64_t t1 = now_ns();
			if (fd < 0)
				return fail("accept");
			took[timed++] = t1 - t0;
			claimed += peer.sin_addr.s_addr == claim.s_addr;
			close(fd);
		}
		for (long i = 0; i < conns; i++)
			close(clients[i]);
	}
	qsort(took, (size_t)timed, sizeof(took[0]), compare_ns);
	double sum = 0;
	for (long i = 0; i < timed; i++)
		sum += (double)took[i];
	printf("{\"accepts\":%ld,\"claimed_source_seen\":%ld,\"min_ns\":%lld,\"median_ns\":%lld,"
	       "\"mean_ns\":%.1f,\"p99_ns\":%lld}\n",
	       timed, claimed, (long long)took[0], (long long)took[timed / 2], sum / (double)timed,
	       (long long)took[timed * 99 / 100]);
	free(took);
	free(clients);
	close(lfd);
	return 0;
}
