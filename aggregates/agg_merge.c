/*
 * agg_merge.c — merging two states of one entity (agg_entity_merge).
 *
 * Why: a view whose entity is not the key of its topic's messages (payments
 * keyed by card, a view per merchant) sees one entity's events in several
 * partitions. Ingest keeps one state per (entity, partition), so that every
 * partition still commits, snapshots, moves and recovers alone; readers
 * merge the partition states of an entity. Every aggregate is a mergeable
 * partial, so the merge is exact:
 *
 *   lifetime  the two partials merge;
 *   tiles     tiles with the same index merge, the others are copied. The
 *             result is "lazy" (prefix/suffix accumulators not built), the
 *             state of a freshly decoded entity: queries fold the tiles and
 *             the first update rebuilds the accumulators (agg_window.c);
 *   sessions  both lists, sorted by start, are coalesced: a session joins
 *             the previous one when both lie in the same max_length period
 *             and it starts less than `gap` after the previous one ends (or
 *             overlaps it). A session is a chain of events less than gap
 *             apart, so this yields exactly the sessions of the union of the
 *             two event sets.
 *
 * Sums of doubles, variances and decayed sums may differ from a single
 * state fed every event in the last bits (another grouping of the same
 * additions); everything else is identical. Runs on the caller's thread;
 * src is only read.
 */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "agg_window.h"
#include "sl_err.h"

static inline agg__tile_t *tile_at(const agg__feature_t *f, const agg__tiles_t *ts, uint32_t i)
{
    return (agg__tile_t *)(ts->v + (size_t)(ts->off + i) * f->tsize);
}

static inline int64_t sub_sat(int64_t a, int64_t b)
{
    return a < INT64_MIN + b ? INT64_MIN : a - b;
}

static int merge_tiles(const agg__feature_t *f, agg__fstate_t *dstf, const agg__tiles_t *src)
{
    agg__tiles_t *dst = &dstf->tiles;
    if (!src->n)
        return 0;
    uint32_t cap = dst->n + src->n;
    agg__fstate_t out;
    memset(&out, 0, sizeof out);
    /* the same layout agg_window.c allocates: tiles plus one partial of slack */
    out.tiles.v = calloc(1, (size_t)cap * f->tsize + sizeof(agg_part_t));
    if (!out.tiles.v)
        return SL_ENOMEM;
    out.tiles.cap = cap;
    uint32_t i = 0, j = 0;
    int rc = 0;
    while ((i < dst->n || j < src->n) && !rc) {
        const agg__tile_t *a = i < dst->n ? tile_at(f, dst, i) : NULL;
        const agg__tile_t *b = j < src->n ? tile_at(f, src, j) : NULL;
        agg__tile_t *o = tile_at(f, &out.tiles, out.tiles.n++);
        if (a && (!b || a->idx <= b->idx)) {
            o->idx = a->idx;
            rc = agg__part_copy(f, &o->p, &a->p);
            if (!rc && b && b->idx == a->idx) {
                rc = agg__part_merge(f, &o->p, &b->p);
                j++;
            }
            i++;
        } else {
            o->idx = b->idx;
            rc = agg__part_copy(f, &o->p, &b->p);
            j++;
        }
    }
    if (rc) {
        agg__win_free(f, &out);
        return rc;
    }
    /* any split at or below the newest tile is valid; the later of the two
     * keeps the fast query path for recent times */
    int64_t split = !dst->n ? src->split : dst->split > src->split ? dst->split : src->split;
    agg__win_free(f, dstf);
    *dst = out.tiles;
    dst->split = split;
    dst->lazy = f->ntiles > 1;
    return 0;
}

static inline int64_t period_of(const agg__feature_t *f, int64_t t)
{
    return f->max_len_ms ? agg__floor_div(t, f->max_len_ms) : 0;
}

static int merge_sessions(const agg__feature_t *f, agg__fstate_t *dstf, const agg__sessions_t *src)
{
    agg__sessions_t *dst = &dstf->sess;
    if (!src->n)
        return 0;
    agg__fstate_t out;
    memset(&out, 0, sizeof out);
    uint32_t cap = dst->n + src->n;
    out.sess.v = calloc(cap, sizeof(agg__sess_t));
    if (!out.sess.v)
        return SL_ENOMEM;
    out.sess.cap = cap;
    uint32_t i = 0, j = 0;
    int rc = 0;
    while ((i < dst->n || j < src->n) && !rc) {
        bool take_dst = j >= src->n || (i < dst->n && dst->v[i].start <= src->v[j].start);
        const agg__sess_t *s = take_dst ? &dst->v[i++] : &src->v[j++];
        agg__sess_t *last = out.sess.n ? &out.sess.v[out.sess.n - 1] : NULL;
        if (last && period_of(f, s->start) == period_of(f, last->start) &&
            sub_sat(s->start, f->gap_ms) < last->end) {
            rc = agg__part_merge(f, &last->p, &s->p);
            if (s->end > last->end)
                last->end = s->end;
            last->events += s->events;
        } else {
            agg__sess_t *o = &out.sess.v[out.sess.n++];
            o->start = s->start;
            o->end = s->end;
            o->events = s->events;
            rc = agg__part_copy(f, &o->p, &s->p);
        }
    }
    if (rc) {
        agg__win_free(f, &out);
        return rc;
    }
    agg__win_free(f, dstf);
    dstf->sess = out.sess;
    return 0;
}

int agg__win_merge(const agg__feature_t *f, agg__fstate_t *dst, const agg__fstate_t *src)
{
    switch (f->wkind) {
    case SCHEMA_WINDOW_SLIDING:
    case SCHEMA_WINDOW_TUMBLING:
        return merge_tiles(f, dst, &src->tiles);
    case SCHEMA_WINDOW_SESSION:
        return merge_sessions(f, dst, &src->sess);
    default:
        return agg__part_merge(f, &dst->life, &src->life);
    }
}
