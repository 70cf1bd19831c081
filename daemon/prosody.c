/*
 * prosody.c - Prosody's network services and Include, as Prosody 0.12 has
 * them (core/portmanager.lua, core/configmanager.lua and each module's
 * module:provides("net", ...)), for reading its config.
 */
#include <dirent.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "prosody.h"

/*
 * The services a PROXY port can usefully reach. c2s_direct_tls,
 * s2s_direct_tls and legacy_ssl (0.12's c2s_direct_tls under its old name)
 * have no default port: Prosody listens for them only where the config
 * says. http is private since 0.12: it listens on loopback unless told.
 */
static const struct npd_prosody_service services[] = {
	{"c2s", 5222, false},		 {"s2s", 5269, false},	 {"c2s_direct_tls", 0, false},
	{"s2s_direct_tls", 0, false},	 {"legacy_ssl", 0, false}, {"http", 5280, true},
	{"https", 5281, false},		 {"proxy65", 5000, false},
};

const char npd_prosody_service_names[] =
	"c2s, s2s, c2s_direct_tls, s2s_direct_tls, legacy_ssl, http, https, proxy65";

const struct npd_prosody_service *npd_prosody_service(const char *name)
{
	for (size_t i = 0; i < sizeof(services) / sizeof(services[0]); i++)
		if (strcmp(services[i].name, name) == 0)
			return &services[i];
	return NULL;
}

const char *npd_prosody_connect_host(const char *iface)
{
	if (strcmp(iface, "*") == 0 || strcmp(iface, "0.0.0.0") == 0)
		return "127.0.0.1";
	if (strcmp(iface, "::") == 0)
		return "::1";
	return iface;
}

/*
 * Prosody's glob: '*' any run of characters, '?' any one; nothing else is
 * special. On a mismatch only the last '*' takes one more character, which
 * is enough for this kind of pattern: time at most the product of the two
 * lengths, where trying every '*' in turn would grow exponentially.
 */
static bool glob_match(const char *pat, const char *s)
{
	const char *star = NULL, *resume = NULL;

	while (*s) {
		if (*pat == '*') {
			star = pat++;
			resume = s;
		} else if (*pat && (*pat == '?' || *pat == *s)) {
			pat++;
			s++;
		} else if (star) {
			pat = star + 1;
			s = ++resume;
		} else {
			return false;
		}
	}
	while (*pat == '*')
		pat++;
	return !*pat;
}

static int path_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The names that match pattern in dir, as "dir/name" each, sorted, in one block. */
static char *expand(const char *dir, const char *pattern, size_t *count, char *err,
		    size_t errcap)
{
	char **names = NULL, *out = NULL;
	size_t n = 0, cap = 0, total = 0, w = 0;
	bool oom = false;
	struct dirent *e;
	DIR *d = opendir(*dir ? dir : "/");

	if (!d) {
		snprintf(err, errcap, "cannot open the directory %s: %s", *dir ? dir : "/",
			 strerror(errno));
		return NULL;
	}
	while (!oom && (e = readdir(d)) != NULL) {
		if (e->d_name[0] == '.' || !glob_match(pattern, e->d_name))
			continue;
		if (n == cap) {
			char **grown = realloc(names, (cap ? 2 * cap : 8) * sizeof(*names));
			if (!grown) {
				oom = true;
				break;
			}
			names = grown;
			cap = cap ? 2 * cap : 8;
		}
		names[n] = strdup(e->d_name);
		oom = !names[n];
		n += !oom;
		total += strlen(dir) + strlen(e->d_name) + 2;
	}
	closedir(d);
	if (!oom && !(out = malloc(total ? total : 1)))
		oom = true;
	if (n)
		qsort(names, n, sizeof(*names), path_cmp);
	for (size_t i = 0; i < n; i++) {
		if (out)
			w += (size_t)sprintf(out + w, "%s/%s", dir, names[i]) + 1;
		free(names[i]);
	}
	free(names);
	if (oom)
		snprintf(err, errcap, "out of memory");
	*count = oom ? 0 : n;
	return oom ? NULL : out;
}

char *npd_prosody_include_paths(const char *from, const char *file, size_t *count, char *err,
				size_t errcap)
{
	const char *slash = strrchr(from, '/');
	char *full = NULL, *name, *out;
	int dirlen = slash ? (int)(slash - from) : 1;

	*count = 0;
	while (strncmp(file, "./", 2) == 0) /* as Prosody: "./x" is "x" */
		file += 2 + strspn(file + 2, "/");
	if (*file == '\0') {
		snprintf(err, errcap, "Include needs a file name");
		return NULL;
	}
	if (file[0] == '/')
		full = strdup(file);
	else if (asprintf(&full, "%.*s/%s", dirlen, slash ? from : ".", file) < 0)
		full = NULL;
	if (!full) {
		snprintf(err, errcap, "out of memory");
		return NULL;
	}
	name = strrchr(full, '/'); /* there is one: full is absolute or starts with a directory */
	*name++ = '\0';
	if (strpbrk(full, "*?")) {
		snprintf(err, errcap, "'*' and '?' work only in the file name, not in %s", full);
		out = NULL;
	} else if (strpbrk(name, "*?")) {
		out = expand(full, name, count, err, errcap);
	} else {
		name[-1] = '/';
		out = full;
		full = NULL;
		*count = 1;
	}
	free(full);
	return out;
}
