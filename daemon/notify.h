/*
 * notify.h - the service manager's notify protocol (sd_notify(3)), spoken
 * directly: one datagram of "KEY=VALUE" lines to the socket NOTIFY_SOCKET
 * names, a path or, with a leading '@', an abstract name. No libsystemd.
 *
 * What netproxyd says and when (netproxyd(8), SYSTEMD):
 *   READY=1 and STATUS=    once the workers run, and after every reload,
 *                          failed or not (the STATUS says which);
 *   RELOADING=1 and        on SIGHUP, before the file is read, as
 *   MONOTONIC_USEC=        Type=notify-reload (systemd 253) requires;
 *   STOPPING=1             on SIGTERM or SIGINT.
 * Only the main thread speaks: systemd's default NotifyAccess=main accepts
 * datagrams from the main process only, and the config's trial child never
 * sends one.
 */
#ifndef NPD_NOTIFY_H
#define NPD_NOTIFY_H

#include <stdbool.h>
#include <stddef.h>

/*
 * Read NOTIFY_SOCKET and open a socket for it; remove the variable from the
 * environment, so no program started later takes it for its own. Call once,
 * before any thread starts. Returns true when a manager listens (the
 * variable named a usable address), false otherwise; every later call is
 * then a no-op.
 */
bool npd_notify_init(void);

/*
 * Send one message, printf-formatted: "READY=1\nSTATUS=...". A newline in
 * an argument would start a new assignment: pass only text the daemon
 * wrote or error messages (npd_notify_status() flattens those). Never
 * blocks for more than a second. Returns 0, or -1 with errno when it could
 * not be sent (the first failure is logged as a warning); the daemon
 * carries on.
 */
__attribute__((format(printf, 1, 2))) int npd_notify(const char *fmt, ...);

/* "RELOADING=1\nMONOTONIC_USEC=<now>" and STATUS=status. */
int npd_notify_reloading(const char *status);

/*
 * Copy text into out (cap bytes) for a STATUS= value: a newline or other
 * control character becomes a space, so the message stays one assignment.
 * Returns out.
 */
char *npd_notify_flatten(char *out, size_t cap, const char *text);

#endif /* NPD_NOTIFY_H */
