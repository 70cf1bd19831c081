/*
 * fuzz_config.c - netproxyd's config loader: the input is the Lua source of a
 * config, loaded with npd_config_load_string() under the name NAME.
 *
 *   - a load that fails sets no config and one message, either of the form
 *     "NAME:LINE: ..." or "NAME: ..." (LINE within the source), or Lua's own
 *     words for an error the config raised with a position of its own (which
 *     may imitate the first form, see may_forge()); every warning is of the
 *     first form;
 *   - a config that loads is whole: at least one listener, each with a valid
 *     service index or -1, its port and address text those of its sockaddr;
 *     services sorted by name, each with one address or two of different
 *     families, its options consistent (pass_tlvs and crc32c only with v2, no
 *     mark or transparency for a UNIX socket); trusted blocks with no host
 *     bits, each trusting its own network address; tunables in range;
 *     -t's description written;
 *   - nothing leaks (LeakSanitizer), on either path.
 *
 * Inputs holding a NUL byte are refused (-1): the string API cannot carry
 * one, and cutting the input there would not be running these bytes. (A NUL
 * inside a Lua string is still reached through "\0".)
 *
 * The loader runs sealed: open(2) and opendir(3) fail with ENOENT while it
 * runs, as for paths that do not exist, so Include reads nothing of the
 * machine's; getaddrinfo() takes numeric hosts only, so no name is sent to
 * a resolver. The build links these wrappers in with -Wl,--wrap (Makefile).
 * It also caps a config at 1 million Lua instructions, not 100 million
 * (NPD_CONFIG_MAX_STEPS): libFuzzer soon finds a loop, and each would
 * otherwise cost a third of a second. And it caps the bytes a config is handed in all
 * at 256 MiB (NPD_CONFIG_ALLOC_BUDGET): a loop that makes a string one byte
 * longer each time (s = 1 .. s) copies gigabytes within a million
 * instructions, and ASan's quarantine made that 2 GB of RSS and 10 s for one
 * input. In the daemon both, and time spent inside one C function (a
 * pattern that backtracks), are what the trial process stops (trial.h);
 * here libFuzzer's -timeout would report the last.
 *
 * Built with libFuzzer (make fuzz) and with fuzz/replay.c (make replay).
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "check.h"
#include "config.h"
#include "netproxy.h"

#define NAME "/nonexistent/fuzz.lua"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* --- the sealed loader ---------------------------------------------------- */

static bool loading;

int __wrap_open(const char *path, int flags, ...);
int __real_open(const char *path, int flags, ...);
DIR *__wrap_opendir(const char *path);
DIR *__real_opendir(const char *path);
int __wrap_getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
		       struct addrinfo **res);
int __real_getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
		       struct addrinfo **res);

int __wrap_open(const char *path, int flags, ...)
{
	int mode = 0;

	if (loading) {
		errno = ENOENT;
		return -1;
	}
	if (flags & (O_CREAT | O_TMPFILE)) {
		va_list ap;

		va_start(ap, flags);
		mode = va_arg(ap, int);
		va_end(ap);
	}
	return __real_open(path, flags, mode);
}

/* libFuzzer lists its corpus with opendir(): only the loader's calls fail. */
DIR *__wrap_opendir(const char *path)
{
	if (loading) {
		errno = ENOENT;
		return NULL;
	}
	return __real_opendir(path);
}

int __wrap_getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
		       struct addrinfo **res)
{
	struct addrinfo numeric = {0};

	if (hints)
		numeric = *hints;
	numeric.ai_flags |= AI_NUMERICHOST;
	return __real_getaddrinfo(node, service, &numeric, res);
}

/* --- messages ------------------------------------------------------------- */

static size_t nlines; /* of the input: a line number past this is wrong */
static int warnings;

/*
 * "NAME:LINE: ..." with 1 <= LINE <= nlines + 1 (Lua reports an error at the
 * end of input on the line after the last newline), or "NAME: ...". The
 * text may be empty: error("") says nothing after the place.
 */
