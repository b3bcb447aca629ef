/*
 * test_agg_merge.c — agg_entity_merge: one entity's events spread over 2-4
 * "partitions" (one state each, round-tripped through encode/decode as a
 * reader gets them from the store) and merged must answer like ONE state fed
 * every event, for every aggregate and window kind, at random query times;
 * and the count must equal the brute-force oracle of agg_test_util.c.
 *
 * Equality: bit for bit, except variance/stddev and decayed sums/counts,
 * whose merges round in another order (relative 1e-9). Doubles are
 * multiples of 1/8, so sums and means are exact in any grouping. Event times
 * are distinct: first/last/last_n ties between partitions have no defined
 * winner.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agg_test_util.h"
#include "sl_buf.h"
#include "sl_err.h"

#define MAX_PARTS 4

static bool rounds(schema_agg_t a)
{
    return a == SCHEMA_AGG_VARIANCE || a == SCHEMA_AGG_STDDEV || a == SCHEMA_AGG_DECAYED_SUM ||
           a == SCHEMA_AGG_DECAYED_COUNT;
}

static bool same_value(schema_agg_t agg, const agg_value_t *a, const agg_value_t *b)
{
    if (a->type != b->type || a->newest_event_ms != b->newest_event_ms)
        return false;
    switch (a->type) {
    case AGG_VAL_INT:
        return a->i == b->i;
    case AGG_VAL_DOUBLE:
        if (rounds(agg))
            return fabs(a->d - b->d) <= 1e-9 * fabs(b->d) + 1e-9;
        return !memcmp(&a->d, &b->d, sizeof(double));
    case AGG_VAL_STRING:
        return a->slen == b->slen && !memcmp(a->s, b->s, a->slen);
    case AGG_VAL_LIST:
        if (a->n_items != b->n_items)
            return false;
        for (size_t i = 0; i < a->n_items; i++) {
            const agg_scalar_t *x = &a->items[i], *y = &b->items[i];
            if (x->type != y->type || x->i != y->i || memcmp(&x->d, &y->d, sizeof(double)) ||
                x->slen != y->slen || (x->slen && memcmp(x->s, y->s, x->slen)))
                return false;
        }
        return true;
    default:
        return true;
    }
}

static agg_entity_t *round_trip(const agg_plan_t *plan, const agg_entity_t *ent)
{
    sl_buf_t buf = { 0 };
    cr_assert_eq(agg_entity_encode(plan, ent, &buf), 0);
    agg_entity_t *out = NULL;
    cr_assert_eq(agg_entity_decode(plan, buf.data, buf.len, &out), 0);
    sl_buf_free(&buf);
    return out;
}

static void run(uint64_t seed, schema_window_t w)
{
    uint64_t rs = seed;
    schema_t *s = tschema_new(tfeat_all, tfeat_all_n, w, 4);
    agg_plan_t *plan = NULL;
    char err[256] = "";
    cr_assert_eq(agg_plan_new(s, 0, &plan, err, sizeof err), 0, "%s", err);
    int k = (int)trange(&rs, 2, MAX_PARTS);
    agg_entity_t *single = agg_entity_new(plan), *part[MAX_PARTS];
    for (int p = 0; p < k; p++)
        part[p] = agg_entity_new(plan);
    oracle_t o = { 0 };

    /* distinct event times with gaps of every size against the window */
    size_t n = (size_t)trange(&rs, 1, 300);
    int64_t unit = w.kind == SCHEMA_WINDOW_SESSION ? w.gap_ms / 2
                 : w.kind == SCHEMA_WINDOW_LIFETIME ? 50 : w.hop_ms ? w.hop_ms / 3 : w.size_ms / 3;
    if (unit < 1)
        unit = 1;
    tev_t *ev = calloc(n, sizeof *ev);
    int64_t t = trange(&rs, -5000, 5000);
    for (size_t i = 0; i < n; i++) {
        t += 1 + trange(&rs, 0, trange(&rs, 0, 9) == 0 ? unit * 8 : unit);
        ev[i].t = t;
        ev[i].has_i = trange(&rs, 0, 9) != 0;
        ev[i].vi = trange(&rs, -100, 100);
        ev[i].has_d = trange(&rs, 0, 9) != 0;
        ev[i].vd = (double)trange(&rs, -800, 800) / 8.0;
        ev[i].has_s = trange(&rs, 0, 9) != 0;
        snprintf(ev[i].vs, sizeof ev[i].vs, "s%d", (int)trange(&rs, 0, 40));
        ev[i].has_b = trange(&rs, 0, 3) != 0;
        ev[i].vb = trange(&rs, 0, 1);
    }
    /* arrival order: locally shuffled (out of order within partitions too) */
    for (size_t i = 0; i + 1 < n; i++) {
        size_t j = i + (size_t)trange(&rs, 0, n - 1 - i < 5 ? (int64_t)(n - 1 - i) : 5);
        tev_t tmp = ev[i];
        ev[i] = ev[j];
        ev[j] = tmp;
    }
    for (size_t i = 0; i < n; i++) {
        agg_input_t fields[TF__COUNT];
        agg_event_t e;
        tev_to_event(&ev[i], fields, &e);
        int p = (int)trange(&rs, 0, k - 1);
        cr_assert_eq(agg_entity_update(plan, single, &e, INT64_MIN), 0);
        cr_assert_eq(agg_entity_update(plan, part[p], &e, INT64_MIN), 0);
        oracle_add(&o, &ev[i]);
    }

    /* what a reader does: decode each partition's state, merge them */
    agg_entity_t *merged = round_trip(plan, part[0]);
    for (int p = 1; p < k; p++) {
        agg_entity_t *d = round_trip(plan, part[p]);
        cr_assert_eq(agg_entity_merge(plan, merged, d), 0);
        agg_entity_free(d);
    }
    cr_assert_eq(agg_entity_last_event_ms(merged), agg_entity_last_event_ms(single));

    size_t nf = tfeat_all_n;
    agg_value_t *got = calloc(nf, sizeof *got), *want = calloc(nf, sizeof *want);
    agg_scalar_t items[16];
    int64_t lo = ev[0].t, hi = ev[0].t;
    for (size_t i = 0; i < n; i++) {
        if (ev[i].t < lo) lo = ev[i].t;
        if (ev[i].t > hi) hi = ev[i].t;
    }
    int64_t span = w.size_ms + w.gap_ms * 2 + 100;
    for (int q = 0; q < 25; q++) {
        int64_t at = trange(&rs, lo - span, hi + span);
        agg_entity_query(plan, merged, at, got);
        agg_entity_query(plan, single, at, want);
        for (size_t f = 0; f < nf; f++)
            cr_assert(same_value(tfeat_all[f].agg, &got[f], &want[f]),
                      "seed %llu window %d feature %zu (agg %d) at %lld: merged of %d partitions "
                      "differs from one state", (unsigned long long)seed, (int)w.kind, f,
                      (int)tfeat_all[f].agg, (long long)at, k);
        agg_value_t oc;
        oracle_query(&o, s, 0, at, items, &oc);
        cr_assert(got[0].type == oc.type && got[0].i == oc.i,
                  "seed %llu: count at %lld is %lld, oracle %lld", (unsigned long long)seed,
                  (long long)at, (long long)got[0].i, (long long)oc.i);
    }
    if (w.kind == SCHEMA_WINDOW_SESSION) {
        agg_session_t a[8], b[8];
        size_t na = agg_entity_completed_sessions(plan, merged, 0, a, 8);
        size_t nb = agg_entity_completed_sessions(plan, single, 0, b, 8);
        cr_assert_eq(na, nb, "seed %llu: %zu completed sessions, want %zu", (unsigned long long)seed,
                     na, nb);
        for (size_t i = 0; i < na; i++)
            cr_assert(a[i].start_ms == b[i].start_ms && a[i].end_ms == b[i].end_ms &&
                      a[i].events == b[i].events, "seed %llu: session %zu differs",
                      (unsigned long long)seed, i);
    }
    /* the merged state keeps working as a live state */
    agg_input_t fields[TF__COUNT];
    agg_event_t e;
    tev_t late = ev[0];
    late.t = hi + 1;
    tev_to_event(&late, fields, &e);
    cr_assert_eq(agg_entity_update(plan, merged, &e, INT64_MIN), 0);
    cr_assert_eq(agg_entity_update(plan, single, &e, INT64_MIN), 0);
    agg_entity_query(plan, merged, hi + 1, got);
    agg_entity_query(plan, single, hi + 1, want);
    for (size_t f = 0; f < nf; f++)
        cr_assert(same_value(tfeat_all[f].agg, &got[f], &want[f]),
                  "seed %llu feature %zu after an update of the merged state", (unsigned long long)seed, f);

    free(got);
    free(want);
    free(ev);
    oracle_free(&o);
    agg_entity_free(merged);
    agg_entity_free(single);
    for (int p = 0; p < k; p++)
        agg_entity_free(part[p]);
    agg_plan_free(plan);
    tschema_free(s);
}

