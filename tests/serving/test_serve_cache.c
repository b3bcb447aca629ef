/*
 * test_serve_cache.c — the reply cache (serving/serve_cache.c) against a
 * brute-force model: random puts and gets over a small key space with
 * random generations and validity times; every hit must return exactly
 * what the model last stored for the key (data, slices, flags), a get may
 * miss only when the model says stale or the entry was evicted, and the
 * byte bound always holds.
 */
#include <criterion/criterion.h>

#include "serve_cache.h"
#include "sl_err.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NKEYS 300

typedef struct model {
    bool stored;
    int view;
    uint64_t gen;
    int64_t until;
    int flags;
    unsigned char data[200];
    size_t dlen;
    uint32_t slices[6];
} model_t;

static size_t key_of(int k, char *buf)
{
    /* keys of many lengths, some sharing long prefixes */
    return (size_t)snprintf(buf, 64, "%.*s-key-%d", k % 23, "abcdefghijklmnopqrstuvwxyz", k);
}

static void run(size_t max_bytes, int ops, unsigned seed)
{
    serve_cache_t *c = serve_cache_new(max_bytes);
    cr_assert_not_null(c);
    static model_t m[NKEYS];
    memset(m, 0, sizeof m);
    srand(seed);
    int owner_a, owner_b;
    uint64_t evicted_misses = 0, hits = 0;
    for (int i = 0; i < ops; i++) {
        int k = rand() % NKEYS;
        model_t *mk = &m[k];
        char key[64];
        size_t kl = key_of(k, key);
        int view = k % 3;
        const void *owner = k % 5 ? (const void *)&owner_a : (const void *)&owner_b;
        uint64_t h = serve_cache_hash(view, key, kl);
        if (rand() % 3 == 0) {
            model_t nw = { .stored = true, .view = view, .gen = (uint64_t)(rand() % 3),
                           .until = 100 + rand() % 100, .flags = rand() % 2,
                           .dlen = (size_t)(rand() % 200) };
            for (size_t b = 0; b < nw.dlen; b++) nw.data[b] = (unsigned char)rand();
            for (int s = 0; s < 6; s++) nw.slices[s] = (uint32_t)rand();
            int rc = serve_cache_put(c, h, owner, view, key, kl, nw.gen, nw.until, nw.flags,
                                     nw.data, nw.dlen, nw.slices, 3);
            cr_assert(rc == 0 || rc == SL_ETOOBIG, "put: %d", rc);
            *mk = nw;
            if (rc) mk->stored = false;
        } else {
            uint64_t gen = (uint64_t)(rand() % 3);
            int64_t now = 100 + rand() % 100;
            const serve_cache_entry_t *e = serve_cache_get(c, h, owner, view, key, kl, gen, now);
            bool fresh = mk->stored && mk->gen == gen && now < mk->until;
            if (e) {
                cr_assert(fresh, "op %d: hit on a stale or absent key %d", i, k);
                cr_assert_eq(e->dlen, mk->dlen);
                cr_assert(memcmp(e->data, mk->data, mk->dlen) == 0, "key %d: data differs", k);
                cr_assert(memcmp(e->slices, mk->slices, sizeof mk->slices) == 0);
                cr_assert_eq(e->flags, mk->flags);
                cr_assert_eq(e->n_slices, 3);
                hits++;
            } else if (fresh) {
                evicted_misses++;
            }
        }
        serve_cache_stats_t st;
        serve_cache_stats(c, &st);
        cr_assert_leq(st.bytes, max_bytes);
        if (i % 997 == 0) {
            /* every stored model key whose entry was not evicted is findable */
            size_t n = 0;
            for (int j = 0; j < NKEYS; j++) n += m[j].stored;
            cr_assert_leq(st.entries, n);
        }
    }
    serve_cache_stats_t st;
    serve_cache_stats(c, &st);
    cr_assert_gt(hits, 0);
    if (max_bytes >= (1u << 20)) {
        cr_assert_eq(evicted_misses, 0, "a roomy cache lost %llu entries",
                     (unsigned long long)evicted_misses);
        cr_assert_eq(st.evictions, 0);
    } else {
        cr_assert_gt(st.evictions, 0, "the small cache never evicted");
    }
    serve_cache_free(c);
}

Test(serve_cache, matches_model_roomy) { run(1u << 20, 200000, 1); }
Test(serve_cache, matches_model_under_eviction) { run(24000, 200000, 2); }

Test(serve_cache, replace_in_place_and_too_big)
{
    serve_cache_t *c = serve_cache_new(16 * 1024);
    uint32_t sl[2] = { 0, 3 };
    uint64_t h = serve_cache_hash(1, "k", 1);
    cr_assert_eq(serve_cache_put(c, h, NULL, 1, "k", 1, 5, 10, 0, "abc", 3, sl, 1), 0);
    const serve_cache_entry_t *e = serve_cache_get(c, h, NULL, 1, "k", 1, 5, 9);
    cr_assert_not_null(e);
    cr_assert_null(serve_cache_get(c, h, NULL, 1, "k", 1, 5, 10));   /* until is exclusive */
    cr_assert_null(serve_cache_get(c, h, NULL, 1, "k", 1, 6, 0));    /* other generation */
    cr_assert_null(serve_cache_get(c, h, NULL, 2, "k", 1, 5, 0));    /* other view */
    cr_assert_eq(serve_cache_put(c, h, NULL, 1, "k", 1, 6, 20, 1, "xy", 2, sl, 1), 0);
    e = serve_cache_get(c, h, NULL, 1, "k", 1, 6, 0);
    cr_assert_not_null(e);
    cr_assert_eq(e->dlen, 2);
    cr_assert(memcmp(e->data, "xy", 2) == 0);
    serve_cache_stats_t st;
    serve_cache_stats(c, &st);
    cr_assert_eq(st.entries, 1);
    /* an answer over 1/16 of the bound is not kept, and drops the old one */
    static char big[2048];
    cr_assert_eq(serve_cache_put(c, h, NULL, 1, "k", 1, 7, 20, 0, big, sizeof big, sl, 1), SL_ETOOBIG);
    cr_assert_null(serve_cache_get(c, h, NULL, 1, "k", 1, 6, 0));
    serve_cache_stats(c, &st);
    cr_assert_eq(st.entries, 0);
    cr_assert_eq(st.bytes, 0);
    serve_cache_free(c);
}
