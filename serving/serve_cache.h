/*
 * serve_cache.h — a per-thread cache of ENCODED lookup answers.
 *
 * A lookup's answer depends only on the state and on the request time, and
 * the backend says how far it holds (serve_lookup.h: generation() before the
 * lookup, valid_until() after it). A front end keeps the bytes it built from
 * a lookup — a whole RESP reply, or packed protobuf values — under (view,
 * key bytes) with that tag, and serves the next request for the same key
 * from them while the generation is unchanged and the request time is
 * before valid_until: a hash probe and a memcpy, as a stored Redis hash.
 *
 * An entry holds one byte string and up to n slices (offset, length) into
 * it, whose meaning is the front end's (e.g. slice i = feature i's value),
 * plus a flags word. Entries are bounded in bytes: inserting over the bound
 * evicts whole buckets in clock order. No locks: one cache per thread.
 */
#ifndef SERVE_CACHE_H
#define SERVE_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct serve_cache serve_cache_t;

/* Read-only view of an entry (valid until the next put on the cache). */
typedef struct serve_cache_entry {
    void *next;                         /* private */
    uint64_t hash;
    uint64_t gen;
    int64_t until;
    const void *owner;                  /* who built it (e.g. a pinned backend) */
    int view;
    int flags;
    uint32_t klen, n_slices;
    size_t dlen, alloc;
    const unsigned char *key;
    const unsigned char *data;
    const uint32_t *slices;             /* n_slices (offset, length) pairs */
} serve_cache_entry_t;

/* A cache bounded to max_bytes; NULL on allocation failure. */
serve_cache_t *serve_cache_new(size_t max_bytes);
void serve_cache_free(serve_cache_t *c);

/* The hash of (view, key): serve_cache_hash_view(serve_cache_hash_key(key),
 * view). A caller probing several views for one key hashes the key once. */
uint64_t serve_cache_hash(int view, const void *key, size_t klen);
uint64_t serve_cache_hash_key(const void *key, size_t klen);
uint64_t serve_cache_hash_view(uint64_t key_hash, int view);

/* The entry for (owner, view, key) when its generation is `gen` and now <
 * its until; NULL otherwise. */
const serve_cache_entry_t *serve_cache_get(serve_cache_t *c, uint64_t hash, const void *owner,
                                           int view, const void *key, size_t klen, uint64_t gen,
                                           int64_t now);

/* Stores a copy of data and slices under (owner, view, key), replacing what
 * the key held. Returns 0, or SL_ENOMEM / SL_ETOOBIG (nothing stored; the
 * key's old entry is gone). */
int serve_cache_put(serve_cache_t *c, uint64_t hash, const void *owner, int view,
                    const void *key, size_t klen, uint64_t gen, int64_t until, int flags,
                    const void *data, size_t dlen, const uint32_t *slices, size_t n_slices);

/* Entries and bytes held, hits and misses since creation. */
typedef struct serve_cache_stats {
    uint64_t entries, bytes, hits, misses, evictions;
} serve_cache_stats_t;
void serve_cache_stats(const serve_cache_t *c, serve_cache_stats_t *out);

#endif
