/*
 * test_schema.c — the schema checker: every example loads, every kind of
 * mistake gets its own precise, located message, and fingerprints change
 * exactly when a view's definition does.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "schema.h"
#include "sl_err.h"

/* A valid base schema; error cases below replace one line of it. */
static const char *BASE =
    "version: 1\n"                                                   /* 1 */
    "entities:\n"                                                    /* 2 */
    "  - name: card\n"                                               /* 3 */
    "    keys: [card_id]\n"                                          /* 4 */
    "sources:\n"                                                     /* 5 */
    "  - name: payments\n"                                           /* 6 */
    "    topic: payments\n"                                          /* 7 */
    "    fields: {card_id: string, amount: double, merchant: string, n: int, ts: int}\n" /* 8 */
    "    event_time: {field: ts, format: epoch_ms}\n"                /* 9 */
    "    watermark_delay: 5s\n"                                      /* 10 */
    "feature_views:\n"                                               /* 11 */
    "  - name: card_activity\n"                                      /* 12 */
    "    entity: card\n"                                             /* 13 */
    "    source: payments\n"                                         /* 14 */
    "    ttl: 7d\n"                                                  /* 15 */
    "    features:\n"                                                /* 16 */
    "      - {name: cnt, aggregate: count, window: {sliding: 1h, hop: 1m}}\n"          /* 17 */
    "      - {name: total, aggregate: sum, field: amount, window: {sliding: 1h, hop: 1m}}\n" /* 18 */
    "feature_services:\n"                                            /* 19 */
    "  - name: svc\n"                                                /* 20 */
    "    features: [card_activity:cnt, card_activity:total]\n";      /* 21 */

/* BASE with line `line` (1-based) replaced by `text` (which may hold several lines). */
static char *with_line(int line, const char *text)
{
    static char out[8192];
    const char *p = BASE;
    size_t off = 0;
    for (int l = 1; *p; l++) {
        const char *nl = strchr(p, '\n');
        size_t n = (size_t)(nl - p) + 1;
        if (l == line)
            off += (size_t)snprintf(out + off, sizeof out - off, "%s\n", text);
        else
            off += (size_t)snprintf(out + off, sizeof out - off, "%.*s", (int)n, p);
        p += n;
    }
    return out;
}

static int load(const char *text, schema_t **s, char *err, size_t size)
{
    return schema_load_string("t.yaml", text, strlen(text), s, err, size);
}

/* Loading must fail, and the message must contain `expect`. */
static void expect_error(const char *text, const char *expect)
{
    schema_t *s = (schema_t *)1;
    char err[1024] = "";
    int rc = load(text, &s, err, sizeof err);
    cr_assert(rc < 0, "expected failure '%s', but the schema loaded", expect);
    cr_assert_null(s);
    cr_assert(strstr(err, expect), "expected message containing\n  %s\ngot\n  %s", expect, err);
}

Test(schema, base_is_valid)
{
    schema_t *s;
    char err[1024];
    int rc = load(BASE, &s, err, sizeof err);
    cr_assert_eq(rc, 0, "%s", err);
    cr_assert_eq(s->n_entities, 1);
    cr_assert_eq(s->n_sources, 1);
    cr_assert_eq(s->n_views, 1);
    cr_assert_eq(s->views[0].n_features, 2);
    cr_assert_eq(s->views[0].features[1].agg, SCHEMA_AGG_SUM);
    cr_assert_eq(s->views[0].features[1].window.size_ms, 3600000);
    cr_assert_eq(s->views[0].features[1].window.hop_ms, 60000);
    cr_assert_eq(s->views[0].ttl_ms, 7 * 86400000LL);
    cr_assert_eq(s->sources[0].watermark_delay_ms, 5000);
    cr_assert_eq(s->services[0].n_refs, 2);
    cr_assert_eq(s->views[0].key_fields[0], 0);
    schema_free(s);
}

/* The three shipped example files (SLUICE_EXAMPLES_DIR). */
static void example_paths(char paths[3][512], const char *pp[3])
{
    const char *dir = getenv("SLUICE_EXAMPLES_DIR");
    cr_assert_not_null(dir);
    const char *names[] = { "card_fraud.yaml", "clickstream.yaml", "ride_hailing.yaml" };
    for (int i = 0; i < 3; i++) {
        snprintf(paths[i], 512, "%s/%s", dir, names[i]);
        pp[i] = paths[i];
    }
}

