/*
 * sl_buf.c — growable buffer and checked reader (see sl_buf.h). Growth
 * doubles capacity; sizes are checked for overflow before any realloc.
 */
#include "sl_buf.h"
#include "sl_err.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int sl_buf_reserve(sl_buf_t *b, size_t extra)
{
    if (extra > SIZE_MAX - b->len) return SL_ENOMEM;
    size_t need = b->len + extra;
    if (need <= b->cap) return SL_OK;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need) {
        if (cap > SIZE_MAX / 2) { cap = need; break; }
        cap *= 2;
    }
    unsigned char *d = realloc(b->data, cap);
    if (!d) return SL_ENOMEM;
    b->data = d;
    b->cap = cap;
    return SL_OK;
}

int sl_buf_append(sl_buf_t *b, const void *p, size_t n)
{
    if (n == 0) return SL_OK;
    if (sl_buf_reserve(b, n)) return SL_ENOMEM;
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return SL_OK;
}

int sl_buf_append_str(sl_buf_t *b, const char *s)
{
    return sl_buf_append(b, s, strlen(s));
}

int sl_buf_printf(sl_buf_t *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) return SL_EINVAL;
    if (sl_buf_reserve(b, (size_t)n + 1)) return SL_ENOMEM;
    va_start(ap, fmt);
    vsnprintf((char *)b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return SL_OK;
}

int sl_buf_put_u8(sl_buf_t *b, uint8_t v) { return sl_buf_append(b, &v, 1); }

int sl_buf_put_u32be(sl_buf_t *b, uint32_t v)
{
    unsigned char p[4] = { (unsigned char)(v >> 24), (unsigned char)(v >> 16),
                           (unsigned char)(v >> 8), (unsigned char)v };
    return sl_buf_append(b, p, 4);
}

int sl_buf_put_u64be(sl_buf_t *b, uint64_t v)
{
    unsigned char p[8];
    sl_store_u64be(p, v);
    return sl_buf_append(b, p, 8);
}

int sl_buf_put_varint(sl_buf_t *b, uint64_t v)
{
    unsigned char p[10];
    size_t n = 0;
    while (v >= 0x80) { p[n++] = (unsigned char)(v | 0x80); v >>= 7; }
    p[n++] = (unsigned char)v;
    return sl_buf_append(b, p, n);
}

int sl_buf_put_svarint(sl_buf_t *b, int64_t v)
{
    return sl_buf_put_varint(b, ((uint64_t)v << 1) ^ (uint64_t)(v >> 63));
}

int sl_buf_put_double(sl_buf_t *b, double v)
{
    uint64_t u;
    memcpy(&u, &v, 8);
    return sl_buf_put_u64be(b, u);
}

int sl_buf_put_bytes(sl_buf_t *b, const void *p, size_t n)
{
    if (sl_buf_put_varint(b, n)) return SL_ENOMEM;
    return sl_buf_append(b, p, n);
}

void sl_buf_reset(sl_buf_t *b) { b->len = 0; }

void sl_buf_free(sl_buf_t *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

int sl_read_raw(sl_reader_t *r, void *dst, size_t n)
{
    if (r->left < n) return SL_ECORRUPT;
    if (n) memcpy(dst, r->p, n);
    r->p += n;
    r->left -= n;
    return SL_OK;
}

int sl_read_u8(sl_reader_t *r, uint8_t *v) { return sl_read_raw(r, v, 1); }

int sl_read_u32be(sl_reader_t *r, uint32_t *v)
{
    unsigned char p[4];
    if (sl_read_raw(r, p, 4)) return SL_ECORRUPT;
    *v = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
    return SL_OK;
}

int sl_read_u64be(sl_reader_t *r, uint64_t *v)
{
    unsigned char p[8];
    if (sl_read_raw(r, p, 8)) return SL_ECORRUPT;
    *v = sl_load_u64be(p);
    return SL_OK;
}

int sl_read_varint(sl_reader_t *r, uint64_t *v)
{
    uint64_t x = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (r->left == 0) return SL_ECORRUPT;
        unsigned char c = *r->p++;
        r->left--;
        x |= (uint64_t)(c & 0x7f) << shift;
        if (!(c & 0x80)) { *v = x; return SL_OK; }
    }
    return SL_ECORRUPT;
}

int sl_read_svarint(sl_reader_t *r, int64_t *v)
{
    uint64_t u;
    if (sl_read_varint(r, &u)) return SL_ECORRUPT;
    *v = (int64_t)(u >> 1) ^ -(int64_t)(u & 1);
    return SL_OK;
}

int sl_read_double(sl_reader_t *r, double *v)
{
    uint64_t u;
    if (sl_read_u64be(r, &u)) return SL_ECORRUPT;
    memcpy(v, &u, 8);
    return SL_OK;
}

int sl_read_bytes(sl_reader_t *r, const void **p, size_t *n)
{
    uint64_t len;
    if (sl_read_varint(r, &len) || len > r->left) return SL_ECORRUPT;
    *p = r->p;
    *n = (size_t)len;
    r->p += len;
    r->left -= len;
    return SL_OK;
}
