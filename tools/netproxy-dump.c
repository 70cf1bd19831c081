/*
 * netproxy-dump - decode one PROXY protocol header (v1 or v2) and print it.
 *
 *   netproxy-dump [--json] [--max N] [FILE | --hex HEX]
 *
 * The whole input (standard input, FILE or the bytes spelled by --hex) is
 * read into a static buffer of at most NPD_MAX_INPUT bytes and handed to
 * np_parse_max() once. Whatever follows the header is application data and
 * is only counted.
 *
 * Exit status: 0 a valid header, 1 an invalid one, 2 an incomplete one,
 * 64 usage error, 65 input larger than NPD_MAX_INPUT, 66 unreadable input,
 * 74 standard output could not be written.
 */
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "netproxy.h"
#include "common.h"

#define PROG "netproxy-dump"

const char tool_name[] = PROG;

#define NPD_MAX_INPUT (1024u * 1024u) /* 1 MiB: far more than the largest header */

/* sysexits(3) values, spelled out so as not to depend on <sysexits.h>. */
enum {
	EXIT_OK = 0,
	EXIT_INVALID = 1,
	EXIT_INCOMPLETE = 2,
	EXIT_USAGE = TOOL_EXIT_USAGE,
	EXIT_DATAERR = 65,
	EXIT_NOINPUT = 66,
	EXIT_IOERR = 74,
};

/* One byte more than the cap, to tell "exactly full" from "too much". */
static uint8_t input[NPD_MAX_INPUT + 1];

static const char hexdigits[] = "0123456789abcdef";

/* --- usage ---------------------------------------------------------------- */

static void usage(FILE *out)
{
	fputs("usage: " PROG " [--json] [--max N] [FILE | --hex HEX]\n"
	      "       " PROG " -h | --help | --version\n"
	      "\n"
	      "Decode one PROXY protocol header (version 1 or 2) read from standard\n"
	      "input, from FILE (\"-\" is standard input) or given as hex digits, and\n"
	      "print its fields. Bytes after the header are application data: they\n"
	      "are counted, not decoded. At most 1 MiB of input is read.\n"
	      "\n"
	      "options:\n"
	      "  --json       print one JSON object on one line instead of text\n"
	      "  --hex HEX    decode the bytes spelled by HEX (pairs of hex digits,\n"
	      "               whitespace between them allowed) instead of reading input\n"
	      "  --max N      refuse a header longer than N bytes (NP_ETOOBIG), as a\n"
	      "               receiver capped at N bytes would; default 65551\n"
	      "  -h, --help   print this help and exit\n"
	      "  --version    print the version and exit\n"
	      "\n"
	      "exit status:\n"
	      "  0   a valid header\n"
	      "  1   an invalid header (the error is printed)\n"
	      "  2   an incomplete header: a valid prefix that needs more bytes\n"
	      "  64  usage error: unknown option, bad --hex or --max argument\n"
	      "  65  input larger than 1 MiB\n"
	      "  66  the input file cannot be opened or read\n"
	      "  74  standard output cannot be written\n",
	      out);
}

/* --- input ---------------------------------------------------------------- */

static int too_big(void)
{
	fprintf(stderr, PROG ": input larger than %u bytes\n", NPD_MAX_INPUT);
	return EXIT_DATAERR;
}

/*
 * Decode pairs of hex digits into input[]; whitespace may separate (not
 * split) pairs. Returns EXIT_OK with *len set, or an exit status after
 * saying why.
 */
static int decode_hex_input(const char *s, size_t *len)
{
	const char *bad = s;

	switch (decode_hex(s, true, input, NPD_MAX_INPUT, len, &bad)) {
	case HEX_OK:
		return EXIT_OK;
	case HEX_ODD:
		return usage_error("--hex: odd number of hex digits (a byte is two digits)");
	case HEX_LONG:
		return too_big();
	}
	return usage_error("--hex: not a hex digit: '%c'", *bad);
}

