/*
 * warnings_check.h - the config loader's warnings collected as text, one
 * line each, for the tests of netproxyd's config (config_check.h for whole
 * configs, loader_check.h for the loader's parts): a test compares
 * warned.text with what it expects and warned.count with how many.
 *
 * Header-only, like tap.h: each test is one program from one .c file.
 */
#ifndef NPD_WARNINGS_CHECK_H
#define NPD_WARNINGS_CHECK_H

#include <stdio.h>
#include <string.h>

static struct {
	char text[4096];
	int count;
} warned;

/* A struct npd_config_diag's warn: append text and a newline to warned. */
static inline void collect_warning(void *ctx, const char *text)
{
	size_t n = strlen(warned.text);

	(void)ctx;
	snprintf(warned.text + n, sizeof(warned.text) - n, "%s\n", text);
	warned.count++;
}

static inline void forget_warnings(void)
{
	memset(&warned, 0, sizeof(warned));
}

#endif /* NPD_WARNINGS_CHECK_H */
