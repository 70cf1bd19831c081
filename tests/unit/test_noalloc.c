/*
 * test_noalloc.c - the library allocates nothing (netproxy.h promises it):
 * parse, TLV, SSL, vendor, CRC32C, build, address and error paths, and
 * np_try_recv_header() and np_recv_header(), all run with the heap
 * functions counted.
 *
 * This program defines malloc, calloc, realloc, free and the aligned
 * allocators itself; each counts the call and forwards to glibc's
 * __libc_* entry points. The library is linked statically into the program,
 * so its calls, if it made any, land here. Positive controls first show that
 * the counters move, for calls from this file and from inside libc, so the
 * zero that follows is a measurement and not a counter that never counts.
 *
 * No stdio inside a measured phase: printf may allocate its buffer. Each
 * phase records its counts and its work, and the test points come after.
 *
 * AddressSanitizer brings its own allocator, which these definitions would
 * fight; the sanitized build (NP_SANITIZED) skips and defines none of them.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "netproxy.h"
#include "tap.h"

#if !NP_SANITIZED

#include <malloc.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "vectors.h"

/* glibc's own allocator, under names that interposing malloc does not replace. */
extern void *__libc_malloc(size_t size);
extern void *__libc_calloc(size_t n, size_t size);
extern void *__libc_realloc(void *p, size_t size);
extern void __libc_free(void *p);
extern void *__libc_memalign(size_t align, size_t size);

/* Calls since start, one counter for allocations and one for free. */
static volatile unsigned long alloc_calls, free_calls;

void *malloc(size_t size)
{
	alloc_calls++;
	return __libc_malloc(size);
}

void *calloc(size_t n, size_t size)
{
	alloc_calls++;
	return __libc_calloc(n, size);
}

void *realloc(void *p, size_t size)
{
	alloc_calls++;
	return __libc_realloc(p, size);
}

void free(void *p)
{
	free_calls++;
	__libc_free(p);
}

void *memalign(size_t align, size_t size)
{
	alloc_calls++;
	return __libc_memalign(align, size);
}

void *aligned_alloc(size_t align, size_t size)
{
	alloc_calls++;
	return __libc_memalign(align, size);
}

int posix_memalign(void **out, size_t align, size_t size)
{
	void *p;

	alloc_calls++;
	if (align < sizeof(void *) || (align & (align - 1)) != 0)
		return EINVAL;
	p = __libc_memalign(align, size);
	if (!p)
		return ENOMEM;
	*out = p;
	return 0;
}

void *valloc(size_t size)
{
	alloc_calls++;
	return __libc_memalign((size_t)sysconf(_SC_PAGESIZE), size);
}

void *pvalloc(size_t size)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);

	alloc_calls++;
	return __libc_memalign(page, (size + page - 1) / page * page);
}

/*
 * The controls call through volatile pointers: a direct malloc/free pair is
 * something the compiler may delete, and then the control proves nothing.
 */
static void *(*volatile p_malloc)(size_t) = malloc;
static void *(*volatile p_calloc)(size_t, size_t) = calloc;
static void *(*volatile p_realloc)(void *, size_t) = realloc;
static void (*volatile p_free)(void *) = free;
static void *(*volatile p_memalign)(size_t, size_t) = memalign;
static void *(*volatile p_aligned_alloc)(size_t, size_t) = aligned_alloc;
static int (*volatile p_posix_memalign)(void **, size_t, size_t) = posix_memalign;
static void *(*volatile p_valloc)(size_t) = valloc;
static void *(*volatile p_pvalloc)(size_t) = pvalloc;
static char *(*volatile p_strdup)(const char *) = strdup;

static void control(const char *what, unsigned long allocs_before, unsigned long frees_before,
		    unsigned long want_allocs, unsigned long want_frees)
{
	unsigned long a = alloc_calls - allocs_before, f = free_calls - frees_before;

	if (!ok(a == want_allocs && f == want_frees, "control: %s is counted", what))
		diag("  %lu allocations and %lu frees counted, want %lu and %lu", a, f, want_allocs,
		     want_frees);
}

