/*
 * agg_test_util.h — hand-built schemas and a brute-force oracle for the
 * window engine tests.
 *
 * The oracle keeps every accepted raw event (in arrival order) and computes
 * each feature from scratch at a query time, following the semantics written
 * in docs/aggregates.md; it shares no code with aggregates/.
 */
#ifndef AGG_TEST_UTIL_H
#define AGG_TEST_UTIL_H

#include <stdint.h>
#include <stdbool.h>
#include <stddef.h>

#include "agg.h"
#include "schema.h"

/* Source fields of the test schema. */
enum { TF_TS = 0, TF_VI, TF_VD, TF_VS, TF_VB, TF__COUNT };

typedef struct tfeat {
    schema_agg_t agg;
    int field;              /* TF_* or -1 */
    int n;                  /* last_n */
    double q;               /* quantile */
    int64_t half_life_ms;
} tfeat_t;

/* A one-view schema whose features all use window `w`. Free with
 * tschema_free. */
schema_t *tschema_new(const tfeat_t *feats, size_t n, schema_window_t w, int sessions_kept);
void tschema_free(schema_t *s);

/* The standard feature list covering every aggregate on every field kind. */
extern const tfeat_t tfeat_all[];
extern const size_t tfeat_all_n;

/* One raw event as the oracle keeps it. */
typedef struct tev {
    int64_t t;
    bool has_i, has_d, has_s, has_b;
    int64_t vi;
    double vd;
    char vs[16];
    bool vb;
} tev_t;

/* Builds an agg_event_t for ev in `fields` (TF__COUNT slots). */
void tev_to_event(const tev_t *ev, agg_input_t *fields, agg_event_t *out);

typedef struct oracle {
    tev_t *ev;
    size_t n, cap;
} oracle_t;

void oracle_add(oracle_t *o, const tev_t *ev);
void oracle_free(oracle_t *o);

/* Expected value of feature `fi` of schema view 0 at time t. Strings point
 * into the oracle; list items into `items` (at least n slots). For
 * approx_distinct the exact distinct count, for approx_quantile the exact
 * rank value. */
void oracle_query(const oracle_t *o, const schema_t *s, size_t fi, int64_t t,
                  agg_scalar_t *items, agg_value_t *out);

/* Completed sessions of feature fi as of the newest event, newest first. */
size_t oracle_sessions(const oracle_t *o, const schema_t *s, size_t fi, agg_session_t *out,
                       size_t max);
/* The open session at t; false if none. */
bool oracle_open_session(const oracle_t *o, const schema_t *s, size_t fi, int64_t t,
                         agg_session_t *out);

/* Deterministic PRNG (splitmix64). */
static inline uint64_t trand(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static inline int64_t trange(uint64_t *s, int64_t lo, int64_t hi)   /* [lo, hi] */
{
    return lo + (int64_t)(trand(s) % (uint64_t)(hi - lo + 1));
}

int64_t tfloor_div(int64_t a, int64_t b);

#endif
