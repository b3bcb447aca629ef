/*
 * agg_part.c — partial aggregates: one monoid per aggregate kind.
 *
 * A partial (agg_part_t) summarises a set of events for one feature. The
 * window structures in agg_window.c hold one partial per tile or session and
 * combine them with agg__part_merge; add(p, e) is merge(p, {e}). Every merge
 * here is associative, and commutative up to the tie rule below, which is
 * what lets tiles be combined in any grouping:
 *
 *   count, sum (int)      exact integer addition (wraps modulo 2^64)
 *   sum/mean (double)     floating addition; associative only up to rounding
 *   min, max              exact
 *   first, last           the value with the smallest / largest event time;
 *                         among equal times, the first / last one applied
 *   last_n                the N values with the largest event times, oldest
 *                         first; equal times keep the order they were applied
 *   variance, stddev      (n, mean, M2) with Chan's parallel update
 *   approx_distinct       HLL union (agg_sketch.c)
 *   approx_quantile       DDSketch counter addition (agg_sketch.c)
 *   decayed_sum/_count    sum of v * 2^(-(T - t)/h) kept at reference time T
 *                         = the newest event time; rescaled on merge
 *
 * Equal event times never span two partials of one window (a tile or a
 * session holds all events of one time), so the tie rules hold across merges.
 * NaN inputs are ignored by numeric aggregates.
 */
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "agg_internal.h"
#include "sl_err.h"

#define AGG_STR_MAX (1u << 20)      /* longest string kept by first/last/last_n */

/* Test builds (-DAGG_COUNT_OPS) count merges and copies of partials, so that
 * tests/aggregates/test_agg_cost.c can pin the cost claims of agg_window.c. */
#ifdef AGG_COUNT_OPS
long agg__n_ops;
#define COUNT_OP() (agg__n_ops++)
#else
#define COUNT_OP() ((void)0)
#endif

/* ---- values with owned strings ------------------------------------------ */

/* On failure *sv is unchanged. */
static int sv_set(const agg__feature_t *f, agg__sv_t *sv, const agg__in_t *in)
{
    if (f->vk == AGG__VK_STRING) {
        size_t len = in->slen > AGG_STR_MAX ? AGG_STR_MAX : in->slen;
        char *s = malloc(len ? len : 1);
        if (!s)
            return SL_ENOMEM;
        if (len)
            memcpy(s, in->s, len);
        free(sv->s);
        sv->s = s;
        sv->slen = (uint32_t)len;
    } else if (f->vk == AGG__VK_DOUBLE) {
        sv->v.d = in->d;
    } else {
        sv->v.i = in->i;
    }
    sv->t = in->t;
    return 0;
}

static int sv_copy(agg__sv_t *dst, const agg__sv_t *src)
{
    char *s = NULL;
    if (src->s) {
        s = malloc(src->slen ? src->slen : 1);
        if (!s)
            return SL_ENOMEM;
        memcpy(s, src->s, src->slen);
    }
    free(dst->s);
    *dst = *src;
    dst->s = s;
    return 0;
}

static void sv_scalar(const agg__feature_t *f, const agg__sv_t *sv, agg_scalar_t *out)
{
    memset(out, 0, sizeof(*out));
    switch (f->vk) {
    case AGG__VK_STRING:
        out->type = AGG_VAL_STRING;
        out->s = sv->s ? sv->s : "";
        out->slen = sv->slen;
        break;
    case AGG__VK_DOUBLE:
        out->type = AGG_VAL_DOUBLE;
        out->d = sv->v.d;
        break;
    default:
        out->type = AGG_VAL_INT;
        out->i = sv->v.i;
        break;
    }
}

/* first/last keep their one value in an agg__sv_t on the heap. */
static agg__sv_t *part_sv(agg_part_t *p)
{
    if (!p->x)
        p->x = calloc(1, sizeof(agg__sv_t));
    return p->x;
}

/* ---- last_n --------------------------------------------------------------- */

