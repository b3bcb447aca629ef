/*
 * serve_cache.c — per-thread cache of encoded lookup answers (serve_cache.h).
 *
 * An open-addressing table of (hash, entry) slots with linear probing:
 * a probe compares 64-bit hashes in the slot array and touches only the
 * entry that matches (one cache miss for the answer, which the caller reads
 * anyway). Each entry is one allocation: the header, then the slices, the
 * key and the data. A put on a key that exists reuses the allocation when
 * the new answer fits, so a hot key rebuilt after every commit stays put.
 *
 * Bound: `bytes` counts whole allocations; a put that would go over
 * max_bytes first evicts entries at a clock hand that sweeps the slots (no
 * per-entry LRU links to update on every hit). Deletion shifts the rest of
 * the probe run back, so there are no tombstones. The table doubles at half
 * full. Only misses allocate.
 *
 * Threads: none; a cache belongs to one serving thread.
 */
#include "serve_cache.h"
#include "sl_err.h"

#include <stdlib.h>
#include <string.h>

#define SERVE_CACHE_MIN_SLOTS 1024

typedef struct serve_cache_slot {
    uint64_t hash;
    serve_cache_entry_t *e;   /* NULL: empty */
} serve_cache_slot_t;

struct serve_cache {
    serve_cache_slot_t *s;
    size_t mask;
    size_t hand;
    size_t max_bytes;
    serve_cache_stats_t st;
};

serve_cache_t *serve_cache_new(size_t max_bytes)
{
    serve_cache_t *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->s = calloc(SERVE_CACHE_MIN_SLOTS, sizeof *c->s);
    if (!c->s) {
        free(c);
        return NULL;
    }
    c->mask = SERVE_CACHE_MIN_SLOTS - 1;
    c->max_bytes = max_bytes;
    return c;
}

void serve_cache_free(serve_cache_t *c)
{
    if (!c) return;
    for (size_t i = 0; i <= c->mask; i++) free(c->s[i].e);
    free(c->s);
    free(c);
}

static inline uint64_t serve_cache__mix(uint64_t h)
{
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return h;
}

static inline uint64_t serve_cache__load8(const unsigned char *p)
{
    uint64_t w;
    memcpy(&w, p, 8);
    return w;
}

/* One multiply and shift per 8 bytes, the last 8 read overlapping (no
 * byte loop, no variable-length memcpy call for keys of 8 bytes or more);
 * the full mix comes once, with the view. */
uint64_t serve_cache_hash_key(const void *key, size_t klen)
{
    const unsigned char *p = key;
    uint64_t h = 0x9e3779b97f4a7c15ull ^ (klen * 0xff51afd7ed558ccdull);
    size_t n = klen;
    for (; n > 8; p += 8, n -= 8) {
        h = (h ^ serve_cache__load8(p)) * 0xbf58476d1ce4e5b9ull;
        h ^= h >> 31;
    }
    uint64_t w = 0;
    if (klen >= 8) {
        w = serve_cache__load8((const unsigned char *)key + klen - 8);
    } else {
        for (size_t i = 0; i < n; i++) w |= (uint64_t)p[i] << (8 * i);
    }
    h = (h ^ w) * 0x94d049bb133111ebull;
    return h ^ (h >> 29);
}

uint64_t serve_cache_hash_view(uint64_t key_hash, int view)
{
    return serve_cache__mix(key_hash ^ (((uint64_t)(unsigned)view + 1) * 0x9e3779b97f4a7c15ull));
}

uint64_t serve_cache_hash(int view, const void *key, size_t klen)
{
    return serve_cache_hash_view(serve_cache_hash_key(key, klen), view);
}

/* Key bytes equal? Keys of 8 to 32 bytes (most entity keys) word by word,
 * the last word overlapping, no memcmp call. */
static inline bool serve_cache__key_eq(const unsigned char *a, const void *key, size_t n)
{
    const unsigned char *b = key;
    if (n < 8 || n > 32) return memcmp(a, b, n) == 0;
    uint64_t d = serve_cache__load8(a + n - 8) ^ serve_cache__load8(b + n - 8);
    for (size_t i = 0; i + 8 < n; i += 8) d |= serve_cache__load8(a + i) ^ serve_cache__load8(b + i);
    return d == 0;
}

/* The slot holding (owner, view, key), or the empty slot ending its probe
 * run. */
