/*
 * bench_lib.c - ns per call of the library's parsers and builders (make bench).
 *
 * For each case the iteration count is calibrated so that one run takes about
 * RUN_NS; RUNS runs follow and the median ns/call is reported with the
 * fastest and slowest run as its spread. Results feed a volatile sink behind
 * a compiler barrier, so no call is optimised away. Every input is checked to
 * parse before it is timed. Nothing is asserted about the times: this only
 * reports.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"
#include "netproxy.h"

#define RUN_NS 20000000.0 /* one run: ~20 ms */
#define RUNS 15

static volatile uint64_t sink;

#define BARRIER() __asm__ __volatile__("" ::: "memory")

static double now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

/* One benchmark: what it works on and the loop that does `iters` calls. */
struct bench {
	const uint8_t *in;
	size_t in_len;
	const struct np_header *hdr;
	const struct np_tlv *tlvs;
	size_t ntlv;
	unsigned flags;
	int v1;
};

typedef void (*loop_fn)(const struct bench *b, uint64_t iters);

static void loop_parse(const struct bench *b, uint64_t iters)
{
	struct np_header h;
	uint64_t acc = 0;

	for (uint64_t i = 0; i < iters; i++) {
		acc += (uint64_t)np_parse(b->in, b->in_len, &h);
		acc += h.src.port;
		BARRIER();
	}
	sink += acc;
}

static void loop_build(const struct bench *b, uint64_t iters)
{
	uint8_t out[512];
	uint64_t acc = 0;

	for (uint64_t i = 0; i < iters; i++) {
		if (b->v1)
			acc += (uint64_t)np_build_v1(out, sizeof(out), b->hdr);
		else
			acc += (uint64_t)np_build_v2(out, sizeof(out), b->hdr, b->tlvs, b->ntlv, b->flags);
		acc += out[20];
		BARRIER();
	}
	sink += acc;
}

static void loop_crc_hw(const struct bench *b, uint64_t iters)
{
	uint32_t acc = 0;

	for (uint64_t i = 0; i < iters; i++) {
		acc += np__crc32c_hw(0, b->in, b->in_len);
		BARRIER();
	}
	sink += acc;
}

static void loop_crc_sw(const struct bench *b, uint64_t iters)
{
	uint32_t acc = 0;

	for (uint64_t i = 0; i < iters; i++) {
		acc += np__crc32c_sw(0, b->in, b->in_len);
		BARRIER();
	}
	sink += acc;
}

struct result {
	double median, min, max; /* ns per call */
};

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

static struct result measure(loop_fn fn, const struct bench *b)
{
	double per[RUNS];
	uint64_t iters = 1;
	double t;

	/* Calibrate: double until a run takes 2 ms, then scale to RUN_NS. */
	for (;;) {
		double t0 = now_ns();
		fn(b, iters);
		t = now_ns() - t0;
		if (t >= RUN_NS / 10 || iters >= (UINT64_C(1) << 40))
			break;
		iters *= 2;
	}
	iters = (uint64_t)((double)iters * RUN_NS / (t > 0 ? t : 1));
	if (iters == 0)
		iters = 1;

	for (int r = 0; r < RUNS; r++) {
		double t0 = now_ns();
		fn(b, iters);
		per[r] = (now_ns() - t0) / (double)iters;
	}
	qsort(per, RUNS, sizeof(per[0]), cmp_double);
	return (struct result){per[RUNS / 2], per[0], per[RUNS - 1]};
}

static void cpu_model(char *out, size_t cap)
{
	FILE *f = fopen("/proc/cpuinfo", "r");
	char line[512];

	snprintf(out, cap, "unknown");
	if (!f)
		return;
	while (fgets(line, sizeof(line), f)) {
		if (strncmp(line, "model name", 10) == 0) {
			char *v = strchr(line, ':');
			if (v) {
				v++;
				while (*v == ' ' || *v == '\t')
					v++;
				v[strcspn(v, "\n")] = '\0';
				snprintf(out, cap, "%s", v);
			}
			break;
		}
	}
	fclose(f);
}

static void die(const char *what, int r)
{
	fprintf(stderr, "bench-lib: %s: %s (%s)\n", what, np_strerror(r), np_errname(r));
	exit(1);
}

struct bench_case {
	const char *name;
	uint8_t wire[512];
	size_t wire_len;
	struct np_header hdr; /* parsed from wire: what the builder gets */
	struct np_tlv tlvs[4];
	size_t ntlv;
	unsigned flags;
	int v1;
};

/* Fill c->wire with the v1 line text and check it parses whole. */
static void case_v1(struct bench_case *c, const char *name, const char *line)
{
	c->name = name;
	c->wire_len = strlen(line);
	memcpy(c->wire, line, c->wire_len);
	c->v1 = 1;
	int r = np_parse(c->wire, c->wire_len, &c->hdr);
	if (r != (int)c->wire_len)
		die(name, r);
	uint8_t again[NP_V1_MAX_LEN];
	r = np_build_v1(again, sizeof(again), &c->hdr);
	if (r != (int)c->wire_len || memcmp(again, c->wire, c->wire_len) != 0)
		die(name, r < 0 ? r : NP_EINVAL);
}