static agg__list_t *list_new(int cap)
{
    agg__list_t *l = calloc(1, sizeof(agg__list_t) + (size_t)cap * sizeof(agg__sv_t));
    if (l)
        l->cap = (uint32_t)cap;
    return l;
}

static void list_free(agg__list_t *l)
{
    if (!l)
        return;
    for (uint32_t i = 0; i < l->n; i++)
        free(l->items[i].s);
    free(l);
}

/* Inserts after every item with time <= t; drops the oldest when full. */
static int list_add(const agg__feature_t *f, agg__list_t *l, const agg__in_t *in)
{
    uint32_t pos = l->n;
    while (pos > 0 && l->items[pos - 1].t > in->t)
        pos--;
    if (l->n == l->cap) {
        if (pos == 0)
            return 0;                       /* older than everything kept */
        agg__sv_t nv = { 0 };
        int rc = sv_set(f, &nv, in);
        if (rc)
            return rc;
        free(l->items[0].s);
        memmove(&l->items[0], &l->items[1], (pos - 1) * sizeof(agg__sv_t));
        l->items[pos - 1] = nv;
        return 0;
    }
    agg__sv_t nv = { 0 };
    int rc = sv_set(f, &nv, in);
    if (rc)
        return rc;
    memmove(&l->items[pos + 1], &l->items[pos], (l->n - pos) * sizeof(agg__sv_t));
    l->items[pos] = nv;
    l->n++;
    return 0;
}

/* Newest `cap` items of a then b (a wins ties: it is the older partial), as
 * pointers, oldest first, into out; returns how many. */
static uint32_t list_select(const agg__list_t *a, const agg__list_t *b, uint32_t cap,
                            const agg__sv_t **out)
{
    uint32_t na = a ? a->n : 0, nb = b ? b->n : 0;
    uint32_t k = na + nb < cap ? na + nb : cap;
    uint32_t i = k;
    while (i > 0) {
        /* take the newer of the two tails; on a tie b's is the later one */
        if (nb && (!na || b->items[nb - 1].t >= a->items[na - 1].t))
            out[--i] = &b->items[--nb];
        else
            out[--i] = &a->items[--na];
    }
    return k;
}

static int list_merge(agg__list_t **dstp, const agg__list_t *src, uint32_t cap)
{
    const agg__sv_t *sel[cap];
    agg__list_t *dst = *dstp;
    uint32_t k = list_select(dst, src, cap, sel);
    agg__list_t *nl = list_new((int)cap);
    if (!nl)
        return SL_ENOMEM;
    for (uint32_t i = 0; i < k; i++) {
        if (sv_copy(&nl->items[i], sel[i])) {
            list_free(nl);
            return SL_ENOMEM;
        }
        nl->n = i + 1;
    }
    list_free(dst);
    *dstp = nl;
    return 0;
}

/* ---- the monoid ----------------------------------------------------------- */

static bool is_heap(schema_agg_t a)
{
    return a == SCHEMA_AGG_FIRST || a == SCHEMA_AGG_LAST || a == SCHEMA_AGG_LAST_N ||
           a == SCHEMA_AGG_APPROX_DISTINCT || a == SCHEMA_AGG_APPROX_QUANTILE;
}

size_t agg__part_size(schema_agg_t a)
{
    switch (a) {
    case SCHEMA_AGG_COUNT: return offsetof(agg_part_t, v);
    case SCHEMA_AGG_SUM:
    case SCHEMA_AGG_MIN:
    case SCHEMA_AGG_MAX:
    case SCHEMA_AGG_MEAN: return offsetof(agg_part_t, x);
    case SCHEMA_AGG_LAST_N:
    case SCHEMA_AGG_APPROX_DISTINCT:
    case SCHEMA_AGG_APPROX_QUANTILE: return offsetof(agg_part_t, t);
    case SCHEMA_AGG_FIRST:
    case SCHEMA_AGG_LAST: return offsetof(agg_part_t, m);
    case SCHEMA_AGG_DECAYED_SUM:
    case SCHEMA_AGG_DECAYED_COUNT: return offsetof(agg_part_t, m2);
    default: return sizeof(agg_part_t);
    }
}

