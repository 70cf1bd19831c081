/*
 * test_cidr.c - np_cidr_parse() and np_cidr_match(): the one meaning of a
 * trusted-sender list that netproxyd, the shim and the Prosody module share.
 *
 * Table-driven: each text with the result it must give, then each block
 * with peers that must and must not match, IPv4, IPv6 and v4-mapped peers of
 * a dual-stack socket among them.
 */
#include <arpa/inet.h>
#include <string.h>

#include "netproxy.h"
#include "tap.h"

static const struct {
	const char *text;
	int want;	   /* 0, or the NP_E* code */
	const char *canon; /* for 0: the block's address after host bits are cleared */
	int prefix;
} parses[] = {
	{"127.0.0.1", 0, "127.0.0.1", 32},
	{"::1", 0, "::1", 128},
	{"10.1.2.3/8", 0, "10.0.0.0", 8},
	{"192.0.2.255/25", 0, "192.0.2.128", 25},
	{"0.0.0.0/0", 0, "0.0.0.0", 0},
	{"2001:db8::7/32", 0, "2001:db8::", 32},
	{"2001:db8:ffff::/33", 0, "2001:db8:8000::", 33},
	{"::/0", 0, "::", 0},
	{"::ffff:0:0/95", 0, "::fffe:0:0", 95},
	{"fe80::1/64", 0, "fe80::", 64},
	{"255.255.255.255/31", 0, "255.255.255.254", 31},
	{"255.255.255.255/0", 0, "0.0.0.0", 0},
	{"172.31.1.1/12", 0, "172.16.0.0", 12},
	{"ffff::/9", 0, "ff80::", 9},
	{"::ffff:127.0.0.0/104", NP_EFAMILY, NULL, 0},
	{"::ffff:10.0.0.1", NP_EFAMILY, NULL, 0},
	{"::ffff:0:0/96", NP_EFAMILY, NULL, 0},
	{"", NP_EADDRESS, NULL, 0},
	{"/8", NP_EADDRESS, NULL, 0},
	{"localhost", NP_EADDRESS, NULL, 0},
	{"1.2.3", NP_EADDRESS, NULL, 0},
	{"01.2.3.4", NP_EADDRESS, NULL, 0},
	{"1.2.3.4 ", NP_EADDRESS, NULL, 0},
	{"256.0.0.1", NP_EADDRESS, NULL, 0},
	{"fe80::1%eth0", NP_EADDRESS, NULL, 0},
	{"1::2::3", NP_EADDRESS, NULL, 0},
	{"1.2.3.4/", NP_EINVAL, NULL, 0},
	{"1.2.3.4/33", NP_EINVAL, NULL, 0},
	{"1.2.3.4/08", NP_EINVAL, NULL, 0},
	{"1.2.3.4/-1", NP_EINVAL, NULL, 0},
	{"1.2.3.4/8x", NP_EINVAL, NULL, 0},
	{"::1/129", NP_EINVAL, NULL, 0},
	{"::1/1280", NP_EINVAL, NULL, 0},
	{"1.2.3.4/+8", NP_EINVAL, NULL, 0},
	{"1.2.3.4/ 8", NP_EINVAL, NULL, 0},
	{"1.2.3.4/0008", NP_EINVAL, NULL, 0},
	{"1.2.3.4/8/8", NP_EINVAL, NULL, 0},
	{"2001:db8::/", NP_EINVAL, NULL, 0},
	{"1.2.3.4.5", NP_EADDRESS, NULL, 0},
	{" 1.2.3.4", NP_EADDRESS, NULL, 0},
	{"1111:2222:3333:4444:5555:6666:7777:8888:9999/64", NP_EADDRESS, NULL, 0},
};

static const struct {
	const char *block, *peer;
	int want;
} matches[] = {
	{"127.0.0.1", "127.0.0.1", 1},
	{"127.0.0.1", "127.0.0.5", 0}, /* a host is one host, not its /8 */
	{"127.0.0.1", "::ffff:127.0.0.1", 1},
	{"127.0.0.0/8", "::ffff:127.0.0.5", 1},
	{"127.0.0.0/8", "128.0.0.1", 0},
	{"::1", "::1", 1},
	{"::1", "127.0.0.1", 0},
	{"::1", "::2", 0},
	{"::/0", "2001:db8::1", 1},
	{"::/0", "::ffff:192.0.2.1", 0}, /* a v4-mapped peer is an IPv4 peer */
	{"::/0", "192.0.2.1", 0},
	{"0.0.0.0/0", "192.0.2.1", 1},
	{"0.0.0.0/0", "::ffff:192.0.2.1", 1},
	{"0.0.0.0/0", "2001:db8::1", 0},
	{"192.0.2.128/25", "192.0.2.200", 1},
	{"192.0.2.128/25", "192.0.2.127", 0},
	{"2001:db8::/33", "2001:db8:7fff::1", 1},
	{"2001:db8::/33", "2001:db8:8000::1", 0},
};

