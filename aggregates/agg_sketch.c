/*
 * agg_sketch.c — the two mergeable sketches: approx_distinct and
 * approx_quantile.
 *
 * approx_distinct (agg_hll_t). A tile of a sliding window usually sees few
 * distinct values, so the sketch starts SPARSE: an unsorted set of up to
 * AGG_HLL_SPARSE_MAX 32-bit codes, whose size is the distinct count. Past
 * that it turns DENSE: a HyperLogLog with m = 2^12 one-byte registers
 * (register = top 12 hash bits, rank = leading zeros of the other 52 bits +
 * 1). A code keeps of a 64-bit hash exactly what a dense register needs
 * (as in HyperLogLog++'s sparse form): its top 25 bits, and, only when the
 * 13 of them below the register's 12 are all zero, the rank of the last 39
 * bits (6 bits; else 0, since those 13 bits already give the rank). So
 * densifying codes sets the very registers the hashes would have, and
 * sparse counts are exact unless two values share their top 25 hash bits
 * (and rank): probability about n^2 / 2^26 for n values, 6e-5 at n = 64.
 * Half the bytes of the 64-bit hashes kept before (format 2), in memory and
 * in every committed state. The dense estimate uses Ertl's improved
 * raw estimator ("New cardinality estimation algorithms for HyperLogLog
 * sketches", 2017), which needs no bias tables and is unbiased from 0 to far
 * beyond 2^32; its relative standard error is about 1.04 / sqrt(m) = 1.6 %.
 * Union is register-wise max, so the sketch is a monoid and tiles merge
 * exactly as if all values had gone into one sketch.
 *
 * approx_quantile (agg_dds_t). A DDSketch with relative accuracy alpha = 1 %:
 * a positive x falls in bucket i = ceil(log_gamma(x)), gamma =
 * (1 + alpha) / (1 - alpha), and bucket i answers 2 gamma^i / (gamma + 1),
 * which is within alpha * x of every x in (gamma^(i-1), gamma^i]. Negative
 * values use a mirrored store, |x| < 1e-12 counts as zero. Each store is a
 * dense run of uint64 counters over [lo, lo + n). Merging adds counters, so
 * the sketch of a union is identical to the sketch of the concatenated
 * stream. Beyond 4096 buckets per sign (about 1e35 of dynamic range) the
 * lowest buckets are folded into the lowest kept one; only quantiles that
 * land in a folded bucket lose the guarantee.
 *
 * No state beyond the objects; all functions are reentrant.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "agg_internal.h"
#include "sl_err.h"

/* ======================================================================== */
/* HyperLogLog                                                              */
/* ======================================================================== */

/* One block: the header, then the sparse hashes or the dense registers, so
 * that a tile's sketch is one allocation and one pointer away (an update of
 * a cold entity waits for each level of pointers). Growing moves the block:
 * add and merge take the owner's pointer. */
struct agg_hll {
    uint32_t n;             /* sparse: number of codes; dense: UINT32_MAX */
    uint32_t cap;           /* sparse: room in v[] */
    uint32_t v[];           /* sparse: codes; dense: AGG_HLL_M register bytes */
};

#define HLL_DENSE UINT32_MAX
#define HLL_Q (64 - AGG_HLL_P)
#define HLL_CAP0 4

static inline uint8_t *hll_regs(const agg_hll_t *h)
{
    return (uint8_t *)h->v;
}

static agg_hll_t *hll_alloc_sparse(uint32_t cap)
{
    agg_hll_t *h = malloc(sizeof(agg_hll_t) + (size_t)cap * sizeof(uint32_t));
    if (h) {
        h->n = 0;
        h->cap = cap;
    }
    return h;
}

agg_hll_t *agg__hll_new(void)
{
    return hll_alloc_sparse(HLL_CAP0);
}

void agg__hll_free(agg_hll_t *h)
{
    free(h);
}