void agg__part_clear(const agg__feature_t *f, agg_part_t *p)
{
    if (is_heap(f->agg) && p->x) {
        switch (f->agg) {
        case SCHEMA_AGG_FIRST:
        case SCHEMA_AGG_LAST:
            free(((agg__sv_t *)p->x)->s);
            free(p->x);
            break;
        case SCHEMA_AGG_LAST_N: list_free(p->x); break;
        case SCHEMA_AGG_APPROX_DISTINCT: agg__hll_free(p->x); break;
        case SCHEMA_AGG_APPROX_QUANTILE: agg__dds_free(p->x); break;
        default: break;
        }
    }
    memset(p, 0, f->psize);
}

static inline double decay(const agg__feature_t *f, int64_t dt)
{
    return exp2(-(double)dt / f->half_life_ms);
}

static inline bool is_float(const agg__feature_t *f)
{
    return f->vk == AGG__VK_DOUBLE;
}

int agg__part_add(const agg__feature_t *f, agg_part_t *p, const agg__in_t *in)
{
    int rc = 0;
    if (is_float(f) && isnan(in->d) && f->agg != SCHEMA_AGG_FIRST && f->agg != SCHEMA_AGG_LAST &&
        f->agg != SCHEMA_AGG_LAST_N && f->agg != SCHEMA_AGG_COUNT && f->agg != SCHEMA_AGG_DECAYED_COUNT)
        return 0;
    switch (f->agg) {
    case SCHEMA_AGG_COUNT:
        break;
    case SCHEMA_AGG_SUM:
    case SCHEMA_AGG_MEAN:
        if (is_float(f))
            p->v.d += in->d;
        else
            p->v.i = (int64_t)((uint64_t)p->v.i + (uint64_t)in->i);
        break;
    case SCHEMA_AGG_MIN:
        if (is_float(f)) {
            if (!p->n || in->d < p->v.d)
                p->v.d = in->d;
        } else if (!p->n || in->i < p->v.i) {
            p->v.i = in->i;
        }
        break;
    case SCHEMA_AGG_MAX:
        if (is_float(f)) {
            if (!p->n || in->d > p->v.d)
                p->v.d = in->d;
        } else if (!p->n || in->i > p->v.i) {
            p->v.i = in->i;
        }
        break;
    case SCHEMA_AGG_FIRST:
    case SCHEMA_AGG_LAST: {
        bool take = !p->n || (f->agg == SCHEMA_AGG_FIRST ? in->t < p->t : in->t >= p->t);
        if (take) {
            agg__sv_t *sv = part_sv(p);
            if (!sv)
                return SL_ENOMEM;
            if ((rc = sv_set(f, sv, in)))
                return rc;
            p->t = in->t;
        }
        break;
    }
    case SCHEMA_AGG_LAST_N:
        if (!p->x && !(p->x = list_new(f->last_n)))
            return SL_ENOMEM;
        if ((rc = list_add(f, p->x, in)))
            return rc;
        break;
    case SCHEMA_AGG_VARIANCE:
    case SCHEMA_AGG_STDDEV: {
        double x = is_float(f) ? in->d : (double)in->i;
        double n1 = (double)(p->n + 1);
        double delta = x - p->m;
        p->m += delta / n1;
        p->m2 += delta * (x - p->m);
        break;
    }
    case SCHEMA_AGG_APPROX_DISTINCT: {
        agg_hll_t *h = p->x;
        rc = agg__hll_add(&h, in->hash);
        p->x = h;
        if (rc)
            return rc;
        break;
    }
    case SCHEMA_AGG_APPROX_QUANTILE:
        if (!p->x && !(p->x = agg__dds_new()))
            return SL_ENOMEM;
        if ((rc = agg__dds_add(p->x, is_float(f) ? in->d : (double)in->i)))
            return rc;
        break;
    case SCHEMA_AGG_DECAYED_SUM:
    case SCHEMA_AGG_DECAYED_COUNT: {
        double x = f->agg == SCHEMA_AGG_DECAYED_COUNT ? 1.0 : is_float(f) ? in->d : (double)in->i;
        if (!p->n) {
            p->t = in->t;
            p->m = x;
        } else if (in->t > p->t) {
            p->m = p->m * decay(f, in->t - p->t) + x;
            p->t = in->t;
        } else {
            p->m += x * decay(f, p->t - in->t);
        }
        break;
    }
    default:
        break;
    }
    if (!p->n || in->t > p->tmax)
        p->tmax = in->t;
    p->n++;
    return 0;
}

