/*
 * cache.c — write-back entity cache: a chained hash table (power-of-two
 * buckets, doubled when the load passes 1), a CLOCK (second chance) list
 * through every entry and a singly linked dirty list (mirrored by an array
 * for prefetching commits). See cache.h for the
 * contract.
 *
 * Why CLOCK and not strict LRU: moving an entry to the front on every hit
 * writes its two list neighbours, two random cache misses per event on a
 * cache of 10^5..10^6 entries. A hit here only sets e->ref on the entry it
 * already touched; the list order changes at insertion and eviction only.
 *
 * Invariants: every entry is in exactly one bucket chain and in the clock
 * list (head = newest insertion or second chance); an entry is on the dirty
 * list iff e->dirty. Eviction walks the list from the tail: a dirty entry is
 * skipped, a referenced one loses its bit and moves to the head, any other
 * is evicted. Each entry is visited at most twice per pass.
 */
#include "cache.h"

#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

struct ingest_cache {
    ingest_entry_t **buckets;
    size_t mask;                  /* n_buckets - 1 */
    size_t count;
    size_t max_entities;
    ingest_entry_t *lru_head, *lru_tail;   /* head = most recent */
    ingest_entry_t *dirty;
    size_t n_dirty;
    /* the dirty entries again, as an array in marking order, so that a
     * commit can prefetch entries ahead instead of chasing dirty_next
     * (dvec_ok false after a failed growth: then only the list is valid) */
    ingest_entry_t **dvec;
    size_t dvec_cap;
    bool dvec_ok;
};

static uint64_t entry_hash(int32_t view, int32_t partition, const void *key, size_t klen)
{
    uint64_t seed = ((uint64_t)(uint32_t)view << 32) | (uint32_t)partition;
    return XXH3_64bits_withSeed(key, klen, seed);
}

ingest_cache_t *ingest_cache_new(size_t max_entities)
{
    ingest_cache_t *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->mask = 1023;
    c->buckets = calloc(c->mask + 1, sizeof *c->buckets);
    if (!c->buckets) { free(c); return NULL; }
    c->max_entities = max_entities;
    c->dvec_ok = true;
    return c;
}

static void lru_unlink(ingest_cache_t *c, ingest_entry_t *e)
{
    if (e->lru_prev) e->lru_prev->lru_next = e->lru_next; else c->lru_head = e->lru_next;
    if (e->lru_next) e->lru_next->lru_prev = e->lru_prev; else c->lru_tail = e->lru_prev;
    e->lru_prev = e->lru_next = NULL;
}

static void lru_push_front(ingest_cache_t *c, ingest_entry_t *e)
{
    e->lru_prev = NULL;
    e->lru_next = c->lru_head;
    if (c->lru_head) c->lru_head->lru_prev = e; else c->lru_tail = e;
    c->lru_head = e;
}

void ingest_cache_free(ingest_cache_t *c)
{
    if (!c) return;
    for (ingest_entry_t *e = c->lru_head, *next; e; e = next) {
        next = e->lru_next;
        agg_entity_free(e->ent);
        free(e);
    }
    free(c->buckets);
    free(c->dvec);
    free(c);
}

uint64_t ingest_cache_hash(int32_t view, int32_t partition, const void *key, size_t klen)
{
    return entry_hash(view, partition, key, klen);
}

void ingest_cache_prefetch_bucket(const ingest_cache_t *c, uint64_t hash)
{
    __builtin_prefetch(&c->buckets[hash & c->mask], 0);
}

void ingest_cache_prefetch_chain(const ingest_cache_t *c, uint64_t hash)
{
    const ingest_entry_t *e = c->buckets[hash & c->mask];
    if (e) {
        /* dirty .. the key's first 16 bytes: at most two lines */
        __builtin_prefetch(&e->dirty, 1);
        __builtin_prefetch((const unsigned char *)e->key + 15, 0);
    }
}

ingest_entry_t *ingest_cache_find(ingest_cache_t *c, int32_t view, int32_t partition,
                                  const void *key, size_t klen)
{
    return ingest_cache_find_hashed(c, entry_hash(view, partition, key, klen), view, partition,
                                    key, klen);
}

ingest_entry_t *ingest_cache_find_hashed(ingest_cache_t *c, uint64_t h, int32_t view,
                                         int32_t partition, const void *key, size_t klen)
{
    for (ingest_entry_t *e = c->buckets[h & c->mask]; e; e = e->hnext) {
        if (e->hash == h && e->view == view && e->partition == partition &&
            e->klen == klen && memcmp(e->key, key, klen) == 0) {
            e->ref = true;
            return e;
        }
    }
    return NULL;
}

