/*
 * v2.c - the binary format (spec 2.2), read and written.
 *
 *   off  size
 *   0    12   signature \r\n\r\n\0\r\nQUIT\n
 *   12   1    version (high nibble, 2) and command (low nibble)
 *   13   1    family (high nibble) and transport (low nibble)
 *   14   2    len: bytes that follow, address block and TLVs, big-endian
 *   16   len  address block of the family's size, then TLVs
 *
 * Everything that can be judged from the first 16 bytes is judged as soon as
 * its byte arrives, so a sender learns of its mistake at once, and a length
 * over the caller's cap is refused before any of it is waited for.
 */
#include "internal.h"

const uint8_t np__v2_sig[NP_V2_SIG_LEN] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
					   0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

/*
 * The address block of each family/transport byte the spec lists, or -1 for
 * the nibble-valid combinations it does not (0x01, 0x10, 0x30, ...).
 */
static int block_size(uint8_t fam)
{
	switch (fam) {
	case 0x00:
		return 0;
	case 0x11:
	case 0x12:
		return 12;
	case 0x21:
	case 0x22:
		return 36;
	case 0x31:
	case 0x32:
		return 2 * NP_UNIX_PATH_LEN;
	default:
		return -1;
	}
}

static int check_ver_cmd(uint8_t ver_cmd)
{
	if (ver_cmd >> 4 != 2)
		return NP_EVERSION;
	if ((ver_cmd & 0xF) > NP_CMD_PROXY)
		return NP_ECOMMAND;
	return 0;
}

/*
 * Invalid nibbles are refused for both commands (spec 2.2 exempts neither);
 * an unlisted combination only for PROXY, since LOCAL ignores the family.
 */
static int check_fam(uint8_t cmd, uint8_t fam)
{
	if (fam >> 4 > NP_AF_UNIX)
		return NP_EFAMILY;
	if ((fam & 0xF) > NP_TRANSPORT_DGRAM)
		return NP_ETRANSPORT;
	if (cmd == NP_CMD_PROXY && block_size(fam) < 0)
		return NP_EFAMILY;
	return 0;
}

/* Judge a prefix shorter than the fixed part, byte by byte. */
static int parse_prefix(const uint8_t *p, size_t len)
{
	int r;

	if (memcmp(p, np__v2_sig, len < NP_V2_SIG_LEN ? len : NP_V2_SIG_LEN) != 0)
		return NP_ENOTPROXY;
	if (len > 12 && (r = check_ver_cmd(p[12])) != 0)
		return r;
	if (len > 13 && (r = check_fam(p[12] & 0xF, p[13])) != 0)
		return r;
	return NP_EAGAIN;
}

/*
 * A complete PROXY header over TCP4 (alen 4) or TCP6 (alen 16) without TLVs,
 * already recognised by its fixed bytes: store it. Returns its length.
 */
static inline int plain_tcp(const uint8_t *p, uint8_t family, size_t alen, struct np_header *hdr)
{
	const uint8_t *a = p + NP_V2_MIN_LEN;

	hdr->version = 2;
	hdr->command = NP_CMD_PROXY;
	hdr->family = family;
	hdr->transport = NP_TRANSPORT_STREAM;
	hdr->v1_proto = NP_V1_NONE;
	hdr->tlv = NULL;
	hdr->tlv_len = 0;
	memcpy(hdr->src.ip6, a, alen);
	memcpy(hdr->dst.ip6, a + alen, alen);
	hdr->src.port = np__load16(a + 2 * alen);
	hdr->dst.port = np__load16(a + 2 * alen + 2);
	return (int)(NP_V2_MIN_LEN + 2 * alen + 4);
}

int np__parse_v2(const uint8_t *p, size_t len, size_t max_len, struct np_header *hdr)
{
	int r;

	if (len < NP_V2_MIN_LEN)
		return parse_prefix(p, len);
	if (memcmp(p, np__v2_sig, NP_V2_SIG_LEN) != 0)
		return NP_ENOTPROXY;

	/*
	 * What load balancers send nearly always, PROXY over TCP4 or TCP6 with no
	 * TLVs, is recognised by its four fixed bytes at once; it is exactly the
	 * case the general path below would reach.
	 */
	uint32_t fixed = np__load32(p + 12);
	if (fixed == 0x2111000C && len >= 28 && max_len >= 28)
		return plain_tcp(p, NP_AF_INET, 4, hdr);
	if (fixed == 0x21210024 && len >= 52 && max_len >= 52)
		return plain_tcp(p, NP_AF_INET6, 16, hdr);

	uint8_t cmd = p[12] & 0xF, fam = p[13];
	if ((r = check_ver_cmd(p[12])) != 0 || (r = check_fam(cmd, fam)) != 0)
		return r;

	size_t payload = np__load16(p + 14), total = NP_V2_MIN_LEN + payload;
	int block = block_size(fam);
	if (total > max_len)
		return NP_ETOOBIG;
	if (cmd == NP_CMD_PROXY && payload < (size_t)block)
		return NP_ESHORT;
	if (len < total)
		return NP_EAGAIN;

	/*
	 * TLVs follow the address block. A LOCAL header whose family is unlisted,
	 * or whose len does not cover its block, is skipped whole: the spec
	 * only asks that len bytes be skipped (section E.4 of our checklist).
	 */
	const uint8_t *a = p + NP_V2_MIN_LEN, *tlv = NULL;
	size_t tlv_len = 0;
	if (block >= 0 && payload > (size_t)block) {
		tlv = a + block;
		tlv_len = payload - (size_t)block;
		if ((r = np__tlv_validate(p, total, tlv, tlv_len)) != 0)
			return r;
	}

	/* Fields are stored one by one: zeroing the UNIX paths would cost more than the parse. */
	hdr->version = 2;
	hdr->command = cmd;
	hdr->family = fam >> 4;
	hdr->transport = fam & 0xF;
	hdr->v1_proto = NP_V1_NONE;
	hdr->tlv = tlv;
	hdr->tlv_len = tlv_len;
	if (cmd == NP_CMD_PROXY) {
		switch (hdr->family) {
		case NP_AF_INET:
			memcpy(hdr->src.ip4, a, 4);
			memcpy(hdr->dst.ip4, a + 4, 4);
			hdr->src.port = np__load16(a + 8);
			hdr->dst.port = np__load16(a + 10);
			break;
		case NP_AF_INET6:
			memcpy(hdr->src.ip6, a, 16);
			memcpy(hdr->dst.ip6, a + 16, 16);
			hdr->src.port = np__load16(a + 32);
			hdr->dst.port = np__load16(a + 34);
			break;
		case NP_AF_UNIX:
			memcpy(hdr->src.path, a, NP_UNIX_PATH_LEN);
			memcpy(hdr->dst.path, a + NP_UNIX_PATH_LEN, NP_UNIX_PATH_LEN);
			hdr->src.port = hdr->dst.port = 0;
			break;
		}
	}
	return (int)total;
}