static socklen_t peer_addr(const char *text, struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof(*ss));
	if (strchr(text, ':')) {
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;

		in6->sin6_family = AF_INET6;
		inet_pton(AF_INET6, text, &in6->sin6_addr);
		return sizeof(*in6);
	}
	struct sockaddr_in *in = (struct sockaddr_in *)ss;

	in->sin_family = AF_INET;
	inet_pton(AF_INET, text, &in->sin_addr);
	return sizeof(*in);
}

int main(void)
{
	size_t np = sizeof(parses) / sizeof(parses[0]), nm = sizeof(matches) / sizeof(matches[0]);

	plan((int)(np + nm + 3 + 4));
	for (size_t i = 0; i < np; i++) {
		struct np_cidr c;
		int r = np_cidr_parse(parses[i].text, strlen(parses[i].text), &c);

		if (parses[i].want != 0 || r != 0) {
			ok(r == parses[i].want, "\"%s\" -> %s (want %s)", parses[i].text, np_errname(r),
			   np_errname(parses[i].want));
			continue;
		}
		struct np_endpoint ep;
		char text[NP_ADDRSTRLEN];

		memcpy(ep.ip6, c.addr, 16);
		np_format_addr(text, sizeof(text), c.family, &ep);
		ok(strcmp(text, parses[i].canon) == 0 && c.prefix == parses[i].prefix,
		   "\"%s\" -> %s/%d (want %s/%d)", parses[i].text, text, c.prefix, parses[i].canon,
		   parses[i].prefix);
	}
	for (size_t i = 0; i < nm; i++) {
		struct np_cidr c;
		struct sockaddr_storage ss;

		peer_addr(matches[i].peer, &ss);
		int r = np_cidr_parse(matches[i].block, strlen(matches[i].block), &c) == 0 &&
			np_cidr_match(&c, (struct sockaddr *)&ss);
		ok(r == matches[i].want, "%s %s %s", matches[i].peer,
		   matches[i].want ? "is in" : "is not in", matches[i].block);
	}

	/* A v4-mapped block is refused with its IPv4 form, to suggest. */
	static const struct {
		const char *text, *v4;
		int prefix;
	} mapped[] = {
		{"::ffff:127.0.0.0/104", "127.0.0.0", 8},
		{"::ffff:192.0.2.77/120", "192.0.2.0", 24},
		{"::ffff:10.0.0.1", "10.0.0.1", 32},
		{"::ffff:0:0/96", "0.0.0.0", 0},
	};
	for (size_t i = 0; i < sizeof(mapped) / sizeof(mapped[0]); i++) {
		struct np_cidr m;
		struct np_endpoint ep = {0};
		char text[NP_ADDRSTRLEN] = "";
		int r = np_cidr_parse(mapped[i].text, strlen(mapped[i].text), &m);

		memcpy(ep.ip4, m.addr, 4);
		np_format_addr(text, sizeof(text), NP_AF_INET, &ep);
		ok(r == NP_EFAMILY && m.family == NP_AF_INET && m.prefix == mapped[i].prefix &&
			   strcmp(text, mapped[i].v4) == 0,
		   "\"%s\" refused, meant %s/%d (got %s/%d)", mapped[i].text, mapped[i].v4,
		   mapped[i].prefix, text, m.prefix);
	}

	/* The length bounds the text: what follows it is not read as part of the block. */
	struct np_cidr c;
	ok(np_cidr_parse("10.0.0.0/8,192.0.2.1", 10, &c) == 0 && c.prefix == 8,
	   "a block inside a longer list is read up to len");

	struct sockaddr_storage ss = {.ss_family = AF_UNIX};
	np_cidr_parse("0.0.0.0/0", 9, &c);
	ok(np_cidr_match(&c, (struct sockaddr *)&ss) == 0, "an AF_UNIX peer matches no block");
	ok(np_cidr_parse(NULL, 0, &c) == NP_EINVAL, "NULL text is NP_EINVAL");
	return done_testing();
}