int agg__part_merge(const agg__feature_t *f, agg_part_t *dst, const agg_part_t *src)
{
    int rc = 0;
    COUNT_OP();
    if (!src->n)
        return 0;
    if (!dst->n && !is_heap(f->agg)) {
        memcpy(dst, src, f->psize);
        return 0;
    }
    if (!dst->n)
        return agg__part_copy(f, dst, src);
    switch (f->agg) {
    case SCHEMA_AGG_COUNT:
        break;
    case SCHEMA_AGG_SUM:
    case SCHEMA_AGG_MEAN:
        if (is_float(f))
            dst->v.d += src->v.d;
        else
            dst->v.i = (int64_t)((uint64_t)dst->v.i + (uint64_t)src->v.i);
        break;
    case SCHEMA_AGG_MIN:
        if (is_float(f) ? src->v.d < dst->v.d : src->v.i < dst->v.i)
            dst->v = src->v;
        break;
    case SCHEMA_AGG_MAX:
        if (is_float(f) ? src->v.d > dst->v.d : src->v.i > dst->v.i)
            dst->v = src->v;
        break;
    case SCHEMA_AGG_FIRST:
    case SCHEMA_AGG_LAST:
        if (f->agg == SCHEMA_AGG_FIRST ? src->t < dst->t : src->t >= dst->t) {
            if ((rc = sv_copy(dst->x, src->x)))
                return rc;
            dst->t = src->t;
        }
        break;
    case SCHEMA_AGG_LAST_N:
        if ((rc = list_merge((agg__list_t **)&dst->x, src->x, (uint32_t)f->last_n)))
            return rc;
        break;
    case SCHEMA_AGG_VARIANCE:
    case SCHEMA_AGG_STDDEV: {
        double na = (double)dst->n, nb = (double)src->n, n = na + nb;
        double delta = src->m - dst->m;
        dst->m += delta * (nb / n);
        dst->m2 += src->m2 + delta * delta * (na * nb / n);
        break;
    }
    case SCHEMA_AGG_APPROX_DISTINCT: {
        agg_hll_t *h = dst->x;
        rc = agg__hll_merge(&h, src->x);
        dst->x = h;
        if (rc)
            return rc;
        break;
    }
    case SCHEMA_AGG_APPROX_QUANTILE:
        if ((rc = agg__dds_merge(dst->x, src->x)))
            return rc;
        break;
    case SCHEMA_AGG_DECAYED_SUM:
    case SCHEMA_AGG_DECAYED_COUNT:
        if (src->t > dst->t) {
            dst->m = dst->m * decay(f, src->t - dst->t) + src->m;
            dst->t = src->t;
        } else {
            dst->m += src->m * decay(f, dst->t - src->t);
        }
        break;
    default:
        break;
    }
    if (src->tmax > dst->tmax)
        dst->tmax = src->tmax;
    dst->n += src->n;
    return 0;
}

