/*
 * env.c - the shim's environment: the NETPROXY_* settings, read once at the
 * first call and never written after; the C library's own versions of the
 * calls the shim wraps; the clock; debug lines. It knows nothing of
 * descriptors or connections: every other file may use it.
 */
#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "shim.h"

struct shim_conf conf;
struct shim_real real;

void debug(const char *fmt, ...)
{
	char line[512];
	va_list ap;

	if (!conf.debug)
		return;
	int n = snprintf(line, sizeof(line), "netproxy_preload[%d]: ", (int)getpid());
	va_start(ap, fmt);
	n += vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
	va_end(ap);
	if (n > (int)sizeof(line) - 2)
		n = (int)sizeof(line) - 2;
	line[n++] = '\n';
	ssize_t w = write(STDERR_FILENO, line, (size_t)n);
	(void)w;
}

int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * An entry of NETPROXY_TRUSTED, read by libnetproxy, as netproxyd reads
 * proxy_trusted_proxies. Returns 1 when read, 0 when it cannot be, -1 when
 * it was refused with a message of its own.
 */
static int parse_cidr(const char *text, size_t len)
{
	if (conf.ntrusted == MAX_TRUSTED)
		return 0;
	int r = np_cidr_parse(text, len, &conf.trusted[conf.ntrusted]);
	if (r == NP_EFAMILY) {
		/*
		 * Inside ::ffff:0:0/96: a v4-mapped peer is matched as the IPv4
		 * address it is, so no peer would ever match. The library gives the
		 * block as IPv4: say to write that.
		 */
		const struct np_cidr *c = &conf.trusted[conf.ntrusted];
		struct np_endpoint ep = {0};
		char v4[NP_ADDRSTRLEN] = "?", block[8] = "";

		memcpy(ep.ip4, c->addr, 4);
		np_format_addr(v4, sizeof(v4), NP_AF_INET, &ep);
		if (c->prefix < 32)
			snprintf(block, sizeof(block), "/%u", (unsigned)c->prefix);
		fprintf(stderr, "netproxy_preload: NETPROXY_TRUSTED: '%.*s' is an IPv4-mapped block, "
				"which no sender matches (an IPv4 sender is matched as IPv4): write "
				"'%s%s'; the shim is off\n", (int)len, text, v4, block);
		return -1;
	}
	if (r != 0)
		return 0;
	conf.ntrusted++;
	return 1;
}

/* A list separated by commas or spaces; false, said on stderr, when an item cannot be read. */
static bool parse_list(const char *name, const char *value, int (*item)(const char *, size_t))
{
	for (const char *p = value; *p;) {
		size_t n = strcspn(p, ", ");
		int r = n ? item(p, n) : 1;
		if (r == 0)
			fprintf(stderr, "netproxy_preload: %s: cannot read '%.*s'; the shim is off\n", name,
				(int)n, p);
		if (r <= 0)
			return false;
		p += n;
		p += strspn(p, ", ");
	}
	return true;
}

static int parse_port(const char *text, size_t len)
{
	char buf[8];
	char *end;

	if (len >= sizeof(buf) || conf.nports == MAX_PORTS)
		return 0;
	memcpy(buf, text, len);
	buf[len] = '\0';
	long p = strtol(buf, &end, 10);
	if (*end || p < 1 || p > 65535)
		return 0;
	conf.ports[conf.nports++] = (uint16_t)p;
	return 1;
}

static void *next_symbol(const char *name)
{
	void *f = dlsym(RTLD_NEXT, name);

	if (!f) {
		fprintf(stderr, "netproxy_preload: %s not found: %s\n", name, dlerror());
		abort();
	}
	return f;
}

/* A whole number from lo to hi, or dflt when unset or empty; anything else is refused. */
static bool parse_number(const char *name, const char *unit, long lo, long hi, long dflt,
			 long *out)
{
	const char *v = getenv(name);
	char *end;

	*out = dflt;
	if (!v || !*v)
		return true;
	errno = 0;
	long n = strtol(v, &end, 10);
	if (*end || errno || n < lo || n > hi) {
		fprintf(stderr, "netproxy_preload: %s=%s: expected %s from %ld to %ld; the shim is off\n",
			name, v, unit, lo, hi);
		return false;
	}
	*out = n;
	return true;
}