static size_t serve_cache__find(const serve_cache_t *c, uint64_t hash, const void *owner,
                                int view, const void *key, size_t klen)
{
    size_t i = hash & c->mask;
    for (;; i = (i + 1) & c->mask) {
        const serve_cache_slot_t *sl = &c->s[i];
        if (!sl->e) return i;
        const serve_cache_entry_t *e = sl->e;
        if (sl->hash == hash && e->view == view && e->owner == owner && e->klen == klen &&
            serve_cache__key_eq(e->key, key, klen))
            return i;
    }
}

/* Frees slot i's entry and shifts the rest of its probe run back. */
static void serve_cache__delete(serve_cache_t *c, size_t i)
{
    c->st.bytes -= c->s[i].e->alloc;
    c->st.entries--;
    free(c->s[i].e);
    size_t j = i;
    for (;;) {
        j = (j + 1) & c->mask;
        if (!c->s[j].e) break;
        size_t home = c->s[j].hash & c->mask;
        /* stays if its home lies cyclically in (i, j] */
        bool stays = i <= j ? (i < home && home <= j) : (i < home || home <= j);
        if (stays) continue;
        c->s[i] = c->s[j];
        i = j;
    }
    c->s[i].e = NULL;
}

const serve_cache_entry_t *serve_cache_get(serve_cache_t *c, uint64_t hash, const void *owner,
                                           int view, const void *key, size_t klen, uint64_t gen,
                                           int64_t now)
{
    const serve_cache_entry_t *e = c->s[serve_cache__find(c, hash, owner, view, key, klen)].e;
    if (e && e->gen == gen && now < e->until) {
        c->st.hits++;
        return e;
    }
    c->st.misses++;
    return NULL;
}

static void serve_cache__grow(serve_cache_t *c)
{
    size_t n = (c->mask + 1) * 2;
    serve_cache_slot_t *ns = calloc(n, sizeof *ns);
    if (!ns) return;                     /* stay at this size: longer probes */
    for (size_t i = 0; i <= c->mask; i++) {
        if (!c->s[i].e) continue;
        size_t j = c->s[i].hash & (n - 1);
        while (ns[j].e) j = (j + 1) & (n - 1);
        ns[j] = c->s[i];
    }
    free(c->s);
    c->s = ns;
    c->mask = n - 1;
    c->hand &= c->mask;
}

int serve_cache_put(serve_cache_t *c, uint64_t hash, const void *owner, int view,
                    const void *key, size_t klen, uint64_t gen, int64_t until, int flags,
                    const void *data, size_t dlen, const uint32_t *slices, size_t n_slices)
{
    size_t need = sizeof(serve_cache_entry_t) + n_slices * 2 * sizeof(uint32_t) + klen + dlen;
    size_t i = serve_cache__find(c, hash, owner, view, key, klen);
    serve_cache_entry_t *e = c->s[i].e;
    bool too_big = need > c->max_bytes / 16 || klen > UINT32_MAX || n_slices > UINT32_MAX / 2;
    if (e && (too_big || e->alloc < need)) {    /* does not fit: drop the old one */
        serve_cache__delete(c, i);
        e = NULL;
    }
    if (too_big) return SL_ETOOBIG;
    if (!e) {
        while (c->st.bytes + need > c->max_bytes && c->st.entries) {
            if (c->s[c->hand].e) {
                serve_cache__delete(c, c->hand);
                c->st.evictions++;
            }
            c->hand = (c->hand + 1) & c->mask;
        }
        if (c->st.entries + 1 > (c->mask + 1) / 2) serve_cache__grow(c);
        if (c->st.entries + 1 >= c->mask + 1) return SL_ENOMEM;   /* could not grow */
        e = malloc(need);
        if (!e) return SL_ENOMEM;
        e->alloc = need;
        c->st.bytes += need;
        c->st.entries++;
        i = serve_cache__find(c, hash, owner, view, key, klen);   /* after evictions, growth */
        c->s[i].hash = hash;
        c->s[i].e = e;
    }
    unsigned char *p = (unsigned char *)(e + 1);
    e->slices = (const uint32_t *)p;
    if (n_slices) memcpy(p, slices, n_slices * 2 * sizeof(uint32_t));
    p += n_slices * 2 * sizeof(uint32_t);
    e->key = p;
    if (klen) memcpy(p, key, klen);
    p += klen;
    e->data = p;
    if (dlen) memcpy(p, data, dlen);
    e->next = NULL;
    e->hash = hash;
    e->gen = gen;
    e->until = until;
    e->owner = owner;
    e->view = view;
    e->flags = flags;
    e->klen = (uint32_t)klen;
    e->n_slices = (uint32_t)n_slices;
    e->dlen = dlen;
    return 0;
}

void serve_cache_stats(const serve_cache_t *c, serve_cache_stats_t *out) { *out = c->st; }
