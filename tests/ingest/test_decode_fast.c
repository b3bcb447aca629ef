/*
 * test_decode_fast.c — the JSON decoder's fast path (decode.c) against its
 * oracles: the number reader against strtod on random and edge-case tokens
 * (bit-identical doubles), and the whole decoder with the fast path on
 * against the same decoder with it off (every payload through cJSON) on
 * hand-picked and randomly mutated payloads: same verdict, same reason text,
 * same values bit for bit.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "decode.h"
#include "mkschema.h"

static uint64_t rng_state = 0x243F6A8885A308D3ULL;

static uint64_t rnd(void)
{
    uint64_t x = rng_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return rng_state = x;
}

static unsigned rndn(unsigned n) { return (unsigned)(rnd() % n); }

static bool same_double(double a, double b)
{
    return memcmp(&a, &b, sizeof a) == 0 || (isnan(a) && isnan(b));
}

/* Checks one token: when the reader takes it, its value is strtod's. A
 * strict JSON number token up to 40 bytes must be taken whole. */
static void check_number(const char *tok, bool strict)
{
    size_t n = strlen(tok);
    double got = 0, want;
    size_t used = ingest__json_number(tok, n, &got);
    char *end;
    want = strtod(tok, &end);
    if (strict && n <= 40) cr_assert_eq(used, n, "token %s: read %zu of %zu bytes", tok, used, n);
    if (used) {
        /* the prefix it took is what strtod parses from that prefix */
        char buf[64];
        cr_assert_lt(used, sizeof buf);
        memcpy(buf, tok, used);
        buf[used] = '\0';
        want = strtod(buf, &end);
        cr_assert_eq((size_t)(end - buf), used, "token %s", tok);
        cr_assert(same_double(got, want), "token %s: got %.17g want %.17g", tok, got, want);
    }
}

/* A random strict JSON number. */
static void rand_number(char *out, size_t size)
{
    size_t k = 0;
    if (rndn(3) == 0) out[k++] = '-';
    unsigned shape = rndn(4);
    unsigned nint = shape == 0 ? 1 : 1 + rndn(shape == 3 ? 25 : 17);
    if (rndn(5) == 0) {
        out[k++] = '0';
    } else {
        out[k++] = (char)('1' + rndn(9));
        for (unsigned i = 1; i < nint; i++) out[k++] = (char)('0' + rndn(10));
    }
    if (rndn(2)) {
        out[k++] = '.';
        unsigned nf = 1 + rndn(rndn(4) == 0 ? 25 : 10);
        bool zeros = rndn(4) == 0;
        for (unsigned i = 0; i < nf; i++) out[k++] = (char)(zeros && i < nf / 2 ? '0' : '0' + rndn(10));
    }
    if (rndn(3) == 0) {
        out[k++] = rndn(2) ? 'e' : 'E';
        unsigned s = rndn(3);
        if (s == 1) out[k++] = '+';
        if (s == 2) out[k++] = '-';
        unsigned ne = 1 + rndn(3);
        for (unsigned i = 0; i < ne; i++) out[k++] = (char)('0' + rndn(10));
    }
    cr_assert_lt(k, size);
    out[k] = '\0';
}

