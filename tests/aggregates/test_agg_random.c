/*
 * test_agg_random.c — thousands of random event streams through the window
 * engine, checked against the brute-force oracle of agg_test_util.c.
 *
 * Each stream draws a window (kind and geometry), a lateness policy, event
 * times (negative ones too), field values (some missing), arrival disorder
 * and a few far-too-late events; it then feeds the stream in arrival order,
 * expecting SL_ELATE exactly for events older than accept_from, calls expire
 * now and then, and at random points queries every feature at random times
 * >= accept_from, and round-trips the state through encode/decode (the
 * decoded entity must answer bit-for-bit like the original, and the stream
 * continues on it; the memory hints, run before, must not change its bytes).
 *
 * Exactness: double values are multiples of 1/8 below 1000 in magnitude, so
 * every sum of them is exact in binary64 whatever the grouping: sum, mean,
 * min, max, first, last, last_n, count must be EQUAL to the oracle. Variance
 * (Chan merges vs a two-pass oracle) and decayed sums (exp2 per tile vs per
 * event) involve rounding in different orders, so they are compared with a
 * relative tolerance of 1e-9. A separate test uses arbitrary doubles and
 * allows reassociation error for sums (1e-9 relative). Sketches are held to
 * their stated bounds: approx_distinct exact up to 64 distinct values, within
 * 6.5 % (4 sigma of HLL at m = 4096) above; approx_quantile within 1 %
 * relative of the exact rank value.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agg_test_util.h"
#include "sl_buf.h"
#include "sl_err.h"

typedef struct stream_cfg {
    schema_window_t w;
    int kept;
    bool dyadic;
} stream_cfg_t;

static bool near(double g, double e, double rel, double abs_tol)
{
    if (isnan(g) || isnan(e))
        return isnan(g) && isnan(e);
    return fabs(g - e) <= rel * fabs(e) + abs_tol;
}

static bool scalar_eq(const agg_scalar_t *a, const agg_scalar_t *b)
{
    if (a->type != b->type)
        return false;
    switch (a->type) {
    case AGG_VAL_INT: return a->i == b->i;
    case AGG_VAL_DOUBLE: return a->d == b->d;
    case AGG_VAL_STRING: return a->slen == b->slen && !memcmp(a->s, b->s, a->slen);
    default: return true;
    }
}

static void describe(const agg_value_t *v, char *buf, size_t n)
{
    switch (v->type) {
    case AGG_VAL_NULL: snprintf(buf, n, "NULL"); break;
    case AGG_VAL_INT: snprintf(buf, n, "INT %lld", (long long)v->i); break;
    case AGG_VAL_DOUBLE: snprintf(buf, n, "DOUBLE %.17g", v->d); break;
    case AGG_VAL_STRING: snprintf(buf, n, "STRING %.*s", (int)v->slen, v->s); break;
    case AGG_VAL_LIST: snprintf(buf, n, "LIST[%zu]", v->n_items); break;
    }
}

/* Checks one feature against the oracle; returns false and explains. */
static bool check_value(const schema_feature_t *f, const agg_value_t *g, const agg_value_t *e,
                        bool dyadic, char *why, size_t whyn)
{
    char gs[96], es[96];
    bool ok = true;
    switch (f->agg) {
    case SCHEMA_AGG_APPROX_DISTINCT:
        ok = g->type == AGG_VAL_INT &&
             (e->i <= 64 ? g->i == e->i : fabs((double)(g->i - e->i)) <= 0.065 * (double)e->i);
        break;
    case SCHEMA_AGG_APPROX_QUANTILE:
        ok = g->type == e->type &&
             (e->type == AGG_VAL_NULL || near(g->d, e->d, 0.01 * (1 + 1e-9), 1e-12));
        break;
    case SCHEMA_AGG_VARIANCE:
    case SCHEMA_AGG_STDDEV: {
        double gv = f->agg == SCHEMA_AGG_STDDEV ? g->d * g->d : g->d;
        double ev = f->agg == SCHEMA_AGG_STDDEV ? e->d * e->d : e->d;
        ok = g->type == e->type && (e->type == AGG_VAL_NULL || near(gv, ev, 1e-9, 1e-6));
        break;
    }
    case SCHEMA_AGG_DECAYED_SUM:
    case SCHEMA_AGG_DECAYED_COUNT:
        ok = g->type == e->type && near(g->d, e->d, 1e-9, 1e-9);
        break;
    case SCHEMA_AGG_SUM:
    case SCHEMA_AGG_MEAN:
        if (!dyadic && e->type == AGG_VAL_DOUBLE) {
            ok = g->type == e->type && near(g->d, e->d, 1e-9, 1e-6);
            break;
        }
        /* fall through */
    default:
        if (g->type != e->type) {
            ok = false;
        } else if (g->type == AGG_VAL_LIST) {
            ok = g->n_items == e->n_items;
            for (size_t i = 0; ok && i < g->n_items; i++)
                ok = scalar_eq(&g->items[i], &e->items[i]);
        } else {
            agg_scalar_t a = { g->type, g->i, g->d, g->s, g->slen };
            agg_scalar_t b = { e->type, e->i, e->d, e->s, e->slen };
            ok = scalar_eq(&a, &b);
        }
        break;
    }
    if (ok && g->newest_event_ms != e->newest_event_ms) {
        snprintf(why, whyn, "newest_event_ms got %lld want %lld", (long long)g->newest_event_ms,
                 (long long)e->newest_event_ms);
        return false;
    }
    if (!ok) {
        describe(g, gs, sizeof(gs));
        describe(e, es, sizeof(es));
        snprintf(why, whyn, "got %s want %s", gs, es);
    }
    return ok;
}