/* Read all of fp, at most NPD_MAX_INPUT bytes. name is for messages. */
static int read_all(FILE *fp, const char *name, size_t *len)
{
	size_t n = 0;

	while (n < sizeof(input) && !feof(fp) && !ferror(fp))
		n += fread(input + n, 1, sizeof(input) - n, fp);
	if (ferror(fp)) {
		fprintf(stderr, PROG ": %s: %s\n", name, strerror(errno));
		return EXIT_NOINPUT;
	}
	if (n > NPD_MAX_INPUT)
		return too_big();
	*len = n;
	return EXIT_OK;
}

static int read_input(const char *path, size_t *len)
{
	if (!path || strcmp(path, "-") == 0)
		return read_all(stdin, "standard input", len);

	FILE *fp = fopen(path, "rb");
	if (!fp) {
		fprintf(stderr, PROG ": %s: %s\n", path, strerror(errno));
		return EXIT_NOINPUT;
	}
	errno = 0;
	int r = read_all(fp, path, len);
	fclose(fp);
	return r;
}

/* --- names ---------------------------------------------------------------- */

static const char *command_name(uint8_t c)
{
	return c == NP_CMD_PROXY ? "PROXY" : c == NP_CMD_LOCAL ? "LOCAL" : "?";
}

static const char *family_name(uint8_t f)
{
	switch (f) {
	case NP_AF_UNSPEC:
		return "UNSPEC";
	case NP_AF_INET:
		return "INET";
	case NP_AF_INET6:
		return "INET6";
	case NP_AF_UNIX:
		return "UNIX";
	}
	return "?";
}

static const char *transport_name(uint8_t t)
{
	switch (t) {
	case NP_TRANSPORT_UNSPEC:
		return "UNSPEC";
	case NP_TRANSPORT_STREAM:
		return "STREAM";
	case NP_TRANSPORT_DGRAM:
		return "DGRAM";
	}
	return "?";
}

static const char *v1_proto_name(uint8_t p)
{
	switch (p) {
	case NP_V1_TCP4:
		return "TCP4";
	case NP_V1_TCP6:
		return "TCP6";
	case NP_V1_UNKNOWN:
		return "UNKNOWN";
	}
	return NULL;
}


static const char *ssl_sub_name(uint8_t type)
{
	switch (type) {
	case NP_SSL_VERSION:
		return "SSL_VERSION";
	case NP_SSL_CN:
		return "SSL_CN";
	case NP_SSL_CIPHER:
		return "SSL_CIPHER";
	case NP_SSL_SIG_ALG:
		return "SSL_SIG_ALG";
	case NP_SSL_KEY_ALG:
		return "SSL_KEY_ALG";
	case NP_SSL_GROUP:
		return "SSL_GROUP";
	case NP_SSL_SIG_SCHEME:
		return "SSL_SIG_SCHEME";
	case NP_SSL_CLIENT_CERT:
		return "SSL_CLIENT_CERT";
	}
	return "UNASSIGNED";
}

/* --- shared output helpers ------------------------------------------------ */

static void put_hex(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		putchar(hexdigits[p[i] >> 4]);
		putchar(hexdigits[p[i] & 0xF]);
	}
}

/* An endpoint's address as text; returns 0, or -1 when it has none. */
static int format_addr(char *out, size_t cap, const struct np_header *h, const struct np_endpoint *ep)
{
	if (!np_has_addresses(h))
		return -1;
	return np_format_addr(out, cap, h->family, ep) < 0 ? -1 : 0;
}

/* NP_UNIX_PATH_LEN bytes and a NUL; NP_ADDRSTRLEN for the others. */
#define ADDR_BUF (NP_UNIX_PATH_LEN + 1)

/* --- JSON ----------------------------------------------------------------- */

/* A JSON string; bytes are taken as latin-1, so >= 0x80 become \u00XX. */
static void json_str(const char *s)
{
	putchar('"');
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		switch (*p) {
		case '"':
			fputs("\\\"", stdout);
			break;
		case '\\':
			fputs("\\\\", stdout);
			break;
		case '\n':
			fputs("\\n", stdout);
			break;
		case '\r':
			fputs("\\r", stdout);
			break;
		case '\t':
			fputs("\\t", stdout);
			break;
		default:
			if (*p < 0x20 || *p >= 0x7F)
				printf("\\u%04x", *p);
			else
				putchar(*p);
		}
	}
	putchar('"');
}

