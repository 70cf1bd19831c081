/*
 * test_names.c - what the library names for everyone else: TLV types,
 * socket addresses as text, its own version. Each had copies in the daemon
 * and the tools before; these are the one definition.
 */
#include <arpa/inet.h>
#include <stddef.h>
#include <string.h>
#include <sys/un.h>

#include "netproxy.h"
#include "tap.h"

static int text_of(const char *ip, unsigned port, char *out, size_t cap)
{
	struct sockaddr_storage ss = {0};

	if (strchr(ip, ':')) {
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons((uint16_t)port);
		inet_pton(AF_INET6, ip, &in6->sin6_addr);
		return np_format_sockaddr(out, cap, (struct sockaddr *)&ss, sizeof(*in6));
	}
	struct sockaddr_in *in = (struct sockaddr_in *)&ss;
	in->sin_family = AF_INET;
	in->sin_port = htons((uint16_t)port);
	inet_pton(AF_INET, ip, &in->sin_addr);
	return np_format_sockaddr(out, cap, (struct sockaddr *)&ss, sizeof(*in));
}

int main(void)
{
	static const char *const names[] = {"ALPN", "AUTHORITY", "CRC32C", "NOOP", "UNIQUE_ID",
					    "SSL",  "NETNS",	 "AWS",	   "AZURE", "GCP"};
	char out[NP_SOCKADDRSTRLEN + 120];
	int named = 0;

	/* TLV names: every named type round-trips, case ignored; others have none. */
	for (unsigned t = 0; t < 256; t++) {
		const char *n = np_tlv_name((uint8_t)t);

		if (!n)
			continue;
		named++;
		if (np_tlv_type(n, strlen(n)) != (int)t)
			ok(0, "type 0x%02x: %s does not name it back", t, n);
	}
	ok(named == 10, "10 types have names (%d)", named);
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		ok(np_tlv_name((uint8_t)np_tlv_type(names[i], strlen(names[i]))) == NULL ? 0 :
			   strcmp(np_tlv_name((uint8_t)np_tlv_type(names[i], strlen(names[i]))),
				  names[i]) == 0,
		   "%s names a type and back", names[i]);
	ok(np_tlv_type("alpn", 4) == NP_TLV_ALPN && np_tlv_type("Unique_Id", 9) == NP_TLV_UNIQUE_ID,
	   "case is ignored");
	ok(np_tlv_type("ALPNX", 4) == NP_TLV_ALPN, "len bounds the name");
	ok(np_tlv_type("ALP", 3) == NP_EINVAL && np_tlv_type("ALPNX", 5) == NP_EINVAL &&
		   np_tlv_type("", 0) == NP_EINVAL && np_tlv_type(NULL, 0) == NP_EINVAL,
	   "a prefix, a longer word, nothing: NP_EINVAL");
	ok(np_tlv_name(0xE1) == NULL && np_tlv_name(0) == NULL, "unnamed types: NULL");

	/* Socket addresses. */
	ok(text_of("192.0.2.1", 443, out, sizeof(out)) == 13 && strcmp(out, "192.0.2.1:443") == 0,
	   "IPv4: %s", out);
	ok(text_of("2001:db8::1", 65535, out, sizeof(out)) > 0 &&
		   strcmp(out, "[2001:db8::1]:65535") == 0,
	   "IPv6: %s", out);
	ok(text_of("::ffff:192.0.2.1", 0, out, sizeof(out)) > 0 &&
		   strcmp(out, "[::ffff:c000:201]:0") == 0,
	   "v4-mapped in hex groups, as np_format_addr: %s", out);
	ok(text_of("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535, out, 48) == 47 &&
		   NP_SOCKADDRSTRLEN >= 48,
	   "the longest text, 47 bytes, fits NP_SOCKADDRSTRLEN");
	ok(text_of("192.0.2.1", 443, out, 13) == NP_ENOSPC, "one byte short: NP_ENOSPC");

	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	strcpy(sun.sun_path, "/run/x.sock");
	ok(np_format_sockaddr(out, sizeof(out), (struct sockaddr *)&sun, sizeof(sun)) > 0 &&
		   strcmp(out, "unix:/run/x.sock") == 0,
	   "UNIX path: %s", out);
	memcpy(sun.sun_path, "\0abs", 4);
	ok(np_format_sockaddr(out, sizeof(out), (struct sockaddr *)&sun,
			      (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 4)) > 0 &&
		   strcmp(out, "unix:@abs") == 0,
	   "abstract: %s", out);
	ok(np_format_sockaddr(out, sizeof(out), (struct sockaddr *)&sun,
			      (socklen_t)offsetof(struct sockaddr_un, sun_path)) > 0 &&
		   strcmp(out, "unix:") == 0,
	   "unnamed: %s", out);
	struct sockaddr_in in = {.sin_family = AF_INET};
	ok(np_format_sockaddr(out, sizeof(out), (struct sockaddr *)&in, sizeof(in) - 1) == NP_EINVAL,
	   "a length short of the family's: NP_EINVAL");
	struct sockaddr sa = {.sa_family = AF_PACKET};
	ok(np_format_sockaddr(out, sizeof(out), &sa, sizeof(sa)) == NP_EINVAL,
	   "another family: NP_EINVAL");

	ok(np_version() == NP_VERSION_NUMBER && NP_VERSION_NUMBER == 100,
	   "np_version() is the header's %d", NP_VERSION_NUMBER);
	return done_testing();
}
