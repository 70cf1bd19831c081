/*
 * netproxy-send - connect to a PROXY protocol port, send one header, then
 * relay standard input and output over the connection, like nc(1).
 *
 *   netproxy-send [options] HOST PORT
 *
 * The header (version 2 unless -1) claims the --src and --dst addresses, or
 * by default the connection's own endpoints, so that it tells the truth;
 * --local sends a LOCAL header (version 1: UNKNOWN), --raw-hex any bytes at
 * all. It goes out in one send() (in pieces with --split) before any data.
 *
 * Then one poll() loop copies standard input to the socket and the socket to
 * standard output through two fixed buffers. A side is read only when its
 * buffer is empty, so nothing piles up: while the socket cannot take more,
 * standard input is not read, and while standard output cannot, the socket
 * is not. At the end of standard input the socket's write side is shut down;
 * the program ends once the server has closed its side too and all it sent
 * has been written out.
 *
 * Exit status: 0 success, 1 a connection or I/O error, 64 usage error.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "netproxy.h"
#include "common.h"

#define PROG "netproxy-send"

const char tool_name[] = PROG;

#define NPS_BUF (64u * 1024u) /* each direction's relay buffer */
/*
 * The header: a built one is at most NP_V2_MAX_LEN bytes; --raw-hex is one
 * argument, which Linux caps at 128 KiB of text, so 64 KiB of bytes.
 */
#define NPS_HEADER_CAP (128u * 1024u)
#define NPS_MAX_TIMEOUT_S 2000000.0 /* about 23 days: fits poll()'s int milliseconds */
#define NPS_MAX_DELAY_MS 3600000UL  /* --split-delay: an hour */

enum {
	EXIT_OK = 0,
	EXIT_FAIL = 1,
	EXIT_USAGE = TOOL_EXIT_USAGE,
};

static uint8_t header[NPS_HEADER_CAP];
static uint8_t tlv_pool[NP_V2_MAX_LEN]; /* --tlv values given in hex */
static size_t tlv_pool_used;

struct relay_buf {
	uint8_t data[NPS_BUF];
	size_t off, len; /* the bytes not yet written: data[off..off+len) */
};

static struct relay_buf up, down; /* stdin -> socket, socket -> stdout */

struct options {
	int version;		    /* 1 or 2 */
	int version_set;	    /* -1 or -2 given */
	int have_src, have_dst;
	struct sockaddr_storage src, dst; /* --src, --dst */
	socklen_t src_len, dst_len;
	int local;		    /* --local */
	struct np_tlv *tlvs;	    /* --tlv, in order */
	size_t ntlv;
	int crc32c;		    /* --crc32c */
	const char *raw_hex;	    /* --raw-hex as given */
	size_t raw_len;		    /* its bytes, decoded into header[] */
	size_t split;		    /* --split: piece size, 0 for one write */
	unsigned long split_delay;  /* --split-delay, milliseconds */
	const char *bind_text;	    /* --bind as given */
	struct sockaddr_storage bind_ss;
	socklen_t bind_len;
	const char *timeout_text;   /* -w as given, for messages */
	int timeout_ms;		    /* -1: none */
	int quiet;
	const char *host, *port;
};

/* --- usage ---------------------------------------------------------------- */