int agg__part_copy(const agg__feature_t *f, agg_part_t *dst, const agg_part_t *src)
{
    COUNT_OP();
    memcpy(dst, src, f->psize);
    if (!is_heap(f->agg))
        return 0;
    dst->x = NULL;
    if (!src->x)
        return 0;
    switch (f->agg) {
    case SCHEMA_AGG_FIRST:
    case SCHEMA_AGG_LAST: {
        agg__sv_t *sv = calloc(1, sizeof(*sv));
        if (!sv || sv_copy(sv, src->x)) {
            free(sv);
            goto nomem;
        }
        dst->x = sv;
        break;
    }
    case SCHEMA_AGG_LAST_N: {
        agg__list_t *l = NULL;
        if (list_merge(&l, src->x, (uint32_t)f->last_n))
            goto nomem;
        dst->x = l;
        break;
    }
    case SCHEMA_AGG_APPROX_DISTINCT:
        if (!(dst->x = agg__hll_copy(src->x)))
            goto nomem;
        break;
    case SCHEMA_AGG_APPROX_QUANTILE:
        if (!(dst->x = agg__dds_copy(src->x)))
            goto nomem;
        break;
    default:
        break;
    }
    return 0;
nomem:
    memset(dst, 0, f->psize);
    return SL_ENOMEM;
}

/* ---- results --------------------------------------------------------------- */

static void set_num(const agg__feature_t *f, agg_value_t *out, int64_t i, double d)
{
    if (is_float(f)) {
        out->type = AGG_VAL_DOUBLE;
        out->d = d;
    } else {
        out->type = AGG_VAL_INT;
        out->i = i;
    }
}

void agg__part_result(const agg__feature_t *f, const agg_part_t *a, const agg_part_t *b,
                      int64_t t, agg__scratch_t *sc, agg_scalar_t *items, agg_value_t *out)
{
    memset(out, 0, sizeof(*out));
    if (b && !b->n)
        b = NULL;
    if (!a->n && b) {
        a = b;
        b = NULL;
    }
    int64_t n = a->n + (b ? b->n : 0);
    out->newest_event_ms = !n ? 0 : b && b->tmax > a->tmax ? b->tmax : a->tmax;

    switch (f->agg) {
    case SCHEMA_AGG_COUNT:
        out->type = AGG_VAL_INT;
        out->i = n;
        return;
    case SCHEMA_AGG_SUM:
        set_num(f, out, (int64_t)((uint64_t)a->v.i + (b ? (uint64_t)b->v.i : 0)),
                a->v.d + (b ? b->v.d : 0.0));
        return;
    case SCHEMA_AGG_DECAYED_SUM:
    case SCHEMA_AGG_DECAYED_COUNT:
        out->type = AGG_VAL_DOUBLE;
        out->d = (a->n ? a->m * decay(f, t - a->t) : 0.0) + (b ? b->m * decay(f, t - b->t) : 0.0);
        return;
    case SCHEMA_AGG_APPROX_DISTINCT:
        out->type = AGG_VAL_INT;
        out->i = n ? (int64_t)llround(agg__hll_estimate2(a->x, b ? b->x : NULL, sc->regs)) : 0;
        return;
    case SCHEMA_AGG_LAST_N: {
        const agg__sv_t *sel[f->last_n];
        uint32_t k = n ? list_select(a->x, b ? b->x : NULL, (uint32_t)f->last_n, sel) : 0;
        for (uint32_t i = 0; i < k; i++)
            sv_scalar(f, sel[i], &items[i]);
        out->type = AGG_VAL_LIST;
        out->items = items;
        out->n_items = k;
        return;
    }
    default:
        break;
    }
    if (!n)
        return;                                 /* NULL */
    switch (f->agg) {
    case SCHEMA_AGG_MIN:
    case SCHEMA_AGG_MAX: {
        const agg_part_t *w = a;
        if (b) {
            bool bmin = is_float(f) ? b->v.d < a->v.d : b->v.i < a->v.i;
            bool bmax = is_float(f) ? b->v.d > a->v.d : b->v.i > a->v.i;
            if (f->agg == SCHEMA_AGG_MIN ? bmin : bmax)
                w = b;
        }
        set_num(f, out, w->v.i, w->v.d);
        return;
    }
    case SCHEMA_AGG_MEAN:
        out->type = AGG_VAL_DOUBLE;
        out->d = is_float(f) ? (a->v.d + (b ? b->v.d : 0.0)) / (double)n
                             : (double)(int64_t)((uint64_t)a->v.i + (b ? (uint64_t)b->v.i : 0)) / (double)n;
        return;
    case SCHEMA_AGG_FIRST:
    case SCHEMA_AGG_LAST: {
        const agg_part_t *w = a;
        if (b && (f->agg == SCHEMA_AGG_FIRST ? b->t < a->t : b->t >= a->t))
            w = b;
        agg_scalar_t sc1;
        sv_scalar(f, w->x, &sc1);
        out->type = sc1.type;
        out->i = sc1.i;
        out->d = sc1.d;
        out->s = sc1.s;
        out->slen = sc1.slen;
        return;
    }
    case SCHEMA_AGG_VARIANCE:
    case SCHEMA_AGG_STDDEV: {
        double m2 = a->m2;
        if (b) {
            double na = (double)a->n, nb = (double)b->n;
            double delta = b->m - a->m;
            m2 = a->m2 + b->m2 + delta * delta * (na * nb / (na + nb));
        }
        double var = m2 / (double)n;
        if (var < 0)
            var = 0;
        out->type = AGG_VAL_DOUBLE;
        out->d = f->agg == SCHEMA_AGG_STDDEV ? sqrt(var) : var;
        return;
    }
    case SCHEMA_AGG_APPROX_QUANTILE: {
        double v;
        if (agg__dds_quantile2(a->x, b ? b->x : NULL, f->quantile, &v)) {
            out->type = AGG_VAL_DOUBLE;
            out->d = v;
        }
        return;
    }
    default:
        return;
    }
}

