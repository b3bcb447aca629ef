/*
 * test_ingest_decode.c — decoder, entity keys, filters and watermarks on good
 * and bad input. Every bad-input reason has a case; expected values are
 * written out by hand (the oracle is the spec in decode.h / entity_key.h).
 */
#include <cjson/cJSON.h>
#include <criterion/criterion.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "decode.h"
#include "entity_key.h"
#include "mkschema.h"
#include "sl_err.h"
#include "watermark.h"

static const char *SCHEMA_MS =
    "version: 1\n"
    "entities:\n"
    "  - {name: card, keys: [card_id], key_type: string}\n"
    "  - name: route\n"
    "    keys: [{name: country, type: string}, {name: shard, type: int}]\n"
    "sources:\n"
    "  - name: tx\n"
    "    topic: tx\n"
    "    format: json\n"
    "    fields: {card_id: string, country: string, shard: int, amount: double, ok: bool, ts: int}\n"
    "    event_time: {field: ts, format: epoch_ms}\n"
    "    watermark_delay: 5s\n"
    "    allowed_lateness: 1m\n"
    "feature_views:\n"
    "  - name: card_stats\n"
    "    entity: card\n"
    "    source: tx\n"
    "    features:\n"
    "      - {name: n, aggregate: count, window: lifetime}\n"
    "  - name: route_stats\n"
    "    entity: route\n"
    "    source: tx\n"
    "    filter: {field: amount, op: gt, value: 10}\n"
    "    features:\n"
    "      - {name: total, aggregate: sum, field: amount, window: lifetime}\n";

static ingest_decoder_t *mkdec(schema_t *s, const char *source, size_t max)
{
    ingest_decoder_t *d = NULL;
    char err[256];
    int si = schema_source_index(s, source);
    cr_assert_geq(si, 0);
    cr_assert_eq(ingest_decoder_new(s, si, max, &d, err, sizeof err), 0, "%s", err);
    return d;
}

static ingest_bad_t dec(ingest_decoder_t *d, const char *json, ingest_record_t *rec)
{
    char why[256];
    return ingest_decode(d, json, json ? strlen(json) : 0, rec, why, sizeof why);
}

Test(decode, good_event_all_types)
{
    schema_t *s = mkschema(SCHEMA_MS);
    ingest_decoder_t *d = mkdec(s, "tx", 0);
    ingest_record_t r;
    const char *j = "{\"card_id\":\"c1\",\"country\":\"eu\",\"shard\":7,\"amount\":12.5,"
                    "\"ok\":true,\"ts\":1700000000123,\"extra\":[1,2]}";
    cr_assert_eq(dec(d, j, &r), INGEST_OK);
    cr_assert_eq(r.time_ms, 1700000000123LL);
    cr_assert_eq(r.n_fields, 6);
    int f = 0;
    const schema_source_t *src = &s->sources[0];
    for (f = 0; f < (int)src->n_fields; f++) {
        const char *n = src->fields[f].name;
        const agg_input_t *v = &r.fields[f];
        if (!strcmp(n, "card_id")) { cr_assert_eq(v->type, AGG_IN_STRING); cr_assert_eq(v->slen, 2); cr_assert(!memcmp(v->s, "c1", 2)); }
        if (!strcmp(n, "shard")) { cr_assert_eq(v->type, AGG_IN_INT); cr_assert_eq(v->i, 7); }
        if (!strcmp(n, "amount")) { cr_assert_eq(v->type, AGG_IN_DOUBLE); cr_assert_float_eq(v->d, 12.5, 1e-12); }
        if (!strcmp(n, "ok")) { cr_assert_eq(v->type, AGG_IN_BOOL); cr_assert_eq(v->i, 1); }
        if (!strcmp(n, "ts")) { cr_assert_eq(v->type, AGG_IN_INT); cr_assert_eq(v->i, 1700000000123LL); }
    }
    ingest_decoder_free(d);
    schema_free(s);
}

