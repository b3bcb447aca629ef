/*
 * cache.h — the write-back cache of hot entity states.
 *
 * Entries are keyed by (view index, partition, entity key bytes) and own an
 * agg_entity_t. An updated entry is put on the dirty list; the commit encodes
 * the dirty list into one state batch and, once the batch is durable, marks
 * the entries clean. Only clean entries are evicted (CLOCK: entries not used
 * since they were last passed over go first, an approximation of least
 * recently used), so an uncommitted change is never lost by eviction. A miss is
 * filled by the caller from RocksDB once; after that events never touch the
 * store until commit.
 *
 * Threads: owned by the ingest thread only.
 */
#ifndef INGEST_CACHE_H
#define INGEST_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "agg.h"

typedef struct ingest_cache ingest_cache_t;

/* Field order: what an event's lookup and dirty mark touch (from dirty to
 * the key) is contiguous at the end, so a hit with a key of up to 16 bytes
 * touches at most two cache lines (ingest_cache_prefetch_chain starts both). */
typedef struct ingest_entry {
    struct ingest_entry *lru_prev, *lru_next;
    struct ingest_entry *dirty_next;
    bool dirty;
    bool known;                            /* the store has a row for it in this partition */
    bool ref;                              /* used since it last got a second chance */
    agg_entity_t *ent;                     /* owned */
    struct ingest_entry *hnext;            /* hash chain */
    uint64_t hash;
    int32_t view;
    int32_t partition;
    uint32_t klen;
    unsigned char key[];
} ingest_entry_t;

/* NULL on allocation failure. */
ingest_cache_t *ingest_cache_new(size_t max_entities);
void ingest_cache_free(ingest_cache_t *c);

/* The hash that find/insert use for (view, partition, key); lets a caller
 * working on a batch of events hash once and prefetch ahead. */
uint64_t ingest_cache_hash(int32_t view, int32_t partition, const void *key, size_t klen);
/* Memory hints for a later find of `hash`: the bucket slot (prefetch_bucket),
 * then the first entry of its chain (prefetch_chain, which reads the slot).
 * They change nothing. */
void ingest_cache_prefetch_bucket(const ingest_cache_t *c, uint64_t hash);
void ingest_cache_prefetch_chain(const ingest_cache_t *c, uint64_t hash);
/* ingest_cache_find with the hash already computed by ingest_cache_hash. */
ingest_entry_t *ingest_cache_find_hashed(ingest_cache_t *c, uint64_t hash, int32_t view,
                                         int32_t partition, const void *key, size_t klen);

/* Finds an entry and marks it used; NULL if absent. */
ingest_entry_t *ingest_cache_find(ingest_cache_t *c, int32_t view, int32_t partition,
                                  const void *key, size_t klen);
/* Inserts a new entry (must be absent) taking ownership of ent; NULL on
 * allocation failure (ent is then still the caller's). */
ingest_entry_t *ingest_cache_insert(ingest_cache_t *c, int32_t view, int32_t partition,
                                    const void *key, size_t klen, agg_entity_t *ent);
void ingest_cache_mark_dirty(ingest_cache_t *c, ingest_entry_t *e);

/* The dirty entries, as a list through dirty_next. */
ingest_entry_t *ingest_cache_dirty(ingest_cache_t *c);
size_t ingest_cache_dirty_count(const ingest_cache_t *c);
/* The same entries as an array of ingest_cache_dirty_count() pointers (so a
 * caller can look ahead and prefetch), or NULL if it could not be kept (out
 * of memory: use the list). Valid until the cache next changes. */
ingest_entry_t *const *ingest_cache_dirty_array(const ingest_cache_t *c);
/* After a durable commit: every dirty entry becomes clean. */
void ingest_cache_clear_dirty(ingest_cache_t *c);
/* Evicts clean entries, unused ones first (CLOCK), until at most
 * max_entities remain (or only dirty ones are left). Returns how many were
 * evicted. */
size_t ingest_cache_evict(ingest_cache_t *c);
/* Drops every entry (dirty or not) for which pred says true. Used when a
 * partition is revoked: its uncommitted changes belong to the next owner. */
size_t ingest_cache_drop_if(ingest_cache_t *c,
                            bool (*pred)(int32_t view, int32_t partition, void *arg), void *arg);
size_t ingest_cache_count(const ingest_cache_t *c);

#endif
