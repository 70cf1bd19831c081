/*
 * test_recv.c - np_recv_header() over real TCP connections on 127.0.0.1.
 *
 * socketpair() would not do: the point is TCP segmentation, so a forked
 * writer sends headers in small pieces with TCP_NODELAY and pauses, and the
 * reader must consume the header and nothing else. The application data
 * after it ("HELLO") must come out of the socket untouched.
 *
 * Every wait is bounded: np_recv_header() always gets a timeout here and an
 * alarm ends the whole program if something still hangs.
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
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "netproxy.h"
#include "tap.h"
#include "loopback.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define LONG_WAIT 3000 /* ms: a timeout that is never meant to expire */

static void pause_us(long us)
{
	struct timespec ts = {us / 1000000, (us % 1000000) * 1000};

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/* loopback_connect() for sections that need no name: a failure is a failed test, never silence. */
static int pair_ok(int *cli, int *srv, int nonblocking)
{
	if (loopback_connect(cli, srv, nonblocking) == 0)
		return 1;
	ok(0, "loopback connection");
	return 0;
}

/*
 * Fork a writer that sends data[0..len) cut at cuts[] (ascending offsets),
 * pausing pause_us after each piece, then closes. The parent keeps srv only.
 */
static pid_t spawn_writer(int cli, int srv, const uint8_t *data, size_t len, const size_t *cuts, size_t ncuts,
			  long pause)
{
	fflush(stdout); /* the child must not repeat buffered TAP lines */
	pid_t pid = fork();
	if (pid == 0) {
		size_t at = 0;

		close(srv);
		close(loopback_listener);
		for (size_t i = 0; i <= ncuts; i++) {
			size_t end = i < ncuts ? cuts[i] : len;
			if (end > at && send(cli, data + at, end - at, MSG_NOSIGNAL) != (ssize_t)(end - at))
				_exit(1); /* the reader gave up: fine */
			at = end;
			if (i < ncuts)
				pause_us(pause);
		}
		close(cli);
		_exit(0);
	}
	close(cli);
	return pid;
}

static void reap(pid_t pid)
{
	int st;

	if (pid > 0)
		waitpid(pid, &st, 0);
}

/* Everything left on the connection until the peer closes (or 2 s pass). */
static size_t read_rest(int fd, uint8_t *buf, size_t cap)
{
	size_t n = 0;
	long long deadline = now_ms() + 2000;

	while (n < cap && now_ms() < deadline) {
		struct pollfd pfd = {.fd = fd, .events = POLLIN};
		if (poll(&pfd, 1, 100) <= 0)
			continue;
		ssize_t r = recv(fd, buf + n, cap - n, MSG_DONTWAIT);
		if (r == 0)
			break;
		if (r < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
				continue;
			break;
		}
		n += (size_t)r;
	}
	return n;
}

/* Cuts after every byte: each byte its own segment. */
static size_t every_byte(size_t *cuts, size_t len)
{
	for (size_t i = 1; i < len; i++)
		cuts[i - 1] = i;
	return len - 1;
}

/* ------------------------------------------------------------------------ */
/* the headers sent                                                         */
/* ------------------------------------------------------------------------ */

static const char v1_line[] = "PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n";
#define V1_LEN (sizeof(v1_line) - 1)

static uint8_t v2_hdr[512];
static int v2_len;
static uint8_t authority[100];

/* A v2 TCP4 header with 300 bytes of TLVs: CRC32C, AUTHORITY 100, NOOP 150, UNIQUE_ID 34. */
static int make_v2(void)
{
	static uint8_t noop[150], uid[34];
	struct np_header h;

	memset(&h, 0, sizeof(h));
	h.version = 2;
	h.command = NP_CMD_PROXY;
	h.family = NP_AF_INET;
	h.transport = NP_TRANSPORT_STREAM;
	memcpy(h.src.ip4, "\xC0\xA8\x00\x01", 4);
	memcpy(h.dst.ip4, "\xC0\xA8\x00\x0B", 4);
	h.src.port = 56324;
	h.dst.port = 443;
	for (size_t i = 0; i < sizeof(authority); i++)
		authority[i] = (uint8_t)('a' + i % 26);
	for (size_t i = 0; i < sizeof(uid); i++)
		uid[i] = (uint8_t)i; /* NULs and all */
	const struct np_tlv tlvs[] = {
		{NP_TLV_AUTHORITY, sizeof(authority), authority},
		{NP_TLV_NOOP, sizeof(noop), noop},
		{NP_TLV_UNIQUE_ID, sizeof(uid), uid},
	};
	v2_len = np_build_v2(v2_hdr, sizeof(v2_hdr), &h, tlvs, ARRAY_LEN(tlvs), NP_BUILD_CRC32C);
	return v2_len == 16 + 12 + 300 ? 0 : -1;
}

/* What np_recv_header must have found in make_v2()'s header, TLVs pointing into buf. */
static int v2_fields_ok(const struct np_header *h, const uint8_t *buf, int r)
{
	struct np_tlv t;

	return r == v2_len && h->version == 2 && h->command == NP_CMD_PROXY && h->family == NP_AF_INET &&
	       h->src.port == 56324 && h->dst.port == 443 && h->tlv_len == 300 && h->tlv == buf + 28 &&
	       memcmp(buf, v2_hdr, (size_t)v2_len) == 0 && np_tlv_find(h, NP_TLV_AUTHORITY, &t) == 1 &&
	       t.len == sizeof(authority) && memcmp(t.value, authority, sizeof(authority)) == 0 && t.value > buf &&
	       t.value + t.len <= buf + r;
}

static int v1_fields_ok(const struct np_header *h, int r)
{
	static const uint8_t s[4] = {192, 168, 0, 1}, d[4] = {192, 168, 0, 11};

	return r == (int)V1_LEN && h->version == 1 && h->v1_proto == NP_V1_TCP4 && memcmp(h->src.ip4, s, 4) == 0 &&
	       memcmp(h->dst.ip4, d, 4) == 0 && h->src.port == 56324 && h->dst.port == 443;
}

/* ------------------------------------------------------------------------ */
/* segmented headers                                                        */
/* ------------------------------------------------------------------------ */

static uint8_t msg[1024], buf[1024], rest[1024];
static size_t cuts[1024];

/* Header then "HELLO", sent in pieces by a child; the reader gets the header, then exactly HELLO. */
static void run_split(const char *name, const void *hdr, size_t hlen, const size_t *cut, size_t ncut, long pause,
		      int nonblocking, int is_v2)
{
	int cli, srv;
	struct np_header h;

	if (loopback_connect(&cli, &srv, nonblocking) != 0) {
		ok(0, "%s: loopback connection", name);
		return;
	}
	memcpy(msg, hdr, hlen);
	memcpy(msg + hlen, "HELLO", 5);
	pid_t pid = spawn_writer(cli, srv, msg, hlen + 5, cut, ncut, pause);

	memset(buf, 0, sizeof(buf));
	int r = np_recv_header(srv, buf, sizeof(buf), &h, LONG_WAIT);
	is_int(r, hlen, "%s: np_recv_header returns the header length", name);
	ok(is_v2 ? v2_fields_ok(&h, buf, r) : v1_fields_ok(&h, r), "%s: header fields", name);
	size_t n = read_rest(srv, rest, sizeof(rest));
	ok(n == 5 && memcmp(rest, "HELLO", 5) == 0, "%s: then exactly \"HELLO\"", name);
	if (n != 5 || memcmp(rest, "HELLO", 5) != 0)
		diag("  %zu bytes after the header: \"%.*s\"", n, (int)n, (const char *)rest);
	close(srv);
	reap(pid);
}

static void test_segmented(void)
{
	size_t n;

	n = every_byte(cuts, V1_LEN + 5);
	run_split("v1 byte by byte, blocking", v1_line, V1_LEN, cuts, n, 300, 0, 0);
	run_split("v1 byte by byte, non-blocking", v1_line, V1_LEN, cuts, n, 300, 1, 0);

	n = every_byte(cuts, (size_t)v2_len + 5);
	run_split("v2 + 300 bytes of TLVs byte by byte, blocking", v2_hdr, (size_t)v2_len, cuts, n, 200, 0, 1);
	run_split("v2 + 300 bytes of TLVs byte by byte, non-blocking", v2_hdr, (size_t)v2_len, cuts, n, 200, 1, 1);

	/* Two writes 50 ms apart, cut where a reader could go wrong. */
	static const struct {
		const char *name;
		size_t cut[3];
		size_t ncut;
		int nonblocking;
	} splits[] = {
		{"v2 in two writes, split inside the signature (5), blocking", {5}, 1, 0},
		{"v2 in two writes, split inside the signature (5), non-blocking", {5}, 1, 1},
		{"v2 in two writes, split inside the TLVs (78), blocking", {78}, 1, 0},
		{"v2 in two writes, split inside the TLVs (78), non-blocking", {78}, 1, 1},
		{"v2 in three writes, after ver_cmd (13) and in a TLV length (30)", {13, 30}, 2, 0},
		{"v2 in two writes, split in len (15)", {15}, 1, 1},
		{"v2 in two writes, the data apart (328)", {328}, 1, 0},
		{"v2 in two writes, header and data's first byte, then the rest (329)", {329}, 1, 1},
	};
	for (size_t i = 0; i < ARRAY_LEN(splits); i++)
		run_split(splits[i].name, v2_hdr, (size_t)v2_len, splits[i].cut, splits[i].ncut, 50000,
			  splits[i].nonblocking, 1);

	static const size_t v1_cuts[] = {5, 46}; /* inside "PROXY", between CR and LF */
	run_split("v1 in three writes, split inside PROXY and between CR and LF", v1_line, V1_LEN, v1_cuts, 2, 50000,
		  0, 0);
}

/* Header and data in one write: the data stays for the next recv(). */
static void test_one_write(void)
{
	static const struct {
		const char *name;
		int v2, nonblocking;
		size_t cap_extra; /* cap = header length + this; 0 is the exact fit */
	} cases[] = {
		{"v1 and data in one write", 0, 0, 500},
		{"v1 and data in one write, non-blocking", 0, 1, 500},
		{"v1 and data in one write, cap = header length", 0, 0, 0},
		{"v2 and data in one write", 1, 0, 500},
		{"v2 and data in one write, non-blocking", 1, 1, 500},
		{"v2 and data in one write, cap = header length", 1, 1, 0},
	};

	for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
		int cli, srv;
		struct np_header h;
		const void *hdr = cases[i].v2 ? (const void *)v2_hdr : (const void *)v1_line;
		size_t hlen = cases[i].v2 ? (size_t)v2_len : V1_LEN;

		if (loopback_connect(&cli, &srv, cases[i].nonblocking) != 0) {
			ok(0, "%s: loopback connection", cases[i].name);
			continue;
		}
		memcpy(msg, hdr, hlen);
		memcpy(msg + hlen, "HELLO", 5);
		send(cli, msg, hlen + 5, MSG_NOSIGNAL);
		pause_us(20000); /* let it all arrive: the peek sees the data too */

		int r = np_recv_header(srv, buf, hlen + cases[i].cap_extra, &h, LONG_WAIT);
		ok(cases[i].v2 ? v2_fields_ok(&h, buf, r) : v1_fields_ok(&h, r), "%s: header, %zu bytes",
		   cases[i].name, hlen);
		/* The very next recv() gets the data, all of it. */
		ssize_t n = recv(srv, rest, sizeof(rest), MSG_DONTWAIT);
		ok(n == 5 && memcmp(rest, "HELLO", 5) == 0, "%s: the next recv() returns \"HELLO\"", cases[i].name);
		close(cli);
		close(srv);
	}

	/* Two headers back to back (an NLB in front of a proxy): one per call. */
	int cli, srv;
	struct np_header h;
	if (pair_ok(&cli, &srv, 0)) {
		memcpy(msg, v2_hdr, (size_t)v2_len);
		memcpy(msg + v2_len, v1_line, V1_LEN);
		memcpy(msg + v2_len + V1_LEN, "HELLO", 5);
		send(cli, msg, (size_t)v2_len + V1_LEN + 5, MSG_NOSIGNAL);
		close(cli);
		int r1 = np_recv_header(srv, buf, sizeof(buf), &h, LONG_WAIT);
		ok(v2_fields_ok(&h, buf, r1), "two headers: the first call takes the v2 header only");
		int r2 = np_recv_header(srv, buf, sizeof(buf), &h, LONG_WAIT);
		ok(v1_fields_ok(&h, r2), "two headers: the second call takes the v1 line");
		size_t n = read_rest(srv, rest, sizeof(rest));
		ok(n == 5 && memcmp(rest, "HELLO", 5) == 0, "two headers: then \"HELLO\"");
		close(srv);
	}

	/* Timeout 0 takes what has arrived, and only that. */
	if (pair_ok(&cli, &srv, 0)) {
		send(cli, v1_line, V1_LEN, MSG_NOSIGNAL);
		pause_us(20000);
		int r = np_recv_header(srv, buf, sizeof(buf), &h, 0);
		ok(v1_fields_ok(&h, r), "timeout 0 with the header there: taken");
		long long t0 = now_ms();
		r = np_recv_header(srv, buf, sizeof(buf), &h, 0);
		is_int(r, NP_ETIMEDOUT, "timeout 0 with nothing there: NP_ETIMEDOUT");
		ok(now_ms() - t0 < 100, "timeout 0: at once");
		send(cli, v1_line, 20, MSG_NOSIGNAL);
		pause_us(20000);
		is_int(np_recv_header(srv, buf, sizeof(buf), &h, 0), NP_ETIMEDOUT,
		       "timeout 0 with half a header there: NP_ETIMEDOUT");
		close(cli);
		close(srv);
	}

	/* No limit (-1) is fine when the header is there. */
	if (pair_ok(&cli, &srv, 0)) {
		send(cli, v1_line, V1_LEN, MSG_NOSIGNAL);
		int r = np_recv_header(srv, buf, sizeof(buf), &h, -1);
		ok(v1_fields_ok(&h, r), "timeout -1 with a header waiting");
		close(cli);
		close(srv);
	}
}