/* Build c->wire from hdr and the case's TLVs, and check it parses back. */
static void case_v2(struct bench_case *c, const char *name, const struct np_header *hdr)
{
	struct np_header parsed;

	c->name = name;
	int r = np_build_v2(c->wire, sizeof(c->wire), hdr, c->tlvs, c->ntlv, c->flags);
	if (r < 0)
		die(name, r);
	c->wire_len = (size_t)r;
	r = np_parse(c->wire, c->wire_len, &parsed);
	if (r != (int)c->wire_len)
		die(name, r < 0 ? r : NP_EINVAL);
	c->hdr = parsed;
	c->hdr.tlv = NULL;
	c->hdr.tlv_len = 0;
}

int main(void)
{
	static struct bench_case cases[5];
	static const uint8_t unique_id[32] = {
		0x9f, 0x3a, 0x51, 0x0c, 0x77, 0xe2, 0x18, 0x4b, 0xa0, 0x6d, 0x33, 0xc8, 0x05, 0xf1, 0x92, 0x2e,
		0x4c, 0xb7, 0x68, 0x1d, 0xd9, 0x20, 0x8e, 0x73, 0x15, 0xaa, 0x3f, 0xe6, 0x41, 0x0b, 0x97, 0x5c};
	struct np_header h4, h6;
	size_t n = 0;
	char cpu[256];

	memset(&h4, 0, sizeof(h4));
	h4.version = 2;
	h4.command = NP_CMD_PROXY;
	h4.family = NP_AF_INET;
	h4.transport = NP_TRANSPORT_STREAM;
	memcpy(h4.src.ip4, (const uint8_t[]){192, 168, 0, 1}, 4);
	memcpy(h4.dst.ip4, (const uint8_t[]){192, 168, 0, 11}, 4);
	h4.src.port = 56324;
	h4.dst.port = 443;
	h6 = h4;
	h6.family = NP_AF_INET6;
	memcpy(h6.src.ip6, (const uint8_t[]){0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}, 16);
	memcpy(h6.dst.ip6, (const uint8_t[]){0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2}, 16);

	case_v1(&cases[n++], "v1 TCP4", "PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n");
	case_v1(&cases[n++], "v1 TCP6", "PROXY TCP6 2001:db8::1 2001:db8::2 56324 443\r\n");
	case_v2(&cases[n++], "v2 TCP4", &h4);
	case_v2(&cases[n++], "v2 TCP6", &h6);
	{
		struct bench_case *c = &cases[n++];
		c->tlvs[0] = (struct np_tlv){NP_TLV_ALPN, 2, (const uint8_t *)"h2"};
		c->tlvs[1] = (struct np_tlv){NP_TLV_AUTHORITY, 15, (const uint8_t *)"www.example.com"};
		c->tlvs[2] = (struct np_tlv){NP_TLV_UNIQUE_ID, 32, unique_id};
		c->ntlv = 3;
		c->flags = NP_BUILD_CRC32C;
		case_v2(c, "v2 TCP4 + ALPN, AUTHORITY, UNIQUE_ID, CRC32C", &h4);
		struct np_header p;
		struct np_tlv t;
		if (np_parse(c->wire, c->wire_len, &p) <= 0 || np_tlv_find(&p, NP_TLV_CRC32C, &t) != 1 ||
		    np_tlv_find(&p, NP_TLV_UNIQUE_ID, &t) != 1 || t.len != 32)
			die(c->name, NP_ETLV);
	}

	cpu_model(cpu, sizeof(cpu));
	printf("libnetproxy %s bench: median of %d runs of ~%.0f ms each, spread = fastest-slowest run\n",
	       NP_VERSION_STRING, RUNS, RUN_NS / 1e6);
	printf("CPU: %s; CRC32C: %s\n\n", cpu,
	       np__crc32c_hw_available() ? "SSE4.2 (hardware)" : "table (software)");

	printf("| case | parse ns (median) | spread | build ns (median) | spread |\n");
	printf("|---|---:|---:|---:|---:|\n");
	for (size_t i = 0; i < n; i++) {
		struct bench_case *c = &cases[i];
		struct bench b = {c->wire, c->wire_len, &c->hdr, c->tlvs, c->ntlv, c->flags, c->v1};
		struct result p = measure(loop_parse, &b);
		struct result bu = measure(loop_build, &b);
		printf("| %s (%zu B) | %.1f | %.1f-%.1f | %.1f | %.1f-%.1f |\n", c->name, c->wire_len,
		       p.median, p.min, p.max, bu.median, bu.min, bu.max);
		fflush(stdout);
	}

	static uint8_t data[1024];
	for (size_t i = 0; i < sizeof(data); i++)
		data[i] = (uint8_t)(i * 131 + 7);
	printf("\n| CRC32C bytes | hw ns (median) | spread | sw ns (median) | spread |\n");
	printf("|---:|---:|---:|---:|---:|\n");
	static const size_t sizes[] = {64, 1024};
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		struct bench b = {data, sizes[i], NULL, NULL, 0, 0, 0};
		struct result sw = measure(loop_crc_sw, &b);
		if (np__crc32c_hw_available()) {
			if (np__crc32c_hw(0, data, sizes[i]) != np__crc32c_sw(0, data, sizes[i]))
				die("CRC32C hw and sw disagree", NP_ECRC);
			struct result hw = measure(loop_crc_hw, &b);
			printf("| %zu | %.1f | %.1f-%.1f | %.1f | %.1f-%.1f |\n", sizes[i], hw.median, hw.min,
			       hw.max, sw.median, sw.min, sw.max);
		} else {
			printf("| %zu | n/a | n/a | %.1f | %.1f-%.1f |\n", sizes[i], sw.median, sw.min, sw.max);
		}
		fflush(stdout);
	}
	return 0;
}