static void check_controls(void)
{
	unsigned long a, f;
	void *p, *q;

	a = alloc_calls, f = free_calls;
	p = p_malloc(32);
	control("malloc", a, f, 1, 0);

	a = alloc_calls, f = free_calls;
	p = p_realloc(p, 4096);
	control("realloc", a, f, 1, 0);

	a = alloc_calls, f = free_calls;
	p_free(p);
	control("free", a, f, 0, 1);

	a = alloc_calls, f = free_calls;
	p = p_calloc(4, 8);
	q = p_memalign(64, 100);
	p_free(q);
	p_free(p);
	control("calloc + memalign", a, f, 2, 2);

	a = alloc_calls, f = free_calls;
	p = p_aligned_alloc(64, 128);
	q = NULL;
	if (p_posix_memalign(&q, 64, 100) != 0)
		q = NULL;
	p_free(q);
	p_free(p);
	control("aligned_alloc + posix_memalign", a, f, 2, 2);

	a = alloc_calls, f = free_calls;
	p = p_valloc(10);
	q = p_pvalloc(10);
	p_free(q);
	p_free(p);
	control("valloc + pvalloc", a, f, 2, 2);

	/* An allocation made inside libc, another object, is seen too. */
	a = alloc_calls, f = free_calls;
	p = p_strdup("allocated by libc");
	ok(p != NULL && alloc_calls - a >= 1, "control: an allocation inside libc (strdup) is counted");
	p_free(p);
}

/* One measured phase: what it cost and how much it did. */
struct phase {
	const char *name;
	void (*run)(unsigned long *work);
	unsigned long allocs, frees, work;
};

/* Scratch for the phases: static, so the phases themselves need no stack arrays to speak of. */
static struct np_header parsed[VEC_COUNT];
static int parsed_ok[VEC_COUNT];
static uint8_t out_buf[NP_V2_MAX_LEN];
#define MAX_TLVS 64

static void run_parse(unsigned long *work)
{
	struct np_header h;

	for (size_t i = 0; i < VEC_COUNT; i++) {
		const struct vec *v = &vectors[i];

		for (size_t n = 0; n <= v->len; n++)
			*work += np_parse(v->bytes, n, &h) > 0;
		if (v->expect == 1) {
			np_parse_max(v->bytes, v->len, v->header_len, &h);
			np_parse_max(v->bytes, v->len, v->header_len - 1, &h);
			parsed_ok[i] = np_parse(v->bytes, v->len, &parsed[i]) > 0;
		}
	}
}

static void run_tlv(unsigned long *work)
{
	struct np_tlv_iter it;
	struct np_tlv t;

	for (size_t i = 0; i < VEC_COUNT; i++) {
		if (!parsed_ok[i])
			continue;
		np_tlv_iter_init(&it, parsed[i].tlv, parsed[i].tlv_len);
		while (np_tlv_next(&it, &t) == 1)
			(*work)++;
		for (unsigned type = 0; type < 256; type++)
			if (np_tlv_find(&parsed[i], (uint8_t)type, &t) == 1)
				(*work)++;
	}
}

static void run_ssl(unsigned long *work)
{
	struct np_tlv_iter it, sub_it;
	struct np_tlv t, sub;
	struct np_ssl ssl;

	for (size_t i = 0; i < VEC_COUNT; i++) {
		if (!parsed_ok[i])
			continue;
		np_tlv_iter_init(&it, parsed[i].tlv, parsed[i].tlv_len);
		while (np_tlv_next(&it, &t) == 1) {
			/* Non-SSL TLVs exercise the refusal path. */
			if (np_ssl_decode(&t, &ssl) != 0)
				continue;
			(*work)++;
			np_ssl_verified(&ssl);
			for (unsigned st = NP_SSL_VERSION; st <= NP_SSL_CLIENT_CERT + 1; st++)
				if (np_ssl_find(&ssl, (uint8_t)st, &sub) == 1)
					(*work)++;
			np_tlv_iter_init(&sub_it, ssl.sub, ssl.sub_len);
			while (np_tlv_next(&sub_it, &sub) == 1)
				(*work)++;
		}
	}
}

static void run_vendor(unsigned long *work)
{
	struct np_tlv_iter it;
	struct np_tlv t;

	for (size_t i = 0; i < VEC_COUNT; i++) {
		if (!parsed_ok[i])
			continue;
		np_tlv_iter_init(&it, parsed[i].tlv, parsed[i].tlv_len);
		while (np_tlv_next(&it, &t) == 1) {
			const uint8_t *id;
			size_t len;
			uint32_t link;
			uint64_t psc;

			*work += np_tlv_aws_vpce_id(&t, &id, &len) == 0;
			*work += np_tlv_azure_link_id(&t, &link) == 0;
			*work += np_tlv_gcp_psc_id(&t, &psc) == 0;
		}
	}
}

static void run_crc(unsigned long *work)
{
	uint32_t c = 0;

	for (size_t i = 0; i < VEC_COUNT; i++) {
		c = np_crc32c(0, vectors[i].bytes, vectors[i].len);
		(*work)++;
	}
	/* The check value, so the loop above is not dead code. */
	*work += np_crc32c(0, "123456789", 9) == 0xE3069283u && c != 0xE3069283u;
}