static bool positioned(const char *text)
{
	const char *p;
	unsigned long line;
	char *end;

	if (strncmp(text, NAME ":", strlen(NAME ":")) != 0)
		return false;
	p = text + strlen(NAME ":");
	if (*p == ' ')
		return true;
	if (*p < '0' || *p > '9')
		return false;
	line = strtoul(p, &end, 10);
	return *end == ':' && end[1] == ' ' && line >= 1 && line <= nlines + 1;
}

/* Lua's own words, as config.c keeps them: a position "...:N:" before any newline. */
static bool luas_own(const char *text)
{
	for (const char *p = strchr(text, ':'); p; p = strchr(p + 1, ':')) {
		size_t digits = strspn(p + 1, "0123456789");

		if (memchr(text, '\n', (size_t)(p - text)))
			return false;
		if (digits && p[1 + digits] == ':')
			return true;
	}
	return false;
}

/*
 * Whether the config could raise a message that looks like the loader's
 * own: one with NAME in it (libFuzzer learns it from the comparisons here),
 * or with the "\1N:" that names a file's chunk (config_sandbox.c), which
 * the loader turns into "NAME:" with whatever line follows. A byte 1 is
 * written raw, as an escape or with string.char or string.format.
 */
static bool may_forge(const uint8_t *data, size_t size)
{
	static const char *const ways[] = {NAME, "\\0", "\\1", "\\x", "\\u", "char", "format"};

	for (size_t i = 0; i < sizeof(ways) / sizeof(ways[0]); i++)
		if (memmem(data, size, ways[i], strlen(ways[i])))
			return true;
	return memchr(data, 1, size) != NULL;
}

static void on_warning(void *ctx, const char *text)
{
	(void)ctx;
	CHECK(positioned(text));
	warnings++;
}

/* --- a loaded config ------------------------------------------------------ */

static bool terminated(const char *s, size_t cap)
{
	return memchr(s, '\0', cap) != NULL;
}

/* The project's text form of an address with its port, as listeners carry it. */
static void addr_text(char *out, size_t cap, const struct sockaddr_storage *ss)
{
	struct np_endpoint ep = {0};
	char ip[NP_ADDRSTRLEN];

	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)ss;

		memcpy(ep.ip4, &sin->sin_addr, 4);
		CHECK(np_format_addr(ip, sizeof(ip), NP_AF_INET, &ep) > 0);
		snprintf(out, cap, "%s:%u", ip, ntohs(sin->sin_port));
	} else {
		const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)ss;

		memcpy(ep.ip6, &sin6->sin6_addr, 16);
		CHECK(np_format_addr(ip, sizeof(ip), NP_AF_INET6, &ep) > 0);
		snprintf(out, cap, "[%s]:%u", ip, ntohs(sin6->sin6_port));
	}
}

static void check_listeners(const struct npd_config *cfg)
{
	char text[NPD_ADDR_TEXT];

	CHECK(cfg->nlisteners >= 1 && cfg->listeners != NULL);
	for (size_t i = 0; i < cfg->nlisteners; i++) {
		const struct npd_listener *l = &cfg->listeners[i];
		static const uint8_t zero[16];

		CHECK(l->service >= -1 && l->service < (int)cfg->nservices);
		CHECK(terminated(l->missing, sizeof(l->missing)));
		CHECK(l->service < 0 || l->missing[0] == '\0');
		CHECK(strpbrk(l->missing, "\"\\") == NULL);
		CHECK(l->port >= 1);
		if (l->addr.ss_family == AF_INET) {
			const struct sockaddr_in *sin = (const struct sockaddr_in *)&l->addr;

			CHECK(l->addrlen == sizeof(*sin) && ntohs(sin->sin_port) == l->port);
			CHECK(!l->implicit || sin->sin_addr.s_addr == 0);
		} else {
			const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)&l->addr;

			CHECK(l->addr.ss_family == AF_INET6);
			CHECK(l->addrlen == sizeof(*sin6) && ntohs(sin6->sin6_port) == l->port);
			CHECK(!l->implicit || memcmp(&sin6->sin6_addr, zero, 16) == 0);
		}
		CHECK(terminated(l->addr_text, sizeof(l->addr_text)));
		addr_text(text, sizeof(text), &l->addr);
		CHECK(strcmp(text, l->addr_text) == 0);
		for (size_t j = 0; j < i; j++)
			CHECK(cfg->listeners[j].addrlen != l->addrlen ||
			      memcmp(&cfg->listeners[j].addr, &l->addr, l->addrlen) != 0);
	}
}

