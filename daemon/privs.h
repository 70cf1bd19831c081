/*
 * privs.h - drop to the configured user and the capabilities the config needs.
 */
#ifndef NPD_PRIVS_H
#define NPD_PRIVS_H

#include <stdbool.h>
#include <stddef.h>

#include "config.h"

/*
 * Become cfg->user (and cfg->group), keeping CAP_NET_ADMIN only when a
 * service is transparent or sets a mark, and CAP_NET_BIND_SERVICE only when
 * a listener has a port below 1024. Without user, root stays root, and an
 * unprivileged process keeps only those two of the capabilities it was
 * given. Call before any thread starts. Returns 0, or -1 with why set.
 */
int npd_privs_drop(const struct npd_config *cfg, char *why, size_t cap);

/* Whether cfg->user and cfg->group exist (for -t). Returns 0, or -1 with why set. */
int npd_privs_check(const struct npd_config *cfg, char *why, size_t cap);

/* Whether this thread may use IP_TRANSPARENT and SO_MARK. */
bool npd_privs_have_net_admin(void);

#endif /* NPD_PRIVS_H */
