/*
 * test_sockaddr_len.c - np_header_from_sockaddr_len(): a header from socket
 * addresses of the lengths accept() and getpeername() report, reading no
 * byte past them.
 *
 * Each address is placed so that its last byte is the last one before a
 * PROT_NONE guard page: a read past its length faults and the test crashes
 * instead of passing. np_header_from_sockaddr(), which trusts the whole
 * struct of the family, would fault on the short ones.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "netproxy.h"
#include "tap.h"
#include "loopback.h"

static uint8_t *guard; /* the first byte of the PROT_NONE page */

static void guard_setup(void)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	uint8_t *base = mmap(NULL, 2 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (base == MAP_FAILED || mprotect(base + page, page, PROT_NONE) != 0) {
		perror("guard page");
		exit(2);
	}
	guard = base + page;
}

/*
 * Copy the first len bytes of sa flush against the guard page. The copy
 * keeps the alignment a socket address needs only when len is a multiple of
 * 4, so the short cases below are of such lengths; the family is read as
 * two bytes either way.
 */
static const struct sockaddr *at_guard(const void *sa, socklen_t len)
{
	uint8_t *at = guard - len;

	memcpy(at, sa, len);
	return (const struct sockaddr *)at;
}

static struct sockaddr_in inet4(const char *ip, uint16_t port)
{
	struct sockaddr_in sin;

	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_port = htons(port);
	inet_pton(AF_INET, ip, &sin.sin_addr);
	return sin;
}

static struct sockaddr_in6 inet6(const char *ip, uint16_t port)
{
	struct sockaddr_in6 sin6;

	memset(&sin6, 0, sizeof(sin6));
	sin6.sin6_family = AF_INET6;
	sin6.sin6_port = htons(port);
	inet_pton(AF_INET6, ip, &sin6.sin6_addr);
	return sin6;
}

/* The fields an INET or INET6 header has (the rest of the address union is not set). */
static int same_header(const struct np_header *a, const struct np_header *b)
{
	size_t alen = a->family == NP_AF_INET ? 4 : 16;

	return a->version == b->version && a->command == b->command && a->family == b->family &&
	       a->transport == b->transport && a->v1_proto == b->v1_proto &&
	       memcmp(a->src.ip6, b->src.ip6, alen) == 0 && memcmp(a->dst.ip6, b->dst.ip6, alen) == 0 &&
	       a->src.port == b->src.port && a->dst.port == b->dst.port && a->tlv == b->tlv &&
	       a->tlv_len == b->tlv_len;
}

static void test_whole_addresses(void)
{
	struct sockaddr_in s4 = inet4("192.0.2.1", 5000), d4 = inet4("198.51.100.2", 80);
	struct sockaddr_in6 s6 = inet6("2001:db8::1", 65535), d6 = inet6("2001:db8::2", 443);
	struct np_header h, old;
	struct sockaddr_in d4_copy;

	/* The source at the guard; the destination elsewhere, since both cannot end there. */
	memcpy(&d4_copy, &d4, sizeof(d4));
	memset(&h, 0xA5, sizeof(h));
	is_int(np_header_from_sockaddr_len(&h, at_guard(&s4, sizeof(s4)), sizeof(s4),
					   (struct sockaddr *)&d4_copy, sizeof(d4_copy)),
	       0, "AF_INET, whole: 0");
	np_header_from_sockaddr(&old, (struct sockaddr *)&s4, (struct sockaddr *)&d4);
	ok(same_header(&h, &old) && h.src.port == 5000 && h.dst.port == 80,
	   "AF_INET: the header np_header_from_sockaddr makes");

	memset(&h, 0xA5, sizeof(h));
	is_int(np_header_from_sockaddr_len(&h, (struct sockaddr *)&s6, sizeof(s6),
					   at_guard(&d6, sizeof(d6)), sizeof(d6)),
	       0, "AF_INET6, whole: 0");
	np_header_from_sockaddr(&old, (struct sockaddr *)&s6, (struct sockaddr *)&d6);
	ok(same_header(&h, &old) && h.src.port == 65535 && h.dst.port == 443,
	   "AF_INET6: the header np_header_from_sockaddr makes");

	/* A length above the struct's (a sockaddr_storage's) reads only the struct. */
	struct sockaddr_storage big;
	memset(&big, 0, sizeof(big));
	memcpy(&big, &s4, sizeof(s4));
	is_int(np_header_from_sockaddr_len(&h, (struct sockaddr *)&big, sizeof(big),
					   (struct sockaddr *)&d4, sizeof(d4)),
	       0, "AF_INET with the length of a sockaddr_storage: 0");
}

