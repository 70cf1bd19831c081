/*
 * backend.c - the socket to a service, bound to the client's own address in
 * transparent delivery.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "backend.h"

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

static int fail(int fd, char *why, size_t cap, const char *what, int err)
{
	snprintf(why, cap, "%s: %s%s", what, strerror(err), err == EPERM ? " (needs CAP_NET_ADMIN)" : "");
	if (fd >= 0)
		close(fd);
	return -1;
}

/* AF_INET or AF_INET6 as on the wire: a v4-mapped IPv6 address is AF_INET; else AF_UNSPEC. */
static int client_family(const union npd_sockaddr *client)
{
	if (client->sa.sa_family == AF_INET6)
		return IN6_IS_ADDR_V4MAPPED(&client->in6.sin6_addr) ? AF_INET : AF_INET6;
	return client->sa.sa_family == AF_INET ? AF_INET : AF_UNSPEC;
}

const struct npd_target *npd_backend_target(const struct npd_service *svc,
					    const union npd_sockaddr *client)
{
	int family = client_family(client);

	for (int i = 1; i < svc->ntargets; i++)
		if (npd_target_family(&svc->target[i]) == family)
			return &svc->target[i];
	return &svc->target[0];
}

/*
 * The address to bind for a client, in the backend socket's family: an IPv4
 * client on an IPv6 socket as ::ffff:a.b.c.d, which only reaches a backend
 * that is itself v4-mapped, and a v4-mapped client on an IPv4 socket as
 * a.b.c.d. Returns its length, or 0 when the families differ on the wire:
 * no address of the client can reach the backend then (the reason in why).
 */
static socklen_t source_for(const struct npd_target *to, const union npd_sockaddr *client,
			    struct sockaddr_storage *src, char *why, size_t cap)
{
	int family = npd_target_family(to), cfamily = client_family(client);

	memset(src, 0, sizeof(*src));
	if (family != cfamily) {
		snprintf(why, cap,
			 "an %s client cannot connect from its own address to the %s backend %s",
			 cfamily == AF_INET ? "IPv4" : "IPv6", family == AF_INET ? "IPv4" : "IPv6",
			 to->text);
		return 0;
	}
	if (to->addr.ss_family == client->sa.sa_family) {
		socklen_t len = client->sa.sa_family == AF_INET ? sizeof(client->in)
								: sizeof(client->in6);
		memcpy(src, client, len);
		return len;
	}
	if (to->addr.ss_family == AF_INET) { /* a v4-mapped client */
		struct sockaddr_in *s4 = (struct sockaddr_in *)src;
		s4->sin_family = AF_INET;
		s4->sin_port = client->in6.sin6_port;
		memcpy(&s4->sin_addr, &client->in6.sin6_addr.s6_addr[12], 4);
		return sizeof(*s4);
	}
	/* An IPv4 client, a v4-mapped backend. */
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)src;
	s6->sin6_family = AF_INET6;
	s6->sin6_port = client->in.sin_port;
	s6->sin6_addr.s6_addr[10] = s6->sin6_addr.s6_addr[11] = 0xff;
	memcpy(&s6->sin6_addr.s6_addr[12], &client->in.sin_addr, 4);
	return sizeof(*s6);
}

int npd_backend_socket(const struct npd_service *svc, const struct npd_target *to,
		       const union npd_sockaddr *client, bool *port_moved, char *why, size_t cap)
{
	int family = to->addr.ss_family, one = 1;
	int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	*port_moved = false;
	if (fd < 0)
		return fail(fd, why, cap, "socket", errno);
	if (family == AF_UNIX)
		return fd;
	/* Relay writes are whole chunks: Nagle would only delay them. */
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (svc->mark &&
	    setsockopt(fd, SOL_SOCKET, SO_MARK, &svc->mark, sizeof(svc->mark)) != 0)
		return fail(fd, why, cap, "SO_MARK", errno);

	/* LOCAL, UNKNOWN, UNSPEC, UNIX: no client address, so our own. */
	if (!svc->transparent || client_family(client) == AF_UNSPEC)
		return fd;

	struct sockaddr_storage src;
	socklen_t srclen = source_for(to, client, &src, why, cap);
	if (srclen == 0) {
		close(fd);
		return -1;
	}
	/* An IPv6 socket with a v4-mapped source is IPv4 underneath: it needs both. */
	if ((family == AF_INET6 &&
	     setsockopt(fd, IPPROTO_IPV6, IPV6_TRANSPARENT, &one, sizeof(one)) != 0) ||
	    (npd_target_family(to) == AF_INET &&
	     setsockopt(fd, IPPROTO_IP, IP_TRANSPARENT, &one, sizeof(one)) != 0))
		return fail(fd, why, cap, "IP_TRANSPARENT", errno);

	in_port_t *port = src.ss_family == AF_INET ? &((struct sockaddr_in *)&src)->sin_port
						   : &((struct sockaddr_in6 *)&src)->sin6_port;
	if (!svc->transparent_port)
		*port = 0;
	for (;;) {
		/* Port 0: the kernel picks one at connect(), against the 4-tuple, not now. */
		if (*port == 0)
			setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
		if (bind(fd, (const struct sockaddr *)&src, srclen) == 0)
			return fd;
		if (errno != EADDRINUSE || *port == 0)
			return fail(fd, why, cap, "bind to the client's address", errno);
		/* The client's port is taken here (another proxy, a NAT): any port will do. */
		*port = 0;
		*port_moved = true;
	}
}
