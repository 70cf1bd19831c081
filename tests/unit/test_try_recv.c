/*
 * test_try_recv.c - np_try_recv_header(), the non-blocking exact read, over
 * loopback TCP and AF_UNIX socket pairs; and np_recv_header(), the loop over
 * it, where np_try_recv_header() alone cannot show what it does (waiting
 * without spinning).
 *
 * What each attempt leaves in the socket is measured with FIONREAD: an
 * incomplete header or a refused one leaves every byte, a complete one takes
 * exactly its own. Before each attempt the test waits (bounded) until the
 * bytes sent are all queued at the receiver, so that loopback's delivery
 * never decides a result. An alarm ends the program if something hangs.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "netproxy.h"
#include "tap.h"
#include "loopback.h"

/* A pair: p[1] writes, p[0] reads. TCP on loopback (TCP_NODELAY) or AF_UNIX. */
static int make_pair(int p[2], int tcp, int nonblocking)
{
	if (!tcp) {
		if (socketpair(AF_UNIX, SOCK_STREAM, 0, p) != 0)
			return ok(0, "socketpair"), -1;
	} else if (loopback_connect(&p[1], &p[0], 0) != 0) {
		return ok(0, "loopback connection"), -1;
	}
	if (nonblocking)
		fcntl(p[0], F_SETFL, fcntl(p[0], F_GETFL) | O_NONBLOCK);
	return 0;
}

static void close_pair(int p[2])
{
	close(p[0]);
	close(p[1]);
}

/* Bytes queued for reading on fd. */
static int queued(int fd)
{
	int n = -1;

	return ioctl(fd, FIONREAD, &n) == 0 ? n : -1;
}

/* Wait (at most 2 s) until fd has n bytes queued; returns whether it did. */
static int wait_queued(int fd, int n)
{
	long long end = now_ms() + 2000;

	while (queued(fd) < n && now_ms() < end)
		poll(NULL, 0, 1);
	return queued(fd) == n;
}

static int send_all(int fd, const void *p, size_t n)
{
	return send(fd, p, n, MSG_NOSIGNAL) == (ssize_t)n;
}

static int rcvlowat(int fd)
{
	int v = -1;
	socklen_t len = sizeof(v);

	return getsockopt(fd, SOL_SOCKET, SO_RCVLOWAT, &v, &len) == 0 ? v : -1;
}

static const char v1_line[] = "PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n"; /* 47 bytes */
static uint8_t v2_hdr[512];
static int v2_len;
static uint8_t msg[1024], buf[1024], rest[1024];

/* A v2 PROXY header for 192.0.2.7:50000 -> 198.51.100.1:5222 with an AUTHORITY TLV. */
static int make_v2(void)
{
	static const char name[] = "xmpp.example";
	struct np_header h = {.version = 2, .command = NP_CMD_PROXY, .family = NP_AF_INET,
			      .transport = NP_TRANSPORT_STREAM};
	struct np_tlv t = {.type = NP_TLV_AUTHORITY, .len = sizeof(name) - 1, .value = (const uint8_t *)name};

	memcpy(h.src.ip4, (uint8_t[]){192, 0, 2, 7}, 4);
	memcpy(h.dst.ip4, (uint8_t[]){198, 51, 100, 1}, 4);
	h.src.port = 50000;
	h.dst.port = 5222;
	return v2_len = np_build_v2(v2_hdr, sizeof(v2_hdr), &h, &t, 1, NP_BUILD_CRC32C);
}

static int v2_ok(const struct np_header *h)
{
	struct np_tlv t;

	return h->version == 2 && h->command == NP_CMD_PROXY && h->family == NP_AF_INET &&
	       memcmp(h->src.ip4, (uint8_t[]){192, 0, 2, 7}, 4) == 0 && h->src.port == 50000 &&
	       h->dst.port == 5222 && np_tlv_find(h, NP_TLV_AUTHORITY, &t) == 1 && t.len == 12 &&
	       memcmp(t.value, "xmpp.example", 12) == 0 && t.value >= buf && t.value < buf + sizeof(buf);
}

