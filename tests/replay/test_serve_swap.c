/*
 * test_serve_swap.c — serving/serve_swap.c, the swappable backend a node
 * hosting a backfill serves through (it lives here, beside the hosted
 * backfill tests, because tests/serving belongs to the serving work).
 *
 * Two fake inner backends stand for "old definition" (schema A: 1 feature,
 * values 1) and "new definition" (schema B: 3 features, values 2); each
 * lookup also checks a fake store version (1 for A, 2 for B), switched by
 * the writer between serve_swap_begin and serve_swap_commit, as the node
 * switches the real store's view version. Oracle: a request sees A's schema
 * with A's values on store version 1, or B's with B's on version 2, never a
 * mix; per reader never A after B; nothing after the commit is A.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "schema.h"
#include "serve_lookup.h"
#include "serve_swap.h"
#include "sl_err.h"
#include "sl_time.h"

static const char *const YAML_FMT =
    "version: 1\n"
    "entities:\n  - {name: user, keys: [user_id], key_type: string}\n"
    "sources:\n  - name: ev\n    topic: t\n    format: json\n"
    "    fields: {user_id: string, amount: int, ts: int}\n"
    "    event_time: {field: ts, format: epoch_ms}\n"
    "feature_views:\n  - name: v\n    entity: user\n    source: ev\n    features:\n%s";

static atomic_int store_version = 1;
static atomic_long violations, scratches;
/* answers of the old (A) and new (B) definition, over all readers: the test
 * waits for each instead of sleeping a fixed time (a loaded machine may not
 * run a reader for 100 ms) */
static atomic_long answers_a, answers_b;

typedef struct fake { serve_backend_t be; int id; } fake_t;
struct serve_scratch { int owner; };

static serve_scratch_t *fake_scratch_new(const serve_backend_t *be)
{
    serve_scratch_t *sc = malloc(sizeof *sc);
    if (sc) sc->owner = ((const fake_t *)be->ctx)->id;
    atomic_fetch_add(&scratches, 1);
    return sc;
}

static void fake_scratch_free(serve_scratch_t *sc)
{
    if (sc) atomic_fetch_sub(&scratches, 1);
    free(sc);
}

static int fake_lookup(const serve_backend_t *be, serve_scratch_t *sc, int view, const serve_key_t *key,
                       int64_t now_ms, serve_value_t *out, char *errstr, size_t errsize)
{
    (void)key; (void)now_ms; (void)errstr; (void)errsize;
    const fake_t *f = be->ctx;
    if (sc->owner != f->id) atomic_fetch_add(&violations, 1);        /* wrong scratch */
    if (atomic_load(&store_version) != f->id) atomic_fetch_add(&violations, 1);  /* plan vs version */
    for (size_t i = 0; i < be->schema->views[view].n_features; i++)
        out[i] = (serve_value_t){ .status = SERVE_STATUS_PRESENT, .val = { .type = AGG_VAL_INT, .i = f->id } };
    usleep(20);
    return 0;
}

static void fake_init(fake_t *f, int id, const schema_t *s)
{
    memset(f, 0, sizeof *f);
    f->id = id;
    f->be = (serve_backend_t){ .schema = s, .ctx = f, .scratch_new = fake_scratch_new,
                               .scratch_free = fake_scratch_free, .lookup = fake_lookup };
}

static schema_t *load(const char *features)
{
    char yaml[2048], err[512];
    snprintf(yaml, sizeof yaml, YAML_FMT, features);
    schema_t *s = NULL;
    cr_assert_eq(schema_load_string("t.yaml", yaml, strlen(yaml), &s, err, sizeof err), 0, "%s", err);
    return s;
}

/* Waits (up to 60 s) until *counter reaches at least `want`. */
static bool wait_count(atomic_long *counter, long want)
{
    for (int waited_ms = 0; waited_ms < 60000; waited_ms++) {
        if (atomic_load(counter) >= want) return true;
        usleep(1000);
    }
    return atomic_load(counter) >= want;
}