Test(decode_fast, number_edge_cases_match_strtod)
{
    static const char *strict[] = {
        "0", "-0", "0.0", "-0.0", "0e0", "-0e-0", "0E+400", "1", "-1", "9", "10", "12.34", "-12.34",
        "0.1", "0.2", "0.3", "1e22", "1e23", "1e-22", "1e-23", "9007199254740992", "9007199254740993",
        "9007199254740991", "-9007199254740993", "18446744073709551615", "18446744073709551616",
        "9999999999999999999", "99999999999999999999", "1234567890123456789", "12345678901234567890",
        "4503599627370497.5", "2.2250738585072011e-308", "2.2250738585072014e-308", "4.9e-324",
        "5e-324", "2e-324", "1.7976931348623157e308", "1.7976931348623159e308", "1e308", "1e309",
        "1e-400", "123456789e-22", "123456789e22", "0.000000000000000000000000001", "1700000000123",
        "1700000000.001", "-1.5", "3.14159265358979323846", "2.718281828459045", "1e-5", "100e-2",
        "0.30000000000000004", "8.98846567431158e307", "9007199254740992e22", "9007199254740993e-22",
        "1.00000000000000011102230246251565404236316680908203125", "7e22", "7e-22", "1E5", "1e+5",
        "123.456e-7", "0.0000001", "1e99999", "1e-99999", "-1e99999",
    };
    for (size_t i = 0; i < sizeof strict / sizeof strict[0]; i++) check_number(strict[i], true);
    /* not numbers, or not JSON numbers: the reader takes none or a JSON prefix */
    static const char *other[] = {
        "", "-", "+1", ".5", "1.", "1.e5", "1e", "1e+", "01", "-01", "0x10", "1e5.3", "inf", "-inf",
        "nan", "1,2", "1 ", "1}", "--1", "1ee5", "0.5.5", "12a", "1e1e1",
    };
    for (size_t i = 0; i < sizeof other / sizeof other[0]; i++) check_number(other[i], false);
}

Test(decode_fast, random_numbers_match_strtod)
{
    char tok[96];
    for (int i = 0; i < 300000; i++) {
        rand_number(tok, sizeof tok);
        check_number(tok, true);
    }
    /* exact doubles printed back at %.17g and %.15g round trip to the same bits */
    for (int i = 0; i < 100000; i++) {
        uint64_t bits = rnd();
        double d;
        memcpy(&d, &bits, sizeof d);
        if (!isfinite(d)) continue;
        snprintf(tok, sizeof tok, i % 2 ? "%.17g" : "%.15g", d);
        check_number(tok, false);
        snprintf(tok, sizeof tok, "%.2f", fmod(fabs(d), 1e6));
        check_number(tok, true);
    }
    /* random bytes out of the number alphabet */
    static const char alpha[] = "0123456789+-eE.";
    for (int i = 0; i < 200000; i++) {
        size_t n = 1 + rndn(30);
        for (size_t k = 0; k < n; k++) tok[k] = alpha[rndn(sizeof alpha - 1)];
        tok[n] = '\0';
        check_number(tok, false);
    }
}

/* ---- the decoder, fast path on and off -------------------------------- */

static const char *SCHEMA =
    "version: 1\n"
    "entities:\n"
    "  - {name: card, keys: [card_id], key_type: string}\n"
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
    "      - {name: n, aggregate: count, window: lifetime}\n";

static const char *SCHEMA_RFC =
    "version: 1\n"
    "entities: [{name: u, keys: [id], key_type: string}]\n"
    "sources:\n"
    "  - {name: s, topic: t, format: json, fields: {id: string, ts: string, x: double},\n"
    "     event_time: {field: ts, format: rfc3339}, watermark_delay: 0s, allowed_lateness: 0s}\n"
    "feature_views:\n"
    "  - {name: v, entity: u, source: s, features: [{name: n, aggregate: count, window: lifetime}]}\n";

static const char *SCHEMA_S =
    "version: 1\n"
    "entities: [{name: u, keys: [id], key_type: string}]\n"
    "sources:\n"
    "  - {name: s, topic: t, format: json, fields: {id: string, ts: double, n: int},\n"
    "     event_time: {field: ts, format: epoch_s}, watermark_delay: 0s, allowed_lateness: 0s}\n"
    "feature_views:\n"
    "  - {name: v, entity: u, source: s, features: [{name: n, aggregate: count, window: lifetime}]}\n";

typedef struct pair {
    schema_t *s;
    ingest_decoder_t *fast, *slow;
    long n_ok, n_bad;
} pair_t;