Test(schema, examples_load)
{
    char paths[3][512];
    const char *pp[3];
    example_paths(paths, pp);
    schema_t *s;
    char err[1024];
    cr_assert_eq(schema_load(pp, 3, &s, err, sizeof err), 0, "%s", err);
    cr_assert_eq(s->n_views, 9);
    int zv = schema_view_index(s, "zone_demand");
    cr_assert_geq(zv, 0);
    cr_assert_eq(s->entities[s->views[zv].entity].n_keys, 2, "zone has a composite key");
    int svc = schema_service_index(s, "fraud_model_v1");
    cr_assert_eq(s->services[svc].n_refs, 7 + 4, "view:* expands to every feature");
    schema_free(s);
}

/* A pack of the three example files loads back into the same schema (every
 * fingerprint, view and feature); a cut of the pack loads the files it still
 * holds whole or is a clean error, as is a byte flipped in its header (ASan
 * checks the reads). */
Test(schema, pack_round_trip_and_cuts)
{
    char paths[3][512];
    const char *pp[3];
    example_paths(paths, pp);
    schema_t *a, *b, *plain;
    char err[1024], *pack;
    size_t plen;
    cr_assert_eq(schema_load_pack(pp, 3, &a, &pack, &plen, err, sizeof err), 0, "%s", err);
    cr_assert_eq(schema_load(pp, 3, &plain, err, sizeof err), 0, "%s", err);
    cr_assert_eq(schema_load_packed(pack, plen, &b, err, sizeof err), 0, "%s", err);
    cr_assert_eq(a->fingerprint, plain->fingerprint);
    cr_assert_eq(b->fingerprint, a->fingerprint);
    cr_assert_eq(b->n_views, a->n_views);
    cr_assert_eq(b->n_services, a->n_services);
    for (size_t v = 0; v < a->n_views; v++) {
        cr_assert_str_eq(b->views[v].name, a->views[v].name);
        cr_assert_eq(b->views[v].fingerprint, a->views[v].fingerprint, "%s", a->views[v].name);
        cr_assert_eq(b->views[v].n_features, a->views[v].n_features);
    }
    schema_free(b);
    for (size_t cut = 0; cut < plen; cut += (cut < 64 ? 1 : 97)) {
        b = NULL;
        int rc = schema_load_packed(pack, cut, &b, err, sizeof err);
        if (rc == 0) {
            /* a cut between two files is a valid pack of the first ones */
            cr_assert_lt(b->n_views, a->n_views, "cut %zu", cut);
            schema_free(b);
        } else {
            cr_assert_null(b);
            cr_assert_gt(strlen(err), 0);
        }
    }
    char *bad = malloc(plen);
    memcpy(bad, pack, plen);
    bad[0] = 'S';
    cr_assert_neq(schema_load_packed(bad, plen, &b, err, sizeof err), 0);
    cr_assert(strstr(err, "not a packed schema"), "%s", err);
    memcpy(bad, pack, plen);
    bad[sizeof "sluice-schema-pack 1\n" - 1] = 'x';             /* the first length */
    cr_assert_neq(schema_load_packed(bad, plen, &b, err, sizeof err), 0);
    cr_assert(strstr(err, "malformed"), "%s", err);
    free(bad);
    free(pack);
    schema_free(a);
    schema_free(plain);
}

Test(errors, not_yaml)        { expect_error("a: [1, 2\nb: 3\n", "t.yaml:2:2: not valid YAML"); }
Test(errors, empty_file)      { expect_error("", "t.yaml:1:1: empty file"); }
Test(errors, comments_only)   { expect_error("# nothing here\n", "empty file"); }
Test(errors, not_a_mapping)   { expect_error("- a\n- b\n", "t.yaml:1:1: a schema file must be a mapping"); }
Test(errors, two_documents)   { expect_error("entities: []\n---\nsources: []\n", "more than one YAML document"); }
Test(errors, declares_nothing){ expect_error("version: 1\n", "declares nothing"); }

Test(errors, unknown_aggregate)
{
    expect_error(with_line(18, "      - {name: total, aggregate: summ, field: amount, window: lifetime}"),
                 "t.yaml:18:34: unknown aggregate 'summ'");
}

Test(errors, hop_does_not_divide)
{
    expect_error(with_line(17, "      - {name: cnt, aggregate: count, window: {sliding: 1h, hop: 7m}}"),
                 "t.yaml:17:66: window hop does not divide the window size");
}