Test(agg_merge, sliding)
{
    for (uint64_t seed = 1; seed <= 150; seed++) {
        schema_window_t w = { .kind = SCHEMA_WINDOW_SLIDING };
        uint64_t rs = seed * 7919;
        w.hop_ms = (int64_t[]){ 10, 100, 1000 }[trange(&rs, 0, 2)];
        w.size_ms = w.hop_ms * trange(&rs, 1, 40);
        run(seed, w);
    }
}

Test(agg_merge, tumbling)
{
    for (uint64_t seed = 1; seed <= 100; seed++) {
        uint64_t rs = seed * 104729;
        schema_window_t w = { .kind = SCHEMA_WINDOW_TUMBLING, .size_ms = (int64_t[]){ 10, 250, 5000 }[trange(&rs, 0, 2)] };
        run(1000 + seed, w);
    }
}

Test(agg_merge, session)
{
    for (uint64_t seed = 1; seed <= 150; seed++) {
        uint64_t rs = seed * 15485863;
        schema_window_t w = { .kind = SCHEMA_WINDOW_SESSION, .gap_ms = (int64_t[]){ 5, 60, 900 }[trange(&rs, 0, 2)] };
        if (trange(&rs, 0, 1))
            w.max_length_ms = w.gap_ms * trange(&rs, 2, 20);
        run(2000 + seed, w);
    }
}

Test(agg_merge, lifetime)
{
    for (uint64_t seed = 1; seed <= 60; seed++) {
        schema_window_t w = { .kind = SCHEMA_WINDOW_LIFETIME };
        run(3000 + seed, w);
    }
}
