/*
 * config_check.h - what the tests of netproxyd's config share: load a
 * snippet or a file with its warnings collected, compare a message with a
 * pattern, expect an error, describe a config as netproxyd -t does.
 *
 * Snippets are loaded as "t.lua", so messages read "t.lua:LINE: KEY: ...".
 * In an expected message, '*' stands for any text. Header-only, like tap.h:
 * each test is one program from one .c file.
 */
#ifndef NPD_CONFIG_CHECK_H
#define NPD_CONFIG_CHECK_H

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "tap.h"
#include "warnings_check.h"

static struct npd_config_diag dg;

/* Load a file (path) or else a snippet as "t.lua": the config, or NULL with dg.error set. */
static inline struct npd_config *load_from(const char *path, const char *lua)
{
	struct npd_config *cfg = (struct npd_config *)&dg; /* must be overwritten */
	int rc;

	forget_warnings();
	memset(&dg, 0, sizeof(dg));
	dg.warn = collect_warning;
	rc = path ? npd_config_load_file(path, &cfg, &dg)
		  : npd_config_load_string("t.lua", lua, &cfg, &dg);
	if (rc != 0) {
		if (cfg != NULL)
			diag("a failed load left *out set");
		return NULL;
	}
	return cfg;
}

static inline struct npd_config *load(const char *lua)
{
	return load_from(NULL, lua);
}

/* want may hold '*', any run of characters (and nothing else is special). */
static inline bool matches(const char *got, const char *want)
{
	if (*want == '*') {
		for (;; got++) {
			if (matches(got, want + 1))
				return true;
			if (!*got)
				return false;
		}
	}
	if (*want == '\0')
		return *got == '\0';
	return *got == *want && matches(got + 1, want + 1);
}

static inline void check_error(const char *lua, const char *want)
{
	struct npd_config *cfg = load(lua);

	if (!ok(!cfg && matches(dg.error, want), "error %s", want))
		diag("  got: %s", cfg ? "(it loaded)" : dg.error);
	npd_config_free(cfg);
}

/* What netproxyd -t prints; the caller frees it. */
static inline char *describe(const struct npd_config *cfg)
{
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);

	npd_config_describe(cfg, f);
	fclose(f);
	return text;
}

#endif /* NPD_CONFIG_CHECK_H */
