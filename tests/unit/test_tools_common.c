/*
 * test_tools_common.c - tools/common.c, what netproxy-send, -dump and -bench
 * share: ADDR:PORT and bare addresses, hex input, usage errors, the clock.
 *
 * The file is compiled in here whole, as each tool links it: the tools are
 * programs, not a library the tests could link.
 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../../tools/common.c"
#include "tap.h"

const char tool_name[] = "test_tools_common";

static void test_host_port(void)
{
	static const struct {
		const char *text;
		int family; /* 0: refused */
		const char *addr;
		uint16_t port;
	} cases[] = {
		{"127.0.0.1:80", AF_INET, "127.0.0.1", 80},
		{"192.0.2.1:0", AF_INET, "192.0.2.1", 0},
		{"192.0.2.1:65535", AF_INET, "192.0.2.1", 65535},
		{"[::1]:443", AF_INET6, "::1", 443},
		{"[2001:db8::1]:5222", AF_INET6, "2001:db8::1", 5222},
		{"[::ffff:192.0.2.1]:1", AF_INET6, "::ffff:192.0.2.1", 1},
		{"192.0.2.1:65536", 0, NULL, 0},
		{"192.0.2.1:", 0, NULL, 0},
		{"192.0.2.1", 0, NULL, 0},
		{":80", 0, NULL, 0},
		{"192.0.2.1:8x", 0, NULL, 0},
		{"192.0.2.1:-1", 0, NULL, 0},
		{"::1:80", 0, NULL, 0},		  /* a bare IPv6 address: which colon is the port's? */
		{"[192.0.2.1]:80", 0, NULL, 0}, /* brackets are for IPv6 */
		{"[::1]80", 0, NULL, 0},
		{"[::1:80", 0, NULL, 0},
		{"localhost:80", 0, NULL, 0}, /* numeric only */
		{"192.0.2.256:80", 0, NULL, 0},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct sockaddr_storage ss;
		socklen_t len = 0;
		int r = parse_host_port(cases[i].text, &ss, &len);

		if (!cases[i].family) {
			is_int(r, -1, "'%s' refused", cases[i].text);
			continue;
		}
		uint8_t want[16];
		int good = r == 0 && ss.ss_family == cases[i].family &&
			   inet_pton(cases[i].family, cases[i].addr, want) == 1;
		if (good && cases[i].family == AF_INET) {
			const struct sockaddr_in *sin = (const struct sockaddr_in *)&ss;
			good = len == sizeof(*sin) && memcmp(&sin->sin_addr, want, 4) == 0 &&
			       ntohs(sin->sin_port) == cases[i].port;
		} else if (good) {
			const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)&ss;
			good = len == sizeof(*sin6) && memcmp(&sin6->sin6_addr, want, 16) == 0 &&
			       ntohs(sin6->sin6_port) == cases[i].port;
		}
		ok(good, "'%s': %s port %u", cases[i].text, cases[i].addr, cases[i].port);
	}
}

static void test_address(void)
{
	struct sockaddr_storage ss;
	socklen_t len;

	ok(parse_address("::1", 3, 7, &ss, &len) == 0 && ss.ss_family == AF_INET6 && len == sizeof(struct sockaddr_in6) &&
		   ntohs(((struct sockaddr_in6 *)&ss)->sin6_port) == 7,
	   "a bare IPv6 address, with the port given");
	ok(parse_address("[::1]", 5, 0, &ss, &len) == 0 && ss.ss_family == AF_INET6, "IPv6 in brackets");
	ok(parse_address("10.0.0.1junk", 8, 0, &ss, &len) == 0 && ss.ss_family == AF_INET,
	   "only the n bytes given are read");
	is_int(parse_address("", 0, 0, &ss, &len), -1, "nothing: refused");
	is_int(parse_address("[]", 2, 0, &ss, &len), -1, "empty brackets: refused");
}

static void test_hex(void)
{
	uint8_t out[4];
	size_t len = 99;
	const char *bad = NULL;

	ok(decode_hex("0d0A ff", true, out, sizeof(out), &len, &bad) == HEX_OK && len == 3 && out[0] == 0x0d &&
		   out[1] == 0x0a && out[2] == 0xff,
	   "pairs, either case, a space between with spaces allowed");
	is_int(decode_hex("0d 0a", false, out, sizeof(out), &len, &bad), HEX_BAD, "a space where none is allowed");
	ok(decode_hex("0d0g", true, out, sizeof(out), &len, &bad) == HEX_BAD && bad && *bad == 'g',
	   "HEX_BAD points at the character that is not a digit");
	ok(decode_hex("x0", true, out, sizeof(out), &len, &bad) == HEX_BAD && bad && *bad == 'x',
	   "HEX_BAD on the first digit of a pair");
	is_int(decode_hex("0d0", true, out, sizeof(out), &len, &bad), HEX_ODD, "a digit without its pair");
	is_int(decode_hex("0 d", true, out, sizeof(out), &len, &bad), HEX_ODD, "a pair split by a space");
	is_int(decode_hex("0102030405", true, out, sizeof(out), &len, &bad), HEX_LONG, "more than cap bytes");
	ok(decode_hex("", true, out, sizeof(out), &len, &bad) == HEX_OK && len == 0, "nothing: no bytes");
	ok(strcmp(hex_problem(HEX_ODD), "odd number of hex digits (a byte is two digits)") == 0 &&
		   strcmp(hex_problem(HEX_LONG), "too many bytes") == 0 && strcmp(hex_problem(HEX_BAD), "not hex digits") == 0,
	   "hex_problem's words, which the tools print");
	ok(hex_digit('f') == 15 && hex_digit('F') == 15 && hex_digit('0') == 0 && hex_digit('g') == -1 &&
		   hex_digit('\0') == -1,
	   "hex_digit");
}

static void test_rest(void)
{
	int64_t a = now_ns(), b = now_ns();

	ok(a > 0 && b >= a, "now_ns is monotonic");
	is_int(raise_fd_limit(16, "the test"), 0, "16 descriptors fit the limit");
	/* Its text goes to standard error, kept out of the test's output. */
	int saved = dup(2), null = open("/dev/null", O_WRONLY);
	fflush(stderr);
	if (null >= 0)
		dup2(null, 2);
	int r = usage_error("a %s", "test");
	fflush(stderr);
	if (saved >= 0) {
		dup2(saved, 2);
		close(saved);
	}
	if (null >= 0)
		close(null);
	is_int(r, TOOL_EXIT_USAGE, "usage_error returns 64");
}

int main(void)
{
	test_host_port();
	test_address();
	test_hex();
	test_rest();
	return done_testing();
}
