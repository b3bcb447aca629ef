/*
 * test_gen.c — the event generator, checked with ingest's own decoder as the
 * oracle: good events decode and carry the message key of their entity, each
 * bad kind is rejected for the matching reason, late events are behind the
 * lateness bound, and the same seed gives the same bytes.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "decode.h"
#include "entity_key.h"
#include "gen.h"
#include "schema.h"
#include "sl_err.h"

static schema_t *load_example(const char *name)
{
    char path[512];
    const char *dir = getenv("SLUICE_EXAMPLES_DIR");
    cr_assert_not_null(dir);
    snprintf(path, sizeof path, "%s/%s", dir, name);
    const char *p = path;
    schema_t *s;
    char err[512];
    cr_assert_eq(schema_load(&p, 1, &s, err, sizeof err), 0, "%s", err);
    return s;
}

static void check_source(const char *file, const char *source)
{
    schema_t *s = load_example(file);
    int si = schema_source_index(s, source);
    cr_assert_geq(si, 0);
    gen_options_t o;
    gen_options_defaults(&o);
    o.seed = 42;
    o.start_ms = 1700000000000LL;
    o.ooo_share = 0.1;
    o.late_share = 0.05;
    o.bad_share = 0.1;
    gen_t *g;
    char err[256];
    cr_assert_eq(gen_new(s, si, &o, &g, err, sizeof err), 0, "%s", err);
    ingest_decoder_t *dec;
    cr_assert_eq(ingest_decoder_new(s, si, 1 << 20, &dec, err, sizeof err), 0, "%s", err);

    /* The first view of the source decides the message key. */
    const schema_view_t *kv = NULL;
    for (size_t v = 0; v < s->n_views && !kv; v++)
        if (s->views[v].source == si) kv = &s->views[v];
    const schema_entity_t *ke = &s->entities[kv->entity];

    sl_buf_t payload = SL_BUF_INIT, key = SL_BUF_INIT, want = SL_BUF_INIT;
    int64_t max_seen = INT64_MIN;
    const schema_source_t *src = &s->sources[si];
    int counts[GEN__KIND_COUNT] = { 0 };
    static const ingest_bad_t expect_bad[GEN__KIND_COUNT] = {
        [GEN_BAD_MALFORMED] = INGEST_BAD_MALFORMED, [GEN_BAD_MISSING_KEY] = INGEST_BAD_MISSING_FIELD,
        [GEN_BAD_TYPE] = INGEST_BAD_TYPE_MISMATCH, [GEN_BAD_TIMESTAMP] = INGEST_BAD_BAD_TIMESTAMP,
        [GEN_TOMBSTONE] = INGEST_BAD_TOMBSTONE,
    };
    for (int i = 0; i < 20000; i++) {
        bool is_null;
        int kind = gen_next(g, &payload, &key, &is_null);
        cr_assert_geq(kind, 0);
        counts[kind]++;
        ingest_record_t rec;
        char why[256] = "";
        ingest_bad_t bad = ingest_decode(dec, is_null ? NULL : payload.data, payload.len, &rec,
                                         why, sizeof why);
        if (kind >= GEN_BAD_MALFORMED) {
            cr_assert_eq(bad, expect_bad[kind], "%s event decoded as %s: %.*s", gen_kind_name(kind),
                         ingest_bad_name(bad), (int)payload.len, (char *)payload.data);
            continue;
        }
        cr_assert_eq(bad, INGEST_OK, "%s event rejected (%s: %s): %.*s", gen_kind_name(kind),
                     ingest_bad_name(bad), why, (int)payload.len, (char *)payload.data);
        /* message key == key of the decoded event */
        agg_input_t vals[8];
        for (size_t k = 0; k < ke->n_keys; k++) vals[k] = rec.fields[kv->key_fields[k]];
        sl_buf_reset(&want);
        cr_assert_eq(ingest_key_encode(&want, ke->key_types, vals, ke->n_keys), 0);
        cr_assert_eq(want.len, key.len);
        cr_assert_eq(memcmp(want.data, key.data, key.len), 0);
        int64_t bound = max_seen == INT64_MIN ? INT64_MIN
                      : max_seen - src->watermark_delay_ms - src->allowed_lateness_ms;
        if (kind == GEN_LATE && max_seen != INT64_MIN)
            cr_assert_lt(rec.time_ms, bound, "late event must be behind the lateness bound");
        else if (max_seen != INT64_MIN)
            cr_assert_geq(rec.time_ms, max_seen - src->watermark_delay_ms - 1000,
                          "in-order/out-of-order events stay within the watermark delay");
        if (rec.time_ms > max_seen) max_seen = rec.time_ms;
    }
    /* shares are honoured (binomial, 20000 draws: generous bounds) */
    cr_assert(counts[GEN_LATE] > 800 && counts[GEN_LATE] < 1200, "late %d", counts[GEN_LATE]);
    int bad = 0;
    for (int k = GEN_BAD_MALFORMED; k < GEN__KIND_COUNT; k++) bad += counts[k];
    cr_assert(bad > 1700 && bad < 2300, "bad %d", bad);
    sl_buf_free(&payload);
    sl_buf_free(&key);
    sl_buf_free(&want);
    ingest_decoder_free(dec);
    gen_free(g);
    schema_free(s);
}