static void pair_init(pair_t *p, const char *yaml)
{
    char err[256];
    p->s = mkschema(yaml);
    cr_assert_eq(ingest_decoder_new(p->s, 0, 0, &p->fast, err, sizeof err), 0, "%s", err);
    cr_assert_eq(ingest_decoder_new(p->s, 0, 0, &p->slow, err, sizeof err), 0, "%s", err);
    ingest__decoder_set_fast(p->slow, false);
    p->n_ok = p->n_bad = 0;
}

static void pair_free(pair_t *p)
{
    ingest_decoder_free(p->fast);
    ingest_decoder_free(p->slow);
    schema_free(p->s);
}

/* Decodes buf[0..len) both ways; everything observable must agree. */
static void pair_check(pair_t *p, const char *buf, size_t len)
{
    /* an unterminated heap copy, so a read past len trips ASan */
    char *copy = malloc(len ? len : 1);
    cr_assert(copy);
    memcpy(copy, buf, len);
    ingest_record_t ra, rb;
    char wa[256], wb[256];
    ingest_bad_t a = ingest_decode(p->fast, copy, len, &ra, wa, sizeof wa);
    ingest_bad_t b = ingest_decode(p->slow, copy, len, &rb, wb, sizeof wb);
    cr_assert_eq(a, b, "payload [%.*s]: fast %s, cJSON %s (%s / %s)", (int)len, buf, ingest_bad_name(a),
                 ingest_bad_name(b), wa, wb);
    cr_assert_str_eq(wa, wb, "payload [%.*s]", (int)len, buf);
    if (a != INGEST_OK) {
        p->n_bad++;
        free(copy);
        return;
    }
    p->n_ok++;
    cr_assert_eq(ra.time_ms, rb.time_ms, "payload [%.*s]", (int)len, buf);
    cr_assert_eq(ra.n_fields, rb.n_fields);
    for (size_t i = 0; i < ra.n_fields; i++) {
        const agg_input_t *x = &ra.fields[i], *y = &rb.fields[i];
        cr_assert_eq(x->type, y->type, "payload [%.*s] field %zu", (int)len, buf, i);
        cr_assert_eq(x->i, y->i, "payload [%.*s] field %zu", (int)len, buf, i);
        cr_assert(same_double(x->d, y->d), "payload [%.*s] field %zu: %.17g vs %.17g", (int)len, buf, i,
                  x->d, y->d);
        cr_assert_eq(x->slen, y->slen, "payload [%.*s] field %zu", (int)len, buf, i);
        if (x->slen) cr_assert(!memcmp(x->s, y->s, x->slen), "payload [%.*s] field %zu", (int)len, buf, i);
    }
    free(copy);
}

static void pair_check_str(pair_t *p, const char *json) { pair_check(p, json, strlen(json)); }