void agg__hll_prefetch(const agg_hll_t *h)
{
    if (h->n == HLL_DENSE)
        return;                 /* 4 KiB of registers: one line would not help */
    const char *p = (const char *)h;
    size_t bytes = sizeof(*h) + (size_t)h->n * sizeof(uint32_t);
    for (size_t off = 192; off < bytes; off += 64)
        __builtin_prefetch(p + off, 0);   /* the first three lines: agg__win_prefetch */
}

static inline void hll_reg_set(uint8_t *regs, uint64_t hash)
{
    uint32_t idx = (uint32_t)(hash >> HLL_Q);
    uint64_t w = hash << AGG_HLL_P;          /* the remaining 52 bits, top-aligned */
    uint8_t rank = w ? (uint8_t)(__builtin_clzll(w) + 1) : (uint8_t)(HLL_Q + 1);
    if (rank > HLL_Q + 1)
        rank = HLL_Q + 1;
    if (regs[idx] < rank)
        regs[idx] = rank;
}

/* Sparse codes (see the top): bits 30..6 the top 25 hash bits, bits 5..0
 * the rank of the last 39 bits when bits 12..0 of those 25 are zero, else 0. */
#define HLL_SP 25                                    /* index bits of a code */
#define HLL_SP_LOW (HLL_SP - AGG_HLL_P)              /* 13: below the register */
#define HLL_SP_REST (64 - HLL_SP)                    /* 39 */

static inline uint32_t hll_code(uint64_t hash)
{
    uint32_t idx = (uint32_t)(hash >> HLL_SP_REST);
    if (idx & ((1u << HLL_SP_LOW) - 1))
        return idx << 6;
    uint64_t w = hash << HLL_SP;                     /* the last 39 bits, top-aligned */
    uint32_t rank = w ? (uint32_t)__builtin_clzll(w) + 1 : HLL_SP_REST + 1;
    return idx << 6 | rank;
}

/* Is `c` a code hll_code can return? (decoding checks stored codes) */
static bool hll_code_valid(uint32_t c)
{
    uint32_t low = (c >> 6) & ((1u << HLL_SP_LOW) - 1), rank = c & 63;
    return c >> 31 == 0 && (low ? rank == 0 : rank >= 1 && rank <= HLL_SP_REST + 1);
}

/* What hll_reg_set does with the hash a code came from. */
static inline void hll_reg_set_code(uint8_t *regs, uint32_t c)
{
    uint32_t idx = c >> (6 + HLL_SP_LOW);
    uint32_t low = (c >> 6) & ((1u << HLL_SP_LOW) - 1);
    uint8_t rank = low ? (uint8_t)(__builtin_clz(low << (32 - HLL_SP_LOW)) + 1)
                       : (uint8_t)(HLL_SP_LOW + (c & 63));
    if (regs[idx] < rank)
        regs[idx] = rank;
}

/* Replaces the sparse *hp by its dense form; *hp unchanged on failure. */
static int hll_densify(agg_hll_t **hp)
{
    agg_hll_t *h = *hp;
    agg_hll_t *d = calloc(1, sizeof(agg_hll_t) + AGG_HLL_M);
    if (!d)
        return SL_ENOMEM;
    for (uint32_t i = 0; i < h->n; i++)
        hll_reg_set_code(hll_regs(d), h->v[i]);
    d->n = HLL_DENSE;
    free(h);
    *hp = d;
    return 0;
}

/* Adds a code to a sparse *hp (densifying it when full). */
static int hll_add_code(agg_hll_t **hp, uint32_t code)
{
    agg_hll_t *h = *hp;
    for (uint32_t i = 0; i < h->n; i++)
        if (h->v[i] == code)
            return 0;
    if (h->n == AGG_HLL_SPARSE_MAX) {
        int rc = hll_densify(hp);
        if (rc)
            return rc;
        hll_reg_set_code(hll_regs(*hp), code);
        return 0;
    }
    if (h->n == h->cap) {
        uint32_t cap = h->cap ? h->cap * 2 : HLL_CAP0;
        if (cap > AGG_HLL_SPARSE_MAX)
            cap = AGG_HLL_SPARSE_MAX;
        agg_hll_t *nh = realloc(h, sizeof(agg_hll_t) + (size_t)cap * sizeof(uint32_t));
        if (!nh)
            return SL_ENOMEM;
        h = *hp = nh;
        h->cap = cap;
    }
    h->v[h->n++] = code;
    return 0;
}

