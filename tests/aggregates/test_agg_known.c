/*
 * test_agg_known.c — known answers for the window engine: the sliding
 * window's tail precision, late events, session bridging and max_length,
 * empty-window values, decay, expiry, decode errors, and the plans of the
 * example schemas. Schemas come from YAML through schema_load_string.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agg.h"
#include "schema.h"
#include "sl_buf.h"
#include "sl_err.h"

#define H 3600000LL
#define M 60000LL
#define S 1000LL
/* 2023-11-14T22:00:00Z, an hour boundary */
#define B (1700000000000LL - 1700000000000LL % H)

static const char *head =
    "version: 1\n"
    "entities:\n"
    "  - {name: user, keys: [user_id], key_type: string}\n"
    "sources:\n"
    "  - name: ev\n"
    "    topic: ev\n"
    "    format: json\n"
    "    fields: {user_id: string, ts: int, v: int, x: double, s: string}\n"
    "    event_time: {field: ts, format: epoch_ms}\n"
    "    watermark_delay: 5s\n"
    "    allowed_lateness: 1m\n"
    "feature_views:\n"
    "  - name: view\n"
    "    entity: user\n"
    "    source: ev\n"
    "    ttl: 1d\n"
    "    features:\n";

typedef struct fixture {
    schema_t *schema;
    agg_plan_t *plan;
    agg_entity_t *ent;
} fixture_t;

static void fx_open(fixture_t *fx, const char *features)
{
    char yaml[8192], err[512] = "";
    snprintf(yaml, sizeof(yaml), "%s%s", head, features);
    int rc = schema_load_string("test.yaml", yaml, strlen(yaml), &fx->schema, err, sizeof(err));
    cr_assert_eq(rc, 0, "schema: %s", err);
    rc = agg_plan_new(fx->schema, 0, &fx->plan, err, sizeof(err));
    cr_assert_eq(rc, 0, "plan: %s", err);
    fx->ent = agg_entity_new(fx->plan);
    cr_assert(fx->ent);
}

static void fx_close(fixture_t *fx)
{
    agg_entity_free(fx->ent);
    agg_plan_free(fx->plan);
    schema_free(fx->schema);
}

enum { F_USER, F_TS, F_V, F_X, F_S, F__N };

static int fx_add(fixture_t *fx, int64_t t, int64_t v, double x, const char *s, int64_t af)
{
    agg_input_t f[F__N] = { 0 };
    f[F_USER] = (agg_input_t){ .type = AGG_IN_STRING, .s = "u", .slen = 1 };
    f[F_TS] = (agg_input_t){ .type = AGG_IN_INT, .i = t };
    f[F_V] = (agg_input_t){ .type = AGG_IN_INT, .i = v };
    f[F_X] = (agg_input_t){ .type = AGG_IN_DOUBLE, .d = x };
    if (s)
        f[F_S] = (agg_input_t){ .type = AGG_IN_STRING, .s = s, .slen = strlen(s) };
    agg_event_t ev = { .time_ms = t, .fields = f, .n_fields = F__N };
    return agg_entity_update(fx->plan, fx->ent, &ev, af);
}

static int64_t count_at(fixture_t *fx, int64_t t)
{
    agg_value_t out[8];
    agg_entity_query(fx->plan, fx->ent, t, out);
    cr_assert_eq(out[0].type, AGG_VAL_INT);
    return out[0].i;
}

/* ---- the sliding window's tail ------------------------------------------- */