/*
 * The CRC32C TLV the checksum goes into, or NULL when the list has none.
 * Two would be an error: a receiver verifies each, and only one can hold
 * the sum of a header that contains both.
 */
static int find_crc_tlv(const struct np_tlv *tlvs, size_t ntlv, const struct np_tlv **crc)
{
	*crc = NULL;
	for (size_t i = 0; i < ntlv; i++) {
		if (tlvs[i].type != NP_TLV_CRC32C)
			continue;
		if (*crc || tlvs[i].len != 4)
			return NP_EINVAL;
		*crc = &tlvs[i];
	}
	return 0;
}

static uint8_t *put_tlv(uint8_t *w, uint8_t type, uint16_t len, const uint8_t *value)
{
	*w++ = type;
	np__store16(w, len);
	w += 2;
	if (len)
		memcpy(w, value, len);
	return w + len;
}

int np_build_v2(void *buf, size_t cap, const struct np_header *hdr, const struct np_tlv *tlvs,
		size_t ntlv, unsigned flags)
{
	static const uint8_t zero4[4];
	uint8_t cmd = hdr->command, fam = 0;
	int block = 0;

	if (cmd == NP_CMD_PROXY) {
		if (hdr->family > NP_AF_UNIX || hdr->transport > NP_TRANSPORT_DGRAM)
			return NP_EINVAL;
		fam = (uint8_t)(hdr->family << 4 | hdr->transport);
		if ((block = block_size(fam)) < 0)
			return NP_EINVAL;
	} else if (cmd != NP_CMD_LOCAL) {
		return NP_EINVAL;
	}

	const struct np_tlv *crc_tlv = NULL;
	size_t payload = (size_t)block;
	if (flags & NP_BUILD_CRC32C) {
		if (find_crc_tlv(tlvs, ntlv, &crc_tlv) != 0)
			return NP_EINVAL;
		if (!crc_tlv)
			payload += 3 + 4;
	}
	for (size_t i = 0; i < ntlv; i++)
		payload += 3 + (size_t)tlvs[i].len;
	if (payload > 0xFFFF)
		return NP_EINVAL;
	if (NP_V2_MIN_LEN + payload > cap)
		return NP_ENOSPC;

	uint8_t *out = buf, *w = out;
	memcpy(w, np__v2_sig, NP_V2_SIG_LEN);
	w[12] = (uint8_t)(0x20 | cmd);
	w[13] = fam;
	np__store16(w + 14, (uint16_t)payload);
	w += NP_V2_MIN_LEN;

	const struct np_endpoint *s = &hdr->src, *d = &hdr->dst;
	switch (fam >> 4) {
	case NP_AF_INET:
		memcpy(w, s->ip4, 4);
		memcpy(w + 4, d->ip4, 4);
		np__store16(w + 8, s->port);
		np__store16(w + 10, d->port);
		break;
	case NP_AF_INET6:
		memcpy(w, s->ip6, 16);
		memcpy(w + 16, d->ip6, 16);
		np__store16(w + 32, s->port);
		np__store16(w + 34, d->port);
		break;
	case NP_AF_UNIX:
		memcpy(w, s->path, NP_UNIX_PATH_LEN);
		memcpy(w + NP_UNIX_PATH_LEN, d->path, NP_UNIX_PATH_LEN);
		break;
	}
	w += block;

	/* The checksum is computed with its own value zeroed (spec 2.2.3). */
	uint8_t *crc_value = NULL;
	if ((flags & NP_BUILD_CRC32C) && !crc_tlv) {
		w = put_tlv(w, NP_TLV_CRC32C, 4, zero4);
		crc_value = w - 4;
	}
	for (size_t i = 0; i < ntlv; i++) {
		if (&tlvs[i] == crc_tlv) {
			w = put_tlv(w, NP_TLV_CRC32C, 4, zero4);
			crc_value = w - 4;
		} else {
			w = put_tlv(w, tlvs[i].type, tlvs[i].len, tlvs[i].value);
		}
	}
	if (crc_value)
		np__store32(crc_value, np_crc32c(0, out, (size_t)(w - out)));
	return (int)(w - out);
}
