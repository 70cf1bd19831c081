/*
 * errors.c - the error kinds' table, their JSON, and errno to kind.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>

#include "errors.h"

const struct error_kind_info error_kinds[ERR_COUNT] = {
#define ERROR_ROW_(name, side, key, text) {side, key, text},
	ERROR_KINDS(ERROR_ROW_)
#undef ERROR_ROW_
};

void print_error_json(const uint64_t *errors, int side)
{
	uint64_t total = 0;

	for (int k = 0; k < ERR_COUNT; k++)
		total += errors[k];
	printf("\"errors\":{\"total\":%" PRIu64, total);
	for (int k = 0; k < ERR_COUNT; k++)
		if (error_kinds[k].side & side)
			printf(",\"%s\":%" PRIu64, error_kinds[k].key, errors[k]);
	putchar('}');
}

enum error_kind errno_kind(int err)
{
	switch (err) {
	case ECONNREFUSED:
		return ERR_REFUSED;
	case ECONNRESET:
	case EPIPE:
	case ECONNABORTED:
		return ERR_RESET;
	case ETIMEDOUT:
		return ERR_TIMEOUT;
	case EADDRNOTAVAIL:
	case EADDRINUSE:
		return ERR_NO_PORT;
	case EMFILE:
	case ENFILE:
		return ERR_NO_FD;
	}
	return ERR_OTHER;
}