/* ------------------------------------------------------------------------ */
/* errors                                                                   */
/* ------------------------------------------------------------------------ */

static void test_timeout(void)
{
	int cli, srv;
	struct np_header h;

	/* A silent peer. */
	if (loopback_connect(&cli, &srv, 0) != 0) {
		ok(0, "timeout: loopback connection");
		return;
	}
	long long t0 = now_ms();
	int r = np_recv_header(srv, buf, sizeof(buf), &h, 200);
	long long dt = now_ms() - t0;
	is_int(r, NP_ETIMEDOUT, "silent peer, 200 ms: NP_ETIMEDOUT");
	/* Not early; the upper bound is a sanity check, not a performance claim. */
	ok(dt >= 190 && dt < 2000, "silent peer: returned after %lld ms (about 200)", dt);
	close(cli);
	close(srv);

	/* Half a header, then silence: the limit is for the whole header, not per byte. */
	if (loopback_connect(&cli, &srv, 1) != 0) {
		ok(0, "trickling peer: loopback connection");
		return;
	}
	fflush(stdout);
	pid_t pid = fork();
	if (pid == 0) {
		close(srv);
		close(loopback_listener);
		/* A byte every 20 ms, never the end: a reader counting per byte would wait forever. */
		for (size_t i = 0; i < 30 && i < V1_LEN; i++) {
			if (send(cli, v1_line + i, 1, MSG_NOSIGNAL) != 1)
				break;
			pause_us(20000);
		}
		close(cli);
		_exit(0);
	}
	close(cli);
	t0 = now_ms();
	r = np_recv_header(srv, buf, sizeof(buf), &h, 250);
	dt = now_ms() - t0;
	is_int(r, NP_ETIMEDOUT, "a byte every 20 ms, 250 ms in all: NP_ETIMEDOUT");
	ok(dt >= 240 && dt < 2000, "trickling peer: returned after %lld ms (about 250)", dt);
	close(srv);
	reap(pid);
}

