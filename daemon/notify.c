/*
 * notify.c - the notify protocol without libsystemd (notify.h).
 *
 * The socket is opened once and each message is sent with the address, as
 * sd_notify() does, so a manager that re-executes itself and binds its
 * socket anew still hears us. Sending never blocks long: the manager reads
 * its socket promptly, and a message it cannot take within SO_SNDTIMEO is
 * given up rather than stalling reloads or the stop.
 */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "notify.h"

static int notify_fd = -1;
static struct sockaddr_un notify_addr;
static socklen_t notify_len;

bool npd_notify_init(void)
{
	const char *name = getenv("NOTIFY_SOCKET");
	size_t len = name ? strlen(name) : 0;
	struct timeval timeout = {.tv_sec = 1};

	if (notify_fd >= 0)
		return true;
	/* "@name" is abstract, "/path" a file; anything else (vsock:...) is not ours. */
	if (len < 2 || (name[0] != '@' && name[0] != '/') || len >= sizeof(notify_addr.sun_path)) {
		if (name)
			npd_log(NPD_LOG_WARN, "NOTIFY_SOCKET=%s: not a path or an abstract name of at "
					      "most %zu bytes: the service manager is not told when "
					      "netproxyd is ready",
				name, sizeof(notify_addr.sun_path) - 1);
		unsetenv("NOTIFY_SOCKET");
		return false;
	}
	memset(&notify_addr, 0, sizeof(notify_addr));
	notify_addr.sun_family = AF_UNIX;
	memcpy(notify_addr.sun_path, name, len);
	if (name[0] == '@') {
		notify_addr.sun_path[0] = '\0';
		notify_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);
	} else {
		notify_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len + 1);
	}
	unsetenv("NOTIFY_SOCKET");
	notify_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (notify_fd < 0) {
		npd_log(NPD_LOG_WARN, "NOTIFY_SOCKET: socket: %s: the service manager is not told "
				      "when netproxyd is ready",
			strerror(errno));
		return false;
	}
	setsockopt(notify_fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
	return true;
}

static int send_text(const char *text, size_t len)
{
	static bool warned;
	ssize_t n;

	do
		n = sendto(notify_fd, text, len, MSG_NOSIGNAL, (const struct sockaddr *)&notify_addr,
			   notify_len);
	while (n < 0 && errno == EINTR);
	if (n >= 0)
		return 0;
	int err = errno;
	if (!warned) {
		/* The manager decides what a lost READY=1 means (a start timeout): say it once. */
		npd_log(NPD_LOG_WARN, "NOTIFY_SOCKET: sending to the service manager: %s",
			strerror(err));
		warned = true;
	}
	errno = err;
	return -1;
}

int npd_notify(const char *fmt, ...)
{
	char text[2048];
	va_list ap;
	int n;

	if (notify_fd < 0)
		return 0;
	va_start(ap, fmt);
	n = vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	if (n < 0)
		return -1;
	if ((size_t)n >= sizeof(text))
		n = sizeof(text) - 1; /* a STATUS cut short; the assignments before it are whole */
	return send_text(text, (size_t)n);
}

int npd_notify_reloading(const char *status)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return npd_notify("RELOADING=1\nMONOTONIC_USEC=%llu\nSTATUS=%s",
			  (unsigned long long)ts.tv_sec * 1000000ULL +
				  (unsigned long long)ts.tv_nsec / 1000ULL,
			  status);
}

char *npd_notify_flatten(char *out, size_t cap, const char *text)
{
	size_t i = 0;

	if (cap == 0)
		return out;
	for (; text[i] && i + 1 < cap; i++)
		out[i] = (unsigned char)text[i] < 0x20 || text[i] == 0x7f ? ' ' : text[i];
	out[i] = '\0';
	return out;
}