/* Bit-for-bit equality of two engine answers (round trip). */
static bool value_same(const agg_value_t *a, const agg_value_t *b)
{
    if (a->type != b->type || a->newest_event_ms != b->newest_event_ms)
        return false;
    switch (a->type) {
    case AGG_VAL_INT: return a->i == b->i;
    case AGG_VAL_DOUBLE: return !memcmp(&a->d, &b->d, sizeof(double));
    case AGG_VAL_STRING: return a->slen == b->slen && !memcmp(a->s, b->s, a->slen);
    case AGG_VAL_LIST:
        if (a->n_items != b->n_items)
            return false;
        for (size_t i = 0; i < a->n_items; i++)
            if (!scalar_eq(&a->items[i], &b->items[i]))
                return false;
        return true;
    default: return true;
    }
}

typedef struct arrival {
    tev_t ev;
    int64_t key;
} arrival_t;

static int cmp_arrival(const void *a, const void *b)
{
    int64_t x = ((const arrival_t *)a)->key, y = ((const arrival_t *)b)->key;
    return x < y ? -1 : x > y;
}

static int64_t window_span(const schema_window_t *w)
{
    switch (w->kind) {
    case SCHEMA_WINDOW_SLIDING: return w->size_ms;
    case SCHEMA_WINDOW_TUMBLING: return w->size_ms;
    case SCHEMA_WINDOW_SESSION: return w->gap_ms * 4 + w->max_length_ms;
    default: return 100;
    }
}