/* What follows the header must come out whole: read it all (bounded). */
static int rest_is(int fd, const char *want)
{
	size_t n = strlen(want), got = 0;
	long long end = now_ms() + 2000;

	while (got < n && now_ms() < end) {
		ssize_t r = recv(fd, rest + got, sizeof(rest) - got, MSG_DONTWAIT);
		if (r > 0)
			got += (size_t)r;
		else if (r == 0)
			break;
		else
			poll(NULL, 0, 1);
	}
	return got == n && memcmp(rest, want, n) == 0;
}

/*
 * The header sent one byte at a time: every attempt before the last byte is
 * NP_EAGAIN and leaves all bytes queued (on TCP with SO_RCVLOWAT one above
 * them, and the socket not readable); the last takes exactly the header,
 * with the application data sent in the same write as that byte left.
 */
static void test_byte_by_byte(const char *name, const uint8_t *hdr, size_t hlen, int tcp)
{
	struct np_header h;
	int p[2], eagain_all = 1, kept_all = 1, lowat_all = 1, quiet_all = 1, r = 0;

	if (make_pair(p, tcp, 1) != 0)
		return;
	for (size_t i = 0; i + 1 < hlen; i++) {
		if (!send_all(p[1], hdr + i, 1) || !wait_queued(p[0], (int)i + 1)) {
			ok(0, "%s: byte %zu arrives", name, i);
			close_pair(p);
			return;
		}
		r = np_try_recv_header(p[0], buf, sizeof(buf), &h);
		eagain_all &= r == NP_EAGAIN;
		kept_all &= queued(p[0]) == (int)i + 1;
		if (tcp) {
			struct pollfd pfd = {.fd = p[0], .events = POLLIN};

			lowat_all &= rcvlowat(p[0]) == (int)i + 2;
			quiet_all &= poll(&pfd, 1, 0) == 0;
		}
	}
	ok(eagain_all, "%s: NP_EAGAIN after each of the first %zu bytes", name, hlen - 1);
	ok(kept_all, "%s: nothing consumed while incomplete", name);
	if (tcp) {
		ok(lowat_all, "%s: SO_RCVLOWAT one above the bytes seen", name);
		ok(quiet_all, "%s: poll() does not report the bytes already seen", name);
	}
	memcpy(msg, hdr + hlen - 1, 1);
	memcpy(msg + 1, "HELLO", 5);
	send_all(p[1], msg, 6);
	wait_queued(p[0], (int)hlen + 5);
	r = np_try_recv_header(p[0], buf, sizeof(buf), &h);
	ok(r == (int)hlen, "%s: the last byte completes it (%d)", name, r);
	ok(queued(p[0]) == 5, "%s: exactly the header consumed", name);
	if (tcp)
		ok(rcvlowat(p[0]) == 1, "%s: SO_RCVLOWAT back to 1", name);
	if (hdr[0] == '\r')
		ok(v2_ok(&h), "%s: fields and TLV (pointing into buf)", name);
	ok(rest_is(p[0], "HELLO"), "%s: then exactly \"HELLO\"", name);
	close_pair(p);
}

/* Header and data in one write: one attempt takes the header and only it. */
static void test_one_write(int tcp)
{
	const char *fam = tcp ? "TCP" : "AF_UNIX";
	struct np_header h;
	int p[2], r;

	if (make_pair(p, tcp, 0) != 0) /* a blocking socket: the attempt must not block */
		return;
	memcpy(msg, v2_hdr, (size_t)v2_len);
	memcpy(msg + v2_len, v1_line, sizeof(v1_line) - 1); /* data that looks like a header */
	memcpy(msg + v2_len + sizeof(v1_line) - 1, "HELLO", 5);
	send_all(p[1], msg, (size_t)v2_len + sizeof(v1_line) - 1 + 5);
	wait_queued(p[0], v2_len + (int)sizeof(v1_line) - 1 + 5);
	r = np_try_recv_header(p[0], buf, sizeof(buf), &h);
	ok(r == v2_len && v2_ok(&h), "%s: v2 then more in one write: the v2 header (%d)", fam, r);
	r = np_try_recv_header(p[0], buf, sizeof(buf), &h);
	ok(r == (int)sizeof(v1_line) - 1 && h.version == 1, "%s: a second attempt takes the v1 line", fam);
	ok(rest_is(p[0], "HELLO"), "%s: then \"HELLO\"", fam);

	long long t0 = now_ms();
	r = np_try_recv_header(p[0], buf, sizeof(buf), &h);
	ok(r == NP_EAGAIN && now_ms() - t0 < 100, "%s: nothing there on a blocking socket: NP_EAGAIN at once",
	   fam);
	if (tcp)
		ok(rcvlowat(p[0]) == 1, "%s: nothing seen: SO_RCVLOWAT untouched", fam);
	close_pair(p);
}