Test(agg_known, sliding_tail_rounds_to_hop)
{
    fixture_t fx;
    fx_open(&fx, "      - {name: c, aggregate: count, window: {sliding: 1h, hop: 1m}}\n");
    int64_t e1 = B + 30 * S, e2 = B + M, e3 = B + H, e4 = B + H + M - 1;
    cr_assert_eq(fx_add(&fx, e1, 1, 1, NULL, INT64_MIN), 0);
    cr_assert_eq(fx_add(&fx, e2, 1, 1, NULL, INT64_MIN), 0);
    cr_assert_eq(fx_add(&fx, e3, 1, 1, NULL, INT64_MIN), 0);
    cr_assert_eq(fx_add(&fx, e4, 1, 1, NULL, INT64_MIN), 0);
    /* t = B + 1h: tiles [B+1m, B+1h+1m). e1 (B+30s) lies in (t-1h, t] but in
     * the tile that left the window: the tail is rounded up to the hop. e4
     * (after t, same tile as t) is counted: the head is the whole tile. */
    cr_assert_eq(count_at(&fx, B + H), 3);
    /* t = last ms of that tile: exactly (t - 1h, t] */
    cr_assert_eq(count_at(&fx, B + H + M - 1), 3);
    /* t one ms before: tiles [B, B+1h): e1 and e2 */
    cr_assert_eq(count_at(&fx, B + H - 1), 2);
    cr_assert_eq(count_at(&fx, B + H + M), 2);
    /* t = B + 2h - 1: tiles [B+1h, B+2h) hold e3 and e4; one ms later the
     * window starts at B+1h+1m and both are gone */
    cr_assert_eq(count_at(&fx, B + 2 * H - 1), 2);
    cr_assert_eq(count_at(&fx, B + 2 * H), 0);
    fx_close(&fx);
}

/* The window [b - W + 1, b] for every t across a boundary, vs the definition
 * written out with plain arithmetic. */
Test(agg_known, sliding_window_bounds_every_ms)
{
    fixture_t fx;
    fx_open(&fx, "      - {name: c, aggregate: count, window: {sliding: 10s, hop: 2s}}\n");
    for (int64_t t = B - 20 * S; t < B + 20 * S; t += 250)
        cr_assert_eq(fx_add(&fx, t, 1, 1, NULL, INT64_MIN), 0);
    for (int64_t q = B - 25 * S; q < B + 30 * S; q += 7) {
        int64_t b = q >= 0 ? q / (2 * S) : -((-q + 2 * S - 1) / (2 * S));
        int64_t lo = (b - 4) * 2 * S, hi = (b + 1) * 2 * S;   /* [lo, hi) */
        int64_t want = 0;
        for (int64_t t = B - 20 * S; t < B + 20 * S; t += 250)
            want += t >= lo && t < hi;
        cr_assert_eq(count_at(&fx, q), want, "q=%lld", (long long)(q - B));
    }
    fx_close(&fx);
}

/* ---- late events ------------------------------------------------------------ */

Test(agg_known, late_event_rejected_state_unchanged)
{
    fixture_t fx;
    fx_open(&fx,
            "      - {name: c, aggregate: count, window: {sliding: 1h, hop: 1m}}\n"
            "      - {name: s, aggregate: sum, field: v, window: {session: 5m}}\n"
            "      - {name: l, aggregate: last_n, field: s, n: 3, window: lifetime}\n");
    int64_t af = B + 10 * M;
    cr_assert_eq(fx_add(&fx, B + 11 * M, 5, 0, "a", af), 0);
    sl_buf_t before = SL_BUF_INIT, after = SL_BUF_INIT;
    cr_assert_eq(agg_entity_encode(fx.plan, fx.ent, &before), 0);
    cr_assert_eq(fx_add(&fx, af - 1, 7, 0, "b", af), SL_ELATE);
    cr_assert_eq(agg_entity_encode(fx.plan, fx.ent, &after), 0);
    cr_assert(before.len == after.len && !memcmp(before.data, after.data, before.len));
    /* exactly accept_from is accepted */
    cr_assert_eq(fx_add(&fx, af, 7, 0, "b", af), 0);
    cr_assert_eq(count_at(&fx, B + 12 * M), 2);
    cr_assert_eq(agg_entity_last_event_ms(fx.ent), B + 11 * M);
    sl_buf_free(&before);
    sl_buf_free(&after);
    fx_close(&fx);
}

