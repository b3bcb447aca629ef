/*
 * serve_merge.c — one entity of a view that spans partitions (serve_merge.h).
 *
 * Cost: one point read per partition of the topic (misses are answered by
 * the bloom filters) plus a decode and a merge per partition that holds the
 * entity. The partitions are those the store has progress for: a partition
 * never consumed holds no state. Views keyed by the message key never come
 * here: they stay at one read per entity.
 */
#include "serve_merge.h"
#include "sl_err.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MERGE_MAX_PARTS 1024

/* The partitions of one topic in one store, per thread, re-read when the
 * store commits (state_progress copies every partition's progress under a
 * mutex: not something to do per lookup). */
static __thread struct {
    const state_store_t *st;
    uint64_t gen;
    char topic[256];
    int32_t part[MERGE_MAX_PARTS];
    size_t n;
} tl_parts;

static int topic_partitions(state_store_t *st, const char *topic)
{
    uint64_t gen = state_commit_count(st);
    if (tl_parts.st == st && tl_parts.gen == gen && !strcmp(tl_parts.topic, topic)) return 0;
    size_t n = state_progress(st, NULL, 0);
    state_partition_progress_t *prog = malloc((n + 16) * sizeof *prog);
    if (!prog) return SL_ENOMEM;
    n = state_progress(st, prog, n + 16);
    tl_parts.n = 0;
    for (size_t i = 0; i < n && tl_parts.n < MERGE_MAX_PARTS; i++)
        if (!strcmp(prog[i].topic, topic)) tl_parts.part[tl_parts.n++] = prog[i].partition;
    free(prog);
    tl_parts.st = st;
    tl_parts.gen = gen;
    snprintf(tl_parts.topic, sizeof tl_parts.topic, "%s", topic);
    return 0;
}

static int read_one(state_store_t *st, const agg_plan_t *plan, const char *view, int32_t part,
                    const void *key, size_t klen, sl_buf_t *val, agg_entity_t **ent,
                    char *errstr, size_t errsize)
{
    *ent = NULL;
    int rc = state_lookup(st, view, part, key, klen, val);
    if (rc == SL_ENOTFOUND) return 0;
    if (rc) {
        snprintf(errstr, errsize, "state read failed for view '%s': %s", view, sl_strerror(rc));
        return rc;
    }
    rc = agg_entity_decode(plan, val->data, val->len, ent);
    if (rc)
        snprintf(errstr, errsize, "stored state of view '%s' (partition %d) does not decode: %s",
                 view, (int)part, sl_strerror(rc));
    return rc;
}

int serve_merge_read(state_store_t *st, const agg_plan_t *plan, const char *view,
                     const char *topic, const void *key, size_t klen, sl_buf_t *val,
                     agg_entity_t **out, char *errstr, size_t errsize)
{
    *out = NULL;
    int rc = topic_partitions(st, topic);
    if (rc) return rc;
    /* one partition (or none recorded): the store's entity index finds it */
    if (tl_parts.n <= 1) return read_one(st, plan, view, -1, key, klen, val, out, errstr, errsize);
    agg_entity_t *merged = NULL;
    for (size_t i = 0; i < tl_parts.n && !rc; i++) {
        agg_entity_t *ent;
        rc = read_one(st, plan, view, tl_parts.part[i], key, klen, val, &ent, errstr, errsize);
        if (rc || !ent) continue;
        if (!merged) {
            merged = ent;
            continue;
        }
        rc = agg_entity_merge(plan, merged, ent);
        agg_entity_free(ent);
        if (rc) snprintf(errstr, errsize, "merging the partitions of view '%s': %s", view, sl_strerror(rc));
    }
    if (rc) {
        agg_entity_free(merged);
        return rc;
    }
    *out = merged;
    return 0;
}