/* The peer closes: at once NP_ECLOSED, with or without part of a header. */
static void test_eof(int tcp)
{
	const char *fam = tcp ? "TCP" : "AF_UNIX";
	struct np_header h;
	int p[2], r;

	if (make_pair(p, tcp, 1) != 0)
		return;
	send_all(p[1], v2_hdr, 20);
	wait_queued(p[0], 20);
	ok(np_try_recv_header(p[0], buf, sizeof(buf), &h) == NP_EAGAIN, "%s: 20 bytes of a v2 header: NP_EAGAIN",
	   fam);
	shutdown(p[1], SHUT_WR);
	/* The FIN may trail the bytes a little on loopback. */
	long long end = now_ms() + 2000;
	do
		r = np_try_recv_header(p[0], buf, sizeof(buf), &h);
	while (r == NP_EAGAIN && now_ms() < end && poll(NULL, 0, 1) == 0);
	ok(r == NP_ECLOSED, "%s: EOF mid-header: NP_ECLOSED (%s)", fam, np_errname(r));
	ok(queued(p[0]) == 20, "%s: EOF mid-header: nothing consumed", fam);
	close_pair(p);

	if (make_pair(p, tcp, 1) != 0)
		return;
	close(p[1]);
	p[1] = -1;
	end = now_ms() + 2000;
	do
		r = np_try_recv_header(p[0], buf, sizeof(buf), &h);
	while (r == NP_EAGAIN && now_ms() < end && poll(NULL, 0, 1) == 0);
	ok(r == NP_ECLOSED, "%s: closed before a byte: NP_ECLOSED", fam);
	close(p[0]);
}

/* Caps, refusals and arguments: each leaves every byte where it was. */
static void test_refusals(void)
{
	struct np_header h;
	int p[2], r;

	if (make_pair(p, 1, 1) != 0)
		return;
	send_all(p[1], v1_line, sizeof(v1_line) - 1);
	wait_queued(p[0], (int)sizeof(v1_line) - 1);
	r = np_try_recv_header(p[0], buf, 20, &h);
	ok(r == NP_ETOOBIG, "v1 of 47 bytes, cap 20: NP_ETOOBIG (%s)", np_errname(r));
	r = np_try_recv_header(p[0], buf, 46, &h);
	ok(r == NP_ETOOBIG, "v1 of 47 bytes, cap 46: NP_ETOOBIG");
	ok(queued(p[0]) == 47, "cap smaller than the header: nothing consumed");
	r = np_try_recv_header(p[0], buf, 47, &h);
	ok(r == 47, "v1 of 47 bytes, cap 47: taken");
	close_pair(p);

	/* A v2 header announcing more than the cap: refused on its 16 fixed bytes. */
	if (make_pair(p, 1, 1) != 0)
		return;
	send_all(p[1], v2_hdr, 16);
	wait_queued(p[0], 16);
	r = np_try_recv_header(p[0], buf, (size_t)v2_len - 1, &h);
	ok(r == NP_ETOOBIG, "v2 of %d bytes, cap %d, 16 bytes in: NP_ETOOBIG at once", v2_len, v2_len - 1);
	ok(queued(p[0]) == 16, "v2 over the cap: nothing consumed");
	close_pair(p);

	/* Not a PROXY header: refused on the first byte, nothing consumed. */
	if (make_pair(p, 1, 1) != 0)
		return;
	send_all(p[1], "<?xml version='1.0'?>", 21);
	wait_queued(p[0], 21);
	r = np_try_recv_header(p[0], buf, sizeof(buf), &h);
	ok(r == NP_ENOTPROXY, "XML instead of a header: NP_ENOTPROXY");
	ok(queued(p[0]) == 21, "XML instead of a header: nothing consumed");
	close_pair(p);

	/* A v2 header whose length is short of its address block. */
	if (make_pair(p, 1, 1) != 0)
		return;
	memcpy(msg, v2_hdr, 16);
	msg[14] = 0;
	msg[15] = 4; /* INET needs 12 */
	memcpy(msg + 16, "HELLOHELLOHE", 12);
	send_all(p[1], msg, 28);
	wait_queued(p[0], 28);
	r = np_try_recv_header(p[0], buf, sizeof(buf), &h);
	ok(r == NP_ESHORT, "v2 length short of the address block: NP_ESHORT, not data read as addresses");
	ok(queued(p[0]) == 28, "NP_ESHORT: nothing consumed");

	ok(np_try_recv_header(p[0], buf, 0, &h) == NP_EINVAL, "cap 0: NP_EINVAL");
	ok(np_try_recv_header(p[0], NULL, 64, &h) == NP_EINVAL, "buf NULL: NP_EINVAL");
	ok(np_try_recv_header(p[0], buf, 64, NULL) == NP_EINVAL, "hdr NULL: NP_EINVAL");
	close_pair(p);

	int fd = socket(AF_INET, SOCK_STREAM, 0);
	close(fd);
	errno = 0;
	r = np_try_recv_header(fd, buf, sizeof(buf), &h);
	ok(r == NP_ESYS && errno == EBADF, "closed fd: NP_ESYS with errno EBADF");
}