/* ---- sessions -------------------------------------------------------------- */

Test(agg_known, session_bridged_by_late_event)
{
    fixture_t fx;
    fx_open(&fx,
            "      - {name: c, aggregate: count, window: {session: 10s}, sessions_kept: 3}\n"
            "      - {name: s, aggregate: sum, field: v, window: {session: 10s}}\n");
    agg_session_t ss[4], os;
    cr_assert_eq(fx_add(&fx, B, 1, 0, NULL, INT64_MIN), 0);
    cr_assert_eq(fx_add(&fx, B + 18 * S, 2, 0, NULL, INT64_MIN), 0);   /* 18 s later: new session */
    cr_assert_eq(agg_entity_completed_sessions(fx.plan, fx.ent, 0, ss, 4), 1);
    cr_assert_eq(ss[0].start_ms, B);
    cr_assert(agg_entity_open_session(fx.plan, fx.ent, 0, B + 20 * S, &os));
    cr_assert_eq(os.start_ms, B + 18 * S);
    /* a late event at +9 s is < 10 s from both: one session of three */
    cr_assert_eq(fx_add(&fx, B + 9 * S, 4, 0, NULL, INT64_MIN), 0);
    cr_assert_eq(agg_entity_completed_sessions(fx.plan, fx.ent, 0, ss, 4), 0);
    cr_assert(agg_entity_open_session(fx.plan, fx.ent, 0, B + 20 * S, &os));
    cr_assert_eq(os.start_ms, B);
    cr_assert_eq(os.end_ms, B + 18 * S);
    cr_assert_eq(os.events, 3);
    agg_value_t out[2];
    agg_entity_query(fx.plan, fx.ent, B + 27 * S, out);
    cr_assert_eq(out[0].i, 3);
    cr_assert_eq(out[1].i, 7);
    /* 10 s after the last event the session is closed: empty values */
    agg_entity_query(fx.plan, fx.ent, B + 28 * S, out);
    cr_assert_eq(out[0].type, AGG_VAL_INT);
    cr_assert_eq(out[0].i, 0);
    cr_assert_eq(out[1].type, AGG_VAL_INT);
    cr_assert_eq(out[1].i, 0);
    cr_assert_not(agg_entity_open_session(fx.plan, fx.ent, 0, B + 28 * S, &os));
    fx_close(&fx);
}

Test(agg_known, session_max_length_cuts_at_aligned_periods)
{
    fixture_t fx;
    fx_open(&fx, "      - {name: c, aggregate: count, window: {session: 10m, max_length: 1h}, "
                 "sessions_kept: 5}\n");
    /* one event every 5 min from B+30m to B+2h30m: gaps never end a session,
     * the cut at each whole hour (since the epoch) does */
    for (int64_t t = B + 30 * M; t <= B + 150 * M; t += 5 * M)
        cr_assert_eq(fx_add(&fx, t, 1, 0, NULL, INT64_MIN), 0);
    agg_session_t ss[5], os;
    size_t n = agg_entity_completed_sessions(fx.plan, fx.ent, 0, ss, 5);
    cr_assert_eq(n, 2);
    cr_assert_eq(ss[0].start_ms, B + 60 * M);
    cr_assert_eq(ss[0].end_ms, B + 115 * M);
    cr_assert_eq(ss[0].events, 12);
    cr_assert_eq(ss[1].start_ms, B + 30 * M);
    cr_assert_eq(ss[1].events, 6);
    cr_assert(agg_entity_open_session(fx.plan, fx.ent, 0, B + 151 * M, &os));
    cr_assert_eq(os.start_ms, B + 120 * M);
    cr_assert_eq(os.events, 7);
    fx_close(&fx);
}