static void json_addr(const char *key, const struct np_header *h, const struct np_endpoint *ep)
{
	char text[ADDR_BUF];

	printf(",\"%s\":", key);
	if (format_addr(text, sizeof(text), h, ep) == 0)
		json_str(text);
	else
		fputs("null", stdout);
}

static void json_port(const char *key, const struct np_header *h, const struct np_endpoint *ep)
{
	printf(",\"%s\":", key);
	if (np_has_addresses(h) && h->family != NP_AF_UNIX)
		printf("%u", (unsigned)ep->port);
	else
		fputs("null", stdout);
}

static void json_ok(const struct np_header *h, size_t header_len, size_t total)
{
	const char *proto = v1_proto_name(h->v1_proto);
	struct np_tlv_iter it;
	struct np_tlv t;
	int crc = 0, first = 1;

	printf("{\"result\":\"ok\",\"version\":%u,\"command\":\"%s\",\"family\":\"%s\","
	       "\"transport\":\"%s\"",
	       (unsigned)h->version, command_name(h->command), family_name(h->family),
	       transport_name(h->transport));
	json_addr("src", h, &h->src);
	json_addr("dst", h, &h->dst);
	json_port("src_port", h, &h->src);
	json_port("dst_port", h, &h->dst);
	printf(",\"header_len\":%zu,\"v1_proto\":", header_len);
	if (proto)
		printf("\"%s\"", proto);
	else
		fputs("null", stdout);

	fputs(",\"tlvs\":[", stdout);
	np_tlv_iter_init(&it, h->tlv, h->tlv_len);
	while (np_tlv_next(&it, &t) > 0) {
		printf("%s{\"type\":%u,\"hex\":\"", first ? "" : ",", (unsigned)t.type);
		put_hex(t.value, t.len);
		fputs("\"}", stdout);
		first = 0;
		if (t.type == NP_TLV_CRC32C)
			crc = 1;
	}
	/* np_parse() verified any CRC32C TLV: a wrong one is an NP_ECRC error. */
	printf("],\"crc32c\":%s,\"data_len\":%zu}\n", crc ? "\"valid\"" : "null",
	       total - header_len);
}

static void json_error(int r)
{
	printf("{\"result\":\"error\",\"error\":");
	json_str(np_errname(r));
	fputs(",\"message\":", stdout);
	json_str(np_strerror(r));
	fputs("}\n", stdout);
}

static void json_incomplete(size_t have)
{
	printf("{\"result\":\"incomplete\",\"have\":%zu}\n", have);
}

/* --- text ----------------------------------------------------------------- */

static const char *plural(size_t n)
{
	return n == 1 ? "" : "s";
}

static int printable(const uint8_t *p, size_t n)
{
	if (n == 0)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (p[i] < 0x20 || p[i] > 0x7E)
			return 0;
	return 1;
}

/* A value: quoted text when printable ASCII, hex otherwise, "(empty)" when empty. */
static void text_value(const uint8_t *p, size_t n)
{
	if (n == 0) {
		fputs("(empty)", stdout);
	} else if (printable(p, n)) {
		putchar('"');
		for (size_t i = 0; i < n; i++) {
			if (p[i] == '"' || p[i] == '\\')
				putchar('\\');
			putchar(p[i]);
		}
		putchar('"');
	} else {
		put_hex(p, n);
	}
}