static void run_build_v1(unsigned long *work)
{
	for (size_t i = 0; i < VEC_COUNT; i++)
		if (parsed_ok[i] && np_build_v1(out_buf, sizeof(out_buf), &parsed[i]) > 0)
			(*work)++;
}

/* The parsed TLV list as an array, the shape np_build_v2() takes. */
static size_t collect_tlvs(const struct np_header *h, struct np_tlv *tlvs)
{
	struct np_tlv_iter it;
	size_t n = 0;

	np_tlv_iter_init(&it, h->tlv, h->tlv_len);
	while (n < MAX_TLVS && np_tlv_next(&it, &tlvs[n]) == 1)
		n++;
	return n;
}

static void build_v2(unsigned flags, unsigned long *work)
{
	struct np_tlv tlvs[MAX_TLVS];
	struct np_header back;

	for (size_t i = 0; i < VEC_COUNT; i++) {
		if (!parsed_ok[i])
			continue;
		size_t n = collect_tlvs(&parsed[i], tlvs);
		int r = np_build_v2(out_buf, sizeof(out_buf), &parsed[i], tlvs, n, flags);
		/* What was built parses again: the work was real. */
		if (r > 0 && np_parse(out_buf, (size_t)r, &back) == r)
			(*work)++;
	}
}

static void run_build_v2(unsigned long *work)
{
	build_v2(0, work);
}

static void run_build_v2_crc(unsigned long *work)
{
	build_v2(NP_BUILD_CRC32C, work);
}

static void run_format(unsigned long *work)
{
	char text[NP_UNIX_PATH_LEN + 1];

	for (size_t i = 0; i < VEC_COUNT; i++) {
		const struct np_header *h = &parsed[i];

		if (!parsed_ok[i] || !np_has_addresses(h))
			continue;
		*work += np_format_addr(text, sizeof(text), h->family, &h->src) >= 0;
		*work += np_format_addr(text, sizeof(text), h->family, &h->dst) >= 0;
		np_format_addr(text, 1, h->family, &h->src); /* NP_ENOSPC path */
	}
	np_format_addr(text, sizeof(text), NP_AF_UNSPEC, &parsed[0].src); /* NP_EINVAL path */
}

static void run_sockaddr(unsigned long *work)
{
	struct sockaddr_storage src, dst;
	struct np_header back;

	for (size_t i = 0; i < VEC_COUNT; i++) {
		const struct np_header *h = &parsed[i];

		if (!parsed_ok[i])
			continue;
		if (np_endpoint_to_sockaddr(h, &h->src, &src) > 0 &&
		    np_endpoint_to_sockaddr(h, &h->dst, &dst) > 0 &&
		    np_header_from_sockaddr(&back, (struct sockaddr *)&src, (struct sockaddr *)&dst) == 0)
			(*work)++;
	}
}

static void run_cidr(unsigned long *work)
{
	static const char *const blocks[] = {"127.0.0.1", "10.0.0.0/8", "2001:db8::/32", "::1",
					     "::ffff:1.2.3.4", "1.2.3.4/33", "nonsense"};
	struct sockaddr_in6 peer6 = {.sin6_family = AF_INET6};
	struct sockaddr_in peer4 = {.sin_family = AF_INET};
	struct np_cidr c;

	for (size_t i = 0; i < sizeof(blocks) / sizeof(blocks[0]); i++) {
		if (np_cidr_parse(blocks[i], strlen(blocks[i]), &c) != 0)
			continue;
		*work += 1 + np_cidr_match(&c, (struct sockaddr *)&peer4) +
			 np_cidr_match(&c, (struct sockaddr *)&peer6);
	}
}

static void run_names(unsigned long *work)
{
	struct sockaddr_in6 in6 = {.sin6_family = AF_INET6};
	char out[NP_SOCKADDRSTRLEN];

	for (unsigned t = 0; t < 256; t++)
		*work += np_tlv_name((uint8_t)t) != NULL;
	*work += np_tlv_type("unique_id", 9) == NP_TLV_UNIQUE_ID;
	*work += np_format_sockaddr(out, sizeof(out), (struct sockaddr *)&in6, sizeof(in6)) > 0;
	*work += np_version() > 0;
}

static void run_errors(unsigned long *work)
{
	/* Every code, and a few that are none, for the "unknown" answers. */
	for (int e = NP_ESYS - 3; e <= 1; e++) {
		*work += np_strerror(e)[0] != '\0';
		*work += np_errname(e)[0] != '\0';
	}
}