Test(agg_known, sessions_kept_bounds_history)
{
    fixture_t fx;
    fx_open(&fx, "      - {name: c, aggregate: count, window: {session: 1m}, sessions_kept: 2}\n");
    for (int k = 0; k < 10; k++) {
        int64_t t = B + k * H;
        cr_assert_eq(fx_add(&fx, t, 1, 0, NULL, t - M), 0);
        agg_entity_expire(fx.plan, fx.ent, t - M);
    }
    agg_session_t ss[8];
    cr_assert_eq(agg_entity_completed_sessions(fx.plan, fx.ent, 0, ss, 8), 2);
    cr_assert_eq(ss[0].start_ms, B + 8 * H);
    cr_assert_eq(ss[1].start_ms, B + 7 * H);
    sl_buf_t buf = SL_BUF_INIT;
    cr_assert_eq(agg_entity_encode(fx.plan, fx.ent, &buf), 0);
    cr_assert_lt(buf.len, 80, "state holds only kept sessions: %zu bytes", buf.len);
    sl_buf_free(&buf);
    fx_close(&fx);
}

/* ---- values of empty windows, decay, types ------------------------------- */

Test(agg_known, empty_window_values)
{
    fixture_t fx;
    fx_open(&fx,
            "      - {name: c, aggregate: count, window: {tumbling: 1h}}\n"
            "      - {name: s, aggregate: sum, field: v, window: {tumbling: 1h}}\n"
            "      - {name: sx, aggregate: sum, field: x, window: {tumbling: 1h}}\n"
            "      - {name: mn, aggregate: min, field: v, window: {tumbling: 1h}}\n"
            "      - {name: m, aggregate: mean, field: x, window: {tumbling: 1h}}\n"
            "      - {name: l, aggregate: last_n, field: s, n: 2, window: {tumbling: 1h}}\n"
            "      - {name: d, aggregate: approx_distinct, field: s, window: {tumbling: 1h}}\n"
            "      - {name: q, aggregate: approx_quantile, field: x, quantile: 0.5, window: {tumbling: 1h}}\n");
    cr_assert_eq(fx_add(&fx, B + 5 * M, 3, 1.5, "a", INT64_MIN), 0);
    agg_value_t out[8];
    agg_entity_query(fx.plan, fx.ent, B + H, out);          /* the next bucket: empty */
    cr_assert(out[0].type == AGG_VAL_INT && out[0].i == 0);
    cr_assert(out[1].type == AGG_VAL_INT && out[1].i == 0);
    cr_assert(out[2].type == AGG_VAL_DOUBLE && out[2].d == 0.0);
    cr_assert_eq(out[3].type, AGG_VAL_NULL);
    cr_assert_eq(out[4].type, AGG_VAL_NULL);
    cr_assert(out[5].type == AGG_VAL_LIST && out[5].n_items == 0);
    cr_assert(out[6].type == AGG_VAL_INT && out[6].i == 0);
    cr_assert_eq(out[7].type, AGG_VAL_NULL);
    for (int i = 0; i < 8; i++)
        cr_assert_eq(out[i].newest_event_ms, 0);
    agg_entity_query(fx.plan, fx.ent, B + H - 1, out);      /* the event's bucket */
    cr_assert_eq(out[0].i, 1);
    cr_assert_eq(out[3].i, 3);
    cr_assert_eq(out[4].d, 1.5);
    cr_assert(out[5].n_items == 1 && out[5].items[0].slen == 1 && out[5].items[0].s[0] == 'a');
    cr_assert_eq(out[6].i, 1);
    cr_assert(fabs(out[7].d - 1.5) <= 0.015);
    cr_assert_eq(out[0].newest_event_ms, B + 5 * M);
    fx_close(&fx);
}

