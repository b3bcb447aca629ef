/*
 * test_serve_until.c — the backend's reply-cache contract (serve_lookup.h):
 * after a lookup at t, every lookup at t' in [t, valid_until) with the
 * generation unchanged answers exactly the same (values, types, statuses,
 * event times). Checked by brute force over random entities and request
 * times, for every window kind, decayed aggregates, a TTL and a partial
 * coverage (since_ms). Also known answers for the bound itself, and that the
 * generation moves on a commit.
 */
#include <criterion/criterion.h>

#include "agg.h"
#include "entity_key.h"
#include "schema.h"
#include "serve_lookup.h"
#include "sl_err.h"
#include "state.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *SCHEMA =
    "version: 1\n"
    "entities:\n"
    "  - {name: user, keys: [uid], key_type: string}\n"
    "sources:\n"
    "  - name: ev\n"
    "    topic: ev\n"
    "    format: json\n"
    "    fields: {uid: string, amount: double, ts: int}\n"
    "    entity_keys: {user: uid}\n"
    "    event_time: {field: ts, format: epoch_ms}\n"
    "feature_views:\n"
    "  - name: slide\n"               /* sliding + lifetime only: a tight bound */
    "    entity: user\n"
    "    source: ev\n"
    "    features:\n"
    "      - {name: c10m, aggregate: count, window: {sliding: 10m, hop: 1m}}\n"
    "      - {name: s1h, aggregate: sum, field: amount, window: {sliding: 1h, hop: 5m}}\n"
    "      - {name: mx, aggregate: max, field: amount, window: {sliding: 7m, hop: 7m}}\n"
    "      - {name: tot, aggregate: count, window: lifetime}\n"
    "      - {name: last3, aggregate: last_n, field: amount, n: 3, window: {sliding: 30m, hop: 2m}}\n"
    "  - name: mixed\n"
    "    entity: user\n"
    "    source: ev\n"
    "    ttl: 20m\n"
    "    features:\n"
    "      - {name: tb, aggregate: sum, field: amount, window: {tumbling: 15m}}\n"
    "      - {name: ss, aggregate: count, window: {session: 3m}}\n"
    "      - {name: dc, aggregate: decayed_count, half_life: 10m, window: lifetime}\n"
    "      - {name: first, aggregate: first, field: amount, window: {sliding: 20m, hop: 4m}}\n";

#define MIN 60000LL
#define T0 1699992000000LL      /* a multiple of every hop and bucket above (420 min) */
#define N_USERS 12

static schema_t *g_schema;
static state_store_t *g_st;
static serve_state_backend_t *g_sb;
static char g_dir[128];

static void write_state(int64_t since_slide)
{
    char err[512];
    cr_assert_eq(schema_load_string("until.yaml", SCHEMA, strlen(SCHEMA), &g_schema, err, sizeof err), 0,
                 "%s", err);
    snprintf(g_dir, sizeof g_dir, "/tmp/sluice-test-until-%d", (int)getpid());
    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -rf %s", g_dir);
    cr_assert_eq(system(cmd), 0);
    state_options_t so = { .create_if_missing = true };
    cr_assert_eq(state_open(g_dir, &so, &g_st, err, sizeof err), 0, "%s", err);
    srand(7);
    state_batch_t *b = state_batch_new();
    sl_buf_t key = SL_BUF_INIT, val = SL_BUF_INIT;
    const schema_entity_t *ent = &g_schema->entities[0];
    for (size_t v = 0; v < g_schema->n_views; v++) {
        agg_plan_t *plan;
        cr_assert_eq(agg_plan_new(g_schema, (int)v, &plan, err, sizeof err), 0, "%s", err);
        for (int u = 0; u < N_USERS; u++) {
            agg_entity_t *e = agg_entity_new(plan);
            int n = 1 + rand() % 25;
            for (int k = 0; k < n; k++) {
                char uid[16];
                snprintf(uid, sizeof uid, "u%d", u);
                agg_input_t f[3] = {
                    { .type = AGG_IN_STRING, .s = uid, .slen = strlen(uid) },
                    { .type = AGG_IN_DOUBLE, .d = (rand() % 10000) / 7.0 },
                    { .type = AGG_IN_INT, .i = 0 },
                };
                /* events spread over the 90 minutes before T0, a few after */
                int64_t t = T0 - 90 * MIN + (int64_t)(rand() % (int)(100 * MIN));
                f[2].i = t;
                agg_event_t ev = { t, f, 3 };
                cr_assert_eq(agg_entity_update(plan, e, &ev, INT64_MIN), 0);
            }
            char uid[16];
            snprintf(uid, sizeof uid, "u%d", u);
            const char *parts[1] = { uid };
            size_t lens[1] = { strlen(uid) };
            sl_buf_reset(&key);
            cr_assert_eq(ingest_key_from_text(&key, ent, parts, lens, 1), 0);
            sl_buf_reset(&val);
            cr_assert_eq(agg_entity_encode(plan, e, &val), 0);
            cr_assert_eq(state_batch_put(b, g_schema->views[v].name, u % 2, key.data, key.len,
                                         val.data, val.len), 0);
            agg_entity_free(e);
        }
        agg_plan_free(plan);
    }
    cr_assert_eq(state_batch_commit(g_st, b, err, sizeof err), 0, "%s", err);
    state_batch_free(b);
    sl_buf_free(&key);
    sl_buf_free(&val);
    if (since_slide) {
        char s[32];
        int n = snprintf(s, sizeof s, "%lld", (long long)since_slide);
        cr_assert_eq(state_meta_put(g_st, "view.slide.since_ms", s, (size_t)n), 0);
    }
    cr_assert_eq(serve_state_backend_new(g_schema, g_st, &g_sb, err, sizeof err), 0, "%s", err);
}