static int sock[2] = {-1, -1};

#define RECV_BUF 512 /* the read buffer: vectors with longer headers are skipped */

/*
 * Send the header of each valid vector that fits a read buffer, whole, and
 * let read_one take it (and send more if it likes); stops at the first
 * failed send or when read_one says so.
 */
static void each_header_sent(unsigned long *work, bool (*read_one)(const struct vec *v, unsigned long *work))
{
	if (sock[0] < 0)
		return;
	for (size_t i = 0; i < VEC_COUNT; i++) {
		const struct vec *v = &vectors[i];

		if (v->expect != 1 || v->header_len > RECV_BUF)
			continue;
		if (send(sock[1], v->bytes, v->header_len, 0) != (ssize_t)v->header_len || !read_one(v, work))
			return;
	}
}

static bool recv_one(const struct vec *v, unsigned long *work)
{
	uint8_t buf[RECV_BUF];
	struct np_header h;

	if (np_recv_header(sock[0], buf, sizeof(buf), &h, 1000) == (int)v->header_len)
		(*work)++;
	return true;
}

static void run_recv(unsigned long *work)
{
	each_header_sent(work, recv_one);
}

/* The header sent whole, then one byte at a time: NP_EAGAIN until the last. */
static bool try_recv_one(const struct vec *v, unsigned long *work)
{
	uint8_t buf[RECV_BUF];
	struct np_header h;

	if (np_try_recv_header(sock[0], buf, sizeof(buf), &h) == (int)v->header_len)
		(*work)++;
	for (size_t k = 0; k < v->header_len; k++) {
		if (send(sock[1], v->bytes + k, 1, 0) != 1)
			return false;
		int r = np_try_recv_header(sock[0], buf, sizeof(buf), &h);
		*work += k + 1 < v->header_len ? r == NP_EAGAIN : r == (int)v->header_len;
	}
	return true;
}

static void run_try_recv(unsigned long *work)
{
	each_header_sent(work, try_recv_one);
}

static struct phase phases[] = {
	{"np_parse / np_parse_max over every vector and prefix", run_parse, 0, 0, 0},
	{"TLV walk and np_tlv_find", run_tlv, 0, 0, 0},
	{"np_ssl_decode / np_ssl_find / np_ssl_verified", run_ssl, 0, 0, 0},
	{"vendor TLV helpers", run_vendor, 0, 0, 0},
	{"np_crc32c", run_crc, 0, 0, 0},
	{"np_build_v1", run_build_v1, 0, 0, 0},
	{"np_build_v2", run_build_v2, 0, 0, 0},
	{"np_build_v2 with NP_BUILD_CRC32C", run_build_v2_crc, 0, 0, 0},
	{"np_format_addr", run_format, 0, 0, 0},
	{"np_endpoint_to_sockaddr / np_header_from_sockaddr", run_sockaddr, 0, 0, 0},
	{"np_cidr_parse / np_cidr_match", run_cidr, 0, 0, 0},
	{"np_tlv_name / np_tlv_type / np_format_sockaddr / np_version", run_names, 0, 0, 0},
	{"np_strerror / np_errname", run_errors, 0, 0, 0},
	{"np_recv_header", run_recv, 0, 0, 0},
	{"np_try_recv_header", run_try_recv, 0, 0, 0},
};

int main(void)
{
	check_controls();

	/* Before the phases: the socket pair is set-up, not measured. */
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sock) != 0)
		sock[0] = sock[1] = -1;
	fflush(stdout);

	for (size_t i = 0; i < sizeof(phases) / sizeof(phases[0]); i++) {
		struct phase *p = &phases[i];
		unsigned long a = alloc_calls, f = free_calls;

		p->run(&p->work);
		p->allocs = alloc_calls - a;
		p->frees = free_calls - f;
	}

	for (size_t i = 0; i < sizeof(phases) / sizeof(phases[0]); i++) {
		const struct phase *p = &phases[i];

		/* work > 0: a phase that did nothing would pass vacuously. */
		if (!ok(p->allocs == 0 && p->frees == 0 && p->work > 0, "no allocation: %s (%lu done)",
			p->name, p->work))
			diag("  %lu allocations, %lu frees", p->allocs, p->frees);
	}
	if (sock[0] >= 0) {
		close(sock[0]);
		close(sock[1]);
	}
	return done_testing();
}

#else /* NP_SANITIZED */

int main(void)
{
	skip_all("allocation counting needs the plain allocator");
	return 0;
}

#endif
