/*
 * agg_internal.h — shared inside aggregates/ only: the partial aggregate
 * (monoid element), the sketches, and the compiled plan.
 */
#ifndef AGG_INTERNAL_H
#define AGG_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#include "agg.h"
#include "sl_buf.h"

/* Format version of agg_entity_encode output: 3 keeps sparse approx_distinct
 * sketches as 32-bit codes (agg_sketch.c). 2 kept them as 64-bit hashes and
 * is still decoded; 1 was a pre-release layout (absolute times inside
 * partials) and is refused with SL_EVERSION, as is any newer version. */
#define AGG_FORMAT_VERSION 3
#define AGG_FORMAT_OLDEST 2         /* the oldest version decode still reads */

/* Event times must lie in [-AGG_TIME_LIMIT, AGG_TIME_LIMIT] (about +-36 million
 * years), which keeps every time difference inside int64. */
#define AGG_TIME_LIMIT ((int64_t)1 << 60)

/* Decoded event counts above this are corrupt (keeps sums of counts exact). */
#define AGG_COUNT_LIMIT ((uint64_t)1 << 44)

/* ---- raw writers for the hot encoders -------------------------------------
 * The byte formats of sl_buf_put_varint / _svarint / _u64be / _double,
 * written straight into room the caller made with agg__room (one capacity
 * check per partial instead of one call per field; state encoding runs once
 * per dirty entity per commit). */

/* Ensures `extra` free bytes at buf->data + buf->len; 0 or SL_ENOMEM. */
static inline int agg__room(sl_buf_t *buf, size_t extra)
{
    return buf->cap - buf->len >= extra ? 0 : sl_buf_reserve(buf, extra);
}

static inline unsigned char *agg__w_varint(unsigned char *p, uint64_t v)
{
    while (v >= 0x80) {
        *p++ = (unsigned char)(v | 0x80);
        v >>= 7;
    }
    *p++ = (unsigned char)v;
    return p;
}

static inline unsigned char *agg__w_svarint(unsigned char *p, int64_t v)
{
    return agg__w_varint(p, ((uint64_t)v << 1) ^ (uint64_t)(v >> 63));
}

static inline unsigned char *agg__w_u64be(unsigned char *p, uint64_t v)
{
    sl_store_u64be(p, v);
    return p + 8;
}

/* ---- sketches (agg_sketch.c) --------------------------------------------- */

/* approx_distinct: a set of up to AGG_HLL_SPARSE_MAX 32-bit codes of the
 * hashes (exact counts unless two share their top 25 bits), then a dense
 * HyperLogLog with 2^AGG_HLL_P one-byte registers. */
#define AGG_HLL_P 12
#define AGG_HLL_M (1u << AGG_HLL_P)
#define AGG_HLL_SPARSE_MAX 64

typedef struct agg_hll agg_hll_t;     /* one allocation (agg_sketch.c) */
agg_hll_t *agg__hll_new(void);
void agg__hll_free(agg_hll_t *h);
agg_hll_t *agg__hll_copy(const agg_hll_t *h);
/* add and merge may move the sketch (it grows in place of *hp); add makes
 * one when *hp is NULL. 0 or SL_ENOMEM (then *hp is as before). */
int agg__hll_add(agg_hll_t **hp, uint64_t hash);
/* Memory hint: starts loading the sparse codes past the block's first
 * three lines (an add scans them; agg__win_prefetch starts those three
 * one level earlier, from the tile's pointer). */
void agg__hll_prefetch(const agg_hll_t *h);
int agg__hll_merge(agg_hll_t **dstp, const agg_hll_t *src);
/* Estimate of the union of a and b (b may be NULL); `regs` is AGG_HLL_M bytes
 * of scratch. */
double agg__hll_estimate2(const agg_hll_t *a, const agg_hll_t *b, uint8_t *regs);
int agg__hll_encode(const agg_hll_t *h, sl_buf_t *buf);
/* ver: the state's format version (2: sparse sketches as 64-bit hashes,
 * turned into codes here). */
int agg__hll_decode(sl_reader_t *r, agg_hll_t **out, int ver);
size_t agg__hll_mem(const agg_hll_t *h);

/* approx_quantile: DDSketch with relative accuracy AGG_DDS_ALPHA. */
#define AGG_DDS_ALPHA 0.01
#define AGG_DDS_MIN_ABS 1e-12      /* |x| below this counts as zero */
#define AGG_DDS_MAX_BUCKETS 4096   /* per sign; lowest buckets collapse beyond */

typedef struct agg_dds agg_dds_t;
agg_dds_t *agg__dds_new(void);
void agg__dds_free(agg_dds_t *d);
agg_dds_t *agg__dds_copy(const agg_dds_t *d);
int agg__dds_add(agg_dds_t *d, double x);
int agg__dds_merge(agg_dds_t *dst, const agg_dds_t *src);
/* q-quantile (rank floor(q * (n - 1)), 0-based) of the union of a and b (b may
 * be NULL); false when both are empty. */
