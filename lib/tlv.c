/*
 * tlv.c - the type-length-value list after a v2 address block (spec 2.2.1
 * to 2.2.8): walk it, check it, and decode the values whose layout is known.
 */
#include "internal.h"

void np_tlv_iter_init(struct np_tlv_iter *it, const void *area, size_t len)
{
	it->pos = area;
	it->left = len;
}

int np_tlv_next(struct np_tlv_iter *it, struct np_tlv *tlv)
{
	size_t left = it->left;

	if (left == 0)
		return 0;
	if (left < 3)
		return NP_ETLV;

	uint16_t len = np__load16(it->pos + 1);
	if (len > left - 3)
		return NP_ETLV;
	tlv->type = it->pos[0];
	tlv->len = len;
	tlv->value = it->pos + 3;
	it->pos += 3 + (size_t)len;
	it->left -= 3 + (size_t)len;
	return 1;
}

static int find_in(const uint8_t *area, size_t len, uint8_t type, struct np_tlv *out)
{
	struct np_tlv_iter it;
	struct np_tlv t;
	int r;

	np_tlv_iter_init(&it, area, len);
	while ((r = np_tlv_next(&it, &t)) > 0) {
		if (t.type == type) {
			*out = t;
			return 1;
		}
	}
	return r;
}

int np_tlv_find(const struct np_header *hdr, uint8_t type, struct np_tlv *tlv)
{
	return find_in(hdr->tlv, hdr->tlv_len, type, tlv);
}

/* Sub-TLVs must tile the rest of the value exactly, like the outer list. */
static int sub_tlvs_valid(const uint8_t *area, size_t len)
{
	struct np_tlv_iter it;
	struct np_tlv t;
	int r;

	np_tlv_iter_init(&it, area, len);
	while ((r = np_tlv_next(&it, &t)) > 0)
		;
	return r == 0;
}

int np_ssl_decode(const struct np_tlv *tlv, struct np_ssl *ssl)
{
	if (tlv->type != NP_TLV_SSL || tlv->len < 5)
		return NP_ETLVVALUE;
	if (!sub_tlvs_valid(tlv->value + 5, tlv->len - 5u))
		return NP_ETLVVALUE;
	ssl->client = tlv->value[0];
	ssl->verify = np__load32(tlv->value + 1);
	ssl->sub = tlv->len > 5 ? tlv->value + 5 : NULL;
	ssl->sub_len = tlv->len - 5u;
	return 0;
}

int np_ssl_find(const struct np_ssl *ssl, uint8_t subtype, struct np_tlv *sub)
{
	return find_in(ssl->sub, ssl->sub_len, subtype, sub);
}

int np_ssl_verified(const struct np_ssl *ssl)
{
	return ssl->verify == 0 &&
	       (ssl->client & (NP_SSL_CLIENT_CERT_CONN | NP_SSL_CLIENT_CERT_SESS)) != 0;
}

/*
 * Verify the CRC32C whose 4-byte value sits at crc within hdr[0..len): the
 * sum over the whole header with that value read as zeros (spec 2.2.3).
 */
static int crc_matches(const uint8_t *hdr, size_t len, const uint8_t *crc)
{
	static const uint8_t zero4[4];
	size_t before = (size_t)(crc - hdr);
	uint32_t sum = np_crc32c(0, hdr, before);

	sum = np_crc32c(sum, zero4, 4);
	sum = np_crc32c(sum, crc + 4, len - before - 4);
	return sum == np__load32(crc);
}

int np__tlv_validate(const uint8_t *hdr_start, size_t hdr_len, const uint8_t *tlv, size_t len)
{
	struct np_tlv_iter it;
	struct np_tlv t;
	struct np_ssl ssl;
	int r;

	np_tlv_iter_init(&it, tlv, len);
	while ((r = np_tlv_next(&it, &t)) > 0) {
		switch (t.type) {
		case NP_TLV_CRC32C:
			if (t.len != 4)
				return NP_ETLVVALUE;
			if (!crc_matches(hdr_start, hdr_len, t.value))
				return NP_ECRC;
			break;
		case NP_TLV_UNIQUE_ID:
			if (t.len > NP_UNIQUE_ID_MAX)
				return NP_ETLVVALUE;
			break;
		case NP_TLV_SSL:
			if (np_ssl_decode(&t, &ssl) != 0)
				return NP_ETLVVALUE;
			break;
		}
	}
	return r;
}

int np_tlv_aws_vpce_id(const struct np_tlv *tlv, const uint8_t **id, size_t *len)
{
	/* Subtype 0x01 (PP2_SUBTYPE_AWS_VPCE_ID), then the id itself. */
	if (tlv->type != NP_TLV_AWS || tlv->len < 2 || tlv->value[0] != 0x01)
		return NP_ETLVVALUE;
	*id = tlv->value + 1;
	*len = tlv->len - 1u;
	return 0;
}

int np_tlv_azure_link_id(const struct np_tlv *tlv, uint32_t *link_id)
{
	/* Subtype 0x01 (PP2_SUBTYPE_AZURE_PRIVATEENDPOINT_LINKID), then a little-endian u32. */
	if (tlv->type != NP_TLV_AZURE || tlv->len != 5 || tlv->value[0] != 0x01)
		return NP_ETLVVALUE;
	const uint8_t *v = tlv->value + 1;
	*link_id = (uint32_t)v[0] | (uint32_t)v[1] << 8 | (uint32_t)v[2] << 16 | (uint32_t)v[3] << 24;
	return 0;
}

int np_tlv_gcp_psc_id(const struct np_tlv *tlv, uint64_t *psc_id)
{
	if (tlv->type != NP_TLV_GCP || tlv->len != 8)
		return NP_ETLVVALUE;
	*psc_id = (uint64_t)np__load32(tlv->value) << 32 | np__load32(tlv->value + 4);
	return 0;
}

static const struct {
	const char *name;
	uint8_t type;
} tlv_names[] = {
	{"ALPN", NP_TLV_ALPN},	 {"AUTHORITY", NP_TLV_AUTHORITY}, {"CRC32C", NP_TLV_CRC32C},
	{"NOOP", NP_TLV_NOOP},	 {"UNIQUE_ID", NP_TLV_UNIQUE_ID}, {"SSL", NP_TLV_SSL},
	{"NETNS", NP_TLV_NETNS}, {"AWS", NP_TLV_AWS},		   {"AZURE", NP_TLV_AZURE},
	{"GCP", NP_TLV_GCP},
};

const char *np_tlv_name(uint8_t type)
{
	for (size_t i = 0; i < sizeof(tlv_names) / sizeof(tlv_names[0]); i++)
		if (tlv_names[i].type == type)
			return tlv_names[i].name;
	return NULL;
}

/* ASCII only: the names are, and the C library's tolower() would read the locale. */
static int upper(int c)
{
	return c >= 'a' && c <= 'z' ? c - 'a' + 'A' : c;
}

int np_tlv_type(const char *name, size_t len)
{
	if (!name)
		return NP_EINVAL;
	for (size_t i = 0; i < sizeof(tlv_names) / sizeof(tlv_names[0]); i++) {
		const char *n = tlv_names[i].name;
		size_t k = 0;

		while (k < len && n[k] && upper((unsigned char)name[k]) == n[k])
			k++;
		if (k == len && n[k] == '\0')
			return tlv_names[i].type;
	}
	return NP_EINVAL;
}
