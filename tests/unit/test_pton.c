/*
 * test_pton.c - the v1 address grammar and the address formatter against
 * glibc's inet_pton() and inet_ntop(), on many random and mutated forms.
 *
 * glibc is a second, independent implementation of the same text forms: it
 * refuses leading zeros in dotted quads, accepts hex groups of one to four
 * digits in either case, one "::" and a dotted tail, just as spec 2.1 and
 * our policy do. Where the two could differ by design (glibc prints a dotted
 * tail for v4-mapped addresses; RFC 5952 text from us does not) the case is
 * left out and said so.
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include "netproxy.h"
#include "tap.h"

/* xorshift64: deterministic, so a failure can be replayed. */
static unsigned long long rng_state = 88172645463325252ULL;

static unsigned rnd(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return (unsigned)rng_state;
}

static int parse_src(const char *family, const char *addr, struct np_header *h)
{
	char line[256];
	const char *other = family[3] == '4' ? "1.1.1.1" : "::1";

	snprintf(line, sizeof(line), "PROXY %s %s %s 1 2\r\n", family, addr, other);
	return np_parse(line, strlen(line), h);
}

static void random_ip4_text(char *t)
{
	int n = 0;

	for (int k = 0; k < 4; k++) {
		if (k)
			t[n++] = '.';
		int digits = 1 + (int)(rnd() % 3);
		for (int d = 0; d < digits; d++)
			t[n++] = (char)('0' + (rnd() % 4 == 0 ? 0 : rnd() % 10));
	}
	t[n] = '\0';
	if (rnd() % 6 == 0)
		t[rnd() % (unsigned)n] = ".0123456789x "[rnd() % 13];
}

static void random_ip6_text(char *t, size_t cap)
{
	unsigned char a[16];

	for (int i = 0; i < 16; i++)
		a[i] = (unsigned char)(rnd() % 3 == 0 ? 0 : rnd());
	inet_ntop(AF_INET6, a, t, (socklen_t)cap);
	if (rnd() % 4 == 0)
		for (char *c = t; *c; c++)
			if (*c >= 'a' && *c <= 'f')
				*c = (char)(*c - 32);
	if (rnd() % 5 == 0) {
		size_t l = strlen(t);
		t[rnd() % l] = "0123456789abcdef:.:%G "[rnd() % 22];
	}
}

static void parse_against_pton(int af, int rounds)
{
	int disagree = 0, accepted = 0;
	char first[64] = "";

	for (int i = 0; i < rounds; i++) {
		char t[64];
		unsigned char want[16];
		struct np_header h;

		if (af == AF_INET)
			random_ip4_text(t);
		else
			random_ip6_text(t, sizeof(t));
		int np = parse_src(af == AF_INET ? "TCP4" : "TCP6", t, &h) > 0;
		int pton = inet_pton(af, t, want) == 1;
		size_t n = af == AF_INET ? 4 : 16;
		if (np != pton || (np && memcmp(want, h.src.ip6, n) != 0)) {
			if (!disagree++)
				snprintf(first, sizeof(first), "%s", t);
		}
		accepted += np;
	}
	ok(disagree == 0, "%s: parser agrees with inet_pton on %d forms (%d valid)",
	   af == AF_INET ? "TCP4" : "TCP6", rounds, accepted);
	if (disagree)
		diag("  %d disagreements, first '%s'", disagree, first);
	ok(accepted > rounds / 20 && accepted < rounds, "%s: the forms mix valid and invalid",
	   af == AF_INET ? "TCP4" : "TCP6");
}

static void format_against_ntop(int rounds)
{
	int disagree = 0, compared = 0;
	char first[128] = "";

	for (int i = 0; i < rounds; i++) {
		struct np_endpoint ep;
		char ours[NP_ADDRSTRLEN], theirs[INET6_ADDRSTRLEN];

		for (int b = 0; b < 16; b++)
			ep.ip6[b] = (uint8_t)(rnd() % 2 ? 0 : rnd());
		inet_ntop(AF_INET6, ep.ip6, theirs, sizeof(theirs));
		if (strchr(theirs, '.'))
			continue; /* glibc's dotted tail for ::a.b.c.d and ::ffff:a.b.c.d */
		compared++;
		if (np_format_addr(ours, sizeof(ours), NP_AF_INET6, &ep) < 0 || strcmp(ours, theirs)) {
			if (!disagree++)
				snprintf(first, sizeof(first), "%s vs %s", ours, theirs);
		}
	}
	ok(disagree == 0 && compared > rounds / 2, "INET6 text equals inet_ntop's on %d addresses",
	   compared);
	if (disagree)
		diag("  %d differ, first %s", disagree, first);

	disagree = 0;
	for (int i = 0; i < rounds; i++) {
		struct np_endpoint ep;
		char ours[NP_ADDRSTRLEN], theirs[INET_ADDRSTRLEN];

		for (int b = 0; b < 4; b++)
			ep.ip4[b] = (uint8_t)rnd();
		inet_ntop(AF_INET, ep.ip4, theirs, sizeof(theirs));
		if (np_format_addr(ours, sizeof(ours), NP_AF_INET, &ep) < 0 || strcmp(ours, theirs))
			disagree++;
	}
	ok(disagree == 0, "INET text equals inet_ntop's on %d addresses", rounds);
}

int main(void)
{
	parse_against_pton(AF_INET, 100000);
	parse_against_pton(AF_INET6, 100000);
	format_against_ntop(50000);
	return done_testing();
}