Test(errors, hop_longer_than_size)
{
    expect_error(with_line(17, "      - {name: cnt, aggregate: count, window: {sliding: 1m, hop: 1h}}"),
                 "window hop is longer than its size");
}

Test(errors, unknown_field)
{
    expect_error(with_line(18, "      - {name: total, aggregate: sum, field: amt, window: lifetime}"),
                 "t.yaml:18:46: unknown field 'amt'");
}

Test(errors, unknown_view_in_service)
{
    expect_error(with_line(21, "    features: [card_activty:cnt]"),
                 "t.yaml:21:16: unknown view 'card_activty'");
}

Test(errors, unknown_feature_in_service)
{
    expect_error(with_line(21, "    features: [card_activity:count]"),
                 "unknown feature 'count' in view 'card_activity'");
}

Test(errors, unknown_entity)
{
    expect_error(with_line(13, "    entity: cards"), "t.yaml:13:13: unknown entity 'cards'");
}

Test(errors, unknown_source)
{
    expect_error(with_line(14, "    source: pay"), "t.yaml:14:13: unknown source 'pay'");
}

Test(errors, duplicate_feature)
{
    expect_error(with_line(18, "      - {name: cnt, aggregate: sum, field: amount, window: lifetime}"),
                 "t.yaml:18:16: duplicate feature 'cnt'");
}

Test(errors, duplicate_view)
{
    const char *second = "feature_views:\n  - name: card_activity\n    entity: card\n"
                         "    source: payments\n"
                         "    features: [{name: c, aggregate: count, window: lifetime}]\n";
    schema_t *s;
    char err[1024];
    /* The second declaration is in another file: the message points at both. */
    char pa[] = "/tmp/sluice-schema-XXXXXX", pb[] = "/tmp/sluice-schema-XXXXXX";
    int fa = mkstemp(pa), fb = mkstemp(pb);
    cr_assert(fa >= 0 && fb >= 0);
    FILE *f = fdopen(fa, "w");
    fputs(BASE, f);
    fclose(f);
    f = fdopen(fb, "w");
    fputs(second, f);
    fclose(f);
    const char *paths[] = { pa, pb };
    int rc = schema_load(paths, 2, &s, err, sizeof err);
    unlink(pa);
    unlink(pb);
    cr_assert(rc < 0);
    cr_assert(strstr(err, ":2:11: duplicate feature view 'card_activity' (first declared at"),
              "got: %s", err);
}

Test(errors, duplicate_entity_key_in_yaml_mapping)
{
    expect_error(with_line(7, "    topic: payments\n    topic: other"), "t.yaml:8:5: duplicate key 'topic' in source");
}

Test(errors, duplicate_field)
{
    expect_error(with_line(8, "    fields: {card_id: string, card_id: int, ts: int}"),
                 "duplicate field 'card_id' in source 'payments'");
}

Test(errors, negative_duration)
{
    expect_error(with_line(15, "    ttl: -7d"), "t.yaml:15:10: 'ttl' in feature view must not be negative");
}

Test(errors, malformed_duration)
{
    expect_error(with_line(10, "    watermark_delay: 5 seconds"),
                 "t.yaml:10:22: 'watermark_delay' in source '5 seconds' is not a duration");
}

Test(errors, duration_without_unit)
{
    expect_error(with_line(10, "    watermark_delay: 5000"), "needs a unit (ms, s, m, h, d, w)");
}

Test(errors, zero_window)
{
    expect_error(with_line(17, "      - {name: cnt, aggregate: count, window: {tumbling: 0s}}"),
                 "'tumbling' in window '0s' is zero or too large");
}

Test(errors, type_mismatch_numeric_aggregate)
{
    expect_error(with_line(18, "      - {name: total, aggregate: sum, field: merchant, window: lifetime}"),
                 "t.yaml:18:46: type mismatch: sum needs a numeric field but 'merchant' is string");
}

Test(errors, type_mismatch_entity_key)
{
    expect_error(with_line(4, "    keys: [{name: card_id, type: int}]"),
                 "type mismatch: field 'card_id' of source 'payments' is string but key 'card_id'");
}

Test(errors, type_mismatch_filter_value)
{
    expect_error(with_line(15, "    filter: {field: n, op: gt, value: many}"),
                 "type mismatch: filter value 'many' is not an int");
}

Test(errors, type_mismatch_event_time)
{
    expect_error(with_line(9, "    event_time: {field: card_id, format: epoch_ms}"),
                 "type mismatch: event_time field 'card_id' is string but format epoch_ms needs an int or double");
}