static void test_short_addresses(void)
{
	struct sockaddr_in s4 = inet4("192.0.2.1", 5000), d4 = inet4("198.51.100.2", 80);
	struct sockaddr_in6 s6 = inet6("2001:db8::1", 1), d6 = inet6("2001:db8::2", 2);
	struct np_header h;

	is_int(np_header_from_sockaddr_len(&h, at_guard(&s4, 8), 8, (struct sockaddr *)&d4, sizeof(d4)),
	       NP_EINVAL, "AF_INET source of 8 bytes: NP_EINVAL, nothing read past them");
	is_int(np_header_from_sockaddr_len(&h, (struct sockaddr *)&s4, sizeof(s4), at_guard(&d4, 12), 12),
	       NP_EINVAL, "AF_INET destination of 12 bytes: NP_EINVAL");
	is_int(np_header_from_sockaddr_len(&h, at_guard(&s6, 24), 24, (struct sockaddr *)&d6, sizeof(d6)),
	       NP_EINVAL, "AF_INET6 source of 24 bytes (no scope id, the address cut): NP_EINVAL");
	is_int(np_header_from_sockaddr_len(&h, (struct sockaddr *)&s6, sizeof(s6), at_guard(&d6, 8), 8),
	       NP_EINVAL, "AF_INET6 destination of 8 bytes: NP_EINVAL");
	is_int(np_header_from_sockaddr_len(&h, at_guard(&s4, 0), 0, (struct sockaddr *)&d4, sizeof(d4)),
	       NP_EINVAL, "a length of 0, not even the family: NP_EINVAL");
	is_int(np_header_from_sockaddr_len(&h, at_guard(&s4, 1), 1, (struct sockaddr *)&d4, sizeof(d4)),
	       NP_EINVAL, "a length of 1, half the family: NP_EINVAL");
	is_int(np_header_from_sockaddr_len(&h, NULL, sizeof(s4), (struct sockaddr *)&d4, sizeof(d4)),
	       NP_EINVAL, "a NULL source: NP_EINVAL");
	is_int(np_header_from_sockaddr_len(NULL, (struct sockaddr *)&s4, sizeof(s4), (struct sockaddr *)&d4,
					   sizeof(d4)),
	       NP_EINVAL, "a NULL header: NP_EINVAL");
	is_int(np_header_from_sockaddr_len(&h, (struct sockaddr *)&s4, sizeof(s4), (struct sockaddr *)&d6,
					   sizeof(d6)),
	       NP_EINVAL, "AF_INET + AF_INET6: NP_EINVAL");
}

static void test_unix_addresses(void)
{
	struct sockaddr_un named, unnamed;
	socklen_t named_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + sizeof("/run/x.sock"));
	struct np_header h;
	uint8_t zeros[NP_UNIX_PATH_LEN] = {0};

	memset(&named, 0, sizeof(named));
	named.sun_family = AF_UNIX;
	strcpy(named.sun_path, "/run/x.sock");
	memset(&unnamed, 0x55, sizeof(unnamed)); /* what lies past its length is not the peer's */
	unnamed.sun_family = AF_UNIX;

	/* As accept() gives an unnamed client: the family alone, 2 bytes. */
	memset(&h, 0xA5, sizeof(h));
	is_int(np_header_from_sockaddr_len(&h, at_guard(&unnamed, sizeof(sa_family_t)), sizeof(sa_family_t),
					   (struct sockaddr *)&named, named_len),
	       0, "AF_UNIX unnamed source of 2 bytes: 0, nothing read past them");
	ok(h.family == NP_AF_UNIX && memcmp(h.src.path, zeros, sizeof(zeros)) == 0 && h.src.port == 0,
	   "AF_UNIX unnamed source: an empty path, all 108 bytes zero");
	ok(strcmp((const char *)h.dst.path, "/run/x.sock") == 0 &&
		   memcmp(h.dst.path + sizeof("/run/x.sock"), zeros,
			  NP_UNIX_PATH_LEN - sizeof("/run/x.sock")) == 0,
	   "AF_UNIX named destination: its path, NUL-padded");

	/* The path ends where the length does, even without a NUL. */
	memset(&unnamed, 0, sizeof(unnamed));
	unnamed.sun_family = AF_UNIX;
	memcpy(unnamed.sun_path, "/tmp/abcdefgh", 13);
	socklen_t cut = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 6);
	is_int(np_header_from_sockaddr_len(&h, (struct sockaddr *)&named, named_len, at_guard(&unnamed, cut), cut),
	       0, "AF_UNIX destination cut inside its path: 0");
	ok(memcmp(h.dst.path, "/tmp/a", 6) == 0 && memcmp(h.dst.path + 6, zeros, NP_UNIX_PATH_LEN - 6) == 0,
	   "AF_UNIX cut path: the 6 bytes the length covers, then zeros");

	is_int(np_header_from_sockaddr_len(&h, (struct sockaddr *)&named, sizeof(named), (struct sockaddr *)&named,
					   sizeof(named)),
	       0, "AF_UNIX whole sockaddr_un: 0");
}

/* The lengths getpeername() and getsockname() report, fed straight in. */
static void test_connection(void)
{
	struct sockaddr_storage peer, self;
	socklen_t pl = sizeof(peer), sl = sizeof(self);
	struct np_header h;
	int c, a;

	if (loopback_listen() != 0 || loopback_connect(&c, &a, 0) != 0) {
		skip("no loopback TCP connection");
		return;
	}
	ok(getpeername(a, (struct sockaddr *)&peer, &pl) == 0 && getsockname(a, (struct sockaddr *)&self, &sl) == 0 &&
		   np_header_from_sockaddr_len(&h, (struct sockaddr *)&peer, pl, (struct sockaddr *)&self, sl) == 0 &&
		   h.family == NP_AF_INET && h.dst.port == ntohs(loopback_addr.sin_port),
	   "a loopback connection's getpeername() and getsockname() addresses and lengths");
	close(a);
	close(c);
	close(loopback_listener);
}

int main(void)
{
	guard_setup();
	test_whole_addresses();
	test_short_addresses();
	test_unix_addresses();
	test_connection();
	return done_testing();
}
