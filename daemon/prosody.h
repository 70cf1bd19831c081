/*
 * prosody.h - what netproxyd knows of Prosody, so that it can read a
 * Prosody config (prosody.cfg.lua) as Prosody 0.12 does: the network
 * services a proxy port may be mapped to, the ports and interfaces each
 * listens on by default, and how Include finds its files.
 *
 * Prosody's portmanager takes a service's ports from "<name>_ports" and its
 * interfaces from "<name>_interfaces", else "local_interfaces" for a private
 * service (one meant for this host only), else "interfaces", else every
 * address ("*" and "::", as use_ipv4 and use_ipv6 allow). netproxyd
 * connects where Prosody listens: the first port, on the first interface
 * of each address family, so that a client reaches Prosody over its own.
 */
#ifndef NPD_PROSODY_H
#define NPD_PROSODY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct npd_prosody_service {
	const char *name;      /* the portmanager name: c2s, s2s, ... */
	uint16_t default_port; /* 0: none; it listens only where <name>_ports says */
	bool private;	       /* listens on local_interfaces unless told otherwise */
};

/* The service called name, or NULL when Prosody has no such network service. */
const struct npd_prosody_service *npd_prosody_service(const char *name);

/* The names of every service above, as "c2s, s2s, ..., proxy65", for messages. */
extern const char npd_prosody_service_names[];

/*
 * The host to connect to for an interface Prosody listens on: the wildcards
 * "*" and "0.0.0.0" are reached at 127.0.0.1, "::" at ::1, and any other
 * interface at itself. ("*" is IPv4 alone in Prosody: LuaSocket binds it
 * as 0.0.0.0, and "::" with IPV6_V6ONLY.) Returns a pointer to a constant
 * or to iface.
 */
const char *npd_prosody_connect_host(const char *iface);

/*
 * Include's files, as Prosody finds them: a relative path is relative to
 * the directory of the file that includes it (from, a path); '*' and '?' in
 * the last component make a pattern, which names the files of that
 * directory that match it and do not start with '.', sorted; it may match
 * none. Returns the paths, each ending in a NUL, back to back in one block
 * the caller frees, with their number in *count; or NULL with why (a
 * sentence naming the file, directory or pattern) in err.
 */
char *npd_prosody_include_paths(const char *from, const char *file, size_t *count, char *err,
				size_t errcap);

/* Whether name[0..len) is <service>_ports, _interfaces or _interface of a service above. */
bool npd_prosody_is_service_key(const char *name, size_t len);

/*
 * Reading Prosody's keys from a config being loaded (config_internal.h):
 * each function reads the settings' values and may cfg_fail().
 */
struct loader;
struct npd_service;

/* use_ipv4 and use_ipv6, each true unless set to false. */
void npd_prosody_families(struct loader *ld, bool *v4, bool *v6);

/* With both families off, Prosody listens nowhere by default: cfg_fail() at use_ipv6. */
void npd_prosody_check_families(struct loader *ld, bool v4, bool v6);

/*
 * The addresses of Prosody's service ps into svc, from Prosody's keys: its
 * first port, on the first of its interfaces of each address family, as
 * npd_prosody_connect_host() reaches them; svc->prosody says where they came
 * from. path names the setting that needs them, for messages.
 */
void npd_prosody_read_address(struct loader *ld, const char *path, struct npd_service *svc,
			      const struct npd_prosody_service *ps);

#endif /* NPD_PROSODY_H */