static void test_closed(void)
{
	int cli, srv;
	struct np_header h;

	/* Closed before the first byte. */
	if (pair_ok(&cli, &srv, 0)) {
		close(cli);
		is_int(np_recv_header(srv, buf, sizeof(buf), &h, LONG_WAIT), NP_ECLOSED,
		       "peer closes at once: NP_ECLOSED");
		close(srv);
	}
	/* Closed in the middle, the v1 line and the v2 header, sent in pieces. */
	static const size_t half_cuts[] = {5, 10, 20};
	if (pair_ok(&cli, &srv, 0)) {
		pid_t pid = spawn_writer(cli, srv, (const uint8_t *)v1_line, 25, half_cuts, 3, 10000);
		long long t0 = now_ms();
		int r = np_recv_header(srv, buf, sizeof(buf), &h, LONG_WAIT);
		is_int(r, NP_ECLOSED, "peer closes after 25 bytes of a v1 line: NP_ECLOSED");
		ok(now_ms() - t0 < LONG_WAIT / 2, "NP_ECLOSED without waiting for the timeout");
		close(srv);
		reap(pid);
	}
	if (pair_ok(&cli, &srv, 1)) {
		pid_t pid = spawn_writer(cli, srv, v2_hdr, 100, half_cuts, 3, 10000);
		is_int(np_recv_header(srv, buf, sizeof(buf), &h, LONG_WAIT), NP_ECLOSED,
		       "peer closes after 100 of 328 v2 bytes, non-blocking: NP_ECLOSED");
		close(srv);
		reap(pid);
	}
}