Test(decode_fast, hand_picked_payloads_agree_with_cjson)
{
    pair_t p;
    pair_init(&p, SCHEMA);
    static const char *cases[] = {
        "{\"card_id\":\"c1\",\"country\":\"eu\",\"shard\":7,\"amount\":12.5,\"ok\":true,\"ts\":1700000000123}",
        " \t\r\n{ \"card_id\" : \"c1\" , \"ts\" : 5 } \n",
        "{\"card_id\":\"c1\",\"ts\":5,\"ok\":false,\"amount\":null,\"shard\":null}",
        "{\"card_id\":\"c1\",\"ts\":5,\"card_id\":\"c2\"}",               /* first wins */
        "{\"card_id\":5,\"ts\":5,\"card_id\":\"c2\"}",
        "{\"card_id\":\"c1\",\"ts\":5,\"extra\":[1,2],\"more\":{\"a\":1}}",
        "{\"card_id\":\"c\\u00e9\",\"ts\":5}",                        /* escapes: cJSON */
        "{\"card_id\":\"a\\\"b\",\"ts\":5}",
        "{\"card_id\":\"\xc3\xa9t\xc3\xa9\",\"ts\":5}",                     /* raw UTF-8 */
        "{\"card_id\":\"\xff\xfe\",\"ts\":5}",                              /* invalid UTF-8 is kept */
        "{\"card_id\":\"a\tb\",\"ts\":5}",                                  /* raw control byte */
        "{\"card_id\":\"\",\"ts\":5}",
        "{\"card_id\":\"c\",\"ts\":01}",
        "{\"card_id\":\"c\",\"ts\":1.}",
        "{\"card_id\":\"c\",\"ts\":-0}",
        "{\"card_id\":\"c\",\"ts\":5,\"shard\":1e2}",
        "{\"card_id\":\"c\",\"ts\":5,\"shard\":1.5}",
        "{\"card_id\":\"c\",\"ts\":5,\"shard\":9007199254740993}",
        "{\"card_id\":\"c\",\"ts\":5,\"shard\":-9007199254740992}",
        "{\"card_id\":\"c\",\"ts\":5,\"amount\":1e400}",
        "{\"card_id\":\"c\",\"ts\":5,\"amount\":-1e-400}",
        "{\"card_id\":\"c\",\"ts\":5,\"amount\":12345678901234567890123456789012345678901234567890}",
        "{\"card_id\":\"c\",\"ts\":5,\"amount\":1234567890123456789012345678901234567890123456789012345678901234567890}",
        "{\"card_id\":\"c\",\"ts\":5,\"ok\":tru}",
        "{\"card_id\":\"c\",\"ts\":5,\"ok\":truex}",
        "{\"card_id\":\"c\",\"ts\":5,\"ok\":nul}",
        "{\"card_id\":\"c\",\"ts\":5,}",
        "{\"card_id\":\"c\",\"ts\":5",
        "{\"card_id\":\"c\" \"ts\":5}",
        "{\"card_id\":\"c\",\"ts\":5}}",
        "{\"card_id\":\"c\",\"ts\":5} x",
        "{\"card_id\":\"c\",\"ts\":5}\x01",
        "\x01{\"card_id\":\"c\",\"ts\":5}",
        "\xef\xbb\xbf{\"card_id\":\"c\",\"ts\":5}",
        "{}",
        "{ }",
        "[]",
        "\"x\"",
        "5",
        "",
        " ",
        "{\"card_id\":\"c\",\"ts\":\"5\"}",
        "{\"card_id\":\"c\",\"ts\":true}",
        "{\"card_id\":\"c\",\"ts\":1.5}",
        "{\"card_id\":\"c\",\"ts\":5,\"\":1}",
        "{\"card_id\":\"c\",\"ts\":5,\"card\":1,\"card_idx\":2}",
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) pair_check_str(&p, cases[i]);
    /* an embedded NUL in a string and after the object */
    pair_check(&p, "{\"card_id\":\"a\0b\",\"ts\":5}", 24);
    pair_check(&p, "{\"card_id\":\"ab\",\"ts\":5}\0", 24);
    cr_assert_gt(p.n_ok, 10);
    cr_assert_gt(p.n_bad, 10);
    pair_free(&p);
}

/* Appends a random member value; mostly what the fast path takes. */
static size_t rand_value(char *out, size_t size)
{
    char num[96];
    switch (rndn(12)) {
    case 0: return (size_t)snprintf(out, size, "null");
    case 1: return (size_t)snprintf(out, size, rndn(2) ? "true" : "false");
    case 2: return (size_t)snprintf(out, size, "\"u%u\"", rndn(100000));
    case 3: return (size_t)snprintf(out, size, "\"%s\"", rndn(2) ? "a\\nb" : "x y\xc3\xa9");
    case 4: return (size_t)snprintf(out, size, "[%u,{\"k\":\"v\"}]", rndn(10));
    case 5: return (size_t)snprintf(out, size, "%lld", (long long)(rnd() >> rndn(64)) * (rndn(2) ? 1 : -1));
    case 6: return (size_t)snprintf(out, size, "%.2f", (double)rndn(1000000) / 100.0);
    case 7: return (size_t)snprintf(out, size, "\"2024-05-01T12:00:%02u.%03uZ\"", rndn(60), rndn(1000));
    default:
        rand_number(num, sizeof num);
        return (size_t)snprintf(out, size, "%s", num);
    }
}