static void usage(FILE *out)
{
	fputs("usage: " PROG " [-1 | -2] [-s ADDR:PORT] [-d ADDR:PORT] [--local]\n"
	      "                     [--tlv TYPE=VALUE]... [--crc32c] [--raw-hex HEX]\n"
	      "                     [--split N] [--split-delay MS] [--bind ADDR]\n"
	      "                     [-w SECONDS] [-q] HOST PORT\n"
	      "       " PROG " -h | --help | --version\n"
	      "\n"
	      "Connect to HOST PORT, send one PROXY protocol header, then copy standard\n"
	      "input to the connection and the connection to standard output until both\n"
	      "have ended. At the end of standard input the connection's write side is\n"
	      "shut down; the program exits once the server has closed its side too.\n"
	      "By default the header is version 2 and claims the connection's own\n"
	      "endpoints, so it tells the truth.\n"
	      "\n"
	      "options:\n"
	      "  -1, --v1             send a version 1 (text) header\n"
	      "  -2, --v2             send a version 2 (binary) header (the default)\n"
	      "  -s, --src ADDR:PORT  the source the header claims ([v6addr]:port for IPv6);\n"
	      "                       default: this end of the connection\n"
	      "  -d, --dst ADDR:PORT  the destination the header claims; default: the\n"
	      "                       server's end of the connection\n"
	      "  --local              a LOCAL header without addresses (v1: PROXY UNKNOWN),\n"
	      "                       as health checks send\n"
	      "  --tlv TYPE=VALUE     add a v2 TLV (repeatable, kept in order). TYPE is 0..255\n"
	      "                       (decimal or 0x hex) or ALPN, AUTHORITY, CRC32C, NOOP,\n"
	      "                       UNIQUE_ID, SSL, NETNS, GCP, AWS, AZURE; VALUE is text,\n"
	      "                       or hex digits after 0x\n"
	      "  --crc32c             checksum the v2 header (a CRC32C TLV)\n"
	      "  --raw-hex HEX        send the bytes spelled by HEX as the header instead of\n"
	      "                       building one (pairs of hex digits, whitespace between\n"
	      "                       pairs allowed)\n"
	      "  --split N            send the header in pieces of N bytes, each its own\n"
	      "                       segment (TCP_NODELAY), with a pause between them\n"
	      "  --split-delay MS     the pause between pieces in milliseconds; default 50\n"
	      "  --bind ADDR          connect from the local address ADDR\n"
	      "  -w, --timeout SECONDS\n"
	      "                       give up connecting, or relaying when nothing moves,\n"
	      "                       after SECONDS (fractions allowed); default: never\n"
	      "  -q, --quiet          print only errors on standard error\n"
	      "  -h, --help           print this help and exit\n"
	      "  --version            print the version and exit\n"
	      "\n"
	      "exit status:\n"
	      "  0   the header was sent and both directions ended cleanly\n"
	      "  1   a connection or I/O error (the cause is printed)\n"
	      "  64  usage error: unknown option, bad argument, options that conflict\n",
	      out);
}

/* "netproxy-send: what: strerror(errno)"; returns EXIT_FAIL. */
static int sys_error(const char *what)
{
	fprintf(stderr, PROG ": %s: %s\n", what, strerror(errno));
	return EXIT_FAIL;
}

/* --- argument parsing ----------------------------------------------------- */

/* A decimal number of at most max; 0 on success. */
static int parse_ulong(const char *s, unsigned long max, unsigned long *out)
{
	unsigned long v = 0;

	if (!isdigit((unsigned char)s[0]))
		return -1;
	for (; *s; s++) {
		if (!isdigit((unsigned char)*s))
			return -1;
		v = v * 10 + (unsigned long)(*s - '0');
		if (v > max)
			return -1;
	}
	*out = v;
	return 0;
}

static int parse_port(const char *s, unsigned long min, uint16_t *port)
{
	unsigned long v;

	if (parse_ulong(s, 65535, &v) != 0 || v < min)
		return -1;
	*port = (uint16_t)v;
	return 0;
}

/* -w: seconds, a decimal fraction allowed, more than 0. */
static int parse_timeout(const char *s, int *ms)
{
	char *end;
	double v;

	if (!isdigit((unsigned char)s[0]) || strspn(s, "0123456789.") != strlen(s))
		return -1;
	errno = 0;
	v = strtod(s, &end);
	if (errno != 0 || *end != '\0' || !(v > 0) || v > NPS_MAX_TIMEOUT_S)
		return -1;
	*ms = (int)(v * 1000.0);
	if (*ms == 0)
		*ms = 1;
	return 0;
}


