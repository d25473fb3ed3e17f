/*
 * A growable byte buffer with explicit little-endian writers, and a bounded
 * reader over received bytes.  Every encoder of ferry's stream and save file
 * uses these so that the wire format never depends on host struct layout.
 *
 * Readers never read past the end: once a read would overrun, the reader is
 * marked bad, returns zeros and stays bad; callers check dreader_ok() once.
 */
#ifndef FERRY_DBUF_H
#define FERRY_DBUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct dbuf {
	uint8_t *data;
	size_t len;
	size_t cap;
	bool failed;      /* an allocation failed; contents are incomplete */
};

void dbuf_init(struct dbuf *b);
void dbuf_free(struct dbuf *b);
void dbuf_reset(struct dbuf *b);
/* Makes room for n more bytes; returns a pointer to them (NULL on ENOMEM). */
uint8_t *dbuf_reserve(struct dbuf *b, size_t n);
void dbuf_put(struct dbuf *b, const void *p, size_t n);
void dbuf_put_u8(struct dbuf *b, uint8_t v);
void dbuf_put_le16(struct dbuf *b, uint16_t v);
void dbuf_put_le32(struct dbuf *b, uint32_t v);
void dbuf_put_le64(struct dbuf *b, uint64_t v);
/* Fixed-size, NUL-padded string field (truncated to n-1 bytes). */
void dbuf_put_str(struct dbuf *b, const char *s, size_t n);

static inline void put_le32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16); p[3] = (uint8_t)(v >> 24);
}
static inline void put_le64(uint8_t *p, uint64_t v)
{
	put_le32(p, (uint32_t)v);
	put_le32(p + 4, (uint32_t)(v >> 32));
}
static inline uint32_t get_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	       (uint32_t)p[3] << 24;
}
static inline uint64_t get_le64(const uint8_t *p)
{
	return (uint64_t)get_le32(p) | (uint64_t)get_le32(p + 4) << 32;
}

struct dreader {
	const uint8_t *p;
	size_t left;
	bool bad;
};

static inline void dreader_init(struct dreader *r, const void *p, size_t len)
{
	r->p = p;
	r->left = len;
	r->bad = false;
}
static inline bool dreader_ok(const struct dreader *r) { return !r->bad; }
/* Pointer to the next n bytes (NULL and bad if fewer remain). */
const uint8_t *dreader_take(struct dreader *r, size_t n);
uint8_t dreader_u8(struct dreader *r);
uint16_t dreader_le16(struct dreader *r);
uint32_t dreader_le32(struct dreader *r);
uint64_t dreader_le64(struct dreader *r);
void dreader_copy(struct dreader *r, void *out, size_t n);
/* A fixed-size string field: must hold a NUL within n bytes, else bad. */
void dreader_str(struct dreader *r, char *out, size_t n);

#endif
