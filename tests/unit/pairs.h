/*
 * pairs.h - connected socket pairs for the daemon's unit tests: a TCP pair
 * on loopback, both ends non-blocking, the first end the daemon's and the
 * second its peer's.
 */
#ifndef NP_PAIRS_H
#define NP_PAIRS_H

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tap.h"

static inline void nonblocking(int fd)
{
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

/* Socket buffers of size bytes each way (beyond the sysctl limits when privileged). */
static inline void buffers_of(int fd, int size)
{
	if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof(size)) != 0)
		setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof(size));
	if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &size, sizeof(size)) != 0)
		setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof(size));
}

/* Large socket buffers, so that several turns' worth of data can wait in them. */
static inline void big_buffers(int fd)
{
	buffers_of(fd, 8 << 20);
}

/*
 * A connected TCP pair on loopback, both ends non-blocking: fds[0] ours,
 * fds[1] the peer's. buf_size > 0 sets both ends' buffers to it, before
 * the connect (a receive window is agreed then); 0 makes them large.
 */
static inline int tcp_pair_sized(int fds[2], int buf_size)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(a);
	int l = socket(AF_INET, SOCK_STREAM, 0);

	fds[0] = fds[1] = -1;
	if (l < 0)
		goto fail;
	if (buf_size > 0)
		buffers_of(l, buf_size); /* the accepted socket inherits them */
	else
		big_buffers(l);
	if (bind(l, (struct sockaddr *)&a, sizeof(a)) != 0 || listen(l, 1) != 0 ||
	    getsockname(l, (struct sockaddr *)&a, &len) != 0)
		goto fail;
	fds[1] = socket(AF_INET, SOCK_STREAM, 0);
	if (fds[1] < 0)
		goto fail;
	if (buf_size > 0)
		buffers_of(fds[1], buf_size);
	else
		big_buffers(fds[1]);
	if (connect(fds[1], (struct sockaddr *)&a, sizeof(a)) != 0)
		goto fail;
	fds[0] = accept(l, NULL, NULL);
	if (fds[0] < 0)
		goto fail;
	nonblocking(fds[0]);
	nonblocking(fds[1]);
	close(l);
	return 0;
fail:
	diag("tcp_pair: %s", strerror(errno));
	if (l >= 0)
		close(l);
	if (fds[1] >= 0)
		close(fds[1]);
	return -1;
}

static inline int tcp_pair(int fds[2])
{
	return tcp_pair_sized(fds, 0);
}

/* The test pattern's byte at offset i of a stream: 251 is prime, so no power-of-two chunk repeats it. */
static inline uint8_t pattern_byte(uint64_t i)
{
	return (uint8_t)(i % 251);
}

/* Write the pattern from *sent on into fd until it takes no more or cap in all. */
static inline void pattern_fill(int fd, uint64_t *sent, uint64_t cap)
{
	static uint8_t chunk[65536];

	while (*sent < cap) {
		size_t n = cap - *sent < sizeof(chunk) ? (size_t)(cap - *sent) : sizeof(chunk);
		for (size_t i = 0; i < n; i++)
			chunk[i] = pattern_byte(*sent + i);
		ssize_t r = send(fd, chunk, n, MSG_NOSIGNAL);
		if (r <= 0)
			return;
		*sent += (uint64_t)r;
	}
}

/* Read what fd has, checking the pattern from *got on; false on a wrong byte. */
static inline bool pattern_drain(int fd, uint64_t *got)
{
	static uint8_t chunk[65536];
	ssize_t r;

	while ((r = recv(fd, chunk, sizeof(chunk), 0)) > 0) {
		for (ssize_t i = 0; i < r; i++)
			if (chunk[i] != pattern_byte(*got + (uint64_t)i))
				return false;
		*got += (uint64_t)r;
	}
	return true;
}

#endif /* NP_PAIRS_H */