static void test_parse_errors(void)
{
	static const struct {
		const char *name;
		const char *bytes;
		size_t len;
		int want;
	} cases[] = {
		{"\"GET /\"", "GET / HTTP/1.1\r\n", 16, NP_ENOTPROXY},
		{"a lone \"G\", the rest never sent", "G", 1, NP_ENOTPROXY},
		{"v2 signature, version 3", "\r\n\r\n\0\r\nQUIT\n\x31", 13, NP_EVERSION},
		{"v1 with a bad port", "PROXY TCP4 1.2.3.4 5.6.7.8 1 080\r\n", 34, NP_EPORT},
		{"v1 with a lone LF", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", 32, NP_ELINE},
	};

	for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
		int cli, srv;
		struct np_header h;

		if (loopback_connect(&cli, &srv, 0) != 0) {
			ok(0, "%s: loopback connection", cases[i].name);
			continue;
		}
		/* The peer stays open and silent: only the bytes can end the wait. */
		send(cli, cases[i].bytes, cases[i].len, MSG_NOSIGNAL);
		long long t0 = now_ms();
		int r = np_recv_header(srv, buf, sizeof(buf), &h, LONG_WAIT);
		long long dt = now_ms() - t0;
		is_int(r, cases[i].want, "%s: %s", cases[i].name, np_errname(cases[i].want));
		ok(dt < 1000, "%s: at once (%lld ms), not at the timeout", cases[i].name, dt);
		close(cli);
		close(srv);
	}
}