Test(errors, invalid_identifier)
{
    expect_error(with_line(12, "  - name: card-activity"),
                 "t.yaml:12:11: invalid feature view name 'card-activity'");
}

Test(errors, unknown_key)
{
    expect_error(with_line(15, "    tll: 7d"), "t.yaml:15:5: unknown key 'tll' in feature view");
}

Test(errors, missing_key)
{
    expect_error(with_line(7, "    format: json"), "t.yaml:6:5: missing 'topic' in source");
}

Test(errors, parameter_of_other_aggregate)
{
    expect_error(with_line(17, "      - {name: cnt, aggregate: count, n: 3, window: lifetime}"),
                 "'n' applies only to last_n");
}

Test(errors, quantile_out_of_range)
{
    expect_error(with_line(18, "      - {name: total, aggregate: approx_quantile, field: amount, quantile: 1.5, window: lifetime}"),
                 "'quantile' in approx_quantile feature must be between 0 and 1, found 1.5");
}

Test(errors, bad_window_kind)
{
    expect_error(with_line(17, "      - {name: cnt, aggregate: count, window: {hopping: 1h}}"),
                 "window needs one of: sliding, tumbling, session");
}

Test(errors, bad_topic)
{
    expect_error(with_line(7, "    topic: pay ments"), "invalid Kafka topic name 'pay ments'");
}

Test(errors, message_key_unknown_field)
{
    expect_error(with_line(10, "    watermark_delay: 5s\n    message_key: [card_id, nope]"),
                 "t.yaml:11:28: unknown field 'nope' in message_key of source 'payments'");
}

Test(errors, message_key_shape)
{
    expect_error(with_line(10, "    watermark_delay: 5s\n    message_key: {a: b}"),
                 "t.yaml:11:18: 'message_key' of source 'payments' must be a field name");
}

/* A view spans partitions unless its entity keys are exactly the declared
 * message key, in order. */
Test(schema, message_key_decides_spans_partitions)
{
    static const struct { const char *mk; bool spans; } cases[] = {
        { "", true },                                   /* not declared */
        { "    message_key: card_id", false },
        { "    message_key: [card_id]", false },
        { "    message_key: merchant", true },
        { "    message_key: [card_id, merchant]", true },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char line[128];
        snprintf(line, sizeof line, "    watermark_delay: 5s%s%s", cases[i].mk[0] ? "\n" : "", cases[i].mk);
        schema_t *s;
        char err[1024];
        cr_assert_eq(load(with_line(10, line), &s, err, sizeof err), 0, "%s: %s", cases[i].mk, err);
        cr_assert_eq(s->views[0].spans_partitions, cases[i].spans, "case '%s'", cases[i].mk);
        schema_free(s);
    }
}

Test(errors, missing_file)
{
    schema_t *s;
    char err[512];
    const char *p = "/nonexistent/sluice.yaml";
    cr_assert_eq(schema_load(&p, 1, &s, err, sizeof err), SL_EIO);
    cr_assert(strstr(err, "/nonexistent/sluice.yaml: cannot open"), "%s", err);
}

static uint64_t fp_of(const char *text)
{
    schema_t *s;
    char err[1024];
    cr_assert_eq(load(text, &s, err, sizeof err), 0, "%s", err);
    uint64_t fp = s->views[0].fingerprint;
    schema_free(s);
    return fp;
}

Test(fingerprint, stable_under_formatting_and_ttl)
{
    uint64_t base = fp_of(BASE);
    cr_assert_eq(fp_of(with_line(15, "    ttl: 30d   # only reads change")), base);
    cr_assert_eq(fp_of(with_line(17, "      - name: cnt\n        aggregate: count\n"
                                     "        window:\n          sliding: 60m\n          hop: 60s")), base,
                 "block style and equal durations give the same fingerprint");
}

Test(fingerprint, changes_with_definition)
{
    uint64_t base = fp_of(BASE);
    cr_assert_neq(fp_of(with_line(17, "      - {name: cnt, aggregate: count, window: {sliding: 2h, hop: 1m}}")), base);
    cr_assert_neq(fp_of(with_line(18, "      - {name: total, aggregate: max, field: amount, window: {sliding: 1h, hop: 1m}}")), base);
    cr_assert_neq(fp_of(with_line(10, "    watermark_delay: 6s")), base);
    cr_assert_neq(fp_of(with_line(7, "    topic: payments2")), base);
    cr_assert_neq(fp_of(with_line(15, "    filter: {field: merchant, value: m1}")), base);
}