Test(gen, payments_decode_as_declared) { check_source("card_fraud.yaml", "payments"); }
Test(gen, clicks_rfc3339_decode)       { check_source("clickstream.yaml", "clicks"); }
Test(gen, trips_int_and_composite)     { check_source("ride_hailing.yaml", "trips"); }

static uint64_t stream_hash(schema_t *s, uint64_t seed)
{
    gen_options_t o;
    gen_options_defaults(&o);
    o.seed = seed;
    o.start_ms = 1700000000000LL;
    gen_t *g;
    char err[256];
    cr_assert_eq(gen_new(s, 0, &o, &g, err, sizeof err), 0, "%s", err);
    sl_buf_t p = SL_BUF_INIT, k = SL_BUF_INIT;
    uint64_t h = 1469598103934665603ULL;
    for (int i = 0; i < 5000; i++) {
        bool is_null;
        gen_next(g, &p, &k, &is_null);
        for (size_t j = 0; j < p.len; j++) h = (h ^ p.data[j]) * 1099511628211ULL;
        for (size_t j = 0; j < k.len; j++) h = (h ^ k.data[j]) * 1099511628211ULL;
    }
    sl_buf_free(&p);
    sl_buf_free(&k);
    gen_free(g);
    return h;
}

Test(gen, same_seed_same_stream)
{
    schema_t *s = load_example("card_fraud.yaml");
    cr_assert_eq(stream_hash(s, 7), stream_hash(s, 7));
    cr_assert_neq(stream_hash(s, 7), stream_hash(s, 8));
    schema_free(s);
}

Test(gen, filter_values_appear)
{
    schema_t *s = load_example("card_fraud.yaml");
    gen_options_t o;
    gen_options_defaults(&o);
    gen_t *g;
    char err[256];
    cr_assert_eq(gen_new(s, 0, &o, &g, err, sizeof err), 0);
    sl_buf_t p = SL_BUF_INIT, k = SL_BUF_INIT;
    int declined = 0;
    for (int i = 0; i < 2000; i++) {
        bool is_null;
        gen_next(g, &p, &k, &is_null);
        sl_buf_put_u8(&p, 0);
        if (strstr((char *)p.data, "\"status\":\"declined\"")) declined++;
    }
    cr_assert_gt(declined, 20, "the card_declines filter value must get traffic (%d)", declined);
    sl_buf_free(&p);
    sl_buf_free(&k);
    gen_free(g);
    schema_free(s);
}

Test(gen, rejects_bad_options)
{
    schema_t *s = load_example("card_fraud.yaml");
    gen_options_t o;
    gen_options_defaults(&o);
    o.bad_share = 0.9;
    o.late_share = 0.2;
    gen_t *g;
    char err[256];
    cr_assert_eq(gen_new(s, 0, &o, &g, err, sizeof err), SL_EINVAL);
    cr_assert(strstr(err, "add up to at most 1"), "%s", err);
    schema_free(s);
}

/* The demo's hints name the most popular entity of each view: checked
 * against a count of the key values in 20000 generated events, and the
 * parts of a composite key against the RESP key spec. */