Test(agg_known, decayed_halves_per_half_life)
{
    fixture_t fx;
    fx_open(&fx,
            "      - {name: ds, aggregate: decayed_sum, field: x, half_life: 1h, window: lifetime}\n"
            "      - {name: dc, aggregate: decayed_count, half_life: 1h, window: lifetime}\n");
    cr_assert_eq(fx_add(&fx, B, 0, 8.0, NULL, INT64_MIN), 0);
    cr_assert_eq(fx_add(&fx, B + H, 0, 4.0, NULL, INT64_MIN), 0);
    agg_value_t out[2];
    agg_entity_query(fx.plan, fx.ent, B + 2 * H, out);
    /* 8 * 1/4 + 4 * 1/2 = 4; count 1/4 + 1/2 */
    cr_assert(fabs(out[0].d - 4.0) < 1e-12, "%.17g", out[0].d);
    cr_assert(fabs(out[1].d - 0.75) < 1e-12, "%.17g", out[1].d);
    fx_close(&fx);
}

Test(agg_known, ttl_idle)
{
    fixture_t fx;
    fx_open(&fx, "      - {name: c, aggregate: count, window: lifetime}\n");
    cr_assert(agg_entity_is_idle(fx.plan, fx.ent, B));            /* never seen */
    cr_assert_eq(fx_add(&fx, B, 0, 0, NULL, INT64_MIN), 0);
    cr_assert_not(agg_entity_is_idle(fx.plan, fx.ent, B + 24 * H));
    cr_assert(agg_entity_is_idle(fx.plan, fx.ent, B + 24 * H + 1));
    fx_close(&fx);
}

/* ---- expiry ------------------------------------------------------------------ */

Test(agg_known, expire_drops_tiles_keeps_answers)
{
    fixture_t fx;
    fx_open(&fx,
            "      - {name: c, aggregate: count, window: {sliding: 1h, hop: 1m}}\n"
            "      - {name: mx, aggregate: max, field: v, window: {sliding: 1h, hop: 1m}}\n"
            "      - {name: t, aggregate: count, window: {tumbling: 10m}}\n");
    for (int64_t t = B; t < B + 10 * H; t += 20 * S)
        cr_assert_eq(fx_add(&fx, t, (t / S) % 1000, 0, NULL, INT64_MIN), 0);
    int64_t af = B + 9 * H + 30 * M;
    agg_value_t before[3][3], after[3][3];
    int64_t qs[3] = { af, af + 17 * M, B + 11 * H };
    for (int i = 0; i < 3; i++)
        agg_entity_query(fx.plan, fx.ent, qs[i], before[i]);
    size_t mem0 = agg_entity_mem_size(fx.ent);
    sl_buf_t b0 = SL_BUF_INIT, b1 = SL_BUF_INIT;
    agg_entity_encode(fx.plan, fx.ent, &b0);
    agg_entity_expire(fx.plan, fx.ent, af);
    agg_entity_encode(fx.plan, fx.ent, &b1);
    cr_assert_lt(agg_entity_mem_size(fx.ent), mem0);
    cr_assert_lt(b1.len * 5, b0.len, "%zu vs %zu bytes", b1.len, b0.len);
    for (int i = 0; i < 3; i++) {
        agg_entity_query(fx.plan, fx.ent, qs[i], after[i]);
        for (int f = 0; f < 3; f++)
            cr_assert(after[i][f].type == before[i][f].type && after[i][f].i == before[i][f].i,
                      "query %d feature %d", i, f);
    }
    sl_buf_free(&b0);
    sl_buf_free(&b1);
    fx_close(&fx);
}

/* ---- decoding ---------------------------------------------------------------- */

/* ---- format 2 (sparse distinct sketches as 64-bit hashes) --------------- */

/* A state encoded by the format-2 build (commit c3f8072) from the stream
 * below: 60 events 30 s apart from B, s = "k" (7 i mod 40), so 40 distinct
 * values, every sketch sparse. */
