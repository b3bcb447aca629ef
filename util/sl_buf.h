/*
 * sl_buf.h — a growable byte buffer and a bounds-checked reader.
 *
 * sl_buf_t is used for state encoding, RocksDB keys and protocol replies. It
 * owns its memory; sl_buf_free releases it. Append functions return 0 or
 * SL_ENOMEM; after a failed append the buffer keeps its previous contents.
 *
 * sl_reader_t reads what sl_buf wrote. Every read checks the remaining length
 * and returns SL_ECORRUPT on truncation, so decoding untrusted bytes can fail
 * but never read out of bounds.
 */
#ifndef SL_BUF_H
#define SL_BUF_H

#include <stddef.h>
#include <stdint.h>

typedef struct sl_buf {
    unsigned char *data;
    size_t len;
    size_t cap;
} sl_buf_t;

#define SL_BUF_INIT { NULL, 0, 0 }

int  sl_buf_reserve(sl_buf_t *b, size_t extra);
int  sl_buf_append(sl_buf_t *b, const void *p, size_t n);
int  sl_buf_append_str(sl_buf_t *b, const char *s);
int  sl_buf_printf(sl_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int  sl_buf_put_u8(sl_buf_t *b, uint8_t v);
int  sl_buf_put_u32be(sl_buf_t *b, uint32_t v);
int  sl_buf_put_u64be(sl_buf_t *b, uint64_t v);
int  sl_buf_put_varint(sl_buf_t *b, uint64_t v);
int  sl_buf_put_svarint(sl_buf_t *b, int64_t v);   /* zig-zag */
int  sl_buf_put_double(sl_buf_t *b, double v);
int  sl_buf_put_bytes(sl_buf_t *b, const void *p, size_t n); /* varint length + bytes */
void sl_buf_reset(sl_buf_t *b);                    /* len = 0, keeps memory */
void sl_buf_free(sl_buf_t *b);

typedef struct sl_reader {
    const unsigned char *p;
    size_t left;
} sl_reader_t;

static inline void sl_reader_init(sl_reader_t *r, const void *p, size_t n)
{
    r->p = (const unsigned char *)p;
    r->left = n;
}

int sl_read_u8(sl_reader_t *r, uint8_t *v);
int sl_read_u32be(sl_reader_t *r, uint32_t *v);
int sl_read_u64be(sl_reader_t *r, uint64_t *v);
int sl_read_varint(sl_reader_t *r, uint64_t *v);
int sl_read_svarint(sl_reader_t *r, int64_t *v);
int sl_read_double(sl_reader_t *r, double *v);
/* Points *p into the reader's memory (no copy). */
int sl_read_bytes(sl_reader_t *r, const void **p, size_t *n);
int sl_read_raw(sl_reader_t *r, void *dst, size_t n);

/* Big-endian helpers for fixed-width keys. */
static inline void sl_store_u64be(unsigned char *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) { p[i] = (unsigned char)v; v >>= 8; }
}
static inline uint64_t sl_load_u64be(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v = (v << 8) | p[i];
    return v;
}

#endif