/* base: members that make the payload good (the required fields), put
 * first half of the time. */
static size_t rand_payload(char *buf, size_t size, const char *base, const char *const *names,
                           size_t n_names)
{
    size_t k = 0;
    static const char *ws[] = { "", "", "", " ", "\n", "\t ", "\r\n" };
    bool with_base = rndn(2);
    k += (size_t)snprintf(buf + k, size - k, "%s{%s", ws[rndn(7)], with_base ? base : "");
    unsigned members = rndn(9);
    for (unsigned m = 0; m < members; m++) {
        const char *name = rndn(6) == 0 ? "other" : names[rndn((unsigned)n_names)];
        k += (size_t)snprintf(buf + k, size - k, "%s%s\"%s\"%s:%s", m || with_base ? "," : "", ws[rndn(7)], name,
                              ws[rndn(7)], ws[rndn(7)]);
        k += rand_value(buf + k, size - k);
        k += (size_t)snprintf(buf + k, size - k, "%s", ws[rndn(7)]);
    }
    k += (size_t)snprintf(buf + k, size - k, "}%s", ws[rndn(7)]);
    cr_assert_lt(k, size);
    return k;
}

/* Random byte edits: flips, deletions, insertions of JSON-significant bytes. */
static size_t mutate(char *buf, size_t len, size_t size)
{
    static const char sig[] = "{}[]:,\"\\ \t\n0123456789-+.eEtrufalsn\x01\x7f\xc3";
    unsigned edits = 1 + rndn(3);
    for (unsigned i = 0; i < edits && len; i++) {
        size_t at = rndn((unsigned)len);
        switch (rndn(3)) {
        case 0: buf[at] = sig[rndn(sizeof sig - 1)]; break;
        case 1: memmove(buf + at, buf + at + 1, len - at - 1); len--; break;
        default:
            if (len + 1 < size) {
                memmove(buf + at + 1, buf + at, len - at);
                buf[at] = sig[rndn(sizeof sig - 1)];
                len++;
            }
        }
    }
    return len;
}

static void random_round(const char *yaml, const char *base, const char *const *names, size_t n_names,
                         int rounds)
{
    pair_t p;
    pair_init(&p, yaml);
    char buf[2048];
    for (int r = 0; r < rounds; r++) {
        size_t len = rand_payload(buf, sizeof buf, base, names, n_names);
        pair_check(&p, buf, len);
        len = mutate(buf, len, sizeof buf);
        pair_check(&p, buf, len);
    }
    cr_assert_gt(p.n_ok, rounds / 20, "only %ld good payloads", p.n_ok);
    cr_assert_gt(p.n_bad, rounds / 20, "only %ld bad payloads", p.n_bad);
    pair_free(&p);
}

Test(decode_fast, random_payloads_agree_with_cjson)
{
    static const char *names[] = { "card_id", "country", "shard", "amount", "ok", "ts" };
    random_round(SCHEMA, "\"card_id\":\"c7\",\"ts\":1700000000123", names, 6, 60000);
}

Test(decode_fast, random_payloads_agree_with_cjson_rfc3339_and_epoch_s)
{
    static const char *names_rfc[] = { "id", "ts", "x" };
    random_round(SCHEMA_RFC, "\"ts\":\"2024-05-01T12:00:00.250Z\",\"id\":\"a\"", names_rfc, 3, 30000);
    static const char *names_s[] = { "id", "ts", "n" };
    random_round(SCHEMA_S, "\"id\":\"b\",\"ts\":1700000000.5", names_s, 3, 30000);
}