static void cache_grow(ingest_cache_t *c)
{
    size_t n = (c->mask + 1) * 2;
    ingest_entry_t **nb = calloc(n, sizeof *nb);
    if (!nb) return;              /* keep the longer chains; still correct */
    for (size_t i = 0; i <= c->mask; i++) {
        for (ingest_entry_t *e = c->buckets[i], *next; e; e = next) {
            next = e->hnext;
            e->hnext = nb[e->hash & (n - 1)];
            nb[e->hash & (n - 1)] = e;
        }
    }
    free(c->buckets);
    c->buckets = nb;
    c->mask = n - 1;
}

ingest_entry_t *ingest_cache_insert(ingest_cache_t *c, int32_t view, int32_t partition,
                                    const void *key, size_t klen, agg_entity_t *ent)
{
    ingest_entry_t *e = malloc(sizeof *e + klen);
    if (!e) return NULL;
    memset(e, 0, sizeof *e);
    e->hash = entry_hash(view, partition, key, klen);
    e->ent = ent;
    e->view = view;
    e->partition = partition;
    e->klen = (uint32_t)klen;
    memcpy(e->key, key, klen);
    if (c->count + 1 > c->mask + 1) cache_grow(c);
    e->hnext = c->buckets[e->hash & c->mask];
    c->buckets[e->hash & c->mask] = e;
    lru_push_front(c, e);
    c->count++;
    return e;
}

void ingest_cache_mark_dirty(ingest_cache_t *c, ingest_entry_t *e)
{
    if (e->dirty) return;
    e->dirty = true;
    e->dirty_next = c->dirty;
    c->dirty = e;
    if (c->dvec_ok && c->n_dirty == c->dvec_cap) {
        size_t cap = c->dvec_cap ? c->dvec_cap * 2 : 1024;
        ingest_entry_t **v = realloc(c->dvec, cap * sizeof *v);
        if (v) {
            c->dvec = v;
            c->dvec_cap = cap;
        } else {
            c->dvec_ok = false;
        }
    }
    if (c->dvec_ok) c->dvec[c->n_dirty] = e;
    c->n_dirty++;
}

ingest_entry_t *ingest_cache_dirty(ingest_cache_t *c) { return c->dirty; }

ingest_entry_t *const *ingest_cache_dirty_array(const ingest_cache_t *c)
{
    return c->dvec_ok ? c->dvec : NULL;
}
size_t ingest_cache_dirty_count(const ingest_cache_t *c) { return c->n_dirty; }
size_t ingest_cache_count(const ingest_cache_t *c) { return c->count; }

void ingest_cache_clear_dirty(ingest_cache_t *c)
{
    if (c->dvec_ok) {
        /* independent loads: they overlap, unlike a walk of dirty_next */
        for (size_t i = 0; i < c->n_dirty; i++) {
            c->dvec[i]->dirty = false;
            c->dvec[i]->dirty_next = NULL;
        }
    } else {
        for (ingest_entry_t *e = c->dirty, *next; e; e = next) {
            next = e->dirty_next;
            e->dirty = false;
            e->dirty_next = NULL;
        }
    }
    c->dirty = NULL;
    c->n_dirty = 0;
    c->dvec_ok = true;
}

static void entry_remove(ingest_cache_t *c, ingest_entry_t *e)
{
    ingest_entry_t **pp = &c->buckets[e->hash & c->mask];
    while (*pp != e) pp = &(*pp)->hnext;
    *pp = e->hnext;
    lru_unlink(c, e);
    c->count--;
    agg_entity_free(e->ent);
    free(e);
}

size_t ingest_cache_evict(ingest_cache_t *c)
{
    size_t n = 0;
    ingest_entry_t *e = c->lru_tail;
    while (e && c->count > c->max_entities) {
        ingest_entry_t *prev = e->lru_prev;
        if (e->dirty) {
            /* kept: its change is not durable yet */
        } else if (e->ref) {
            e->ref = false;            /* second chance */
            if (c->lru_head != e) {
                lru_unlink(c, e);
                lru_push_front(c, e);
            }
        } else {
            entry_remove(c, e);
            n++;
        }
        e = prev;
    }
    return n;
}

size_t ingest_cache_drop_if(ingest_cache_t *c,
                            bool (*pred)(int32_t view, int32_t partition, void *arg), void *arg)
{
    size_t n = 0;
    /* Unlink matching entries from the dirty list first. */
    ingest_entry_t **pp = &c->dirty;
    while (*pp) {
        ingest_entry_t *e = *pp;
        if (pred(e->view, e->partition, arg)) {
            *pp = e->dirty_next;
            e->dirty = false;
            e->dirty_next = NULL;
            c->n_dirty--;
        } else {
            pp = &e->dirty_next;
        }
    }
    if (c->dvec_ok) {
        /* rebuild the array from the list (it has at most as many entries) */
        size_t i = c->n_dirty;
        for (ingest_entry_t *e = c->dirty; e; e = e->dirty_next) c->dvec[--i] = e;
    }
    for (ingest_entry_t *e = c->lru_head, *next; e; e = next) {
        next = e->lru_next;
        if (pred(e->view, e->partition, arg)) {
            entry_remove(c, e);
            n++;
        }
    }
    return n;
}
