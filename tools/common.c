/*
 * common.c - the helpers every tool needs and none should copy: usage
 * errors, numeric ADDR:PORT, hex input, monotonic time, the descriptor
 * limit. See common.h for each contract.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "common.h"

int usage_error(const char *format, ...)
{
	va_list ap;

	if (format) {
		fprintf(stderr, "%s: ", tool_name);
		va_start(ap, format);
		vfprintf(stderr, format, ap);
		va_end(ap);
		fputc('\n', stderr);
	}
	fprintf(stderr, "Try '%s --help' for more information.\n", tool_name);
	return TOOL_EXIT_USAGE;
}

int parse_address(const char *s, size_t n, uint16_t port, struct sockaddr_storage *ss, socklen_t *len)
{
	char text[INET6_ADDRSTRLEN + 1];
	bool brackets = n >= 2 && s[0] == '[' && s[n - 1] == ']';
	struct sockaddr_in *sin = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;

	if (brackets) {
		s++;
		n -= 2;
	}
	if (n == 0 || n >= sizeof(text))
		return -1;
	memcpy(text, s, n);
	text[n] = '\0';
	memset(ss, 0, sizeof(*ss));
	if (!brackets && inet_pton(AF_INET, text, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
		sin->sin_port = htons(port);
		*len = sizeof(*sin);
		return 0;
	}
	if (inet_pton(AF_INET6, text, &sin6->sin6_addr) == 1) {
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(port);
		*len = sizeof(*sin6);
		return 0;
	}
	return -1;
}

int parse_host_port(const char *s, struct sockaddr_storage *ss, socklen_t *len)
{
	const char *colon = strrchr(s, ':');
	unsigned long port = 0;

	if (!colon || colon == s)
		return -1;
	/* A colon before the last outside brackets is a bare IPv6 address: the port is ambiguous. */
	if (s[0] != '[' && memchr(s, ':', (size_t)(colon - s)))
		return -1;
	if (s[0] == '[' && colon[-1] != ']')
		return -1;
	if (!isdigit((unsigned char)colon[1]))
		return -1;
	for (const char *p = colon + 1; *p; p++) {
		if (!isdigit((unsigned char)*p))
			return -1;
		port = port * 10 + (unsigned long)(*p - '0');
		if (port > 65535)
			return -1;
	}
	return parse_address(s, (size_t)(colon - s), (uint16_t)port, ss, len);
}

int hex_digit(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int decode_hex(const char *s, bool spaces, uint8_t *out, size_t cap, size_t *len, const char **bad)
{
	size_t n = 0;

	for (const char *p = s; *p;) {
		if (spaces && isspace((unsigned char)*p)) {
			p++;
			continue;
		}
		int hi = hex_digit((unsigned char)p[0]);
		int lo = hi < 0 ? -1 : hex_digit((unsigned char)p[1]);
		if (hi < 0 || lo < 0) {
			if (hi >= 0 && (p[1] == '\0' || isspace((unsigned char)p[1])))
				return HEX_ODD;
			if (bad)
				*bad = hi < 0 ? p : p + 1;
			return HEX_BAD;
		}
		if (n == cap)
			return HEX_LONG;
		out[n++] = (uint8_t)(hi << 4 | lo);
		p += 2;
	}
	*len = n;
	return HEX_OK;
}

const char *hex_problem(int r)
{
	switch (r) {
	case HEX_ODD:
		return "odd number of hex digits (a byte is two digits)";
	case HEX_LONG:
		return "too many bytes";
	}
	return "not hex digits";
}

int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * NS_PER_S + ts.tv_nsec;
}

int raise_fd_limit(uint64_t need, const char *why)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
		fprintf(stderr, "%s: getrlimit: %s\n", tool_name, strerror(errno));
		return -1;
	}
	if (rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
		getrlimit(RLIMIT_NOFILE, &rl);
	}
	if (rl.rlim_cur != RLIM_INFINITY && need > rl.rlim_cur) {
		fprintf(stderr,
			"%s: %s needs %" PRIu64 " file descriptors, but the limit is %llu: "
			"raise it (ulimit -n) or ask for fewer\n",
			tool_name, why, need, (unsigned long long)rl.rlim_cur);
		return -1;
	}
	return 0;
}
