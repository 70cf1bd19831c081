/*
 * loopback.h - what the tests of the exact header read (test_recv.c,
 * test_try_recv.c) share: a TCP listener on 127.0.0.1, connections to it
 * whose every send() is a segment, and a monotonic clock in milliseconds.
 *
 * TCP rather than socketpair(), because segmentation is the point: a header
 * must be read exactly whatever pieces it arrives in. Header-only, like
 * tap.h: each test is one program from one .c file.
 */
#ifndef NP_LOOPBACK_H
#define NP_LOOPBACK_H

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int loopback_listener = -1;
static struct sockaddr_in loopback_addr;

static inline long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Listen on 127.0.0.1, on a port the kernel picks; 0 or -1. */
static inline int loopback_listen(void)
{
	socklen_t len = sizeof(loopback_addr);

	loopback_listener = socket(AF_INET, SOCK_STREAM, 0);
	if (loopback_listener < 0)
		return -1;
	memset(&loopback_addr, 0, sizeof(loopback_addr));
	loopback_addr.sin_family = AF_INET;
	loopback_addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(loopback_listener, (struct sockaddr *)&loopback_addr, sizeof(loopback_addr)) != 0 ||
	    listen(loopback_listener, 8) != 0 ||
	    getsockname(loopback_listener, (struct sockaddr *)&loopback_addr, &len) != 0)
		return -1;
	return 0;
}

/*
 * A connection to the listener: *writer sends (TCP_NODELAY, so each send is
 * a segment), *reader, the accepted end, reads, non-blocking if asked.
 * 0, or -1 with neither left open.
 */
static inline int loopback_connect(int *writer, int *reader, int nonblocking)
{
	int one = 1;

	*writer = socket(AF_INET, SOCK_STREAM, 0);
	if (*writer < 0)
		return -1;
	setsockopt(*writer, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(*writer, (struct sockaddr *)&loopback_addr, sizeof(loopback_addr)) != 0) {
		close(*writer);
		return -1;
	}
	*reader = accept(loopback_listener, NULL, NULL);
	if (*reader < 0) {
		close(*writer);
		return -1;
	}
	if (nonblocking)
		fcntl(*reader, F_SETFL, fcntl(*reader, F_GETFL) | O_NONBLOCK);
	return 0;
}

#endif /* NP_LOOPBACK_H */
