/*
 * trust.c - who may send PROXY headers: the check made on every accepted
 * connection, before a byte of it is read, against proxy_trusted_proxies.
 *
 * What a block matches is libnetproxy's np_cidr_match(), the one meaning the
 * shim and the Prosody module share. The list is short (a few load
 * balancers), so a linear scan costs less than any index would; it runs once
 * per connection, not per byte.
 */
#include "config.h"

bool npd_config_trusts(const struct npd_config *cfg, const struct sockaddr *addr)
{
	if (!cfg || !addr)
		return false;
	if (addr->sa_family == AF_UNIX)
		return true; /* only this host's users can reach a local socket */
	if (addr->sa_family != AF_INET && addr->sa_family != AF_INET6)
		return false;
	if (cfg->ntrusted == 0)
		return true; /* an empty list, warned about at load */
	for (size_t i = 0; i < cfg->ntrusted; i++)
		if (np_cidr_match(&cfg->trusted[i], addr))
			return true;
	return false;
}