/* ---- encoding --------------------------------------------------------------- */

/* Times are stored relative to a base the container knows (tile start,
 * session start, 0 for lifetime): small varints instead of 6-byte ones. */
static int time_put(sl_buf_t *buf, int64_t t, int64_t base)
{
    return sl_buf_put_svarint(buf, t - base);
}

static int time_get(sl_reader_t *r, int64_t base, int64_t *t)
{
    int64_t d;
    int rc = sl_read_svarint(r, &d);
    if (rc)
        return rc;
    if (d > 2 * AGG_TIME_LIMIT || d < -2 * AGG_TIME_LIMIT)
        return SL_ECORRUPT;
    d += base;                              /* |base| <= 2^60: no overflow */
    if (d > AGG_TIME_LIMIT || d < -AGG_TIME_LIMIT)
        return SL_ECORRUPT;
    *t = d;
    return 0;
}

static int sv_encode(const agg__feature_t *f, const agg__sv_t *sv, int64_t base, sl_buf_t *buf)
{
    int rc;
    if ((rc = time_put(buf, sv->t, base)))
        return rc;
    switch (f->vk) {
    case AGG__VK_STRING: return sl_buf_put_bytes(buf, sv->s ? sv->s : "", sv->slen);
    case AGG__VK_DOUBLE: return sl_buf_put_double(buf, sv->v.d);
    default: return sl_buf_put_svarint(buf, sv->v.i);
    }
}

static int sv_decode(const agg__feature_t *f, sl_reader_t *r, int64_t base, agg__sv_t *sv)
{
    int rc;
    if ((rc = time_get(r, base, &sv->t)))
        return rc;
    switch (f->vk) {
    case AGG__VK_STRING: {
        const void *p;
        size_t n;
        if ((rc = sl_read_bytes(r, &p, &n)))
            return rc;
        if (n > AGG_STR_MAX)
            return SL_ECORRUPT;
        sv->s = malloc(n ? n : 1);
        if (!sv->s)
            return SL_ENOMEM;
        memcpy(sv->s, p, n);
        sv->slen = (uint32_t)n;
        return 0;
    }
    case AGG__VK_DOUBLE: return sl_read_double(r, &sv->v.d);
    default: return sl_read_svarint(r, &sv->v.i);
    }
}