int agg__hll_add(agg_hll_t **hp, uint64_t hash)
{
    agg_hll_t *h = *hp;
    if (!h && !(h = *hp = agg__hll_new()))
        return SL_ENOMEM;
    if (h->n == HLL_DENSE) {
        hll_reg_set(hll_regs(h), hash);
        return 0;
    }
    return hll_add_code(hp, hll_code(hash));
}

agg_hll_t *agg__hll_copy(const agg_hll_t *h)
{
    agg_hll_t *c;
    if (h->n == HLL_DENSE) {
        if (!(c = malloc(sizeof(agg_hll_t) + AGG_HLL_M)))
            return NULL;
        memcpy(hll_regs(c), hll_regs(h), AGG_HLL_M);
        c->n = HLL_DENSE;
        c->cap = 0;
        return c;
    }
    /* room for one more hash: the copy of a tile's sketch is usually an
     * accumulator that the next event adds to */
    uint32_t cap = h->n < AGG_HLL_SPARSE_MAX ? h->n + 1 : h->n;
    if (cap < HLL_CAP0)
        cap = HLL_CAP0;
    if (!(c = hll_alloc_sparse(cap)))
        return NULL;
    memcpy(c->v, h->v, (size_t)h->n * sizeof(uint32_t));
    c->n = h->n;
    return c;
}

int agg__hll_merge(agg_hll_t **dstp, const agg_hll_t *src)
{
    int rc;
    if (src->n == HLL_DENSE) {
        if ((*dstp)->n != HLL_DENSE && (rc = hll_densify(dstp)))
            return rc;
        uint8_t *d = hll_regs(*dstp);
        const uint8_t *s = hll_regs(src);
        for (uint32_t i = 0; i < AGG_HLL_M; i++)
            if (d[i] < s[i])
                d[i] = s[i];
        return 0;
    }
    for (uint32_t i = 0; i < src->n; i++) {
        if ((*dstp)->n == HLL_DENSE)
            hll_reg_set_code(hll_regs(*dstp), src->v[i]);
        else if ((rc = hll_add_code(dstp, src->v[i])))
            return rc;
    }
    return 0;
}

/* Ertl 2017, section 4: sigma and tau series of the improved estimator. */
static double hll_sigma(double x)
{
    if (x == 1.0)
        return INFINITY;
    double y = 1.0, z = x, zp;
    do {
        x *= x;
        zp = z;
        z += x * y;
        y += y;
    } while (z != zp);
    return z;
}

static double hll_tau(double x)
{
    if (x == 0.0 || x == 1.0)
        return 0.0;
    double y = 1.0, z = 1.0 - x, zp;
    do {
        x = sqrt(x);
        zp = z;
        y *= 0.5;
        z -= (1.0 - x) * (1.0 - x) * y;
    } while (z != zp);
    return z / 3.0;
}

/* Ertl's estimate from the register histogram c[0 .. HLL_Q + 1]. */
static double hll_estimate_hist(const uint32_t *c)
{
    double m = AGG_HLL_M;
    double z = m * hll_tau(1.0 - c[HLL_Q + 1] / m);
    for (int k = HLL_Q; k >= 1; k--)
        z = 0.5 * (z + c[k]);
    z += m * hll_sigma(c[0] / m);
    return (m * m / (2.0 * log(2.0))) / z;
}

/* Histogram of max(a[i], b[i]) (b may be NULL); four sub-histograms keep the
 * increments independent so the loop does not stall on one counter. */
