/*
 * test_ingest_cache.c — the write-back entity cache (ingest/cache.c) against
 * a brute-force model: which keys are present, which are dirty.
 *
 * Checked: eviction never drops a dirty entry and stops at max_entities;
 * CLOCK gives an entry used since the last pass a second chance over an
 * unused one; the dirty array always holds exactly the dirty list's
 * entries (after marks, drops and clears); find and find_hashed agree.
 */
#include <criterion/criterion.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache.h"

#define NKEYS 3000

static int keylen(int k, char *buf) { return snprintf(buf, 16, "k%d", k); }

static ingest_entry_t *find(ingest_cache_t *c, int k, int part)
{
    char b[16];
    int n = keylen(k, b);
    ingest_entry_t *e = ingest_cache_find(c, 0, part, b, (size_t)n);
    ingest_entry_t *h = ingest_cache_find_hashed(c, ingest_cache_hash(0, part, b, (size_t)n), 0, part,
                                                 b, (size_t)n);
    cr_assert_eq(e, h, "find and find_hashed disagree for k%d", k);
    return e;
}

static ingest_entry_t *insert(ingest_cache_t *c, int k, int part)
{
    char b[16];
    int n = keylen(k, b);
    ingest_entry_t *e = ingest_cache_insert(c, 0, part, b, (size_t)n, NULL);
    cr_assert(e);
    return e;
}

/* The model index of an entry's key "k<N>" (stored without a NUL). */
static int key_index(const ingest_entry_t *e)
{
    char b[16];
    size_t n = e->klen < sizeof b ? e->klen : sizeof b - 1;
    memcpy(b, e->key, n);
    b[n] = '\0';
    return atoi(b + 1);
}

/* The dirty list and the dirty array hold the same entries, each once, and
 * exactly the model's dirty keys. */
static void check_dirty(ingest_cache_t *c, const bool *dirty, int part)
{
    size_t n = ingest_cache_dirty_count(c), want = 0, listed = 0;
    for (int k = 0; k < NKEYS; k++) want += dirty[k];
    cr_assert_eq(n, want);
    for (ingest_entry_t *e = ingest_cache_dirty(c); e; e = e->dirty_next) {
        int k = key_index(e);
        cr_assert(e->dirty && dirty[k], "k%d on the dirty list but not dirty", k);
        listed++;
    }
    cr_assert_eq(listed, n);
    ingest_entry_t *const *dv = ingest_cache_dirty_array(c);
    cr_assert(dv);
    bool seen[NKEYS] = { false };
    for (size_t i = 0; i < n; i++) {
        int k = key_index(dv[i]);
        cr_assert(dirty[k] && !seen[k], "k%d wrong in the dirty array", k);
        cr_assert_eq(dv[i]->partition, part);
        seen[k] = true;
    }
}

static bool drop_odd_partition(int32_t view, int32_t partition, void *arg)
{
    (void)view;
    (void)arg;
    return partition % 2 == 1;
}

Test(cache, eviction_keeps_dirty_and_model_agrees)
{
    ingest_cache_t *c = ingest_cache_new(1000);
    bool present[NKEYS] = { false }, dirty[NKEYS] = { false };
    uint64_t x = 88172645463325252ULL;
    for (int round = 0; round < 40; round++) {
        for (int i = 0; i < 500; i++) {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            int k = (int)(x % NKEYS);
            ingest_entry_t *e = find(c, k, 0);
            cr_assert_eq(e != NULL, present[k], "k%d presence", k);
            if (!e) { e = insert(c, k, 0); present[k] = true; }
            if (x & 1) { ingest_cache_mark_dirty(c, e); dirty[k] = true; }
        }
        check_dirty(c, dirty, 0);
        if (round % 3 == 2) {
            ingest_cache_clear_dirty(c);
            memset(dirty, 0, sizeof dirty);
            check_dirty(c, dirty, 0);
        }
        size_t before = ingest_cache_count(c), ndirty = ingest_cache_dirty_count(c);
        size_t ev = ingest_cache_evict(c);
        size_t after = ingest_cache_count(c);
        cr_assert_eq(before - ev, after);
        cr_assert(after <= 1000 || after == ndirty, "over capacity with clean entries left");
        size_t now_present = 0;
        for (int k = 0; k < NKEYS; k++) {
            bool p = find(c, k, 0) != NULL;
            cr_assert(p || !dirty[k], "dirty k%d evicted", k);
            if (!p) present[k] = false;
            now_present += present[k];
        }
        cr_assert_eq(now_present, after);
        check_dirty(c, dirty, 0);
    }
    ingest_cache_free(c);
}

Test(cache, second_chance_for_used_entries)
{
    /* 10 clean entries, capacity 5: the five used since the last pass (the
     * finds below) survive, the five unused go. */
    ingest_cache_t *c = ingest_cache_new(5);
    for (int k = 0; k < 10; k++) insert(c, k, 0);
    for (int k = 0; k < 10; k += 2) cr_assert(find(c, k, 0));
    cr_assert_eq(ingest_cache_evict(c), 5);
    for (int k = 0; k < 10; k++) cr_assert_eq(find(c, k, 0) != NULL, k % 2 == 0, "k%d", k);
    ingest_cache_free(c);
}

Test(cache, drop_if_keeps_dirty_array_in_step)
{
    ingest_cache_t *c = ingest_cache_new(100000);
    bool dirty0[NKEYS] = { false };
    for (int k = 0; k < 2000; k++) {
        ingest_entry_t *e = insert(c, k, k % 2);
        if (k % 3) {
            ingest_cache_mark_dirty(c, e);
            if (k % 2 == 0) dirty0[k] = true;
        }
    }
    cr_assert_eq(ingest_cache_drop_if(c, drop_odd_partition, NULL), 1000);
    check_dirty(c, dirty0, 0);
    for (int k = 0; k < 2000; k++) cr_assert_eq(find(c, k, k % 2) != NULL, k % 2 == 0, "k%d", k);
    ingest_cache_free(c);
}