typedef struct reader {
    pthread_t t;
    const serve_backend_t *outer;
    atomic_bool *stop;
    long a, b, a_after_b, errors;
    int64_t last_a_ns;
} reader_t;

static void *reader_main(void *arg)
{
    reader_t *r = arg;
    serve_scratch_t *sc = r->outer->scratch_new(r->outer);
    serve_value_t out[8];
    serve_key_t key = { .n = 1, .part = { "u1" }, .len = { 2 } };
    bool seen_b = false;
    while (!atomic_load(r->stop)) {
        const serve_backend_t *be = serve_backend_pin(r->outer);
        const schema_view_t *v = &be->schema->views[0];
        char err[128];
        memset(out, 0, sizeof out);
        if (be->lookup(be, sc, 0, &key, 0, out, err, sizeof err)) r->errors++;
        /* the values must be those of the schema the request read */
        int64_t want = v->n_features == 1 ? 1 : 2;
        for (size_t i = 0; i < v->n_features; i++)
            if (out[i].val.i != want) atomic_fetch_add(&violations, 1);
        int64_t t = sl_mono_ns();                 /* still inside the request */
        serve_backend_unpin(r->outer, be);
        if (want == 1) {
            r->a++;
            r->last_a_ns = t;
            if (seen_b) r->a_after_b++;
            atomic_fetch_add(&answers_a, 1);
        } else {
            r->b++;
            seen_b = true;
            atomic_fetch_add(&answers_b, 1);
        }
    }
    r->outer->scratch_free(sc);
    return NULL;
}

Test(serve_swap, switch_is_atomic_for_schema_values_and_store_version)
{
    schema_t *sa = load("      - {name: a, aggregate: count, window: lifetime}\n");
    schema_t *sb = load("      - {name: a, aggregate: count, window: lifetime}\n"
                        "      - {name: b, aggregate: count, window: lifetime}\n"
                        "      - {name: c, aggregate: count, window: lifetime}\n");
    fake_t fa, fb;
    fake_init(&fa, 1, sa);
    fake_init(&fb, 2, sb);
    atomic_store(&store_version, 1);
    atomic_store(&violations, 0);
    atomic_store(&answers_a, 0);
    atomic_store(&answers_b, 0);
    serve_swap_t *sw;
    cr_assert_eq(serve_swap_new(&fa.be, &sw), 0);
    const serve_backend_t *outer = serve_swap_backend(sw);
    atomic_bool stop = false;
    reader_t rd[4];
    for (int i = 0; i < 4; i++) {
        rd[i] = (reader_t){ .outer = outer, .stop = &stop };
        pthread_create(&rd[i].t, NULL, reader_main, &rd[i]);
    }
    /* readers answer on A for a while (some hundred answers), then the switch */
    cr_assert(wait_count(&answers_a, 400), "the readers gave only %ld answers on A", atomic_load(&answers_a));
    cr_assert_eq(serve_swap_begin(sw, 5000), 0);
    atomic_store(&store_version, 2);          /* the store's version switch */
    double pause_ms = -1;
    int64_t committed = sl_mono_ns();
    cr_assert_eq(serve_swap_commit(sw, &fb.be, &pause_ms), 0);
    cr_assert(wait_count(&answers_b, 400), "the readers gave only %ld answers on B", atomic_load(&answers_b));
    atomic_store(&stop, true);
    long a = 0, b = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(rd[i].t, NULL);
        cr_expect_eq(rd[i].a_after_b, 0, "reader %d saw the old definition after the new one", i);
        cr_expect_eq(rd[i].errors, 0);
        cr_expect_lt(rd[i].last_a_ns, committed, "reader %d: an old answer after the commit", i);
        a += rd[i].a;
        b += rd[i].b;
    }
    cr_expect_eq(atomic_load(&violations), 0, "mixed answers");
    cr_expect_gt(a, 0);
    cr_expect_gt(b, 0);
    cr_expect_geq(pause_ms, 0.0);
    cr_expect_gt(serve_swap_requests(sw), 0);
    serve_swap_free(sw);
    cr_expect_eq(atomic_load(&scratches), 0, "inner scratches leaked or double freed");
    schema_free(sa);
    schema_free(sb);
}