static double cpu_seconds(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
	       ru.ru_stime.tv_usec / 1e6;
}

/*
 * np_recv_header() over a header whose second half comes 300 ms after the
 * first: it must wait, not spin. On TCP SO_RCVLOWAT makes poll() wait; on
 * AF_UNIX, which ignores it, the loop looks every 5 ms. Either way the CPU
 * spent in those 300 ms is a small part of them.
 */
static void test_wait_without_spinning(int tcp)
{
	const char *fam = tcp ? "TCP" : "AF_UNIX";
	struct np_header h;
	int p[2];

	if (make_pair(p, tcp, 1) != 0)
		return;
	fflush(stdout);
	pid_t pid = fork();
	if (pid == 0) {
		close(p[0]);
		send_all(p[1], v2_hdr, 10);
		poll(NULL, 0, 300);
		memcpy(msg, v2_hdr + 10, (size_t)v2_len - 10);
		memcpy(msg + v2_len - 10, "HELLO", 5);
		send_all(p[1], msg, (size_t)v2_len - 10 + 5);
		poll(NULL, 0, 500);
		_exit(0);
	}
	close(p[1]);
	double c0 = cpu_seconds();
	long long t0 = now_ms();
	int r = np_recv_header(p[0], buf, sizeof(buf), &h, 3000);
	long long took = now_ms() - t0;
	double cpu = cpu_seconds() - c0;
	ok(r == v2_len && v2_ok(&h), "%s: np_recv_header waits for the split header (%d)", fam, r);
	ok(took >= 250, "%s: it waited for the second half (%lld ms)", fam, took);
	ok(cpu < 0.1, "%s: without spinning: %.3f s of CPU in %lld ms", fam, cpu, took);
	ok(rest_is(p[0], "HELLO"), "%s: then \"HELLO\"", fam);
	close(p[0]);
	waitpid(pid, NULL, 0);
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN);
	alarm(60);
	if (loopback_listen() != 0 || make_v2() <= 0) {
		ok(0, "set-up: a loopback listener and a v2 header");
		return done_testing();
	}
	for (int tcp = 1; tcp >= 0; tcp--) {
		const char *fam = tcp ? "TCP" : "AF_UNIX";
		char name[64];

		snprintf(name, sizeof(name), "%s v1 byte by byte", fam);
		test_byte_by_byte(name, (const uint8_t *)v1_line, sizeof(v1_line) - 1, tcp);
		snprintf(name, sizeof(name), "%s v2 byte by byte", fam);
		test_byte_by_byte(name, v2_hdr, (size_t)v2_len, tcp);
		test_one_write(tcp);
		test_eof(tcp);
		test_wait_without_spinning(tcp);
	}
	test_refusals();
	return done_testing();
}
