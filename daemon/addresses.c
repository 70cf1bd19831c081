/*
 * addresses.c - the log's form of a socket address, on the library's
 * np_format_sockaddr().
 */
#include <stdio.h>
#include <string.h>

#include "addresses.h"

/*
 * The library writes a v4-mapped address in hex groups ("::ffff:cb00:7107"),
 * as RFC 5952 says; the log has always shown the IPv4 part dotted, as the
 * operators' greps expect: "[::ffff:203.0.113.7]:51234". The dotted part
 * and the port are the library's text for the IPv4 address itself.
 */
static const char *v4_mapped_text(const struct sockaddr_in6 *in6, char *out, size_t cap)
{
	struct sockaddr_in in = {.sin_family = AF_INET, .sin_port = in6->sin6_port};
	char v4[NP_SOCKADDRSTRLEN];

	memcpy(&in.sin_addr, in6->sin6_addr.s6_addr + 12, 4);
	if (np_format_sockaddr(v4, sizeof(v4), (const struct sockaddr *)&in, sizeof(in)) < 0)
		return snprintf(out, cap, "-"), out;
	const char *port = strrchr(v4, ':');
	snprintf(out, cap, "[::ffff:%.*s]%s", (int)(port - v4), v4, port);
	return out;
}

const char *npd_sockaddr_text(const union npd_sockaddr *a, char *out, size_t cap)
{
	switch (a->sa.sa_family) {
	case AF_INET:
		if (np_format_sockaddr(out, cap, &a->sa, sizeof(a->in)) < 0)
			snprintf(out, cap, "-");
		break;
	case AF_INET6:
		if (IN6_IS_ADDR_V4MAPPED(&a->in6.sin6_addr))
			return v4_mapped_text(&a->in6, out, cap);
		if (np_format_sockaddr(out, cap, &a->sa, sizeof(a->in6)) < 0)
			snprintf(out, cap, "-");
		break;
	case AF_UNIX:
		snprintf(out, cap, "unix");
		break;
	default:
		snprintf(out, cap, "-");
	}
	return out;
}
