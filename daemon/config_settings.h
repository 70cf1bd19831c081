/*
 * config_settings.h - a config's settings, checked and resolved into
 * config.h's structs once the sandbox has run it: config_settings.c reads
 * them in order, config_listeners.c the ports and where they listen,
 * config_services.c the services. Order and dependencies:
 * config_internal.h.
 */
#ifndef NPD_CONFIG_SETTINGS_H
#define NPD_CONFIG_SETTINGS_H

#include <stdbool.h>
#include <stddef.h>

#include "config_internal.h"

/* --- config_settings.c ---------------------------------------------------- */

/*
 * Whether a global called name[0..len) is a setting netproxyd reads: one of
 * cfg_key_names, or one of Prosody's <service>_ports and _interfaces.
 */
bool cfg_is_setting(const char *name, size_t len);

/*
 * Check every setting and resolve it into ld->cfg, in a protected call.
 * The stack holds what cfg_sandbox_run() left: the environment, the values
 * table and the lines table. Returns a Lua status; when it is not LUA_OK
 * and not a cfg_fail() (ld->failed), the error value is on top.
 */
int cfg_settings_read(struct loader *ld);

/* --- config_listeners.c --------------------------------------------------- */

/*
 * proxy_port_mappings into ld->map; a name that services lacks is added
 * when it is one of Prosody's services (cfg_add_prosody_service()), else
 * warned about. Needs the services read.
 */
void cfg_read_mappings(struct loader *ld);

/*
 * The listeners into ld->cfg: each port of proxy_ports, else every mapped
 * port, on each interface, or on the address an entry names. Needs the
 * mappings read. Fails when there is nothing to listen on.
 */
void cfg_read_listeners(struct loader *ld);

/* --- config_services.c ---------------------------------------------------- */

/* services = { name = { ... } } into ld->cfg->services, sorted by name. */
void cfg_read_services(struct loader *ld);

/* The index of the service called name in cfg->services (sorted), or -1. */
int cfg_find_service(const struct npd_config *cfg, const char *name);

/*
 * A service for a mapped name that services lacks: one of Prosody's, found
 * where Prosody's config says, delivered plain, sorted in; path names the
 * mapping. Returns false, adding nothing, when name is not one of Prosody's.
 */
bool cfg_add_prosody_service(struct loader *ld, const char *name, const char *path);

#endif /* NPD_CONFIG_SETTINGS_H */