/* A switch: unset, "" or "0" is off, "1" is on; anything else is refused. */
static bool parse_switch(const char *name, bool *out)
{
	const char *v = getenv(name);

	*out = v && strcmp(v, "1") == 0;
	if (!v || !*v || strcmp(v, "0") == 0 || strcmp(v, "1") == 0)
		return true;
	fprintf(stderr, "netproxy_preload: %s=%s: expected 0 or 1; the shim is off\n", name, v);
	return false;
}

/* The C library's versions of the wrapped calls; aborts when one cannot be found. */
void env_resolve(void)
{
	real.accept = next_symbol("accept");
	real.accept4 = next_symbol("accept4");
	real.getpeername = next_symbol("getpeername");
	real.getsockname = next_symbol("getsockname");
	real.close = next_symbol("close");
	real.listen = next_symbol("listen");
	real.dup2 = next_symbol("dup2");
	real.dup3 = next_symbol("dup3");
}

/*
 * Read the NETPROXY_* variables into conf. False when the shim is to stay
 * off: a setting could not be read (said on stderr), or no port is listed.
 */
bool env_read(void)
{
	if (!parse_switch("NETPROXY_DEBUG", &conf.debug) ||
	    !parse_switch("NETPROXY_DST", &conf.report_dst))
		return false;
	long ms, max;
	if (!parse_number("NETPROXY_TIMEOUT_MS", "milliseconds", 1, 3600000, 5000, &ms) ||
	    !parse_number("NETPROXY_MAX_HEADER", "bytes", NP_V2_MIN_LEN, NP_V2_MAX_LEN, STACK_HEADER,
			  &max))
		return false;
	conf.timeout_ms = (int)ms;
	conf.max_header = (size_t)max;
	snprintf(conf.too_big, sizeof(conf.too_big), "header larger than NETPROXY_MAX_HEADER (%zu bytes)",
		 conf.max_header);

	const char *ports = getenv("NETPROXY_PORTS");
	if (!ports || !*ports) {
		debug("NETPROXY_PORTS is not set: the shim does nothing");
		return false;
	}
	/* Unset: the host itself, as netproxyd's default. Set and empty: anyone. */
	const char *trusted = getenv("NETPROXY_TRUSTED");
	if (!trusted)
		trusted = "127.0.0.1,::1";
	if (!parse_list("NETPROXY_PORTS", ports, parse_port) ||
	    !parse_list("NETPROXY_TRUSTED", trusted, parse_cidr))
		return false;
	conf.anyone = conf.ntrusted == 0;
	return true;
}

/* Say that the shim is at work, as it starts (and warn of an empty NETPROXY_TRUSTED). */
void env_announce(void)
{
	const char *trusted = getenv("NETPROXY_TRUSTED");

	if (conf.anyone)
		fprintf(stderr, "netproxy_preload: WARNING: NETPROXY_TRUSTED is set and empty: ANY "
				"host can send PROXY headers and claim any address\n");
	debug("PROXY ports: %s; trusted: %s; header timeout %d ms; header up to %zu bytes",
	      getenv("NETPROXY_PORTS"), conf.anyone ? "anyone" : trusted ? trusted : "127.0.0.1,::1",
	      conf.timeout_ms, conf.max_header);
}

/* Whether the sender, the peer the kernel reports, may send a header. */
bool is_trusted(const struct sockaddr *sa)
{
	if (conf.anyone)
		return true;
	for (size_t i = 0; i < conf.ntrusted; i++)
		if (np_cidr_match(&conf.trusted[i], sa))
			return true;
	return false;
}

/* Whether port is one of NETPROXY_PORTS. */
bool is_proxy_port(uint16_t port)
{
	for (size_t i = 0; i < conf.nports; i++)
		if (conf.ports[i] == port)
			return true;
	return false;
}