static int parse_tlv_type(const char *s, size_t n, uint8_t *type)
{
	char text[16];
	unsigned long v = 0;

	if (n == 0 || n >= sizeof(text))
		return -1;
	memcpy(text, s, n);
	text[n] = '\0';
	if (np_tlv_type(text, n) >= 0) {
		*type = (uint8_t)np_tlv_type(text, n);
		return 0;
	}
	if (text[0] == '0' && (text[1] == 'x' || text[1] == 'X')) {
		if (text[2] == '\0')
			return -1;
		for (const char *p = text + 2; *p; p++) {
			int d = hex_digit((unsigned char)*p);
			if (d < 0)
				return -1;
			v = v * 16 + (unsigned long)d;
			if (v > 255)
				return -1;
		}
	} else if (parse_ulong(text, 255, &v) != 0) {
		return -1;
	}
	*type = (uint8_t)v;
	return 0;
}

/* --tlv TYPE=VALUE: VALUE is text, or hex after 0x (decoded into tlv_pool). */
static int parse_tlv(const char *arg, struct np_tlv *t)
{
	const char *eq = strchr(arg, '=');

	if (!eq)
		return usage_error("--tlv: expected TYPE=VALUE: '%s'", arg);
	if (parse_tlv_type(arg, (size_t)(eq - arg), &t->type) != 0)
		return usage_error("--tlv: TYPE is not 0..255 or a known name: '%s'", arg);

	const char *value = eq + 1;
	size_t len;
	if (value[0] == '0' && (value[1] == 'x' || value[1] == 'X')) {
		int r = decode_hex(value + 2, false, tlv_pool + tlv_pool_used,
				   sizeof(tlv_pool) - tlv_pool_used, &len, NULL);
		if (r == HEX_LONG)
			return usage_error("--tlv: values larger than a v2 header can carry");
		if (r != HEX_OK)
			return usage_error("--tlv: hex VALUE: %s: '%s'", hex_problem(r), arg);
		t->value = tlv_pool + tlv_pool_used;
		tlv_pool_used += len;
	} else {
		len = strlen(value);
		t->value = (const uint8_t *)value;
	}
	if (len > 0xFFFF)
		return usage_error("--tlv: a VALUE longer than 65535 bytes");
	t->len = (uint16_t)len;
	return EXIT_OK;
}

/* --- addresses as text ---------------------------------------------------- */

#define SA_TEXT NP_SOCKADDRSTRLEN

static void sa_text(const struct sockaddr *sa, char *out, size_t cap)
{
	if (np_format_sockaddr(out, cap, sa, sizeof(struct sockaddr_storage)) < 0)
		snprintf(out, cap, "(family %d)", (int)sa->sa_family);
}

static const char *family_text(int family)
{
	return family == AF_INET ? "IPv4" : "IPv6";
}

/* --- time ----------------------------------------------------------------- */