/* An address for the text form: C-like escapes for anything not printable. */
static void text_addr(const struct np_header *h, const struct np_endpoint *ep)
{
	char text[ADDR_BUF];

	if (format_addr(text, sizeof(text), h, ep) != 0) {
		fputs("?", stdout);
		return;
	}
	switch (h->family) {
	case NP_AF_INET:
		printf("%s:%u", text, (unsigned)ep->port);
		break;
	case NP_AF_INET6:
		printf("[%s]:%u", text, (unsigned)ep->port);
		break;
	default:
		putchar('"');
		for (const unsigned char *p = (const unsigned char *)text; *p; p++) {
			if (*p == '"' || *p == '\\')
				printf("\\%c", *p);
			else if (*p < 0x20 || *p > 0x7E)
				printf("\\x%02x", *p);
			else
				putchar(*p);
		}
		putchar('"');
	}
}

static void text_ssl(const struct np_tlv *t)
{
	struct np_ssl ssl;
	struct np_tlv_iter it;
	struct np_tlv sub;

	if (np_ssl_decode(t, &ssl) != 0) {
		/* np_parse() already refuses these; show the bytes rather than nothing. */
		fputs("malformed: ", stdout);
		text_value(t->value, t->len);
		putchar('\n');
		return;
	}
	printf("client 0x%02x", (unsigned)ssl.client);
	if (ssl.client & (NP_SSL_CLIENT_SSL | NP_SSL_CLIENT_CERT_CONN | NP_SSL_CLIENT_CERT_SESS)) {
		const char *sep = " (";
		if (ssl.client & NP_SSL_CLIENT_SSL) {
			printf("%sSSL", sep);
			sep = ", ";
		}
		if (ssl.client & NP_SSL_CLIENT_CERT_CONN) {
			printf("%sCERT_CONN", sep);
			sep = ", ";
		}
		if (ssl.client & NP_SSL_CLIENT_CERT_SESS)
			printf("%sCERT_SESS", sep);
		putchar(')');
	}
	printf(", verify %" PRIu32 " (%s)\n", ssl.verify,
	       np_ssl_verified(&ssl) ? "certificate verified"
	       : ssl.client & (NP_SSL_CLIENT_CERT_CONN | NP_SSL_CLIENT_CERT_SESS)
		       ? "certificate NOT verified"
		       : "no client certificate");

	np_tlv_iter_init(&it, ssl.sub, ssl.sub_len);
	while (np_tlv_next(&it, &sub) > 0) {
		printf("      %-15s (0x%02x, %u byte%s): ", ssl_sub_name(sub.type),
		       (unsigned)sub.type, (unsigned)sub.len, plural(sub.len));
		text_value(sub.value, sub.len);
		putchar('\n');
	}
}


/* The type's name, else the range of the specification it falls in. */
static const char *tlv_name(uint8_t type)
{
	if (np_tlv_name(type))
		return np_tlv_name(type);
	if (type >= 0xE0 && type <= 0xEF)
		return "CUSTOM";
	if (type >= 0xF0 && type <= 0xF7)
		return "EXPERIMENT";
	if (type >= 0xF8)
		return "FUTURE";
	return "UNASSIGNED";
}

static void text_tlv(const struct np_tlv *t)
{
	const uint8_t *id;
	size_t id_len;
	uint32_t link;
	uint64_t psc;

	printf("    %-10s (0x%02x, %u byte%s): ", tlv_name(t->type), (unsigned)t->type,
	       (unsigned)t->len, plural(t->len));
	switch (t->type) {
	case NP_TLV_CRC32C:
		put_hex(t->value, t->len);
		fputs(" (valid)\n", stdout);
		return;
	case NP_TLV_SSL:
		text_ssl(t);
		return;
	case NP_TLV_AWS:
		if (np_tlv_aws_vpce_id(t, &id, &id_len) == 0) {
			fputs("VPC endpoint id ", stdout);
			text_value(id, id_len);
			putchar('\n');
			return;
		}
		break;
	case NP_TLV_AZURE:
		if (np_tlv_azure_link_id(t, &link) == 0) {
			printf("private endpoint link id %" PRIu32 " (0x%08" PRIx32 ")\n", link, link);
			return;
		}
		break;
	case NP_TLV_GCP:
		if (np_tlv_gcp_psc_id(t, &psc) == 0) {
			printf("PSC connection id %" PRIu64 " (0x%016" PRIx64 ")\n", psc, psc);
			return;
		}
		break;
	}
	text_value(t->value, t->len);
	putchar('\n');
}