static void run_stream(uint64_t seed, const stream_cfg_t *cfg)
{
    uint64_t rs = seed;
    schema_t *s = tschema_new(tfeat_all, tfeat_all_n, cfg->w, cfg->kept);
    agg_plan_t *plan = NULL;
    char err[256] = "";
    int rc = agg_plan_new(s, 0, &plan, err, sizeof(err));
    cr_assert_eq(rc, 0, "plan: %s", err);
    agg_entity_t *ent = agg_entity_new(plan);
    cr_assert(ent);
    oracle_t o = { 0 };
    size_t nf = tfeat_all_n;
    agg_value_t *got = calloc(nf, sizeof(agg_value_t)), *got2 = calloc(nf, sizeof(agg_value_t));
    agg_scalar_t items[16];

    /* the stream */
    size_t n = (size_t)trange(&rs, 1, 250);
    int64_t disorder = (int64_t[]){ 0, 5, 50, 400 }[trange(&rs, 0, 3)];
    int mode = (int)trange(&rs, 0, 2);           /* 0 accept all, 1 lateness D, 2 D/2 */
    int64_t lateness = mode == 1 ? disorder : disorder / 2;
    int64_t offset = trange(&rs, -3000, 3000);
    int64_t span = (int64_t[]){ 200, 2000, 20000 }[trange(&rs, 0, 2)];
    int64_t pool = (int64_t[]){ 5, 40, 200 }[trange(&rs, 0, 2)];
    arrival_t *arr = calloc(n, sizeof(arrival_t));
    for (size_t i = 0; i < n; i++) {
        tev_t *e = &arr[i].ev;
        e->t = offset + trange(&rs, 0, span);
        arr[i].key = e->t + trange(&rs, 0, disorder);
        if (trange(&rs, 0, 99) < 3)
            e->t -= trange(&rs, 0, 5 * disorder + 50);   /* likely too late */
        e->has_i = trange(&rs, 0, 9) > 0;
        e->has_d = trange(&rs, 0, 9) > 0;
        e->has_s = trange(&rs, 0, 9) > 0;
        e->has_b = trange(&rs, 0, 9) > 0;
        e->vi = trange(&rs, -1000, 1000);
        e->vd = cfg->dyadic ? (double)trange(&rs, -8000, 8000) / 8.0
                            : ((double)trand(&rs) / 18446744073709551616.0 - 0.3) * 1000.0;
        snprintf(e->vs, sizeof(e->vs), "s%lld", (long long)trange(&rs, 0, pool - 1));
        e->vb = trange(&rs, 0, 1);
        if (pool == 200)
            e->vi = trange(&rs, 0, 150);                  /* many distinct ints */
    }
    qsort(arr, n, sizeof(arrival_t), cmp_arrival);

    bool any = false;
    int64_t max_seen = 0, min_seen = 0;
    int64_t wspan = window_span(&cfg->w);
    for (size_t i = 0; i < n; i++) {
        const tev_t *e = &arr[i].ev;
        int64_t af = (mode == 0 || !any) ? INT64_MIN : max_seen - lateness;
        agg_input_t fields[TF__COUNT];
        agg_event_t ev;
        tev_to_event(e, fields, &ev);
        rc = agg_entity_update(plan, ent, &ev, af);
        if (e->t < af) {
            cr_assert_eq(rc, SL_ELATE, "seed %llu: late event t=%lld af=%lld rc=%d",
                         (unsigned long long)seed, (long long)e->t, (long long)af, rc);
        } else {
            cr_assert_eq(rc, 0, "seed %llu: update rc=%d", (unsigned long long)seed, rc);
            oracle_add(&o, e);
            if (!any || e->t > max_seen)
                max_seen = e->t;
            if (!any || e->t < min_seen)
                min_seen = e->t;
            any = true;
        }
        af = (mode == 0 || !any) ? INT64_MIN : max_seen - lateness;
        cr_assert_eq(agg_entity_last_event_ms(ent), any ? max_seen : 0);

        if (af != INT64_MIN && trange(&rs, 0, 99) < 4)
            agg_entity_expire(plan, ent, af);

        if (trange(&rs, 0, 99) < 3) {
            /* round trip */
            sl_buf_t buf = SL_BUF_INIT;
            cr_assert_eq(agg_entity_encode(plan, ent, &buf), 0);
            /* the memory hints read the state (under ASan: only memory the
             * entity owns) and change nothing: the same bytes again */
            for (int depth = 0; depth <= 3; depth++) {
                agg_entity_prefetch(plan, ent, depth);
                agg_entity_prefetch_encode(plan, ent, depth);
            }
            sl_buf_t buf3 = SL_BUF_INIT;
            cr_assert_eq(agg_entity_encode(plan, ent, &buf3), 0);
            cr_assert(buf3.len == buf.len && !memcmp(buf.data, buf3.data, buf.len),
                      "seed %llu: the memory hints changed the state", (unsigned long long)seed);
            sl_buf_free(&buf3);
            agg_entity_t *dec = NULL;
            rc = agg_entity_decode(plan, buf.data, buf.len, &dec);
            cr_assert_eq(rc, 0, "seed %llu: decode rc=%d", (unsigned long long)seed, rc);
            for (int depth = 0; depth <= 3; depth++)      /* on a lazily decoded state too */
                agg_entity_prefetch_encode(plan, dec, depth);
            for (int q = 0; q < 4; q++) {
                int64_t lo = af == INT64_MIN ? min_seen - wspan : af;
                int64_t t = trange(&rs, lo, max_seen + 2 * wspan);
                agg_entity_query(plan, ent, t, got);
                agg_entity_query(plan, dec, t, got2);
                for (size_t fi = 0; fi < nf; fi++)
                    cr_assert(value_same(&got[fi], &got2[fi]),
                              "seed %llu: round trip differs, feature %zu (%s) at t=%lld",
                              (unsigned long long)seed, fi, schema_agg_name(tfeat_all[fi].agg),
                              (long long)t);
            }
            /* re-encoding the decoded state gives the same bytes */
            sl_buf_t buf2 = SL_BUF_INIT;
            cr_assert_eq(agg_entity_encode(plan, dec, &buf2), 0);
            cr_assert(buf2.len == buf.len && !memcmp(buf.data, buf2.data, buf.len),
                      "seed %llu: re-encoding differs", (unsigned long long)seed);
            sl_buf_free(&buf2);
            /* truncations fail cleanly */
            for (int q = 0; q < 3 && buf.len > 1; q++) {
                size_t cut = (size_t)trange(&rs, 0, (int64_t)buf.len - 1);
                agg_entity_t *bad = (agg_entity_t *)1;
                rc = agg_entity_decode(plan, buf.data, cut, &bad);
                cr_assert(rc == SL_ECORRUPT, "seed %llu: truncated at %zu rc=%d",
                          (unsigned long long)seed, cut, rc);
                cr_assert_null(bad);
            }
            sl_buf_free(&buf);
            agg_entity_free(ent);
            ent = dec;                   /* continue on the decoded state */
        }

        if (any && trange(&rs, 0, 99) < 10) {
            for (int q = 0; q < 3; q++) {
                int64_t lo = af == INT64_MIN ? min_seen - wspan : af;
                int64_t t = trange(&rs, lo, max_seen + 2 * wspan);
                agg_entity_query(plan, ent, t, got);
                for (size_t fi = 0; fi < nf; fi++) {
                    agg_value_t want;
                    char why[256];
                    oracle_query(&o, s, fi, t, items, &want);
                    cr_assert(check_value(&s->views[0].features[fi], &got[fi], &want,
                                          cfg->dyadic, why, sizeof(why)),
                              "seed %llu: feature %zu %s (field %d) window %s at t=%lld "
                              "after %zu events: %s",
                              (unsigned long long)seed, fi, schema_agg_name(tfeat_all[fi].agg),
                              tfeat_all[fi].field, schema_window_kind_name(cfg->w.kind),
                              (long long)t, i + 1, why);
                }
                if (cfg->w.kind == SCHEMA_WINDOW_SESSION) {
                    for (size_t fi = 0; fi < nf; fi += 7) {
                        agg_session_t gs, es;
                        bool g = agg_entity_open_session(plan, ent, (int)fi, t, &gs);
                        bool x = oracle_open_session(&o, s, fi, t, &es);
                        cr_assert_eq(g, x, "seed %llu: open session presence at %lld",
                                     (unsigned long long)seed, (long long)t);
                        if (g)
                            cr_assert(gs.start_ms == es.start_ms && gs.end_ms == es.end_ms &&
                                          gs.events == es.events,
                                      "seed %llu: open session differs", (unsigned long long)seed);
                    }
                }
            }
            if (cfg->w.kind == SCHEMA_WINDOW_SESSION) {
                agg_session_t gs[8], es[8];
                size_t gn = agg_entity_completed_sessions(plan, ent, 0, gs, 8);
                size_t en = oracle_sessions(&o, s, 0, es, (size_t)cfg->kept < 8 ? (size_t)cfg->kept : 8);
                cr_assert_eq(gn, en, "seed %llu: %zu completed sessions, want %zu",
                             (unsigned long long)seed, gn, en);
                for (size_t k = 0; k < gn; k++)
                    cr_assert(gs[k].start_ms == es[k].start_ms && gs[k].end_ms == es[k].end_ms &&
                                  gs[k].events == es[k].events,
                              "seed %llu: completed session %zu differs", (unsigned long long)seed, k);
            }
        }
    }
    free(arr);
    free(got);
    free(got2);
    oracle_free(&o);
    agg_entity_free(ent);
    agg_plan_free(plan);
    tschema_free(s);
}