static void teardown(void)
{
    serve_state_backend_free(g_sb);
    state_close(g_st);
    schema_free(g_schema);
    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -rf %s", g_dir);
    if (system(cmd)) {}
}

static bool same_value(const serve_value_t *a, const serve_value_t *b)
{
    if (a->status != b->status || a->val.type != b->val.type ||
        a->val.newest_event_ms != b->val.newest_event_ms)
        return false;
    switch (a->val.type) {
    case AGG_VAL_INT: return a->val.i == b->val.i;
    case AGG_VAL_DOUBLE: return memcmp(&a->val.d, &b->val.d, sizeof(double)) == 0;
    case AGG_VAL_STRING: return a->val.slen == b->val.slen && !memcmp(a->val.s, b->val.s, a->val.slen);
    case AGG_VAL_LIST:
        if (a->val.n_items != b->val.n_items) return false;
        for (size_t i = 0; i < a->val.n_items; i++) {
            const agg_scalar_t *x = &a->val.items[i], *y = &b->val.items[i];
            if (x->type != y->type || x->i != y->i || memcmp(&x->d, &y->d, sizeof(double)) ||
                x->slen != y->slen || (x->slen && memcmp(x->s, y->s, x->slen)))
                return false;
        }
        return true;
    default: return true;
    }
}

/* Looks up (view, user) at t into out (deep enough copy for comparison:
 * strings and list items stay valid until the next lookup, so a second
 * scratch holds the reference). Returns valid_until. */
static int64_t lookup(const serve_backend_t *be, serve_scratch_t *sc, int view, int u, int64_t t,
                      serve_value_t *out)
{
    char uid[16], err[256];
    snprintf(uid, sizeof uid, "u%d", u);
    serve_key_t key = { .n = 1, .part = { uid }, .len = { strlen(uid) } };
    cr_assert_eq(be->lookup(be, sc, view, &key, t, out, err, sizeof err), 0, "%s", err);
    return be->valid_until(be, sc);
}