static const char FORMAT2_STATE_HEX[] =
    "0271fb4327a6579b4a0301a0d4a1fff96200001e90d4821b90d4821b02e0d4030102e0d4"
    "030102e0d4030102e0d4030102e0d4030102e0d4030102e0d4030102e0d4030102e0d403"
    "0102e0d4030102e0d4030102e0d4030102e0d4030102e0d4030102e0d4030102e0d40301"
    "02e0d4030102e0d4030102e0d4030102e0d4030102e0d4030102e0d4030102e0d4030102"
    "e0d4030102e0d4030102e0d4030102e0d4030102e0d4030102e0d4030102e0d4030a0006"
    "d0ddb305d0ddb3050ae0fa20000abbb08e672f9190b3fff3aca95eab413db8f58229acb9"
    "9d4a6d3c0247920d1fa8b92ae2e81a6d2e3db1a2588da5969e6cd432ac1f4882e181579c"
    "c64632dfb187933388f481f45d103ac8dbc3584fd6b5010ae0fa20000ac563992ae1cf5f"
    "d7b8736c7b7224738ee936435ecb7306db70c81556452084a383f6f735211664e3187fd6"
    "a47847f180e3f0bec5c089851f782564115c9526aab6b61d4fcabdc580eaa0e359701759"
    "a0010ae0fa20000a88003ffd863472fa27d033e40ce7439b0f6e5b55b786573181afbf86"
    "b72a36c5daec299e5b8d2b2178310ab5b1449c67e54317ab6cc0cc7c1cc3cce21f127ed3"
    "620c853fa978dc7636ab94efbbf224ba010ae0fa20000ace0e43e34f541933e84b900ba7"
    "159c110857fe164c811ef816c49dc0f24ffab9adb3e3efefb85aec8c7d06a0192cb4eac9"
    "c09b5468770de9c2ac826c0edaedcb64c8ec5a92cb29a4deade2a83755fab4010ae0fa20"
    "000abbb08e672f9190b3fff3aca95eab413db8f58229acb99d4a6d3c0247920d1fa8b92a"
    "e2e81a6d2e3db1a2588da5969e6cd432ac1f4882e181579cc64632dfb187933388f481f4"
    "5d103ac8dbc3584fd6b5010ae0fa20000ac563992ae1cf5fd7b8736c7b7224738ee93643"
    "5ecb7306db70c81556452084a383f6f735211664e3187fd6a47847f180e3f0bec5c08985"
    "1f782564115c9526aab6b61d4fcabdc580eaa0e359701759a00a033ca0d4a1fff9620028"
    "bbb08e672f9190b3fff3aca95eab413db8f58229acb99d4a6d3c0247920d1fa8b92ae2e8"
    "1a6d2e3db1a2588da5969e6cd432ac1f4882e181579cc64632dfb187933388f481f45d10"
    "3ac8dbc3584fd6b5c563992ae1cf5fd7b8736c7b7224738ee936435ecb7306db70c81556"
    "452084a383f6f735211664e3187fd6a47847f180e3f0bec5c089851f782564115c9526aa"
    "b6b61d4fcabdc580eaa0e359701759a088003ffd863472fa27d033e40ce7439b0f6e5b55"
    "b786573181afbf86b72a36c5daec299e5b8d2b2178310ab5b1449c67e54317ab6cc0cc7c"
    "1cc3cce21f127ed3620c853fa978dc7636ab94efbbf224bace0e43e34f541933e84b900b"
    "a7159c110857fe164c811ef816c49dc0f24ffab9adb3e3efefb85aec8c7d06a0192cb4ea"
    "c9c09b5468770de9c2ac826c0edaedcb64c8ec5a92cb29a4deade2a83755fab4";

