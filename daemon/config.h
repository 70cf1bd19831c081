/*
 * config.h - netproxyd's configuration: a Lua file evaluated in a sandbox,
 * checked, and resolved into plain structs the workers read and never write.
 *
 * The original module's keys work unchanged (proxy_ports,
 * proxy_port_mappings, proxy_trusted_proxies); netproxyd adds services and a
 * few tunables. A Prosody config (prosody.cfg.lua) loads as it is: the
 * address of a service Prosody runs comes from Prosody's own keys. A loaded
 * config is immutable: a reload builds a new one.
 */
#ifndef NPD_CONFIG_H
#define NPD_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>

#include "netproxy.h"

#define NPD_NAME_MAX 64	 /* a service name, NUL included */
#define NPD_ADDR_TEXT 128 /* an address as written in the config, NUL included */

#define NPD_DEFAULT_HEADER_TIMEOUT_MS 5000
#define NPD_DEFAULT_SHUTDOWN_GRACE_MS 30000
#define NPD_DEFAULT_MAX_HEADER 4096
#define NPD_DEFAULT_CONNECT_TIMEOUT_MS 5000
#define NPD_DEFAULT_MAX_CONNECTIONS 0 /* from the descriptor limit (npd_connection_limit) */

/* How a service learns the client's address. */
enum npd_send_proxy {
	NPD_SEND_NONE = 0, /* plain: the header is stripped; the address only reaches the log */
	NPD_SEND_V1 = 1,   /* a re-emitted v1 line */
	NPD_SEND_V2 = 2,   /* a re-emitted v2 header */
};

/* One address of a service. */
struct npd_target {
	struct sockaddr_storage addr; /* AF_INET, AF_INET6 or AF_UNIX */
	socklen_t addrlen;
	char text[NPD_ADDR_TEXT]; /* as written: "127.0.0.1:5222", "[::1]:80", "unix:/run/s" */
};

/*
 * A service has one address, or two of different families (a v4-mapped
 * IPv6 address counts as IPv4): a connection goes to the one of its
 * client's family, else to the first (backend.h). A UNIX socket stands alone.
 */
#define NPD_TARGETS_MAX 2

struct npd_service {
	char name[NPD_NAME_MAX];
	struct npd_target target[NPD_TARGETS_MAX]; /* where to connect, in the order written */
	int ntargets;				    /* 1 or 2 */
	enum npd_send_proxy send_proxy;
	bool crc32c;		   /* v2: add a CRC32C TLV */
	uint8_t pass_tlvs[256 / 8]; /* v2: bitmap of the TLV types passed on */
	int connect_timeout_ms;
	int idle_timeout_ms;   /* 0: none */
	bool transparent;      /* connect from the client's own address (IP_TRANSPARENT) */
	bool transparent_port; /* ... and its port, when free (default) */
	uint32_t mark;	       /* SO_MARK on the backend socket; 0: none */
	char prosody[192];     /* for one of Prosody's services without connect, where its
				  addresses came from ("Prosody's c2s_ports and interfaces"); else "" */
};

struct npd_listener {
	struct sockaddr_storage addr; /* where to listen; port included */
	socklen_t addrlen;
	char addr_text[NPD_ADDR_TEXT]; /* "0.0.0.0:15222", "[::]:15222", "127.0.0.1:15222" */
	uint16_t port;
	int service;   /* index into npd_config.services, or -1 for an unmapped port */
	/*
	 * With service -1: the name proxy_port_mappings gives the port, which is
	 * no service (shortened, with "..." at the end, when long); "" when the
	 * port has no mapping. Either way its connections are closed after the
	 * header.
	 */
	char missing[NPD_NAME_MAX];
	bool implicit; /* came from "*": an address family the host lacks is skipped with a warning */
};

struct npd_config {
	char source[256]; /* the file, "built-in default" or "command line" */
	struct npd_listener *listeners;
	size_t nlisteners;
	struct npd_service *services;
	size_t nservices;
	struct np_cidr *trusted; /* none: everyone is trusted (warned about at load) */
	size_t ntrusted;
	int header_timeout_ms;
	size_t max_header;
	int workers; /* 0: one per CPU */
	int max_connections; /* 0: as many as the descriptor limit allows */
	int shutdown_grace_ms; /* how long a stop lets relayed connections finish; 0: none */
	bool log_syslog;
	/*
	 * Which lines a connection that reaches its service gets at the info
	 * level (log_connections): the one when it is established (default;
	 * its close is debug), the one when it closes, or both. Connections
	 * that never reach it, and LOCAL ones (health checks), get their close
	 * line whatever this says.
	 */
	enum npd_log_connections {
		NPD_LOG_CONN_ESTABLISHED,
		NPD_LOG_CONN_CLOSED,
		NPD_LOG_CONN_BOTH,
	} log_connections;
	int log_level;	/* 0 errors and warnings, 1 info (default), 2 debug */
	char user[64];	/* run as this user after binding; "": stay */
	char group[64]; /* ... and group; "": the user's */
	int nfiles;	      /* files read: the config and those it included */
	bool prosody;	      /* a Prosody config (VirtualHost, Component, modules_enabled) */
	int prosody_skipped;  /* Prosody's own settings, which netproxyd does not use */
	/*
	 * Where the stats listener (metrics, live connections) listens:
	 * "127.0.0.1:9100", "[::1]:9100", or a UNIX socket as "unix:/path";
	 * addrlen 0: none (the default). Read at start only.
	 */
	struct npd_target stats_listen;
};

/*
 * Where messages about a config go. error holds the one fatal message, of
 * the form "FILE:LINE: KEY: what is wrong" (the line and key when known).
 * Warnings are passed to warn(ctx, text) as they are found, if warn is set.
 */
struct npd_config_diag {
	char error[512];
	void (*warn)(void *ctx, const char *text);
	void *ctx;
};

/* The configuration used when no file is given: the original module's README example. */
extern const char npd_config_default_lua[];

/*
 * Load a config from the Lua file at path. Returns 0 with *out set (free it
 * with npd_config_free), or -1 with diag->error set.
 */
int npd_config_load_file(const char *path, struct npd_config **out, struct npd_config_diag *diag);

/* The same from Lua source in memory; name stands for the file in messages. */
int npd_config_load_string(const char *name, const char *lua, struct npd_config **out,
			   struct npd_config_diag *diag);

void npd_config_free(struct npd_config *cfg);

/* AF_INET, AF_INET6 or AF_UNIX: t's family on the wire (a v4-mapped IPv6 address is AF_INET). */
int npd_target_family(const struct npd_target *t);

/*
 * Nonzero when addr (an accepted peer) may send headers: in the trusted list,
 * as np_cidr_match() reads it, or any peer when the list is empty; a UNIX
 * socket's peer always.
 */
bool npd_config_trusts(const struct npd_config *cfg, const struct sockaddr *addr);

/* Write the listeners, where each goes, and the trusted list, one per line (netproxyd -t). */
void npd_config_describe(const struct npd_config *cfg, FILE *out);

#endif /* NPD_CONFIG_H */