static void check_random_times(int rounds)
{
    const serve_backend_t *be = serve_state_backend(g_sb);
    cr_assert_not_null(be->generation);
    cr_assert_not_null(be->valid_until);
    serve_scratch_t *ref_sc = be->scratch_new(be), *sc = be->scratch_new(be);
    serve_value_t ref[8], got[8];
    srand(11);
    int cached_spans = 0;
    for (int r = 0; r < rounds; r++) {
        int view = rand() % (int)g_schema->n_views;
        int u = rand() % (N_USERS + 1);          /* N_USERS: no such entity */
        int64_t t = T0 - 95 * MIN + (int64_t)(rand() % (int)(140 * MIN));
        uint64_t gen = be->generation(be);
        int64_t until = lookup(be, ref_sc, view, u, t, ref);
        cr_assert_gt(until, t);
        size_t nf = g_schema->views[view].n_features;
        /* every ms of short spans, samples of long ones, and the last ms */
        int64_t span = until == INT64_MAX ? 10 * MIN : until - t;
        if (span > 1) cached_spans++;
        for (int k = 0; k < 40; k++) {
            int64_t t2 = k == 0 ? t + span - 1 : span <= 40 ? t + k % span : t + rand() % span;
            lookup(be, sc, view, u, t2, got);
            for (size_t f = 0; f < nf; f++)
                cr_assert(same_value(&ref[f], &got[f]),
                          "view %s user %d feature %s: t=%lld until=%lld t2=%lld differs",
                          g_schema->views[view].name, u, g_schema->views[view].features[f].name,
                          (long long)t, (long long)until, (long long)t2);
        }
        cr_assert_eq(be->generation(be), gen);
    }
    cr_assert_gt(cached_spans, rounds / 4, "valid_until is uselessly short");
    be->scratch_free(ref_sc);
    be->scratch_free(sc);
}

Test(serve_until, answers_hold_until_valid_until)
{
    write_state(0);
    check_random_times(1500);
    teardown();
}

Test(serve_until, answers_hold_with_partial_coverage)
{
    write_state(T0 - 40 * MIN);
    check_random_times(1500);
    teardown();
}

Test(serve_until, known_bounds)
{
    write_state(0);
    const serve_backend_t *be = serve_state_backend(g_sb);
    serve_scratch_t *sc = be->scratch_new(be);
    serve_value_t out[8];
    /* slide: hops 1m, 5m, 7m, 2m -> the next multiple of 1m */
    cr_assert_eq(lookup(be, sc, 0, 1, T0 + 5, out), T0 + MIN);
    cr_assert_eq(lookup(be, sc, 0, 1, T0 + MIN - 1, out), T0 + MIN);
    /* an entity without state: never changes while the state does not */
    cr_assert_eq(lookup(be, sc, 0, N_USERS, T0, out), INT64_MAX);
    cr_assert_eq(out[0].status, SERVE_STATUS_NOT_FOUND);
    /* mixed has a session window and a decayed count: the next ms */
    int64_t u = lookup(be, sc, 1, 1, T0 + 5, out);
    if (out[0].status != SERVE_STATUS_OUTSIDE_TTL) cr_assert_eq(u, T0 + 6);
    be->scratch_free(sc);
    teardown();
}

Test(serve_until, partial_coverage_ends_at_since_plus_size)
{
    /* since = T0 - 5m - 30s: c10m (10m) is partial until since + 10m =
     * T0 + 4m30s, which is not a hop boundary */
    write_state(T0 - 5 * MIN - 30000);
    const serve_backend_t *be = serve_state_backend(g_sb);
    serve_scratch_t *sc = be->scratch_new(be);
    serve_value_t out[8];
    (void)be->generation(be);                 /* loads the coverage */
    cr_assert_eq(lookup(be, sc, 0, 1, T0 + 4 * MIN + 10000, out), T0 + 4 * MIN + 30000);
    cr_assert_eq(out[0].status, SERVE_STATUS_PARTIAL_WINDOW);
    cr_assert_eq(lookup(be, sc, 0, 1, T0 + 4 * MIN + 30000, out), T0 + 5 * MIN);
    cr_assert_eq(out[0].status, SERVE_STATUS_PRESENT);
    be->scratch_free(sc);
    teardown();
}

Test(serve_until, generation_moves_on_commit)
{
    write_state(0);
    const serve_backend_t *be = serve_state_backend(g_sb);
    uint64_t g0 = be->generation(be);
    cr_assert_eq(be->generation(be), g0);
    state_batch_t *b = state_batch_new();
    char err[256];
    cr_assert_eq(state_batch_progress(b, "ev", 0, 5, T0), 0);
    cr_assert_eq(state_batch_commit(g_st, b, err, sizeof err), 0, "%s", err);
    state_batch_free(b);
    cr_assert_neq(be->generation(be), g0);
    teardown();
}