static void check_target(const struct npd_target *t)
{
	CHECK(terminated(t->text, sizeof(t->text)) && t->text[0] != '\0');
	switch (t->addr.ss_family) {
	case AF_UNIX: {
		const struct sockaddr_un *sun = (const struct sockaddr_un *)&t->addr;

		CHECK(terminated(sun->sun_path, sizeof(sun->sun_path)) && sun->sun_path[0] != '\0');
		CHECK(t->addrlen == offsetof(struct sockaddr_un, sun_path) + strlen(sun->sun_path) + 1);
		CHECK(strncmp(t->text, "unix:", 5) == 0 && strcmp(t->text + 5, sun->sun_path) == 0);
		break;
	}
	case AF_INET:
		CHECK(t->addrlen == sizeof(struct sockaddr_in));
		CHECK(((const struct sockaddr_in *)&t->addr)->sin_port != 0);
		break;
	case AF_INET6:
		CHECK(t->addrlen == sizeof(struct sockaddr_in6));
		CHECK(((const struct sockaddr_in6 *)&t->addr)->sin6_port != 0);
		break;
	default:
		CHECK(!"a target of an unknown family");
	}
}

static void check_services(const struct npd_config *cfg)
{
	CHECK(cfg->nservices == 0 || cfg->services != NULL);
	for (size_t i = 0; i < cfg->nservices; i++) {
		const struct npd_service *s = &cfg->services[i];
		bool tlvs = false;
		size_t len;

		CHECK(terminated(s->name, sizeof(s->name)));
		len = strlen(s->name);
		CHECK(len >= 1 && strspn(s->name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
						  "0123456789_.-") == len);
		CHECK(i == 0 || strcmp(cfg->services[i - 1].name, s->name) < 0);
		CHECK(s->ntargets == 1 || s->ntargets == 2);
		for (int t = 0; t < s->ntargets; t++)
			check_target(&s->target[t]);
		if (s->ntargets == 2) {
			CHECK(s->target[0].addr.ss_family != AF_UNIX &&
			      s->target[1].addr.ss_family != AF_UNIX);
			CHECK(npd_target_family(&s->target[0]) != npd_target_family(&s->target[1]));
		}
		CHECK(s->send_proxy == NPD_SEND_NONE || s->send_proxy == NPD_SEND_V1 ||
		      s->send_proxy == NPD_SEND_V2);
		for (size_t b = 0; b < sizeof(s->pass_tlvs); b++)
			tlvs |= s->pass_tlvs[b] != 0;
		CHECK(!(s->pass_tlvs[NP_TLV_CRC32C / 8] & (1u << (NP_TLV_CRC32C % 8))));
		CHECK((!tlvs && !s->crc32c) || s->send_proxy == NPD_SEND_V2);
		CHECK(!s->transparent || s->target[0].addr.ss_family != AF_UNIX);
		CHECK(s->transparent || s->transparent_port);
		CHECK(s->mark == 0 || s->target[0].addr.ss_family != AF_UNIX);
		CHECK(s->connect_timeout_ms >= 1 && s->idle_timeout_ms >= 0);
		CHECK(terminated(s->prosody, sizeof(s->prosody)));
	}
}

