/*
 * trust.c - who may send PROXY headers: the CIDR blocks of
 * proxy_trusted_proxies and the check made on every accepted connection,
 * before a byte of it is read.
 *
 * The list is short (a few load balancers), so a linear scan costs less than
 * any index would; it runs once per connection, not per byte.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

#include "config.h"

int npd_cidr_parse(const char *text, struct npd_cidr *cidr)
{
	struct npd_cidr c = {0};
	char addr[INET6_ADDRSTRLEN];
	const char *slash, *p;
	size_t len;
	unsigned max, prefix = 0;

	if (!text || !cidr)
		return -1;
	slash = strchr(text, '/');
	len = slash ? (size_t)(slash - text) : strlen(text);
	if (len == 0 || len >= sizeof(addr))
		return -1;
	memcpy(addr, text, len);
	addr[len] = '\0';
	c.family = strchr(addr, ':') ? AF_INET6 : AF_INET;
	max = c.family == AF_INET ? 32 : 128;
	/* inet_pton() takes only full dotted quads: "1.2.3" is refused, unlike inet_aton(). */
	if (inet_pton(c.family, addr, c.addr) != 1)
		return -1;
	if (slash) {
		for (p = slash + 1; *p >= '0' && *p <= '9' && p - slash <= 3; p++)
			prefix = prefix * 10 + (unsigned)(*p - '0');
		if (p == slash + 1 || *p || prefix > max)
			return -1;
	} else {
		prefix = max;
	}
	c.prefix = (uint8_t)prefix;
	/* Host bits are cleared so matching compares whole bytes and one masked byte. */
	if (prefix % 8)
		c.addr[prefix / 8] &= (uint8_t)(0xff << (8 - prefix % 8));
	for (unsigned i = (prefix + 7) / 8; i < 16; i++)
		c.addr[i] = 0;
	*cidr = c;
	return 0;
}

static bool in_block(const uint8_t *addr, const struct npd_cidr *c)
{
	unsigned whole = c->prefix / 8, rest = c->prefix % 8;

	if (memcmp(addr, c->addr, whole) != 0)
		return false;
	return rest == 0 || ((addr[whole] ^ c->addr[whole]) & (0xff << (8 - rest))) == 0;
}

bool npd_config_trusts(const struct npd_config *cfg, const struct sockaddr *addr)
{
	const uint8_t *v4 = NULL, *v6 = NULL;

	if (!cfg || !addr)
		return false;
	switch (addr->sa_family) {
	case AF_UNIX:
		return true; /* only this host's users can reach a local socket */
	case AF_INET:
		v4 = (const uint8_t *)&((const struct sockaddr_in *)addr)->sin_addr;
		break;
	case AF_INET6:
		v6 = ((const struct sockaddr_in6 *)addr)->sin6_addr.s6_addr;
		/* A dual-stack socket shows IPv4 peers as ::ffff:a.b.c.d; IPv4 entries match. */
		if (IN6_IS_ADDR_V4MAPPED(&((const struct sockaddr_in6 *)addr)->sin6_addr))
			v4 = v6 + 12;
		break;
	default:
		return false;
	}
	if (cfg->ntrusted == 0)
		return true; /* an empty list, warned about at load */
	for (size_t i = 0; i < cfg->ntrusted; i++) {
		const struct npd_cidr *c = &cfg->trusted[i];

		if ((c->family == AF_INET && v4 && in_block(v4, c)) ||
		    (c->family == AF_INET6 && v6 && in_block(v6, c)))
			return true;
	}
	return false;
}