static void sleep_ms(unsigned long ms)
{
	struct timespec ts = {.tv_sec = (time_t)(ms / 1000), .tv_nsec = (long)(ms % 1000) * 1000000};

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/* --- connecting ----------------------------------------------------------- */

/*
 * Wait for a non-blocking connect() to finish; 0 connected, -1 with errno
 * set (ETIMEDOUT when the timeout passed first).
 */
static int wait_connected(int fd, int timeout_ms)
{
	long long deadline = timeout_ms < 0 ? -1 : now_ns() / 1000000 + timeout_ms;
	int err = 0;
	socklen_t len = sizeof(err);

	for (;;) {
		int wait = -1;
		if (deadline >= 0) {
			long long left = deadline - now_ns() / 1000000;
			if (left <= 0) {
				errno = ETIMEDOUT;
				return -1;
			}
			wait = (int)left;
		}
		struct pollfd pfd = {.fd = fd, .events = POLLOUT};
		int n = poll(&pfd, 1, wait);
		if (n > 0)
			break;
		if (n < 0 && errno != EINTR)
			return -1;
	}
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
		return -1;
	if (err != 0) {
		errno = err;
		return -1;
	}
	return 0;
}

/*
 * Connect to o->host o->port, trying each address getaddrinfo() gives in
 * turn. Returns a blocking socket, or -1 after saying why.
 */
static int connect_to(const struct options *o)
{
	struct addrinfo hints, *res, *ai;
	char what[SA_TEXT + 64], target[SA_TEXT];
	int fd = -1, e;

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = o->bind_text ? o->bind_ss.ss_family : AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_protocol = IPPROTO_TCP;
	hints.ai_flags = AI_NUMERICSERV;
	e = getaddrinfo(o->host, o->port, &hints, &res);
	if (e != 0) {
		fprintf(stderr, PROG ": %s: %s\n", o->host,
			e == EAI_SYSTEM ? strerror(errno) : gai_strerror(e));
		return -1;
	}
	for (ai = res; ai; ai = ai->ai_next) {
		int last = ai->ai_next == NULL;

		/* what names each step before it is taken: errno is the step's. */
		snprintf(what, sizeof(what), "socket");
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK,
			    ai->ai_protocol);
		if (fd < 0)
			goto failed;
		if (o->bind_text) {
			snprintf(what, sizeof(what), "bind %s", o->bind_text);
			if (bind(fd, (const struct sockaddr *)&o->bind_ss, o->bind_len) != 0)
				goto failed;
		}
		sa_text(ai->ai_addr, target, sizeof(target));
		snprintf(what, sizeof(what), "connect %s", target);
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0 &&
		    (errno != EINPROGRESS || wait_connected(fd, o->timeout_ms) != 0))
			goto failed;
		/* Blocking from here: the relay asks for MSG_DONTWAIT where it must not wait. */
		snprintf(what, sizeof(what), "fcntl");
		if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK) != 0)
			goto failed;
		freeaddrinfo(res);
		return fd;
failed:
		if (!o->quiet || last)
			sys_error(what);
		if (fd >= 0)
			close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	return -1;
}

/* --- the header ----------------------------------------------------------- */

/*
 * Build the header for the connection fd into header[]. Returns EXIT_OK with
 * *len set, or an exit status after saying why.
 */
static int build_header(int fd, const struct options *o, size_t *len)
{
	struct sockaddr_storage self, peer;
	socklen_t slen = sizeof(self), plen = sizeof(peer);
	struct np_header h;
	int n;

	memset(&h, 0, sizeof(h));
	if (o->local) {
		h.version = (uint8_t)o->version;
		h.command = NP_CMD_LOCAL;
	} else {
		memset(&self, 0, sizeof(self));
		memset(&peer, 0, sizeof(peer));
		if (getsockname(fd, (struct sockaddr *)&self, &slen) != 0)
			return sys_error("getsockname");
		if (getpeername(fd, (struct sockaddr *)&peer, &plen) != 0)
			return sys_error("getpeername");
		const struct sockaddr_storage *src = o->have_src ? &o->src : &self;
		const struct sockaddr_storage *dst = o->have_dst ? &o->dst : &peer;
		socklen_t src_len = o->have_src ? o->src_len : slen;
		socklen_t dst_len = o->have_dst ? o->dst_len : plen;
		if (src->ss_family != dst->ss_family) {
			fprintf(stderr,
				PROG ": --%s is an %s address but the connection is %s: "
				     "give --%s as well\n",
				o->have_src ? "src" : "dst",
				family_text(o->have_src ? src->ss_family : dst->ss_family),
				family_text(self.ss_family), o->have_src ? "dst" : "src");
			return usage_error(NULL);
		}
		if (np_header_from_sockaddr_len(&h, (const struct sockaddr *)src, src_len,
						(const struct sockaddr *)dst, dst_len) != 0) {
			fputs(PROG ": the connection's addresses are neither IPv4 nor IPv6\n", stderr);
			return EXIT_FAIL;
		}
	}
	if (o->version == 1)
		n = np_build_v1(header, sizeof(header), &h);
	else
		n = np_build_v2(header, sizeof(header), &h, o->tlvs, o->ntlv,
				o->crc32c ? NP_BUILD_CRC32C : 0);
	if (n < 0) { /* check_tlvs() has ruled out all but the size */
		fputs(PROG ": --tlv: with the address block, more than the 65535 bytes a v2 "
		      "header can carry\n", stderr);
		return usage_error(NULL);
	}
	*len = (size_t)n;
	return EXIT_OK;
}

