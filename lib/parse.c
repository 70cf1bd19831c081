/*
 * parse.c - np_parse(): tell the two versions apart by their first byte and
 * hand over to the format's parser.
 */
#include "internal.h"

static inline int dispatch(const uint8_t *p, size_t len, size_t max_len, struct np_header *hdr)
{
	if (len == 0)
		return NP_EAGAIN;
	/* 'P' starts "PROXY ", '\r' the v2 signature: one byte decides. */
	if (p[0] == '\r')
		return np__parse_v2(p, len, max_len, hdr);
	if (p[0] == 'P')
		return np__parse_v1(p, len, max_len, hdr);
	return NP_ENOTPROXY;
}

int np_parse(const void *buf, size_t len, struct np_header *hdr)
{
	return dispatch(buf, len, NP_V2_MAX_LEN, hdr);
}

int np_parse_max(const void *buf, size_t len, size_t max_len, struct np_header *hdr)
{
	return dispatch(buf, len, max_len, hdr);
}