Test(decode, optional_field_missing_or_null_is_missing)
{
    schema_t *s = mkschema(SCHEMA_MS);
    ingest_decoder_t *d = mkdec(s, "tx", 0);
    ingest_record_t r;
    cr_assert_eq(dec(d, "{\"card_id\":\"c1\",\"country\":\"eu\",\"shard\":1,\"ts\":5,\"amount\":null}", &r), INGEST_OK);
    int fa = -1, fo = -1;
    for (size_t i = 0; i < s->sources[0].n_fields; i++) {
        if (!strcmp(s->sources[0].fields[i].name, "amount")) fa = (int)i;
        if (!strcmp(s->sources[0].fields[i].name, "ok")) fo = (int)i;
    }
    cr_assert_eq(r.fields[fa].type, AGG_IN_MISSING);
    cr_assert_eq(r.fields[fo].type, AGG_IN_MISSING);
    ingest_decoder_free(d);
    schema_free(s);
}

Test(decode, every_bad_reason)
{
    schema_t *s = mkschema(SCHEMA_MS);
    ingest_decoder_t *d = mkdec(s, "tx", 200);
    ingest_record_t r;
    static const struct { const char *json; ingest_bad_t want; } cases[] = {
        { "{\"card_id\":", INGEST_BAD_MALFORMED },
        { "not json", INGEST_BAD_MALFORMED },
        { "", INGEST_BAD_MALFORMED },
        { "[1,2,3]", INGEST_BAD_MALFORMED },
        { "\"str\"", INGEST_BAD_MALFORMED },
        { "{\"card_id\":\"c\",\"country\":\"e\",\"shard\":1,\"ts\":5} trailing", INGEST_BAD_MALFORMED },
        /* required: time field and key fields of both views */
        { "{\"country\":\"e\",\"shard\":1,\"ts\":5}", INGEST_BAD_MISSING_FIELD },
        { "{\"card_id\":\"c\",\"shard\":1,\"ts\":5}", INGEST_BAD_MISSING_FIELD },
        { "{\"card_id\":\"c\",\"country\":\"e\",\"shard\":1}", INGEST_BAD_MISSING_FIELD },
        { "{\"card_id\":null,\"country\":\"e\",\"shard\":1,\"ts\":5}", INGEST_BAD_MISSING_FIELD },
        /* mistyped */
        { "{\"card_id\":5,\"country\":\"e\",\"shard\":1,\"ts\":5}", INGEST_BAD_TYPE_MISMATCH },
        { "{\"card_id\":\"c\",\"country\":\"e\",\"shard\":1.5,\"ts\":5}", INGEST_BAD_TYPE_MISMATCH },
        { "{\"card_id\":\"c\",\"country\":\"e\",\"shard\":\"1\",\"ts\":5}", INGEST_BAD_TYPE_MISMATCH },
        { "{\"card_id\":\"c\",\"country\":\"e\",\"shard\":1,\"ts\":5,\"amount\":\"x\"}", INGEST_BAD_TYPE_MISMATCH },
        { "{\"card_id\":\"c\",\"country\":\"e\",\"shard\":1,\"ts\":5,\"ok\":1}", INGEST_BAD_TYPE_MISMATCH },
        { "{\"card_id\":\"c\",\"country\":\"e\",\"shard\":1e300,\"ts\":5}", INGEST_BAD_TYPE_MISMATCH },
        /* time */
        { "{\"card_id\":\"c\",\"country\":\"e\",\"shard\":1,\"ts\":\"2024-01-01T00:00:00Z\"}", INGEST_BAD_BAD_TIMESTAMP },
        { "{\"card_id\":\"c\",\"country\":\"e\",\"shard\":1,\"ts\":1.5}", INGEST_BAD_BAD_TIMESTAMP },
        { "{\"card_id\":\"c\",\"country\":\"e\",\"shard\":1,\"ts\":1e300}", INGEST_BAD_BAD_TIMESTAMP },
        { "{\"card_id\":\"c\",\"country\":\"e\",\"shard\":1,\"ts\":true}", INGEST_BAD_BAD_TIMESTAMP },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ingest_bad_t got = dec(d, cases[i].json, &r);
        cr_expect_eq(got, cases[i].want, "case %zu (%s): got %s want %s", i, cases[i].json,
                     ingest_bad_name(got), ingest_bad_name(cases[i].want));
    }
    /* tombstone: NULL payload */
    cr_assert_eq(dec(d, NULL, &r), INGEST_BAD_TOMBSTONE);
    /* oversized: 201 bytes > 200, even if valid JSON */
    char big[256];
    int n = snprintf(big, sizeof big, "{\"card_id\":\"c\",\"country\":\"e\",\"shard\":1,\"ts\":5,\"pad\":\"%0150d\"}", 0);
    cr_assert_gt(n, 200);
    cr_assert_eq(dec(d, big, &r), INGEST_BAD_OVERSIZED);
    /* exactly at the limit is fine */
    char ok[256];
    const char *head = "{\"card_id\":\"c\",\"country\":\"e\",\"shard\":1,\"ts\":5,\"pad\":\"";
    size_t hl = strlen(head);
    memcpy(ok, head, hl);
    memset(ok + hl, 'x', 200 - hl - 2);
    memcpy(ok + 198, "\"}", 3);
    cr_assert_eq(strlen(ok), 200);
    cr_assert_eq(dec(d, ok, &r), INGEST_OK);
    /* reason names are stable (they go into dead-letter headers) */
    cr_assert_str_eq(ingest_bad_name(INGEST_BAD_MALFORMED), "malformed");
    cr_assert_str_eq(ingest_bad_name(INGEST_BAD_MISSING_FIELD), "missing_field");
    cr_assert_str_eq(ingest_bad_name(INGEST_BAD_TYPE_MISMATCH), "type_mismatch");
    cr_assert_str_eq(ingest_bad_name(INGEST_BAD_BAD_TIMESTAMP), "bad_timestamp");
    cr_assert_str_eq(ingest_bad_name(INGEST_BAD_OVERSIZED), "oversized");
    cr_assert_str_eq(ingest_bad_name(INGEST_BAD_TOMBSTONE), "tombstone");
    ingest_decoder_free(d);
    schema_free(s);
}