/* The TLV options alone, checked before connecting: LOCAL has no address block. */
static int check_tlvs(const struct options *o)
{
	struct np_header h;
	int n;

	memset(&h, 0, sizeof(h));
	h.command = NP_CMD_LOCAL;
	n = np_build_v2(header, sizeof(header), &h, o->tlvs, o->ntlv, o->crc32c ? NP_BUILD_CRC32C : 0);
	if (n >= 0)
		return EXIT_OK;
	if (o->crc32c) {
		size_t crcs = 0, bad = 0;
		for (size_t i = 0; i < o->ntlv; i++) {
			if (o->tlvs[i].type == NP_TLV_CRC32C) {
				crcs++;
				bad += o->tlvs[i].len != 4;
			}
		}
		if (crcs > 1)
			return usage_error("--crc32c: more than one CRC32C TLV to fill in");
		if (bad)
			return usage_error("--crc32c: the CRC32C TLV must have a 4-byte value");
	}
	return usage_error("--tlv: more than the 65535 bytes a v2 header can carry");
}

/* send() all of p[0..n) on the blocking socket; -1 with errno set. */
static int send_all(int fd, const uint8_t *p, size_t n)
{
	while (n > 0) {
		ssize_t r = send(fd, p, n, MSG_NOSIGNAL);
		if (r > 0) {
			p += r;
			n -= (size_t)r;
		} else if (r < 0 && errno == EINTR) {
			continue;
		} else {
			if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
				errno = ETIMEDOUT; /* SO_SNDTIMEO */
			return -1;
		}
	}
	return 0;
}

/* Send the header: in one send(), or in --split pieces. */
static int send_header(int fd, const struct options *o, size_t len, size_t *pieces)
{
	size_t piece = o->split ? o->split : len;

	*pieces = 0;
	if (o->timeout_ms >= 0) {
		struct timeval tv = {.tv_sec = o->timeout_ms / 1000,
				     .tv_usec = (o->timeout_ms % 1000) * 1000};
		setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	}
	if (o->split) {
		int one = 1;
		if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) != 0)
			return sys_error("setsockopt TCP_NODELAY");
	}
	for (size_t off = 0; off < len; off += piece) {
		size_t n = len - off < piece ? len - off : piece;
		if (off > 0)
			sleep_ms(o->split_delay);
		if (send_all(fd, header + off, n) != 0)
			return sys_error("send header");
		(*pieces)++;
	}
	return EXIT_OK;
}