Test(agg_known, decodes_format_2)
{
    fixture_t fx;
    fx_open(&fx,
            "      - {name: c, aggregate: count, window: {sliding: 1h, hop: 1m}}\n"
            "      - {name: d, aggregate: approx_distinct, field: s, window: {sliding: 1h, hop: 5m}}\n"
            "      - {name: e, aggregate: approx_distinct, field: s, window: lifetime}\n");
    char s[16];
    for (int i = 0; i < 60; i++) {
        snprintf(s, sizeof(s), "k%d", i * 7 % 40);
        cr_assert_eq(fx_add(&fx, B + i * 30 * S, i, i * 0.5, s, INT64_MIN), 0);
    }
    size_t n2 = strlen(FORMAT2_STATE_HEX) / 2;
    unsigned char *v2 = malloc(n2);
    for (size_t i = 0; i < n2; i++)
        cr_assert_eq(sscanf(FORMAT2_STATE_HEX + 2 * i, "%2hhx", &v2[i]), 1);
    cr_assert_eq(v2[0], 2);
    agg_entity_t *old = NULL;
    cr_assert_eq(agg_entity_decode(fx.plan, v2, n2, &old), 0);
    /* the old state answers as the same stream does today ... */
    for (int64_t t = B; t <= B + 2 * H; t += 7 * M) {
        agg_value_t a[3], b[3];
        agg_entity_query(fx.plan, fx.ent, t, a);
        agg_entity_query(fx.plan, old, t, b);
        for (int k = 0; k < 3; k++)
            cr_assert(a[k].type == b[k].type && a[k].i == b[k].i, "feature %d at +%lld ms: %lld vs %lld",
                      k, (long long)(t - B), (long long)a[k].i, (long long)b[k].i);
    }
    agg_value_t now[3];
    agg_entity_query(fx.plan, old, B + 60 * 30 * S, now);
    cr_assert_eq(now[0].i, 60);
    cr_assert_eq(now[2].i, 40, "lifetime distinct %lld", (long long)now[2].i);
    /* ... and re-encodes (as format 3) to the very bytes of today's state */
    sl_buf_t a = SL_BUF_INIT, b = SL_BUF_INIT;
    cr_assert_eq(agg_entity_encode(fx.plan, fx.ent, &a), 0);
    cr_assert_eq(agg_entity_encode(fx.plan, old, &b), 0);
    cr_assert_eq(a.data[0], 3);
    cr_assert(a.len == b.len && !memcmp(a.data, b.data, a.len), "%zu vs %zu bytes", a.len, b.len);
    cr_assert_lt(a.len, n2, "format 3 (%zu bytes) is smaller than format 2 (%zu)", a.len, n2);
    sl_buf_free(&a);
    sl_buf_free(&b);
    agg_entity_free(old);
    free(v2);
    fx_close(&fx);
}