/* The part of a partial after n and tmax, for the aggregates that are not
 * written raw by agg__part_encode. */
static int part_encode_tail(const agg__feature_t *f, const agg_part_t *p, int64_t base,
                            sl_buf_t *buf)
{
    int rc;
    switch (f->agg) {
    case SCHEMA_AGG_FIRST:
    case SCHEMA_AGG_LAST:
        return sv_encode(f, p->x, base, buf);
    case SCHEMA_AGG_LAST_N: {
        const agg__list_t *l = p->x;
        if ((rc = sl_buf_put_varint(buf, l->n)))
            return rc;
        for (uint32_t i = 0; i < l->n; i++)
            if ((rc = sv_encode(f, &l->items[i], base, buf)))
                return rc;
        return 0;
    }
    case SCHEMA_AGG_VARIANCE:
    case SCHEMA_AGG_STDDEV:
        if ((rc = sl_buf_put_double(buf, p->m)))
            return rc;
        return sl_buf_put_double(buf, p->m2);
    case SCHEMA_AGG_APPROX_DISTINCT:
        return agg__hll_encode(p->x, buf);
    case SCHEMA_AGG_APPROX_QUANTILE:
        return agg__dds_encode(p->x, buf);
    case SCHEMA_AGG_DECAYED_SUM:
    case SCHEMA_AGG_DECAYED_COUNT:
        if ((rc = time_put(buf, p->t, base)))
            return rc;
        return sl_buf_put_double(buf, p->m);
    default:
        return SL_EINVAL;
    }
}

static int num_decode(const agg__feature_t *f, sl_reader_t *r, agg_part_t *p)
{
    return is_float(f) ? sl_read_double(r, &p->v.d) : sl_read_svarint(r, &p->v.i);
}

int agg__part_encode(const agg__feature_t *f, const agg_part_t *p, int64_t base, sl_buf_t *buf)
{
    int rc;
    /* n, tmax and the fixed-size tail of every non-heap aggregate: at most
     * 10 + 10 + 10 + 8 bytes, written raw after one capacity check */
    if ((rc = agg__room(buf, 40)))
        return rc;
    unsigned char *w = buf->data + buf->len;
    w = agg__w_varint(w, (uint64_t)p->n);
    if (!p->n) {
        buf->len = (size_t)(w - buf->data);
        return 0;
    }
    w = agg__w_svarint(w, p->tmax - base);
    switch (f->agg) {
    case SCHEMA_AGG_COUNT:
        break;
    case SCHEMA_AGG_SUM:
    case SCHEMA_AGG_MEAN:
    case SCHEMA_AGG_MIN:
    case SCHEMA_AGG_MAX: {
        if (is_float(f)) {
            uint64_t u;
            memcpy(&u, &p->v.d, 8);
            w = agg__w_u64be(w, u);
        } else {
            w = agg__w_svarint(w, p->v.i);
        }
        break;
    }
    case SCHEMA_AGG_VARIANCE:
    case SCHEMA_AGG_STDDEV:
    case SCHEMA_AGG_DECAYED_SUM:
    case SCHEMA_AGG_DECAYED_COUNT:
    case SCHEMA_AGG_FIRST:
    case SCHEMA_AGG_LAST:
    case SCHEMA_AGG_LAST_N:
    case SCHEMA_AGG_APPROX_DISTINCT:
    case SCHEMA_AGG_APPROX_QUANTILE:
        buf->len = (size_t)(w - buf->data);
        return part_encode_tail(f, p, base, buf);
    default:
        return SL_EINVAL;
    }
    buf->len = (size_t)(w - buf->data);
    return 0;
}