bool agg__dds_quantile2(const agg_dds_t *a, const agg_dds_t *b, double q, double *out);
int agg__dds_encode(const agg_dds_t *d, sl_buf_t *buf);
int agg__dds_decode(sl_reader_t *r, agg_dds_t **out);
size_t agg__dds_mem(const agg_dds_t *d);

/* ---- the plan ------------------------------------------------------------ */

/* What kind of value a feature's input field carries. */
typedef enum {
    AGG__VK_NONE = 0,   /* count, decayed_count: no field */
    AGG__VK_INT,
    AGG__VK_DOUBLE,
    AGG__VK_STRING,
    AGG__VK_BOOL,
} agg__vkind_t;

typedef struct agg__feature {
    schema_agg_t agg;
    schema_window_kind_t wkind;
    int field;              /* -1 for count / decayed_count */
    agg__vkind_t vk;
    int64_t hop_ms;         /* sliding: hop; tumbling: size */
    int64_t ntiles;         /* W: tiles per window (1 for tumbling) */
    int64_t gap_ms, max_len_ms;
    int last_n;
    double quantile;
    double half_life_ms;
    int sessions_kept;
    uint32_t psize;         /* agg__part_size(agg) */
    uint32_t tsize;         /* bytes per stored tile: idx + two partials */
} agg__feature_t;

struct agg_plan {
    const schema_t *schema;
    int view;
    uint64_t fingerprint;
    size_t n_features;
    agg__feature_t *f;
    int max_last_n;
};

/* ---- partials (agg_part.c) ----------------------------------------------- */

/* One value as stored inside partials (first/last/last_n). */
typedef struct agg__sv {
    int64_t t;
    union { int64_t i; double d; } v;
    char *s;                /* owned copy for strings, NUL-free length slen */
    uint32_t slen;
} agg__sv_t;

/* The last_n list: up to cap values sorted by time, oldest first. */
typedef struct agg__list {
    uint32_t n, cap;
    agg__sv_t items[];
} agg__list_t;

/* A partial aggregate: the monoid element of one feature over some set of
 * events. Which fields mean what depends on the feature's aggregate:
 *   n    number of values taken (every aggregate)
 *   tmax newest event time taken (every aggregate)
 *   v    sum (int or double), min, max, first/last typed value
 *   x    heap part: first/last value (agg__sv_t), last_n list, HLL, DDSketch
 *   t    first/last time; decayed: reference time of m
 *   m    variance: mean; decayed: sum scaled to time t
 *   m2   variance: sum of squared deviations
 * n == 0 means empty, and then no heap part is held.
 *
 * The fields are ordered so that each aggregate uses a PREFIX of the struct
 * (agg__part_size): tiles store only that prefix (a count tile is 16 bytes,
 * not 56), so code handling tile partials must never touch fields beyond
 * f->psize — agg_part.c only reads and writes the fields of f->agg. */
typedef struct agg_part {
    int64_t n;
    int64_t tmax;
    union { int64_t i; double d; } v;
    void *x;
    int64_t t;
    double m, m2;
} agg_part_t;

/* Bytes of agg_part_t an aggregate uses (a multiple of 8). */
size_t agg__part_size(schema_agg_t a);

/* An input value already converted to the feature's kind. */
typedef struct agg__in {
    int64_t t;
    int64_t i;
    double d;
    const char *s;
    size_t slen;
    uint64_t hash;          /* approx_distinct */
} agg__in_t;

void agg__part_clear(const agg__feature_t *f, agg_part_t *p);
int agg__part_add(const agg__feature_t *f, agg_part_t *p, const agg__in_t *in);
int agg__part_merge(const agg__feature_t *f, agg_part_t *dst, const agg_part_t *src);
/* dst := src (deep); dst must be clear. */
int agg__part_copy(const agg__feature_t *f, agg_part_t *dst, const agg_part_t *src);

/* Scratch used by a query (the entity's, so queries need one owner). */
typedef struct agg__scratch {
    uint8_t *regs;          /* AGG_HLL_M bytes, when the plan has approx_distinct */
} agg__scratch_t;

/* The value of a ⊕ b (b may be NULL) as of t, without building the merge. */
void agg__part_result(const agg__feature_t *f, const agg_part_t *a, const agg_part_t *b,
                      int64_t t, agg__scratch_t *sc, agg_scalar_t *items, agg_value_t *out);
/* Event times inside the partial are written relative to `base`. */
int agg__part_encode(const agg__feature_t *f, const agg_part_t *p, int64_t base, sl_buf_t *buf);
int agg__part_decode(const agg__feature_t *f, sl_reader_t *r, int64_t base, agg_part_t *p, int ver);
size_t agg__part_mem(const agg__feature_t *f, const agg_part_t *p);

#endif