static void check_example_keys(const char *file, const char *source)
{
    schema_t *s = load_example(file);
    int si = schema_source_index(s, source);
    gen_options_t o;
    gen_options_defaults(&o);
    o.bad_share = 0;
    o.entities = 500;
    gen_t *g;
    char err[256];
    cr_assert_eq(gen_new(s, si, &o, &g, err, sizeof err), 0, "%s", err);
    ingest_decoder_t *dec;
    cr_assert_eq(ingest_decoder_new(s, si, 1 << 20, &dec, err, sizeof err), 0, "%s", err);
    enum { N = 20000, MAXV = 16, MAXD = 1024 };
    static char texts[MAXV][4][MAXD][24];      /* distinct key texts per view and part */
    static int counts[MAXV][4][MAXD];
    static int n_distinct[MAXV][4];
    memset(n_distinct, 0, sizeof n_distinct);
    sl_buf_t p = SL_BUF_INIT, k = SL_BUF_INIT;
    for (int i = 0; i < N; i++) {
        bool is_null;
        gen_next(g, &p, &k, &is_null);
        ingest_record_t rec;
        char why[256];
        if (ingest_decode(dec, p.data, p.len, &rec, why, sizeof why) != INGEST_OK) continue;
        for (size_t v = 0; v < s->n_views && v < MAXV; v++) {
            if (s->views[v].source != si) continue;
            const schema_entity_t *e = &s->entities[s->views[v].entity];
            for (size_t kp = 0; kp < e->n_keys && kp < 4; kp++) {
                const agg_input_t *in = &rec.fields[s->views[v].key_fields[kp]];
                char t[24];
                if (e->key_types[kp] == SCHEMA_TYPE_INT) snprintf(t, sizeof t, "%lld", (long long)in->i);
                else snprintf(t, sizeof t, "%.*s", (int)in->slen, in->s);
                int j = 0;
                while (j < n_distinct[v][kp] && strcmp(texts[v][kp][j], t)) j++;
                if (j == n_distinct[v][kp]) {
                    cr_assert_lt(j, MAXD);
                    strcpy(texts[v][kp][j], t);
                    counts[v][kp][j] = 0;
                    n_distinct[v][kp]++;
                }
                counts[v][kp][j]++;
            }
        }
    }
    int checked = 0;
    for (size_t v = 0; v < s->n_views && v < MAXV; v++) {
        if (s->views[v].source != si) {
            char t[64];
            cr_assert_eq(gen_example_key_part(g, (int)v, 0, t, sizeof t), SL_EINVAL);
            continue;
        }
        const schema_entity_t *e = &s->entities[s->views[v].entity];
        char spec[160], joined[160] = "";
        cr_assert_eq(gen_example_key(g, (int)v, spec, sizeof spec), 0);
        for (size_t kp = 0; kp < e->n_keys; kp++) {
            int best = 0;
            for (int j = 1; j < n_distinct[v][kp]; j++)
                if (counts[v][kp][j] > counts[v][kp][best]) best = j;
            char t[64];
            cr_assert_eq(gen_example_key_part(g, (int)v, kp, t, sizeof t), 0);
            cr_assert_str_eq(t, texts[v][kp][best], "view %s key %s: hint %s, most frequent %s (%d times)",
                             s->views[v].name, e->keys[kp], t, texts[v][kp][best], counts[v][kp][best]);
            snprintf(joined + strlen(joined), sizeof joined - strlen(joined), "%s%s%s",
                     e->n_keys > 1 && kp == 0 ? "{" : "", t, e->n_keys > 1 ? (kp + 1 == e->n_keys ? "}" : "|") : "");
            checked++;
        }
        cr_assert_str_eq(spec, joined);
        char t[64];
        cr_assert_eq(gen_example_key_part(g, (int)v, e->n_keys, t, sizeof t), SL_EINVAL);
    }
    cr_assert_gt(checked, 0);
    sl_buf_free(&p);
    sl_buf_free(&k);
    ingest_decoder_free(dec);
    gen_free(g);
    schema_free(s);
}

Test(gen, example_keys_are_the_most_popular)
{
    check_example_keys("card_fraud.yaml", "payments");
    check_example_keys("ride_hailing.yaml", "trips");
}