static void test_too_big(void)
{
	static const struct {
		const char *name;
		int v2;
		size_t cap;
		int want;
	} cases[] = {
		{"v2 of 328 bytes, cap 100", 1, 100, NP_ETOOBIG},
		{"v2 of 328 bytes, cap 327", 1, 327, NP_ETOOBIG},
		{"v2 of 328 bytes, cap 10 (below the fixed part)", 1, 10, NP_ETOOBIG},
		{"v2 of 328 bytes, cap 328", 1, 328, 328},
		{"v1 of 47 bytes, cap 20", 0, 20, NP_ETOOBIG},
		{"v1 of 47 bytes, cap 46", 0, 46, NP_ETOOBIG},
		{"v1 of 47 bytes, cap 47", 0, 47, 47},
	};

	for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
		int cli, srv;
		struct np_header h;

		if (loopback_connect(&cli, &srv, 0) != 0) {
			ok(0, "%s: loopback connection", cases[i].name);
			continue;
		}
		/* Sent whole and the peer kept open: the cap alone must end the call. */
		if (cases[i].v2)
			send(cli, v2_hdr, (size_t)v2_len, MSG_NOSIGNAL);
		else
			send(cli, v1_line, V1_LEN, MSG_NOSIGNAL);
		memset(buf, 0xEE, sizeof(buf));
		int r = np_recv_header(srv, buf, cases[i].cap, &h, LONG_WAIT);
		is_int(r, cases[i].want, "%s: %s", cases[i].name, r < 0 ? np_errname(cases[i].want) : "fits");
		ok(buf[cases[i].cap] == 0xEE, "%s: nothing written past cap", cases[i].name);
		close(cli);
		close(srv);
	}

	/* A v1 line with no CRLF in 107 bytes is NP_ETOOLONG even with room to spare. */
	int cli, srv;
	struct np_header h;
	if (pair_ok(&cli, &srv, 0)) {
		memset(msg, 'f', 200);
		memcpy(msg, "PROXY UNKNOWN ", 14);
		send(cli, msg, 200, MSG_NOSIGNAL);
		is_int(np_recv_header(srv, buf, sizeof(buf), &h, LONG_WAIT), NP_ETOOLONG,
		       "v1 line without CRLF in 107 bytes: NP_ETOOLONG");
		close(cli);
		close(srv);
	}
}

