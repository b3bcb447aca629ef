/*
 * fuzz_decode.c — libFuzzer target for agg_entity_decode.
 *
 * Input: byte 0 picks one of four plans (sliding, tumbling, session,
 * lifetime; every aggregate kind in each), byte 1 is the format version, the
 * rest is the state after the 8-byte view fingerprint, which the harness
 * fills in so the fuzzer does not have to guess it. A successful decode must
 * give an entity that answers queries, takes updates, and re-encodes to
 * bytes that decode and re-encode identically.
 *
 * Built with -DFUZZ_MAKE_SEEDS it is instead a program that writes a seed
 * corpus of valid states (random streams) into the directory argv[1].
 * tests/aggregates/fuzz_decode.sh builds both and runs a bounded session.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agg_test_util.h"
#include "sl_buf.h"
#include "sl_err.h"

#define NPLANS 4

static schema_t *schemas[NPLANS];
static agg_plan_t *plans[NPLANS];

static void setup(void)
{
    if (plans[0])
        return;
    schema_window_t ws[NPLANS] = {
        { .kind = SCHEMA_WINDOW_SLIDING, .size_ms = 40, .hop_ms = 5 },
        { .kind = SCHEMA_WINDOW_TUMBLING, .size_ms = 30 },
        { .kind = SCHEMA_WINDOW_SESSION, .gap_ms = 10, .max_length_ms = 100 },
        { .kind = SCHEMA_WINDOW_LIFETIME },
    };
    for (int i = 0; i < NPLANS; i++) {
        char err[128];
        schemas[i] = tschema_new(tfeat_all, tfeat_all_n, ws[i], 3);
        if (agg_plan_new(schemas[i], 0, &plans[i], err, sizeof(err)))
            abort();
    }
}

static void feed(agg_plan_t *plan, agg_entity_t *ent, uint64_t *rs, int n, int64_t t0)
{
    for (int i = 0; i < n; i++) {
        tev_t e = { 0 };
        e.t = t0 + trange(rs, -40, 400);
        e.has_i = trange(rs, 0, 5) > 0;
        e.has_d = trange(rs, 0, 5) > 0;
        e.has_s = trange(rs, 0, 5) > 0;
        e.has_b = true;
        e.vi = trange(rs, -100, 100);
        e.vd = (double)trange(rs, -800, 800) / 8;
        snprintf(e.vs, sizeof(e.vs), "v%d", (int)trange(rs, 0, 90));
        e.vb = trange(rs, 0, 1);
        agg_input_t fields[TF__COUNT];
        agg_event_t ev;
        tev_to_event(&e, fields, &ev);
        (void)agg_entity_update(plan, ent, &ev, t0 + trange(rs, -50, 50));
    }
}

#ifndef FUZZ_MAKE_SEEDS

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    setup();
    if (size < 2)
        return 0;
    int which = data[0] % NPLANS;
    agg_plan_t *plan = plans[which];
    sl_buf_t in = SL_BUF_INIT;
    uint64_t fp = schemas[which]->views[0].fingerprint;
    if (sl_buf_put_u8(&in, data[1]) || sl_buf_put_u64be(&in, fp) ||
        sl_buf_append(&in, data + 2, size - 2))
        abort();
    agg_entity_t *ent = (agg_entity_t *)1;
    int rc = agg_entity_decode(plan, in.data, in.len, &ent);
    if (rc) {
        if (ent)
            abort();                     /* *out must be NULL on failure */
        if (rc != SL_ECORRUPT && rc != SL_EVERSION && rc != SL_ESCHEMA && rc != SL_ENOMEM)
            abort();
        sl_buf_free(&in);
        return 0;
    }
    agg_value_t out[64];
    agg_session_t ss[4];
    int64_t last = agg_entity_last_event_ms(ent);
    agg_entity_query(plan, ent, last, out);
    agg_entity_query(plan, ent, last - 17, out);
    agg_entity_query(plan, ent, INT64_MIN, out);
    agg_entity_query(plan, ent, INT64_MAX, out);
    agg_entity_completed_sessions(plan, ent, 0, ss, 4);
    agg_entity_open_session(plan, ent, 0, last, &ss[0]);

    sl_buf_t a = SL_BUF_INIT, b = SL_BUF_INIT;
    if (agg_entity_encode(plan, ent, &a))
        abort();
    agg_entity_t *again = NULL;
    if (agg_entity_decode(plan, a.data, a.len, &again))
        abort();                         /* our own encoding must decode */
    if (agg_entity_encode(plan, again, &b) || a.len != b.len || memcmp(a.data, b.data, a.len))
        abort();                         /* and be a fixed point */

    uint64_t rs = size;
    feed(plan, ent, &rs, 20, last);
    agg_entity_expire(plan, ent, last);
    agg_entity_query(plan, ent, last + 10, out);

    agg_entity_free(again);
    agg_entity_free(ent);
    sl_buf_free(&a);
    sl_buf_free(&b);
    sl_buf_free(&in);
    return 0;
}

#else

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }
    setup();
    uint64_t rs = 1;
    int k = 0;
    for (int which = 0; which < NPLANS; which++) {
        for (int n = 0; n < 6; n++) {
            agg_entity_t *ent = agg_entity_new(plans[which]);
            feed(plans[which], ent, &rs, 1 + n * n * 4, 1000 * n);
            sl_buf_t buf = SL_BUF_INIT;
            if (agg_entity_encode(plans[which], ent, &buf))
                return 1;
            char path[4096];
            snprintf(path, sizeof(path), "%s/seed-%02d", argv[1], k++);
            FILE *f = fopen(path, "wb");
            if (!f)
                return 1;
            unsigned char head[2] = { (unsigned char)which, buf.data[0] };
            fwrite(head, 1, 2, f);
            fwrite(buf.data + 9, 1, buf.len - 9, f);   /* drop version + fingerprint */
            fclose(f);
            sl_buf_free(&buf);
            agg_entity_free(ent);
        }
    }
    return 0;
}

#endif