/* One line on standard error about the connection and the header, unless -q. */
static void report(int fd, const struct options *o, size_t len, size_t pieces)
{
	struct sockaddr_storage self, peer;
	socklen_t slen = sizeof(self), plen = sizeof(peer);
	char a[SA_TEXT], b[SA_TEXT], c[SA_TEXT];

	if (o->quiet)
		return;
	memset(&self, 0, sizeof(self));
	memset(&peer, 0, sizeof(peer));
	if (getsockname(fd, (struct sockaddr *)&self, &slen) != 0 ||
	    getpeername(fd, (struct sockaddr *)&peer, &plen) != 0)
		return;
	sa_text((struct sockaddr *)&peer, a, sizeof(a));
	sa_text((struct sockaddr *)&self, b, sizeof(b));
	fprintf(stderr, PROG ": connected to %s from %s; sent ", a, b);
	if (o->raw_hex) {
		fprintf(stderr, "%zu raw byte%s", len, len == 1 ? "" : "s");
	} else if (o->version == 1) {
		fprintf(stderr, "a v1 header (%zu bytes): %.*s", len, (int)(len - 2),
			(const char *)header);
	} else {
		fprintf(stderr, "a v2 header (%zu bytes): ", len);
		if (o->local) {
			fputs("LOCAL", stderr);
		} else {
			sa_text((struct sockaddr *)(o->have_src ? &o->src : &self), b, sizeof(b));
			sa_text((struct sockaddr *)(o->have_dst ? &o->dst : &peer), c, sizeof(c));
			fprintf(stderr, "PROXY %s -> %s", b, c);
		}
		if (o->ntlv)
			fprintf(stderr, ", %zu TLV%s", o->ntlv, o->ntlv == 1 ? "" : "s");
		if (o->crc32c)
			fputs(", CRC32C", stderr);
	}
	if (o->split)
		fprintf(stderr, " in %zu piece%s", pieces, pieces == 1 ? "" : "s");
	fputc('\n', stderr);
}

/* --- the relay ------------------------------------------------------------ */

enum { P_STDIN, P_SOCK, P_STDOUT };

static int relay(int fd, const struct options *o)
{
	int in_open = 1, sock_open = 1, shut = 0;
	size_t out_chunk = NPS_BUF;
	struct stat st;

	/* A closed standard input is an empty one. */
	if (fcntl(STDIN_FILENO, F_GETFL) < 0)
		in_open = 0;
	/*
	 * Standard output stays blocking (it may be shared). A pipe or socket
	 * that poll() calls writable takes PIPE_BUF bytes without waiting, so
	 * writes are cut to that: the socket is never left unserved.
	 */
	if (fstat(STDOUT_FILENO, &st) == 0 && !S_ISREG(st.st_mode))
		out_chunk = PIPE_BUF;

	for (;;) {
		struct pollfd pfd[3];

		if (!in_open && up.len == 0 && !shut) {
			if (shutdown(fd, SHUT_WR) != 0)
				return sys_error("shutdown");
			shut = 1;
		}
		if (shut && !sock_open && down.len == 0)
			return EXIT_OK;

		pfd[P_STDIN].fd = STDIN_FILENO;
		pfd[P_STDIN].events = in_open && up.len == 0 ? POLLIN : 0;
		pfd[P_SOCK].fd = fd;
		pfd[P_SOCK].events = (short)((sock_open && down.len == 0 ? POLLIN : 0) |
					     (up.len > 0 ? POLLOUT : 0));
		pfd[P_STDOUT].fd = STDOUT_FILENO;
		pfd[P_STDOUT].events = down.len > 0 ? POLLOUT : 0;
		for (int i = 0; i < 3; i++) {
			pfd[i].revents = 0;
			if (pfd[i].events == 0)
				pfd[i].fd = -1; /* not waited for: no spinning on its HUP */
		}

		int n = poll(pfd, 3, o->timeout_ms);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return sys_error("poll");
		}
		if (n == 0) {
			fprintf(stderr, PROG ": timed out: nothing could be read or written for %s s\n",
				o->timeout_text);
			return EXIT_FAIL;
		}

		/* Errors and hang-ups are found out by the read or write they wake. */
		if (pfd[P_STDIN].revents) {
			ssize_t r = read(STDIN_FILENO, up.data, sizeof(up.data));
			if (r > 0) {
				up.off = 0;
				up.len = (size_t)r;
			} else if (r == 0) {
				in_open = 0;
			} else if (errno != EINTR && errno != EAGAIN) {
				return sys_error("standard input");
			}
		}
		if (pfd[P_SOCK].revents && up.len > 0 && (pfd[P_SOCK].events & POLLOUT)) {
			ssize_t r = send(fd, up.data + up.off, up.len, MSG_DONTWAIT | MSG_NOSIGNAL);
			if (r > 0) {
				up.off += (size_t)r;
				up.len -= (size_t)r;
			} else if (r < 0 && errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK) {
				return sys_error("send");
			}
		}
		if (pfd[P_SOCK].revents && sock_open && (pfd[P_SOCK].events & POLLIN)) {
			ssize_t r = recv(fd, down.data, sizeof(down.data), MSG_DONTWAIT);
			if (r > 0) {
				down.off = 0;
				down.len = (size_t)r;
			} else if (r == 0) {
				sock_open = 0;
			} else if (errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK) {
				return sys_error("recv");
			}
		}
		if (pfd[P_STDOUT].revents && down.len > 0) {
			size_t want = down.len < out_chunk ? down.len : out_chunk;
			ssize_t r = write(STDOUT_FILENO, down.data + down.off, want);
			if (r > 0) {
				down.off += (size_t)r;
				down.len -= (size_t)r;
			} else if (r < 0 && errno != EINTR && errno != EAGAIN) {
				return sys_error("standard output");
			}
		}
	}
}