Test(decode, time_formats)
{
    const char *fmt =
        "version: 1\n"
        "entities: [{name: u, keys: [id], key_type: string}]\n"
        "sources:\n"
        "  - {name: s, topic: t, format: json, fields: {id: string, ts: %s},\n"
        "     event_time: {field: ts, format: %s}, watermark_delay: 0s, allowed_lateness: 0s}\n"
        "feature_views:\n"
        "  - {name: v, entity: u, source: s, features: [{name: n, aggregate: count, window: lifetime}]}\n";
    char yaml[1024];
    ingest_record_t r;

    snprintf(yaml, sizeof yaml, fmt, "double", "epoch_s");
    schema_t *s = mkschema(yaml);
    ingest_decoder_t *d = mkdec(s, "s", 0);
    cr_assert_eq(dec(d, "{\"id\":\"a\",\"ts\":1700000000.001}", &r), INGEST_OK);
    cr_assert_eq(r.time_ms, 1700000000001LL);
    cr_assert_eq(dec(d, "{\"id\":\"a\",\"ts\":-1.5}", &r), INGEST_OK);
    cr_assert_eq(r.time_ms, -1500);
    cr_assert_eq(dec(d, "{\"id\":\"a\",\"ts\":\"1\"}", &r), INGEST_BAD_BAD_TIMESTAMP);
    ingest_decoder_free(d);
    schema_free(s);

    snprintf(yaml, sizeof yaml, fmt, "string", "rfc3339");
    s = mkschema(yaml);
    d = mkdec(s, "s", 0);
    cr_assert_eq(dec(d, "{\"id\":\"a\",\"ts\":\"2024-05-01T12:00:00.250Z\"}", &r), INGEST_OK);
    cr_assert_eq(r.time_ms, 1714564800250LL);
    cr_assert_eq(dec(d, "{\"id\":\"a\",\"ts\":\"2024-05-01T14:00:00+02:00\"}", &r), INGEST_OK);
    cr_assert_eq(r.time_ms, 1714564800000LL);
    cr_assert_eq(dec(d, "{\"id\":\"a\",\"ts\":\"yesterday\"}", &r), INGEST_BAD_BAD_TIMESTAMP);
    cr_assert_eq(dec(d, "{\"id\":\"a\",\"ts\":\"2024-13-01T00:00:00Z\"}", &r), INGEST_BAD_BAD_TIMESTAMP);
    cr_assert_eq(dec(d, "{\"id\":\"a\",\"ts\":17}", &r), INGEST_BAD_BAD_TIMESTAMP);
    ingest_decoder_free(d);
    schema_free(s);
}