static void test_bad_arguments(void)
{
	int cli, srv;
	struct np_header h;

	if (pair_ok(&cli, &srv, 0)) {
		send(cli, v1_line, V1_LEN, MSG_NOSIGNAL);
		is_int(np_recv_header(srv, buf, 0, &h, LONG_WAIT), NP_EINVAL, "cap 0: NP_EINVAL");
		close(cli);
		close(srv);
	}

	/* A descriptor that was just closed (nothing else opens one meanwhile: no threads here). */
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	close(fd);
	errno = 0;
	long long t0 = now_ms();
	int r = np_recv_header(fd, buf, sizeof(buf), &h, 300);
	int e = errno;
	is_int(r, NP_ESYS, "closed fd: NP_ESYS");
	is_int(e, EBADF, "closed fd: errno EBADF");
	ok(now_ms() - t0 < 250, "closed fd: at once");

	/* fd -1: poll() ignores negative descriptors, so only recv() can tell. */
	errno = 0;
	t0 = now_ms();
	r = np_recv_header(-1, buf, sizeof(buf), &h, 300);
	e = errno;
	is_int(r, NP_ESYS, "fd -1: NP_ESYS");
	is_int(e, EBADF, "fd -1: errno EBADF");
	ok(now_ms() - t0 < 250, "fd -1: at once, not at the timeout");

	/* Not a socket: a pipe with bytes in it. */
	int p[2];
	if (pipe(p) == 0) {
		if (write(p[1], v1_line, V1_LEN) != (ssize_t)V1_LEN)
			diag("pipe write failed");
		errno = 0;
		r = np_recv_header(p[0], buf, sizeof(buf), &h, 300);
		e = errno;
		is_int(r, NP_ESYS, "a pipe: NP_ESYS");
		is_int(e, ENOTSOCK, "a pipe: errno ENOTSOCK");
		close(p[0]);
		close(p[1]);
	}
}

int main(void)
{
	/* A hang is a failure: prove sees the signal. */
	alarm(10);
	signal(SIGPIPE, SIG_IGN);
	if (loopback_listen() != 0)
		skip_all("no TCP listener on 127.0.0.1");
	if (!ok(make_v2() == 0, "a v2 header with 300 bytes of TLVs (%d bytes)", v2_len))
		return done_testing();

	test_segmented();
	test_one_write();
	test_timeout();
	test_closed();
	test_parse_errors();
	test_too_big();
	test_bad_arguments();
	close(loopback_listener);
	return done_testing();
}
