/*
 * test_npd_addresses.c - the log's form of an address (addresses.h) stays
 * what it was when the daemon formatted with inet_ntop(): operators and the
 * integration tests grep for it.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "addresses.h"
#include "tap.h"

static const char *text_of(const char *ip, unsigned port)
{
	static char out[NPD_SOCKADDR_TEXT];
	union npd_sockaddr a;

	memset(&a, 0, sizeof(a));
	if (inet_pton(AF_INET, ip, &a.in.sin_addr) == 1) {
		a.in.sin_family = AF_INET;
		a.in.sin_port = htons((uint16_t)port);
	} else if (inet_pton(AF_INET6, ip, &a.in6.sin6_addr) == 1) {
		a.in6.sin6_family = AF_INET6;
		a.in6.sin6_port = htons((uint16_t)port);
	}
	return npd_sockaddr_text(&a, out, sizeof(out));
}

/* What the daemon wrote before: inet_ntop() in brackets, then the port. */
static const char *inet_ntop_text(const char *ip, unsigned port)
{
	static char out[80];
	struct in6_addr a6;
	char buf[INET6_ADDRSTRLEN];

	inet_pton(AF_INET6, ip, &a6);
	inet_ntop(AF_INET6, &a6, buf, sizeof(buf));
	snprintf(out, sizeof(out), "[%s]:%u", buf, port);
	return out;
}

int main(void)
{
	static const char *const v6[] = {
		"::1", "fe80::1", "2001:db8::1", "2001:db8:0:0:1:0:0:1", "2001:db8:0:1:1:1:1:1",
		"2001:db8::", "ff02::1:ff00:1", "::ffff:192.0.2.1", "::ffff:0.0.0.0",
		"2001:0:0:1::1", "1:2:3:4:5:6:7:8",
	};
	union npd_sockaddr a;
	char out[NPD_SOCKADDR_TEXT];

	ok(strcmp(text_of("203.0.113.7", 51234), "203.0.113.7:51234") == 0, "IPv4: %s",
	   text_of("203.0.113.7", 51234));
	ok(strcmp(text_of("2001:db8::1", 443), "[2001:db8::1]:443") == 0, "IPv6: %s",
	   text_of("2001:db8::1", 443));
	ok(strcmp(text_of("::ffff:203.0.113.7", 51234), "[::ffff:203.0.113.7]:51234") == 0,
	   "v4-mapped keeps its dotted form: %s", text_of("::ffff:203.0.113.7", 51234));
	for (size_t i = 0; i < sizeof(v6) / sizeof(v6[0]); i++) {
		char want[80];
		snprintf(want, sizeof(want), "%s", inet_ntop_text(v6[i], 8443));
		ok(strcmp(text_of(v6[i], 8443), want) == 0, "%s as inet_ntop wrote it: %s", v6[i],
		   want);
	}
	memset(&a, 0, sizeof(a));
	a.sa.sa_family = AF_UNIX;
	ok(strcmp(npd_sockaddr_text(&a, out, sizeof(out)), "unix") == 0, "a UNIX socket: unix");
	a.sa.sa_family = AF_UNSPEC;
	ok(strcmp(npd_sockaddr_text(&a, out, sizeof(out)), "-") == 0, "no address: -");
	return done_testing();
}