#define STREAMS(name, count, ...)                                          \
    Test(agg_random, name, .timeout = 600)                                 \
    {                                                                      \
        for (uint64_t k = 0; k < (count); k++) {                           \
            uint64_t rs = 0xA66u * 1000003u + k * 7919u + __LINE__;        \
            stream_cfg_t cfg = { .dyadic = true };                         \
            __VA_ARGS__;                                                   \
            run_stream(rs * 31 + k, &cfg);                                 \
        }                                                                  \
    }

STREAMS(sliding, 900, {
    cfg.w.kind = SCHEMA_WINDOW_SLIDING;
    cfg.w.hop_ms = (int64_t[]){ 1, 7, 50 }[trange(&rs, 0, 2)];
    cfg.w.size_ms = cfg.w.hop_ms * (int64_t[]){ 1, 2, 3, 8, 30, 100 }[trange(&rs, 0, 5)];
})

STREAMS(tumbling, 300, {
    cfg.w.kind = SCHEMA_WINDOW_TUMBLING;
    cfg.w.size_ms = (int64_t[]){ 1, 10, 100, 1000 }[trange(&rs, 0, 3)];
})

STREAMS(session, 700, {
    cfg.w.kind = SCHEMA_WINDOW_SESSION;
    cfg.w.gap_ms = (int64_t[]){ 1, 10, 100 }[trange(&rs, 0, 2)];
    cfg.w.max_length_ms = (int64_t[]){ 0, 0, 50, 500 }[trange(&rs, 0, 3)];
    cfg.kept = (int)(int64_t[]){ 0, 1, 3, 5 }[trange(&rs, 0, 3)];
})

STREAMS(lifetime, 200, {
    cfg.w.kind = SCHEMA_WINDOW_LIFETIME;
})

STREAMS(sliding_real_doubles, 200, {
    cfg.dyadic = false;
    cfg.w.kind = SCHEMA_WINDOW_SLIDING;
    cfg.w.hop_ms = (int64_t[]){ 1, 7, 50 }[trange(&rs, 0, 2)];
    cfg.w.size_ms = cfg.w.hop_ms * (int64_t[]){ 2, 8, 100 }[trange(&rs, 0, 2)];
})
