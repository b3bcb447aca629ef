/*
 * resp_reply.c — RESP2 reply encoding (see resp_reply.h). Integers are
 * formatted by hand: HGETALL of a wide vector writes many "$N" headers and
 * snprintf dominates otherwise.
 */
#include "resp_reply.h"
#include "sl_err.h"

#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Writes the decimal of v at the end of tmp[32]; returns where it starts. */
static char *resp__i64(int64_t v, char tmp[32])
{
    char *e = tmp + 32, *s = e;
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    do { *--s = (char)('0' + u % 10); u /= 10; } while (u);
    if (v < 0) *--s = '-';
    return s;
}

static int resp__line(sl_buf_t *b, char type, int64_t v)
{
    char tmp[32];
    char *s = resp__i64(v, tmp);
    size_t n = (size_t)(tmp + 32 - s);
    if (sl_buf_reserve(b, n + 3)) return SL_ENOMEM;
    unsigned char *d = b->data + b->len;
    *d++ = (unsigned char)type;
    memcpy(d, s, n);
    d += n;
    *d++ = '\r';
    *d++ = '\n';
    b->len += n + 3;
    return 0;
}

int resp_reply_status(sl_buf_t *b, const char *s)
{
    size_t n = strlen(s);
    if (sl_buf_reserve(b, n + 3)) return SL_ENOMEM;
    b->data[b->len] = '+';
    memcpy(b->data + b->len + 1, s, n);
    memcpy(b->data + b->len + 1 + n, "\r\n", 2);
    b->len += n + 3;
    return 0;
}

int resp_reply_error(sl_buf_t *b, const char *msg)
{
    size_t n = strlen(msg);
    if (sl_buf_reserve(b, n + 3)) return SL_ENOMEM;
    unsigned char *d = b->data + b->len;
    *d++ = '-';
    for (size_t i = 0; i < n; i++) {
        char c = msg[i];
        *d++ = (unsigned char)((c == '\r' || c == '\n') ? ' ' : c);
    }
    *d++ = '\r';
    *d++ = '\n';
    b->len += n + 3;
    return 0;
}

int resp_reply_errorf(sl_buf_t *b, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return resp_reply_error(b, msg);
}

int resp_reply_int(sl_buf_t *b, int64_t v) { return resp__line(b, ':', v); }
int resp_reply_nil(sl_buf_t *b) { return sl_buf_append(b, "$-1\r\n", 5); }
int resp_reply_array(sl_buf_t *b, size_t n) { return resp__line(b, '*', (int64_t)n); }

int resp_reply_bulk(sl_buf_t *b, const void *p, size_t n)
{
    char tmp[32];
    char *s = resp__i64((int64_t)n, tmp);
    size_t hn = (size_t)(tmp + 32 - s);
    if (sl_buf_reserve(b, hn + n + 5)) return SL_ENOMEM;
    unsigned char *d = b->data + b->len;
    *d++ = '$';
    memcpy(d, s, hn);
    d += hn;
    *d++ = '\r';
    *d++ = '\n';
    if (n) memcpy(d, p, n);
    d += n;
    *d++ = '\r';
    *d++ = '\n';
    b->len += hn + n + 5;
    return 0;
}

int resp_reply_int_bulk(sl_buf_t *b, int64_t v)
{
    char tmp[32];
    char *s = resp__i64(v, tmp);
    return resp_reply_bulk(b, s, (size_t)(tmp + 32 - s));
}

int resp_reply_bulk_str(sl_buf_t *b, const char *s) { return resp_reply_bulk(b, s, strlen(s)); }

/* Decimal with k fraction digits from the integer m = v * 10^k. */
static size_t resp__fixed(int64_t m, int k, char *buf)
{
    char tmp[32];
    char *d = resp__i64(m < 0 ? -m : m, tmp);
    size_t nd = (size_t)(tmp + 32 - d);
    size_t w = 0;
    if (m < 0) buf[w++] = '-';
    if (nd <= (size_t)k) {                       /* 0.00ddd */
        buf[w++] = '0';
        buf[w++] = '.';
        for (size_t z = nd; z < (size_t)k; z++) buf[w++] = '0';
        memcpy(buf + w, d, nd);
        w += nd;
    } else {
        memcpy(buf + w, d, nd - (size_t)k);
        w += nd - (size_t)k;
        buf[w++] = '.';
        memcpy(buf + w, d + nd - k, (size_t)k);
        w += (size_t)k;
    }
    while (buf[w - 1] == '0') w--;               /* "2.50" -> "2.5" */
    return w;
}

size_t resp_format_double(double v, char *buf, size_t size)
{
    static const double pow10[] = { 1, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9 };
    int n;
    if (size < 40) return 0;
    if (isnan(v)) n = snprintf(buf, size, "nan");
    else if (isinf(v)) n = snprintf(buf, size, v > 0 ? "inf" : "-inf");
    else if (v == (double)(int64_t)v && fabs(v) < 1e15) {
        char tmp[32];
        char *d = resp__i64((int64_t)v, tmp);
        n = (int)(tmp + 32 - d);
        memcpy(buf, d, (size_t)n);
    } else {
        /* Fast path: the fewest fraction digits k <= 9 such that m / 10^k,
         * m = round(v * 10^k) < 2^53, gives back v. m and 10^k are exact
         * doubles and IEEE division rounds correctly, so m / 10^k is exactly
         * what strtod makes of the printed decimal: the text reads back as v. */
        for (int k = 1; k <= 9; k++) {
            double scaled = v * pow10[k];
            if (fabs(scaled) >= 9007199254740992.0) break;
            int64_t m = llround(scaled);
            if ((double)m / pow10[k] == v) return resp__fixed(m, k, buf);
        }
        /* Otherwise the fewest significant digits that read back as v. For
         * a normal double, a decimal of p <= 15 digits that does is what
         * %.15g rounds to (its distance to v is below half a unit of the
         * 15th digit), so 15, 16 and 17 are the only lengths to try; a
         * subnormal has fewer bits, and every length is tried. */
        int p = fabs(v) < DBL_MIN ? 1 : 15;
        for (; p <= 17; p++) {
            n = snprintf(buf, size, "%.*g", p, v);
            if (p == 17 || strtod(buf, NULL) == v) break;
        }
    }
    return n < 0 ? 0 : (size_t)n < size ? (size_t)n : size - 1;
}

int resp_reply_double(sl_buf_t *b, double v)
{
    char tmp[48];
    size_t n = resp_format_double(v, tmp, sizeof tmp);
    return resp_reply_bulk(b, tmp, n);
}