static double hll_estimate_regs2(const uint8_t *a, const uint8_t *b)
{
    uint32_t h[4][64] = { { 0 } }, c[HLL_Q + 2];
    if (b) {
        for (uint32_t i = 0; i < AGG_HLL_M; i += 4)
            for (int k = 0; k < 4; k++)
                h[k][(a[i + k] > b[i + k] ? a[i + k] : b[i + k]) & 63]++;
    } else {
        for (uint32_t i = 0; i < AGG_HLL_M; i += 4)
            for (int k = 0; k < 4; k++)
                h[k][a[i + k] & 63]++;
    }
    for (int r = 0; r < HLL_Q + 2; r++)
        c[r] = h[0][r] + h[1][r] + h[2][r] + h[3][r];
    return hll_estimate_hist(c);
}

static double hll_estimate_regs(const uint8_t *regs)
{
    return hll_estimate_regs2(regs, NULL);
}

static bool hll_sparse_has(const agg_hll_t *h, uint32_t code)
{
    for (uint32_t i = 0; i < h->n; i++)
        if (h->v[i] == code)
            return true;
    return false;
}

double agg__hll_estimate2(const agg_hll_t *a, const agg_hll_t *b, uint8_t *regs)
{
    if (b && a->n != HLL_DENSE && b->n != HLL_DENSE) {
        /* both exact sets: count the union exactly if it stays small */
        uint32_t n = a->n;
        for (uint32_t i = 0; i < b->n; i++)
            n += !hll_sparse_has(a, b->v[i]);
        if (n <= AGG_HLL_SPARSE_MAX)
            return n;
    } else if (!b && a->n != HLL_DENSE) {
        return a->n;
    }
    if (a->n == HLL_DENSE && !b)
        return hll_estimate_regs(hll_regs(a));
    if (a->n == HLL_DENSE && b && b->n == HLL_DENSE)
        return hll_estimate_regs2(hll_regs(a), hll_regs(b));
    memset(regs, 0, AGG_HLL_M);
    const agg_hll_t *hs[2] = { a, b };
    for (int k = 0; k < 2; k++) {
        const agg_hll_t *h = hs[k];
        if (!h)
            continue;
        if (h->n == HLL_DENSE) {
            for (uint32_t i = 0; i < AGG_HLL_M; i++)
                if (regs[i] < hll_regs(h)[i])
                    regs[i] = hll_regs(h)[i];
        } else {
            for (uint32_t i = 0; i < h->n; i++)
                hll_reg_set_code(regs, h->v[i]);
        }
    }
    return hll_estimate_regs(regs);
}

/* Encoding: u8 kind (0 sparse, 1 dense); sparse: varint n, n x u32be codes;
 * dense: 4096 register bytes. */
int agg__hll_encode(const agg_hll_t *h, sl_buf_t *buf)
{
    int rc;
    if (h->n == HLL_DENSE) {
        if ((rc = sl_buf_put_u8(buf, 1)))
            return rc;
        return sl_buf_append(buf, hll_regs(h), AGG_HLL_M);
    }
    if ((rc = agg__room(buf, 1 + 10 + (size_t)h->n * 4)))
        return rc;
    unsigned char *w = buf->data + buf->len;
    *w++ = 0;
    w = agg__w_varint(w, h->n);
    for (uint32_t i = 0; i < h->n; i++, w += 4) {
        uint32_t c = h->v[i];
        w[0] = (unsigned char)(c >> 24);
        w[1] = (unsigned char)(c >> 16);
        w[2] = (unsigned char)(c >> 8);
        w[3] = (unsigned char)c;
    }
    buf->len = (size_t)(w - buf->data);
    return 0;
}

