/*
 * error.c - names and sentences for the NP_E* codes, from the one list in
 * netproxy.h.
 */
#include "internal.h"

const char *np_strerror(int err)
{
	switch (err) {
#define NP_STRERROR_CASE_(name, value, text) \
	case NP_##name:                      \
		return text;
		NP_ERRNO_MAP(NP_STRERROR_CASE_)
#undef NP_STRERROR_CASE_
	}
	return "unknown error";
}

const char *np_errname(int err)
{
	switch (err) {
#define NP_ERRNAME_CASE_(name, value, text) \
	case NP_##name:                     \
		return "NP_" #name;
		NP_ERRNO_MAP(NP_ERRNAME_CASE_)
#undef NP_ERRNAME_CASE_
	}
	return "NP_UNKNOWN";
}

unsigned np_version(void)
{
	return NP_VERSION_NUMBER;
}