Test(decode, filters)
{
    schema_t *s = mkschema(SCHEMA_MS);
    ingest_decoder_t *d = mkdec(s, "tx", 0);
    ingest_record_t r;
    const schema_filter_t *f = &s->views[schema_view_index(s, "route_stats")].filter;
    cr_assert_eq(f->op, SCHEMA_FILTER_GT);
    cr_assert_eq(dec(d, "{\"card_id\":\"c\",\"country\":\"e\",\"shard\":1,\"ts\":5,\"amount\":10.5}", &r), INGEST_OK);
    cr_assert(ingest_filter_match(f, r.fields));
    cr_assert_eq(dec(d, "{\"card_id\":\"c\",\"country\":\"e\",\"shard\":1,\"ts\":5,\"amount\":10}", &r), INGEST_OK);
    cr_assert_not(ingest_filter_match(f, r.fields));
    cr_assert_eq(dec(d, "{\"card_id\":\"c\",\"country\":\"e\",\"shard\":1,\"ts\":5}", &r), INGEST_OK);
    cr_assert_not(ingest_filter_match(f, r.fields), "missing field never matches");
    /* string equality on a hand-made filter */
    schema_filter_t eq = { .op = SCHEMA_FILTER_EQ, .type = SCHEMA_TYPE_STRING, .s = (char *)"e" };
    for (size_t i = 0; i < s->sources[0].n_fields; i++)
        if (!strcmp(s->sources[0].fields[i].name, "country")) eq.field = (int)i;
    cr_assert(ingest_filter_match(&eq, r.fields));
    eq.s = (char *)"ee";
    cr_assert_not(ingest_filter_match(&eq, r.fields));
    eq.op = SCHEMA_FILTER_NE;
    cr_assert(ingest_filter_match(&eq, r.fields));
    cr_assert(ingest_filter_match(&(schema_filter_t){ .op = SCHEMA_FILTER_NONE }, r.fields));
    ingest_decoder_free(d);
    schema_free(s);
}