Test(agg_known, decode_rejects_bad_input)
{
    fixture_t fx;
    fx_open(&fx,
            "      - {name: c, aggregate: count, window: {sliding: 1h, hop: 1m}}\n"
            "      - {name: s, aggregate: last, field: s, window: {session: 5m}}\n"
            "      - {name: d, aggregate: approx_distinct, field: s, window: lifetime}\n"
            "      - {name: q, aggregate: approx_quantile, field: x, quantile: 0.5, window: {tumbling: 1h}}\n"
            "      - {name: l, aggregate: last_n, field: v, n: 4, window: {sliding: 10m, hop: 1m}}\n");
    char s[16];
    for (int i = 0; i < 300; i++) {
        snprintf(s, sizeof(s), "k%d", i % 97);
        cr_assert_eq(fx_add(&fx, B + i * 7 * S, i, i * 0.5, s, INT64_MIN), 0);
    }
    sl_buf_t buf = SL_BUF_INIT;
    cr_assert_eq(agg_entity_encode(fx.plan, fx.ent, &buf), 0);
    agg_entity_t *d = (agg_entity_t *)1;

    /* every truncation */
    for (size_t cut = 0; cut < buf.len; cut++) {
        cr_assert_eq(agg_entity_decode(fx.plan, buf.data, cut, &d), SL_ECORRUPT, "cut %zu", cut);
        cr_assert_null(d);
    }
    /* trailing garbage */
    sl_buf_put_u8(&buf, 0);
    cr_assert_eq(agg_entity_decode(fx.plan, buf.data, buf.len, &d), SL_ECORRUPT);
    buf.len--;
    /* unknown versions: the next one, and version 1 (a pre-release layout);
     * version 2 still decodes (decodes_format_2) */
    unsigned char ver = buf.data[0];
    cr_assert_eq(ver, 3);
    buf.data[0] = (unsigned char)(ver + 1);
    cr_assert_eq(agg_entity_decode(fx.plan, buf.data, buf.len, &d), SL_EVERSION);
    buf.data[0] = 1;
    cr_assert_eq(agg_entity_decode(fx.plan, buf.data, buf.len, &d), SL_EVERSION);
    buf.data[0] = ver;
    /* another view's state */
    buf.data[3] ^= 0x40;
    cr_assert_eq(agg_entity_decode(fx.plan, buf.data, buf.len, &d), SL_ESCHEMA);
    buf.data[3] ^= 0x40;
    /* single-byte corruptions: an error or a valid entity, never a crash
     * (ASan watches); a valid one must answer queries and re-encode */
    size_t ok = 0;
    for (size_t i = 9; i < buf.len; i++) {
        for (int bit = 0; bit < 8; bit += 3) {
            buf.data[i] ^= (unsigned char)(1u << bit);
            int rc = agg_entity_decode(fx.plan, buf.data, buf.len, &d);
            cr_assert(rc == 0 || rc == SL_ECORRUPT || rc == SL_ESCHEMA, "rc %d", rc);
            if (rc == 0) {
                agg_value_t out[5];
                sl_buf_t again = SL_BUF_INIT;
                agg_entity_query(fx.plan, d, B + H, out);
                cr_assert_eq(agg_entity_encode(fx.plan, d, &again), 0);
                sl_buf_free(&again);
                agg_entity_free(d);
                ok++;
            } else {
                cr_assert_null(d);
            }
            buf.data[i] ^= (unsigned char)(1u << bit);
        }
    }
    cr_assert_eq(agg_entity_decode(fx.plan, buf.data, buf.len, &d), 0);
    agg_entity_free(d);
    sl_buf_free(&buf);
    fx_close(&fx);
}

/* ---- plans -------------------------------------------------------------------- */

Test(agg_known, example_schemas_compile)
{
    const char *files[] = { "card_fraud.yaml", "clickstream.yaml", "ride_hailing.yaml" };
    for (size_t i = 0; i < 3; i++) {
        char path[1024], err[512] = "";
        snprintf(path, sizeof(path), "%s/schemas/examples/%s", SLUICE_SOURCE_DIR, files[i]);
        const char *paths[1] = { path };
        schema_t *s = NULL;
        cr_assert_eq(schema_load(paths, 1, &s, err, sizeof(err)), 0, "%s", err);
        for (size_t v = 0; v < s->n_views; v++) {
            agg_plan_t *p = NULL;
            cr_assert_eq(agg_plan_new(s, (int)v, &p, err, sizeof(err)), 0, "%s: %s", path, err);
            agg_entity_t *e = agg_entity_new(p);
            cr_assert(e);
            agg_entity_free(e);
            agg_plan_free(p);
        }
        schema_free(s);
    }
}

Test(agg_known, plan_rejects_bad_view)
{
    fixture_t fx;
    fx_open(&fx, "      - {name: c, aggregate: count, window: lifetime}\n");
    agg_plan_t *p = (agg_plan_t *)1;
    char err[128] = "";
    cr_assert_eq(agg_plan_new(fx.schema, 5, &p, err, sizeof(err)), SL_EINVAL);
    cr_assert_null(p);
    /* a hand-broken window */
    fx.schema->views[0].features[0].window.kind = SCHEMA_WINDOW_SLIDING;
    fx.schema->views[0].features[0].window.size_ms = 10;
    fx.schema->views[0].features[0].window.hop_ms = 3;
    cr_assert_eq(agg_plan_new(fx.schema, 0, &p, err, sizeof(err)), SL_EINVAL);
    cr_assert(strstr(err, "sliding"), "%s", err);
    fx_close(&fx);
}
