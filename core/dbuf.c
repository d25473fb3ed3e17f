#include "dbuf.h"

#include <stdlib.h>
#include <string.h>

void dbuf_init(struct dbuf *b)
{
	memset(b, 0, sizeof(*b));
}

void dbuf_free(struct dbuf *b)
{
	free(b->data);
	memset(b, 0, sizeof(*b));
}

void dbuf_reset(struct dbuf *b)
{
	b->len = 0;
	b->failed = false;
}

uint8_t *dbuf_reserve(struct dbuf *b, size_t n)
{
	if (b->failed)
		return NULL;
	if (n > b->cap - b->len) {
		size_t cap = b->cap ? b->cap : 256;
		uint8_t *p;

		while (cap - b->len < n) {
			if (cap > SIZE_MAX / 2) {
				b->failed = true;
				return NULL;
			}
			cap *= 2;
		}
		p = realloc(b->data, cap);
		if (!p) {
			b->failed = true;
			return NULL;
		}
		b->data = p;
		b->cap = cap;
	}
	return b->data + b->len;
}

void dbuf_put(struct dbuf *b, const void *p, size_t n)
{
	uint8_t *dst = dbuf_reserve(b, n);

	if (!dst)
		return;
	if (n)
		memcpy(dst, p, n);
	b->len += n;
}

void dbuf_put_u8(struct dbuf *b, uint8_t v)
{
	dbuf_put(b, &v, 1);
}

void dbuf_put_le16(struct dbuf *b, uint16_t v)
{
	uint8_t p[2] = { (uint8_t)v, (uint8_t)(v >> 8) };

	dbuf_put(b, p, 2);
}

void dbuf_put_le32(struct dbuf *b, uint32_t v)
{
	uint8_t p[4];

	put_le32(p, v);
	dbuf_put(b, p, 4);
}

void dbuf_put_le64(struct dbuf *b, uint64_t v)
{
	uint8_t p[8];

	put_le64(p, v);
	dbuf_put(b, p, 8);
}

void dbuf_put_str(struct dbuf *b, const char *s, size_t n)
{
	uint8_t *dst = dbuf_reserve(b, n);
	size_t len = strnlen(s, n - 1);

	if (!dst)
		return;
	memset(dst, 0, n);
	memcpy(dst, s, len);
	b->len += n;
}

const uint8_t *dreader_take(struct dreader *r, size_t n)
{
	const uint8_t *p;

	if (r->bad || n > r->left) {
		r->bad = true;
		return NULL;
	}
	p = r->p;
	r->p += n;
	r->left -= n;
	return p;
}

uint8_t dreader_u8(struct dreader *r)
{
	const uint8_t *p = dreader_take(r, 1);

	return p ? p[0] : 0;
}

uint16_t dreader_le16(struct dreader *r)
{
	const uint8_t *p = dreader_take(r, 2);

	return p ? (uint16_t)(p[0] | p[1] << 8) : 0;
}

uint32_t dreader_le32(struct dreader *r)
{
	const uint8_t *p = dreader_take(r, 4);

	return p ? get_le32(p) : 0;
}

uint64_t dreader_le64(struct dreader *r)
{
	const uint8_t *p = dreader_take(r, 8);

	return p ? get_le64(p) : 0;
}

void dreader_copy(struct dreader *r, void *out, size_t n)
{
	const uint8_t *p = dreader_take(r, n);

	if (p)
		memcpy(out, p, n);
	else
		memset(out, 0, n);
}

void dreader_str(struct dreader *r, char *out, size_t n)
{
	const uint8_t *p = dreader_take(r, n);

	if (!p || !memchr(p, 0, n)) {
		r->bad = true;
		out[0] = 0;
		return;
	}
	memcpy(out, p, n);
}