/* A request that stays pinned until the test lets it go (`release`), then
 * 50 ms more: the short begin below must time out whatever the scheduling,
 * and the long one must find it still in flight (most of the time). */
typedef struct holder {
    const serve_backend_t *outer;
    atomic_bool pinned, release;
    int64_t unpinned_ns;
} holder_t;

static void *holder_main(void *arg)
{
    holder_t *h = arg;
    const serve_backend_t *be = serve_backend_pin(h->outer);
    atomic_store(&h->pinned, true);
    while (!atomic_load(&h->release)) usleep(1000);
    usleep(50000);
    h->unpinned_ns = sl_mono_ns();
    serve_backend_unpin(h->outer, be);
    return NULL;
}

Test(serve_swap, begin_waits_for_requests_in_flight_and_times_out)
{
    schema_t *sa = load("      - {name: a, aggregate: count, window: lifetime}\n");
    fake_t fa;
    fake_init(&fa, 1, sa);
    serve_swap_t *sw;
    cr_assert_eq(serve_swap_new(&fa.be, &sw), 0);
    holder_t h = { .outer = serve_swap_backend(sw) };
    pthread_t t;
    pthread_create(&t, NULL, holder_main, &h);
    while (!atomic_load(&h.pinned)) usleep(1000);
    cr_expect_eq(serve_swap_begin(sw, 20), SL_ETIMEOUT, "a 20 ms hold cannot drain a request still pinned");
    atomic_store(&h.release, true);
    cr_assert_eq(serve_swap_begin(sw, 60000), 0);
    int64_t held = sl_mono_ns();
    pthread_join(t, NULL);
    cr_expect_geq(held, h.unpinned_ns, "begin returned while a request still held the generation");
    serve_swap_abort(sw);
    /* released: a new request pins at once */
    const serve_backend_t *be = serve_backend_pin(serve_swap_backend(sw));
    cr_expect_eq(be->schema, sa);
    serve_backend_unpin(serve_swap_backend(sw), be);
    serve_swap_free(sw);
    schema_free(sa);
}

Test(serve_swap, a_refused_view_answers_an_error_until_the_next_generation)
{
    schema_t *sa = load("      - {name: a, aggregate: count, window: lifetime}\n");
    fake_t fa, fa2;
    fake_init(&fa, 1, sa);
    fake_init(&fa2, 1, sa);
    atomic_store(&store_version, 1);
    serve_swap_t *sw;
    cr_assert_eq(serve_swap_new(&fa.be, &sw), 0);
    cr_assert_eq(serve_swap_refuse_view(sw, 0, "view 'v' is being rebuilt"), 0);
    cr_expect_eq(serve_swap_refuse_view(sw, 5, "x"), SL_EINVAL);
    const serve_backend_t *outer = serve_swap_backend(sw);
    serve_scratch_t *sc = outer->scratch_new(outer);
    serve_key_t key = { .n = 1, .part = { "u1" }, .len = { 2 } };
    serve_value_t out[2];
    char err[128] = "";
    const serve_backend_t *be = serve_backend_pin(outer);
    cr_expect_eq(be->lookup(be, sc, 0, &key, 0, out, err, sizeof err), SL_EBUSY);
    cr_expect_str_eq(err, "view 'v' is being rebuilt");
    serve_backend_unpin(outer, be);
    cr_assert_eq(serve_swap_begin(sw, 1000), 0);
    cr_assert_eq(serve_swap_commit(sw, &fa2.be, NULL), 0);
    be = serve_backend_pin(outer);
    cr_expect_eq(be->lookup(be, sc, 0, &key, 0, out, err, sizeof err), 0);
    cr_expect_eq(out[0].val.i, 1);
    serve_backend_unpin(outer, be);
    outer->scratch_free(sc);
    serve_swap_free(sw);
    schema_free(sa);
}