/* --- main ----------------------------------------------------------------- */

enum {
	OPT_LOCAL = 256,
	OPT_TLV,
	OPT_CRC32C,
	OPT_RAW_HEX,
	OPT_SPLIT,
	OPT_SPLIT_DELAY,
	OPT_BIND,
	OPT_VERSION,
};

/* Options that make no sense together, and the raw bytes; before connecting. */
static int check_options(struct options *o, int split_delay_set)
{
	if (o->raw_hex) {
		if (o->version_set || o->have_src || o->have_dst || o->local || o->ntlv || o->crc32c)
			return usage_error("--raw-hex replaces the header: it cannot be combined "
					   "with -1, -2, --src, --dst, --local, --tlv or --crc32c");
		int r = decode_hex(o->raw_hex, true, header, sizeof(header), &o->raw_len, NULL);
		if (r != HEX_OK)
			return usage_error("--raw-hex: %s", hex_problem(r));
	}
	if (o->local && (o->have_src || o->have_dst))
		return usage_error("--local sends no addresses: it cannot be combined with "
				   "--src or --dst");
	if (o->version == 1 && (o->ntlv || o->crc32c))
		return usage_error("--tlv and --crc32c need a version 2 header");
	if (split_delay_set && !o->split)
		return usage_error("--split-delay needs --split");
	if (o->version == 2 && !o->raw_hex)
		return check_tlvs(o);
	return EXIT_OK;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"v1", no_argument, NULL, '1'},
		{"v2", no_argument, NULL, '2'},
		{"src", required_argument, NULL, 's'},
		{"dst", required_argument, NULL, 'd'},
		{"local", no_argument, NULL, OPT_LOCAL},
		{"tlv", required_argument, NULL, OPT_TLV},
		{"crc32c", no_argument, NULL, OPT_CRC32C},
		{"raw-hex", required_argument, NULL, OPT_RAW_HEX},
		{"split", required_argument, NULL, OPT_SPLIT},
		{"split-delay", required_argument, NULL, OPT_SPLIT_DELAY},
		{"bind", required_argument, NULL, OPT_BIND},
		{"timeout", required_argument, NULL, 'w'},
		{"quiet", no_argument, NULL, 'q'},
		{"help", no_argument, NULL, 'h'},
		{"version", no_argument, NULL, OPT_VERSION},
		{NULL, 0, NULL, 0},
	};
	static struct options o; /* static: o.tlvs stays reachable whatever path exits */
	unsigned long v;
	int c, r, split_delay_set = 0;
	uint16_t port;

	memset(&o, 0, sizeof(o));
	o.version = 2;
	o.split_delay = 50;
	o.timeout_ms = -1;
	/* Each --tlv takes at least one argument: argc entries are enough. */
	o.tlvs = calloc((size_t)argc, sizeof(*o.tlvs));
	if (!o.tlvs)
		return sys_error("calloc");

	while ((c = getopt_long(argc, argv, "12s:d:w:qh", longopts, NULL)) != -1) {
		switch (c) {
		case '1':
		case '2':
			if (o.version_set && o.version != c - '0')
				return usage_error("-1 and -2 are exclusive");
			o.version = c - '0';
			o.version_set = 1;
			break;
		case 's':
			if (parse_host_port(optarg, &o.src, &o.src_len) != 0)
				return usage_error("--src: not ADDR:PORT or [IPv6]:PORT: '%s'", optarg);
			o.have_src = 1;
			break;
		case 'd':
			if (parse_host_port(optarg, &o.dst, &o.dst_len) != 0)
				return usage_error("--dst: not ADDR:PORT or [IPv6]:PORT: '%s'", optarg);
			o.have_dst = 1;
			break;
		case OPT_LOCAL:
			o.local = 1;
			break;
		case OPT_TLV:
			if ((r = parse_tlv(optarg, &o.tlvs[o.ntlv])) != EXIT_OK)
				return r;
			o.ntlv++;
			break;
		case OPT_CRC32C:
			o.crc32c = 1;
			break;
		case OPT_RAW_HEX:
			o.raw_hex = optarg;
			break;
		case OPT_SPLIT:
			if (parse_ulong(optarg, NPS_HEADER_CAP, &v) != 0 || v == 0)
				return usage_error("--split: not a byte count of at least 1: '%s'", optarg);
			o.split = (size_t)v;
			break;
		case OPT_SPLIT_DELAY:
			if (parse_ulong(optarg, NPS_MAX_DELAY_MS, &o.split_delay) != 0)
				return usage_error("--split-delay: not a number of milliseconds "
						   "(0 to 3600000): '%s'", optarg);
			split_delay_set = 1;
			break;
		case OPT_BIND:
			if (parse_address(optarg, strlen(optarg), 0, &o.bind_ss, &o.bind_len) != 0)
				return usage_error("--bind: not a numeric IPv4 or IPv6 address: '%s'", optarg);
			o.bind_text = optarg;
			break;
		case 'w':
			if (parse_timeout(optarg, &o.timeout_ms) != 0)
				return usage_error("--timeout: not a number of seconds above 0: '%s'", optarg);
			o.timeout_text = optarg;
			break;
		case 'q':
			o.quiet = 1;
			break;
		case 'h':
			usage(stdout);
			return EXIT_OK;
		case OPT_VERSION:
			puts(PROG " " NP_VERSION_STRING);
			return EXIT_OK;
		default: /* getopt_long() has said what is wrong */
			return usage_error(NULL);
		}
	}
	if (argc - optind < 2)
		return usage_error("HOST and PORT are required");
	if (argc - optind > 2)
		return usage_error("unexpected argument: '%s'", argv[optind + 2]);
	o.host = argv[optind];
	o.port = argv[optind + 1];
	if (parse_port(o.port, 1, &port) != 0)
		return usage_error("PORT: not a number from 1 to 65535: '%s'", o.port);
	if ((r = check_options(&o, split_delay_set)) != EXIT_OK)
		return r;

	/* Writes to a closed pipe or socket fail with EPIPE and are reported. */
	signal(SIGPIPE, SIG_IGN);

	int fd = connect_to(&o);
	if (fd < 0)
		return EXIT_FAIL;

	size_t len = o.raw_len, pieces;
	if (!o.raw_hex && (r = build_header(fd, &o, &len)) != EXIT_OK)
		goto out;
	if ((r = send_header(fd, &o, len, &pieces)) != EXIT_OK)
		goto out;
	report(fd, &o, len, pieces);
	r = relay(fd, &o);
out:
	close(fd);
	free(o.tlvs);
	return r;
}
