#include "stream.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <xxhash.h>

#include "../core/util.h"
#include "../transport/xport.h"

const char *mig_section_name(uint32_t type)
{
	switch (type) {
	case MIG_SEC_VMDESC: return "VMDESC";
	case MIG_SEC_CHANNEL: return "CHANNEL";
	case MIG_SEC_PAGES: return "PAGES";
	case MIG_SEC_ITER_END: return "ITER_END";
	case MIG_SEC_SWITCHOVER: return "SWITCHOVER";
	case MIG_SEC_VM_STATE: return "VM_STATE";
	case MIG_SEC_VCPU_STATE: return "VCPU_STATE";
	case MIG_SEC_DEVICE: return "DEVICE";
	case MIG_SEC_DIGEST: return "DIGEST";
	case MIG_SEC_END: return "END";
	case MIG_SEC_ABORT: return "ABORT";
	case MIG_SEC_RAM_MAP: return "RAM_MAP";
	case MIG_SEC_EXTENTS: return "EXTENTS";
	case MIG_SEC_HOT_PIECES: return "HOT_PIECES";
	case MIG_SEC_READY: return "READY";
	case MIG_SEC_REJECT: return "REJECT";
	case MIG_SEC_LOADED: return "LOADED";
	case MIG_SEC_ERROR: return "ERROR";
	case MIG_SEC_COMMIT: return "COMMIT";
	case MIG_SEC_RUNNING: return "RUNNING";
	case MIG_SEC_ITER_DONE: return "ITER_DONE";
	}
	return "unknown";
}

uint32_t mig_csum32(const void *p, size_t len)
{
	return XXH32(p, len, 0);
}

void mig_section_encode(const struct mig_section *s, uint8_t out[MIG_SECTION_HDR_SIZE])
{
	put_le32(out, s->type);
	put_le32(out + 4, s->id);
	put_le32(out + 8, s->version);
	put_le32(out + 12, s->flags);
	put_le64(out + 16, s->length);
	put_le32(out + 24, s->payload_csum);
	put_le32(out + 28, mig_csum32(out, 28));
}

int mig_section_decode(const uint8_t in[MIG_SECTION_HDR_SIZE], struct mig_section *s)
{
	if (get_le32(in + 28) != mig_csum32(in, 28))
		return ferr(EBADMSG, "corrupt section header (checksum mismatch)");
	s->type = get_le32(in);
	s->id = get_le32(in + 4);
	s->version = get_le32(in + 8);
	s->flags = get_le32(in + 12);
	s->length = get_le64(in + 16);
	s->payload_csum = get_le32(in + 24);
	if (s->length > MIG_MAX_SECTION)
		return ferr(EBADMSG, "section %s is %llu bytes, more than the %u allowed",
			    mig_section_name(s->type), (unsigned long long)s->length,
			    MIG_MAX_SECTION);
	return 0;
}

void mig_preamble_encode(uint8_t out[MIG_PREAMBLE_SIZE])
{
	memcpy(out, MIG_MAGIC, 8);
	put_le32(out + 8, MIG_VERSION);
	put_le32(out + 12, 0);
}

int mig_preamble_check(const uint8_t in[MIG_PREAMBLE_SIZE])
{
	uint32_t version;

	if (memcmp(in, MIG_MAGIC, 8) != 0)
		return ferr(EPROTO, "not a ferry migration stream (bad magic)");
	version = get_le32(in + 8);
	if (version != MIG_VERSION)
		return ferr(EPROTO, "stream format version %u; this ferry reads version %u",
			    version, MIG_VERSION);
	return 0;
}

int mig_send_section(struct xport *x, uint32_t type, uint32_t id, uint32_t version,
		     uint32_t flags, const void *payload, size_t len)
{
	struct mig_section s = {
		.type = type, .id = id, .version = version, .flags = flags, .length = len,
		.payload_csum = (flags & MIG_SECF_NO_CSUM) ? 0 : mig_csum32(payload, len),
	};
	uint8_t hdr[MIG_SECTION_HDR_SIZE];
	struct iovec iov[2] = {
		{ .iov_base = hdr, .iov_len = sizeof(hdr) },
		{ .iov_base = (void *)payload, .iov_len = len },
	};

	mig_section_encode(&s, hdr);
	return xport_sendv(x, iov, 2);
}

int mig_send_text(struct xport *x, uint32_t type, const char *text)
{
	return mig_send_section(x, type, 0, 1, 0, text, strlen(text));
}

int mig_recv_section(struct xport *x, struct mig_section *s, struct dbuf *buf)
{
	uint8_t hdr[MIG_SECTION_HDR_SIZE];
	uint64_t before = x->bytes_received;
	int rc;

	rc = xport_recv(x, hdr, sizeof(hdr));
	if (rc == -EPIPE && x->bytes_received == before)
		return ferr(EPIPE, "the connection closed");
	if (rc)
		return rc == -EPIPE ? ferr(EBADMSG, "the stream ended inside a section header "
					   "(truncated)") :
				      ferr_sys(rc, "receiving from %s", x->peer);
	rc = mig_section_decode(hdr, s);
	if (rc)
		return rc;
	dbuf_reset(buf);
	if (s->length == 0)
		return 0;
	if (!dbuf_reserve(buf, s->length))
		return -ENOMEM;
	rc = xport_recv(x, buf->data, s->length);
	if (rc)
		return rc == -EPIPE ? ferr(EBADMSG, "the stream ended inside a %s section "
					   "(truncated)", mig_section_name(s->type)) :
				      ferr_sys(rc, "receiving from %s", x->peer);
	buf->len = s->length;
	if (!(s->flags & MIG_SECF_NO_CSUM) && mig_csum32(buf->data, buf->len) != s->payload_csum)
		return ferr(EBADMSG, "section %s is corrupt (payload checksum mismatch)",
			    mig_section_name(s->type));
	return 0;
}

void mig_text(const uint8_t *p, size_t len, char *out, size_t olen)
{
	size_t n = MIN(len, olen - 1);

	for (size_t i = 0; i < n; i++)
		out[i] = (p[i] >= 0x20 && p[i] < 0x7f) ? (char)p[i] : '?';
	out[n] = 0;
}