int agg__hll_decode(sl_reader_t *r, agg_hll_t **out, int ver)
{
    uint8_t kind;
    uint64_t n;
    int rc;
    agg_hll_t *h = NULL;

    *out = NULL;
    if ((rc = sl_read_u8(r, &kind)))
        return rc;
    if (kind == 1) {
        if (!(h = malloc(sizeof(agg_hll_t) + AGG_HLL_M)))
            return SL_ENOMEM;
        h->n = HLL_DENSE;
        h->cap = 0;
        uint8_t *regs = hll_regs(h);
        if ((rc = sl_read_raw(r, regs, AGG_HLL_M)))
            goto fail;
        for (uint32_t i = 0; i < AGG_HLL_M; i++)
            if (regs[i] > HLL_Q + 1) {
                rc = SL_ECORRUPT;
                goto fail;
            }
    } else if (kind == 0) {
        if ((rc = sl_read_varint(r, &n)))
            return rc;
        size_t width = ver == 2 ? 8 : 4;
        if (n == 0 || n > AGG_HLL_SPARSE_MAX || n * width > r->left)
            return SL_ECORRUPT;
        if (!(h = hll_alloc_sparse((uint32_t)n)))
            return SL_ENOMEM;
        if (ver == 2) {
            /* distinct 64-bit hashes, as codes: two may share one code
             * (then one is kept, as adding both would have done) */
            uint64_t hs[AGG_HLL_SPARSE_MAX];
            for (uint32_t i = 0; i < n; i++) {
                if ((rc = sl_read_u64be(r, &hs[i])))
                    goto fail;
                for (uint32_t j = 0; j < i; j++)
                    if (hs[j] == hs[i]) {
                        rc = SL_ECORRUPT;
                        goto fail;
                    }
                uint32_t c = hll_code(hs[i]);
                if (!hll_sparse_has(h, c))
                    h->v[h->n++] = c;
            }
            n = 0;                       /* read; skip the loop below */
        }
        for (uint32_t i = 0; i < n; i++) {
            unsigned char b[4];
            if ((rc = sl_read_raw(r, b, 4)))
                goto fail;
            uint32_t c = (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
            if (!hll_code_valid(c) || hll_sparse_has(h, c)) {    /* h->n == i here */
                rc = SL_ECORRUPT;
                goto fail;
            }
            h->v[i] = c;
            h->n = i + 1;
        }
    } else {
        return SL_ECORRUPT;
    }
    *out = h;
    return 0;
fail:
    agg__hll_free(h);
    return rc;
}

size_t agg__hll_mem(const agg_hll_t *h)
{
    return sizeof(*h) + (h->n == HLL_DENSE ? AGG_HLL_M : (size_t)h->cap * sizeof(uint32_t));
}

/* ======================================================================== */
/* DDSketch                                                                 */
/* ======================================================================== */

typedef struct dds_store {
    int32_t lo;             /* index of cnt[0] */
    uint32_t n;             /* counters held */
    uint64_t *cnt;
} dds_store_t;

struct agg_dds {
    uint64_t zero;
    dds_store_t pos, neg;   /* neg holds -x */
};

static double dds_gamma(void) { return (1.0 + AGG_DDS_ALPHA) / (1.0 - AGG_DDS_ALPHA); }

static int32_t dds_index(double ax)
{
    return (int32_t)ceil(log(ax) / log(dds_gamma()));   /* the divisor folds at -O2 */
}

static double dds_value(int32_t i)
{
    double g = dds_gamma();
    return 2.0 * pow(g, i) / (g + 1.0);
}

agg_dds_t *agg__dds_new(void)
{
    return calloc(1, sizeof(agg_dds_t));
}

void agg__dds_free(agg_dds_t *d)
{
    if (!d)
        return;
    free(d->pos.cnt);
    free(d->neg.cnt);
    free(d);
}

/* Makes the store cover [lo, hi] (clamped to AGG_DDS_MAX_BUCKETS by folding
 * the lowest buckets). */
static int dds_store_cover(dds_store_t *s, int32_t lo, int32_t hi)
{
    if (s->n) {
        if (lo > s->lo)
            lo = s->lo;
        if (hi < s->lo + (int32_t)s->n - 1)
            hi = s->lo + (int32_t)s->n - 1;
        if (lo == s->lo && hi == s->lo + (int32_t)s->n - 1)
            return 0;
    }
    int64_t want = (int64_t)hi - lo + 1;
    if (want > AGG_DDS_MAX_BUCKETS)
        lo = hi - AGG_DDS_MAX_BUCKETS + 1;
    uint32_t n = (uint32_t)((int64_t)hi - lo + 1);
    uint64_t *cnt = calloc(n, sizeof(uint64_t));
    if (!cnt)
        return SL_ENOMEM;
    for (uint32_t i = 0; i < s->n; i++) {
        int64_t j = (int64_t)s->lo + i - lo;
        cnt[j < 0 ? 0 : j] += s->cnt[i];
    }
    free(s->cnt);
    s->cnt = cnt;
    s->lo = lo;
    s->n = n;
    return 0;
}

static int dds_store_add(dds_store_t *s, int32_t i, uint64_t c)
{
    if (!s->n || i < s->lo || i >= s->lo + (int32_t)s->n) {
        int rc = dds_store_cover(s, i, i);
        if (rc)
            return rc;
    }
    int64_t j = (int64_t)i - s->lo;
    s->cnt[j < 0 ? 0 : j] += c;
    return 0;
}

int agg__dds_add(agg_dds_t *d, double x)
{
    if (isnan(x))
        return 0;
    double ax = fabs(x);
    if (ax < AGG_DDS_MIN_ABS) {
        d->zero++;
        return 0;
    }
    if (isinf(ax))
        ax = 1.7e308;
    return dds_store_add(x > 0 ? &d->pos : &d->neg, dds_index(ax), 1);
}

static int dds_store_merge(dds_store_t *dst, const dds_store_t *src)
{
    if (!src->n)
        return 0;
    int rc = dds_store_cover(dst, src->lo, src->lo + (int32_t)src->n - 1);
    if (rc)
        return rc;
    for (uint32_t i = 0; i < src->n; i++) {
        int64_t j = (int64_t)src->lo + i - dst->lo;
        dst->cnt[j < 0 ? 0 : j] += src->cnt[i];
    }
    return 0;
}

int agg__dds_merge(agg_dds_t *dst, const agg_dds_t *src)
{
    int rc;
    if ((rc = dds_store_merge(&dst->pos, &src->pos)) || (rc = dds_store_merge(&dst->neg, &src->neg)))
        return rc;
    dst->zero += src->zero;
    return 0;
}

static int dds_store_copy(dds_store_t *dst, const dds_store_t *src)
{
    *dst = *src;
    dst->cnt = NULL;
    if (!src->n)
        return 0;
    dst->cnt = malloc(src->n * sizeof(uint64_t));
    if (!dst->cnt)
        return SL_ENOMEM;
    memcpy(dst->cnt, src->cnt, src->n * sizeof(uint64_t));
    return 0;
}

agg_dds_t *agg__dds_copy(const agg_dds_t *d)
{
    agg_dds_t *c = agg__dds_new();
    if (!c)
        return NULL;
    c->zero = d->zero;
    if (dds_store_copy(&c->pos, &d->pos) || dds_store_copy(&c->neg, &d->neg)) {
        agg__dds_free(c);
        return NULL;
    }
    return c;
}

static uint64_t dds_store_total(const dds_store_t *s)
{
    uint64_t n = 0;
    for (uint32_t i = 0; i < s->n; i++)
        n += s->cnt[i];
    return n;
}

static inline uint64_t dds_at(const dds_store_t *s, int32_t i)
{
    if (!s->n || i < s->lo || i >= s->lo + (int32_t)s->n)
        return 0;
    return s->cnt[i - s->lo];
}

/* Walks the buckets of a (+ b) of one sign in ascending |x| or descending
 * order until `rank` is passed; returns the bucket index. */
static bool dds_find(const dds_store_t *a, const dds_store_t *b, bool descending,
                     uint64_t *rank, int32_t *idx)
{
    int32_t lo = INT32_MAX, hi = INT32_MIN;
    const dds_store_t *ss[2] = { a, b };
    for (int k = 0; k < 2; k++) {
        if (!ss[k] || !ss[k]->n)
            continue;
        if (ss[k]->lo < lo)
            lo = ss[k]->lo;
        if (ss[k]->lo + (int32_t)ss[k]->n - 1 > hi)
            hi = ss[k]->lo + (int32_t)ss[k]->n - 1;
    }
    if (lo > hi)
        return false;
    for (int64_t j = 0; j <= (int64_t)hi - lo; j++) {
        int32_t i = descending ? (int32_t)(hi - j) : (int32_t)(lo + j);
        uint64_t c = dds_at(a, i) + (b ? dds_at(b, i) : 0);
        if (*rank < c) {
            *idx = i;
            return true;
        }
        *rank -= c;
    }
    return false;
}

bool agg__dds_quantile2(const agg_dds_t *a, const agg_dds_t *b, double q, double *out)
{
    uint64_t nneg = dds_store_total(&a->neg) + (b ? dds_store_total(&b->neg) : 0);
    uint64_t npos = dds_store_total(&a->pos) + (b ? dds_store_total(&b->pos) : 0);
    uint64_t nz = a->zero + (b ? b->zero : 0);
    uint64_t n = nneg + npos + nz;
    if (!n)
        return false;
    if (q < 0)
        q = 0;
    if (q > 1)
        q = 1;
    uint64_t rank = (uint64_t)floor(q * (double)(n - 1));
    int32_t idx = 0;
    if (rank < nneg) {
        dds_find(&a->neg, b ? &b->neg : NULL, true, &rank, &idx);
        *out = -dds_value(idx);
        return true;
    }
    rank -= nneg;
    if (rank < nz) {
        *out = 0.0;
        return true;
    }
    rank -= nz;
    dds_find(&a->pos, b ? &b->pos : NULL, false, &rank, &idx);
    *out = dds_value(idx);
    return true;
}

/* Encoding: varint zero; per store (pos, neg): varint n, and when n > 0
 * svarint lo and n varint counters. */
static int dds_store_encode(const dds_store_t *s, sl_buf_t *buf)
{
    int rc;
    if ((rc = sl_buf_put_varint(buf, s->n)))
        return rc;
    if (!s->n)
        return 0;
    if ((rc = sl_buf_put_svarint(buf, s->lo)))
        return rc;
    for (uint32_t i = 0; i < s->n; i++)
        if ((rc = sl_buf_put_varint(buf, s->cnt[i])))
            return rc;
    return 0;
}

static int dds_store_decode(sl_reader_t *r, dds_store_t *s)
{
    uint64_t n;
    int64_t lo;
    int rc;
    if ((rc = sl_read_varint(r, &n)))
        return rc;
    if (!n)
        return 0;
    if (n > AGG_DDS_MAX_BUCKETS || n > r->left)
        return SL_ECORRUPT;
    if ((rc = sl_read_svarint(r, &lo)))
        return rc;
    if (lo < -100000 || lo > 100000)
        return SL_ECORRUPT;
    s->cnt = malloc(n * sizeof(uint64_t));
    if (!s->cnt)
        return SL_ENOMEM;
    s->lo = (int32_t)lo;
    s->n = (uint32_t)n;
    for (uint32_t i = 0; i < n; i++)
        if ((rc = sl_read_varint(r, &s->cnt[i])))
            return rc;
    return 0;
}

int agg__dds_encode(const agg_dds_t *d, sl_buf_t *buf)
{
    int rc;
    if ((rc = sl_buf_put_varint(buf, d->zero)) || (rc = dds_store_encode(&d->pos, buf)) ||
        (rc = dds_store_encode(&d->neg, buf)))
        return rc;
    return 0;
}

int agg__dds_decode(sl_reader_t *r, agg_dds_t **out)
{
    int rc;
    agg_dds_t *d = agg__dds_new();
    *out = NULL;
    if (!d)
        return SL_ENOMEM;
    if ((rc = sl_read_varint(r, &d->zero)) || (rc = dds_store_decode(r, &d->pos)) ||
        (rc = dds_store_decode(r, &d->neg))) {
        agg__dds_free(d);
        return rc;
    }
    *out = d;
    return 0;
}

size_t agg__dds_mem(const agg_dds_t *d)
{
    return sizeof(*d) + (d->pos.n + d->neg.n) * sizeof(uint64_t);
}