Test(entity_key, single_and_composite)
{
    schema_t *s = mkschema(SCHEMA_MS);
    const schema_entity_t *route = &s->entities[1];
    cr_assert_eq(route->n_keys, 2);
    sl_buf_t b = SL_BUF_INIT;
    agg_input_t v[2] = { { .type = AGG_IN_STRING, .s = "eu", .slen = 2 }, { .type = AGG_IN_INT, .i = -7 } };
    cr_assert_eq(ingest_key_encode(&b, route->key_types, v, 2), 0);
    cr_assert_eq(b.len, 6);
    cr_assert(!memcmp(b.data, "\x02" "eu" "\x02" "-7", 6));
    /* serving builds the same bytes from text */
    sl_buf_t t = SL_BUF_INIT;
    const char *parts[] = { "eu", "-7" };
    size_t lens[] = { 2, 2 };
    cr_assert_eq(ingest_key_from_text(&t, route, parts, lens, 2), 0);
    cr_assert_eq(t.len, b.len);
    cr_assert(!memcmp(t.data, b.data, b.len));
    /* readable rendering */
    sl_buf_t f = SL_BUF_INIT;
    cr_assert_eq(ingest_key_format(&f, 2, b.data, b.len), 0);
    cr_assert_eq(f.len, 5);
    cr_assert(!memcmp(f.data, "eu|-7", 5));
    /* bad text for an int part, wrong arity */
    sl_buf_reset(&t);
    const char *bad[] = { "eu", "7x" };
    size_t badl[] = { 2, 2 };
    cr_assert_eq(ingest_key_from_text(&t, route, bad, badl, 2), SL_ETYPE);
    cr_assert_eq(ingest_key_from_text(&t, route, parts, lens, 1), SL_EINVAL);
    /* single key: the text alone */
    sl_buf_reset(&b);
    agg_input_t one = { .type = AGG_IN_STRING, .s = "card-9", .slen = 6 };
    cr_assert_eq(ingest_key_encode(&b, s->entities[0].key_types, &one, 1), 0);
    cr_assert_eq(b.len, 6);
    cr_assert(!memcmp(b.data, "card-9", 6));
    /* mistyped and missing values */
    sl_buf_reset(&b);
    agg_input_t wrong = { .type = AGG_IN_INT, .i = 3 };
    cr_assert_eq(ingest_key_encode(&b, s->entities[0].key_types, &wrong, 1), SL_ETYPE);
    agg_input_t missing = { .type = AGG_IN_MISSING };
    cr_assert_eq(ingest_key_encode(&b, s->entities[0].key_types, &missing, 1), SL_EINVAL);
    /* int canonical form: "+7" and "007" are not valid key text */
    const char *plus[] = { "eu", "+7" };
    cr_assert_eq(ingest_key_from_text(&t, route, plus, lens, 2), SL_ETYPE);
    sl_buf_free(&b);
    sl_buf_free(&t);
    sl_buf_free(&f);
    schema_free(s);
}

Test(entity_key, double_and_bool_canonical)
{
    schema_type_t types[2] = { SCHEMA_TYPE_DOUBLE, SCHEMA_TYPE_BOOL };
    schema_entity_t ent = { .name = (char *)"e", .key_types = types, .n_keys = 2 };
    sl_buf_t a = SL_BUF_INIT, b = SL_BUF_INIT;
    agg_input_t v[2] = { { .type = AGG_IN_INT, .i = 2 }, { .type = AGG_IN_BOOL, .i = 1 } };
    cr_assert_eq(ingest_key_encode(&a, types, v, 2), 0);
    const char *parts[] = { "2.0", "true" };
    size_t lens[] = { 3, 4 };
    cr_assert_eq(ingest_key_from_text(&b, &ent, parts, lens, 2), 0);
    cr_assert_eq(a.len, b.len);
    cr_assert(!memcmp(a.data, b.data, a.len), "2 (int) and \"2.0\" name the same double key");
    agg_input_t nan = { .type = AGG_IN_DOUBLE, .d = 0.0 / 0.0 };
    sl_buf_reset(&a);
    cr_assert_eq(ingest_key_encode(&a, types, &nan, 1), SL_ERANGE);
    sl_buf_free(&a);
    sl_buf_free(&b);
}