/* On failure *p is left clear. */
int agg__part_decode(const agg__feature_t *f, sl_reader_t *r, int64_t base, agg_part_t *p, int ver)
{
    uint64_t n;
    int rc;

    memset(p, 0, f->psize);
    if ((rc = sl_read_varint(r, &n)))
        return rc;
    if (!n)
        return 0;
    if (n > AGG_COUNT_LIMIT)
        return SL_ECORRUPT;
    if ((rc = time_get(r, base, &p->tmax)))
        return rc;
    switch (f->agg) {
    case SCHEMA_AGG_COUNT:
        break;
    case SCHEMA_AGG_SUM:
    case SCHEMA_AGG_MEAN:
    case SCHEMA_AGG_MIN:
    case SCHEMA_AGG_MAX:
        rc = num_decode(f, r, p);
        break;
    case SCHEMA_AGG_FIRST:
    case SCHEMA_AGG_LAST: {
        agg__sv_t *sv = calloc(1, sizeof(*sv));
        if (!sv)
            return SL_ENOMEM;
        p->x = sv;
        p->n = 1;                      /* so that clear frees x */
        rc = sv_decode(f, r, base, sv);
        p->t = sv->t;
        if (!rc && (f->agg == SCHEMA_AGG_LAST ? sv->t != p->tmax : sv->t > p->tmax))
            rc = SL_ECORRUPT;
        break;
    }
    case SCHEMA_AGG_LAST_N: {
        uint64_t k;
        if ((rc = sl_read_varint(r, &k)))
            break;
        if (k == 0 || k > (uint64_t)f->last_n || k > n) {
            rc = SL_ECORRUPT;
            break;
        }
        agg__list_t *l = list_new(f->last_n);
        if (!l)
            return SL_ENOMEM;
        p->x = l;
        p->n = 1;
        for (uint32_t i = 0; i < k && !rc; i++) {
            rc = sv_decode(f, r, base, &l->items[i]);
            l->n = i + 1;
            if (!rc && ((i && l->items[i].t < l->items[i - 1].t) || l->items[i].t > p->tmax))
                rc = SL_ECORRUPT;
        }
        break;
    }
    case SCHEMA_AGG_VARIANCE:
    case SCHEMA_AGG_STDDEV:
        if (!(rc = sl_read_double(r, &p->m)))
            rc = sl_read_double(r, &p->m2);
        break;
    case SCHEMA_AGG_APPROX_DISTINCT: {
        agg_hll_t *h;
        rc = agg__hll_decode(r, &h, ver);
        p->x = h;
        p->n = 1;
        break;
    }
    case SCHEMA_AGG_APPROX_QUANTILE: {
        agg_dds_t *d;
        rc = agg__dds_decode(r, &d);
        p->x = d;
        p->n = 1;
        break;
    }
    case SCHEMA_AGG_DECAYED_SUM:
    case SCHEMA_AGG_DECAYED_COUNT:
        if (!(rc = time_get(r, base, &p->t)))
            rc = sl_read_double(r, &p->m);
        break;
    default:
        rc = SL_ECORRUPT;
        break;
    }
    if (!rc && is_heap(f->agg) && !p->x)
        rc = SL_ECORRUPT;
    if (rc) {
        agg__part_clear(f, p);
        return rc;
    }
    p->n = (int64_t)n;
    return 0;
}

size_t agg__part_mem(const agg__feature_t *f, const agg_part_t *p)
{
    if (!is_heap(f->agg) || !p->x)
        return 0;
    switch (f->agg) {
    case SCHEMA_AGG_FIRST:
    case SCHEMA_AGG_LAST:
        return sizeof(agg__sv_t) + ((agg__sv_t *)p->x)->slen;
    case SCHEMA_AGG_LAST_N: {
        const agg__list_t *l = p->x;
        size_t m = sizeof(*l) + l->cap * sizeof(agg__sv_t);
        for (uint32_t i = 0; i < l->n; i++)
            m += l->items[i].slen;
        return m;
    }
    case SCHEMA_AGG_APPROX_DISTINCT: return agg__hll_mem(p->x);
    case SCHEMA_AGG_APPROX_QUANTILE: return agg__dds_mem(p->x);
    default: return 0;
    }
}