/* Each block's own network address is trusted; no block has host bits set. */
static void check_trusted(const struct npd_config *cfg)
{
	struct sockaddr_storage ss;

	CHECK((cfg->ntrusted == 0) == (cfg->trusted == NULL));
	for (size_t i = 0; i < cfg->ntrusted; i++) {
		const struct np_cidr *c = &cfg->trusted[i];
		unsigned bits = c->family == NP_AF_INET ? 32 : 128;

		CHECK(c->family == NP_AF_INET || c->family == NP_AF_INET6);
		CHECK(c->prefix <= bits);
		for (unsigned b = c->prefix; b < 128; b++)
			CHECK(!(c->addr[b / 8] & (0x80u >> (b % 8))));
		memset(&ss, 0, sizeof(ss));
		if (c->family == NP_AF_INET) {
			ss.ss_family = AF_INET;
			memcpy(&((struct sockaddr_in *)&ss)->sin_addr, c->addr, 4);
		} else {
			ss.ss_family = AF_INET6;
			memcpy(&((struct sockaddr_in6 *)&ss)->sin6_addr, c->addr, 16);
		}
		CHECK(npd_config_trusts(cfg, (const struct sockaddr *)&ss));
	}
	if (cfg->ntrusted == 0) {
		memset(&ss, 0, sizeof(ss));
		ss.ss_family = AF_INET6;
		CHECK(npd_config_trusts(cfg, (const struct sockaddr *)&ss));
	}
}

static void check_config(const struct npd_config *cfg)
{
	FILE *out;

	CHECK(strcmp(cfg->source, NAME) == 0);
	check_listeners(cfg);
	check_services(cfg);
	check_trusted(cfg);
	CHECK(cfg->header_timeout_ms >= 1);
	CHECK(cfg->max_header >= NP_V2_MIN_LEN && cfg->max_header <= NP_V2_MAX_LEN);
	CHECK(cfg->workers >= 0 && cfg->workers <= 256);
	CHECK(cfg->max_connections >= 0); /* 0: from the descriptor limit */
	CHECK(cfg->log_level >= 0 && cfg->log_level <= 2);
	CHECK(terminated(cfg->user, sizeof(cfg->user)) && terminated(cfg->group, sizeof(cfg->group)));
	CHECK(cfg->nfiles == 1); /* Include reads nothing here */
	CHECK(cfg->prosody_skipped >= 0);
	out = fopen("/dev/null", "w");
	CHECK(out != NULL);
	npd_config_describe(cfg, out);
	CHECK(!ferror(out));
	fclose(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct npd_config_diag diag = {.warn = on_warning};
	struct npd_config *cfg = (struct npd_config *)&diag; /* must be overwritten */
	char *lua;
	int rc;

	if (memchr(data, '\0', size))
		return -1;
	lua = malloc(size + 1);
	CHECK(lua != NULL);
	memcpy(lua, data, size);
	lua[size] = '\0';
	nlines = 1; /* Lua counts "\r" as a line break too: this is the most it can count */
	for (size_t i = 0; i < size; i++)
		nlines += data[i] == '\n' || data[i] == '\r';
	warnings = 0;

	loading = true;
	rc = npd_config_load_string(NAME, lua, &cfg, &diag);
	loading = false;

	CHECK(terminated(diag.error, sizeof(diag.error)));
	if (rc == 0) {
		CHECK(cfg != NULL && diag.error[0] == '\0');
		check_config(cfg);
	} else {
		CHECK(rc == -1 && cfg == NULL);
		if (!positioned(diag.error)) {
			/*
			 * Lua's own words are kept for a message the config raised with a
			 * position of its own, cut to fit (the position may be cut off).
			 */
			CHECK(strncmp(diag.error, NAME, strlen(NAME)) != 0 || may_forge(data, size));
			/* ... or forged: "\1" "0:" becomes "NAME:" before any text, digits or not. */
			CHECK(luas_own(diag.error) || strlen(diag.error) == sizeof(diag.error) - 1 ||
			      may_forge(data, size));
		}
	}
	npd_config_free(cfg);
	free(lua);
	return 0;
}