Test(watermark, delay_lateness_and_restore)
{
    ingest_wm_t wm;
    ingest_wm_init(&wm, 5000, 60000);
    cr_assert_eq(ingest_wm_watermark(&wm), INGEST_WM_NONE);
    cr_assert_eq(ingest_wm_accept_from(&wm), INT64_MIN);
    cr_assert_not(ingest_wm_observe_is_late(&wm, 100000));
    cr_assert_eq(ingest_wm_watermark(&wm), 95000);
    cr_assert_eq(ingest_wm_accept_from(&wm), 35000);
    cr_assert_not(ingest_wm_observe_is_late(&wm, 35000), "exactly at accept_from is on time");
    cr_assert(ingest_wm_observe_is_late(&wm, 34999));
    cr_assert_eq(ingest_wm_watermark(&wm), 95000, "older events do not move the watermark");
    cr_assert_not(ingest_wm_observe_is_late(&wm, 200000));
    cr_assert(ingest_wm_observe_is_late(&wm, 100000), "now behind 195000-60000");

    ingest_wm_t r;
    ingest_wm_init(&r, 5000, 60000);
    ingest_wm_restore(&r, ingest_wm_watermark(&wm));
    cr_assert_eq(r.max_event_ms, wm.max_event_ms);
    cr_assert_eq(ingest_wm_accept_from(&r), ingest_wm_accept_from(&wm));
    ingest_wm_restore(&r, INGEST_WM_NONE);
    cr_assert_eq(ingest_wm_accept_from(&r), INT64_MIN);

    /* saturation at the bounds */
    ingest_wm_init(&r, 1000, 1000);
    cr_assert_not(ingest_wm_observe_is_late(&r, INT64_MIN + 10));
    cr_assert_eq(ingest_wm_accept_from(&r), INT64_MIN);
}

/* The decoder parses into a per-decoder arena and spills into malloc past it
 * (decode.c). Small and large documents alternate on one decoder, a
 * malformed one lands in between, and every field still reads back exactly;
 * under ASan/LSan a wrong free or a leaked spilled item fails the run. */
Test(decode, arena_spill_and_reuse)
{
    schema_t *s = mkschema(SCHEMA_MS);
    ingest_decoder_t *d = mkdec(s, "tx", 0);
    const schema_source_t *src = &s->sources[0];
    int fc = -1;
    for (size_t i = 0; i < src->n_fields; i++)
        if (!strcmp(src->fields[i].name, "country")) fc = (int)i;
    cr_assert_geq(fc, 0);
    size_t big = 20000;
    char *country = malloc(big + 1);
    char *json = malloc(big + 256);
    cr_assert(country && json);
    for (int round = 0; round < 40; round++) {
        size_t n = round % 3 == 0 ? big - (size_t)round : (size_t)(round % 7) + 1;
        for (size_t i = 0; i < n; i++) country[i] = (char)('a' + (i + (size_t)round) % 26);
        country[n] = '\0';
        /* many members, so that even the small documents use many items */
        snprintf(json, big + 256,
                 "{\"card_id\":\"c%d\",\"country\":\"%s\",\"shard\":%d,\"ts\":%d,"
                 "\"x1\":[1,2,3,4,5,6,7,8],\"x2\":{\"a\":{\"b\":[true,false,null]}}}",
                 round, country, round, 1000 + round);
        ingest_record_t r;
        cr_assert_eq(dec(d, json, &r), INGEST_OK, "round %d", round);
        cr_assert_eq(r.fields[fc].slen, n, "round %d", round);
        cr_assert(!memcmp(r.fields[fc].s, country, n), "round %d", round);
        cr_assert_eq(r.time_ms, 1000 + round);
        if (round % 5 == 2)
            cr_assert_eq(dec(d, "{\"card_id\":\"c1\",\"country\":[1,2,{\"q\":", &r), INGEST_BAD_MALFORMED);
    }
    /* cJSON outside a decoder allocates with plain malloc/free */
    cJSON *o = cJSON_Parse("{\"k\":[1,2,3],\"s\":\"text\"}");
    cr_assert(o);
    char *txt = cJSON_PrintUnformatted(o);
    cr_assert_str_eq(txt, "{\"k\":[1,2,3],\"s\":\"text\"}");
    free(txt);
    cJSON_Delete(o);
    free(country);
    free(json);
    ingest_decoder_free(d);
    schema_free(s);
}