static void text_ok(const struct np_header *h, size_t header_len, size_t total)
{
	const char *proto = v1_proto_name(h->v1_proto);
	struct np_tlv_iter it;
	struct np_tlv t;
	size_t ntlv = 0;

	if (proto)
		printf("version:     1 (%s)\n", proto);
	else
		printf("version:     %u\n", (unsigned)h->version);
	printf("command:     %s\n", command_name(h->command));
	printf("family:      %s\n", family_name(h->family));
	printf("transport:   %s\n", transport_name(h->transport));
	fputs("addresses:   ", stdout);
	if (np_has_addresses(h)) {
		text_addr(h, &h->src);
		fputs(" -> ", stdout);
		text_addr(h, &h->dst);
		putchar('\n');
	} else {
		fputs("none (use the connection's own endpoints)\n", stdout);
	}
	printf("header:      %zu bytes\n", header_len);
	printf("data:        %zu byte%s after the header\n", total - header_len,
	       plural(total - header_len));

	np_tlv_iter_init(&it, h->tlv, h->tlv_len);
	while (np_tlv_next(&it, &t) > 0)
		ntlv++;
	if (h->version == 1)
		return;
	printf("tlvs:        %zu\n", ntlv);
	np_tlv_iter_init(&it, h->tlv, h->tlv_len);
	while (np_tlv_next(&it, &t) > 0)
		text_tlv(&t);
}

/* --- main ----------------------------------------------------------------- */

/* A non-negative decimal size; 0 on success. */
static int parse_size(const char *s, size_t *out)
{
	char *end;
	unsigned long long v;

	if (!isdigit((unsigned char)s[0]))
		return -1;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno != 0 || *end != '\0' || v > SIZE_MAX)
		return -1;
	*out = (size_t)v;
	return 0;
}

enum { OPT_JSON = 256, OPT_HEX, OPT_MAX, OPT_VERSION };

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"json", no_argument, NULL, OPT_JSON},
		{"hex", required_argument, NULL, OPT_HEX},
		{"max", required_argument, NULL, OPT_MAX},
		{"help", no_argument, NULL, 'h'},
		{"version", no_argument, NULL, OPT_VERSION},
		{NULL, 0, NULL, 0},
	};
	const char *hex = NULL, *path = NULL;
	size_t max_len = NP_V2_MAX_LEN, len = 0;
	int json = 0, c, r;

	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (c) {
		case OPT_JSON:
			json = 1;
			break;
		case OPT_HEX:
			hex = optarg;
			break;
		case OPT_MAX:
			if (parse_size(optarg, &max_len) != 0)
				return usage_error("--max: not a byte count: '%s'", optarg);
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
	if (optind < argc)
		path = argv[optind++];
	if (optind < argc)
		return usage_error("more than one input file: '%s'", argv[optind]);
	if (hex && path)
		return usage_error("--hex and a file are exclusive: '%s'", path);

	r = hex ? decode_hex_input(hex, &len) : read_input(path, &len);
	if (r != EXIT_OK)
		return r;

	struct np_header h;
	int n = np_parse_max(input, len, max_len, &h);

	if (n > 0) {
		if (json)
			json_ok(&h, (size_t)n, len);
		else
			text_ok(&h, (size_t)n, len);
		r = EXIT_OK;
	} else if (n == NP_EAGAIN) {
		if (json)
			json_incomplete(len);
		else
			fprintf(stderr, PROG ": %s: %s (%zu bytes seen)\n", np_errname(n),
				np_strerror(n), len);
		r = EXIT_INCOMPLETE;
	} else {
		if (json)
			json_error(n);
		else
			fprintf(stderr, PROG ": %s: %s\n", np_errname(n), np_strerror(n));
		r = EXIT_INVALID;
	}
	if (fflush(stdout) != 0 || ferror(stdout)) {
		fprintf(stderr, PROG ": standard output: %s\n", strerror(errno));
		return EXIT_IOERR;
	}
	return r;
}
