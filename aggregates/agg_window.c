/*
 * agg_window.c — window state of one feature: tiles, sessions, lifetime.
 *
 * SLIDING windows (size, hop; W = size / hop tiles). Events go into tiles of
 * one hop: tile k holds event times [k*hop, (k+1)*hop). Only non-empty tiles
 * are stored, in one array sorted by k (sparse entities stay small). The
 * value at query time t is the merge of the W tiles k in [b - W + 1, b] with
 * b = floor(t / hop): the tile holding t and the W - 1 before it.
 *
 * Sub-linear query: "split prefix/suffix partials". The stored tiles are cut
 * at a split tile index S into a FRONT (k < S) and a BACK (k >= S). Each tile
 * carries, besides its own partial p, an accumulated partial acc:
 *
 *      front tile j:  acc = p[j] ⊕ p[j+1] ⊕ ... ⊕ p[last front tile]
 *      back tile j:   acc = p[first back tile] ⊕ ... ⊕ p[j]
 *
 *            front (suffix partials)        back (prefix partials)
 *      ... [ a .......................... S | ............ b ] ...
 *                 acc[a] -------------->    <---------- acc[b]
 *
 * Any window [a, b] with a < S <= b is then acc[a] ⊕ acc[b]: ONE merge, for
 * any W (two binary searches find a and b). This is the two-stacks idea with
 * both stacks materialised as arrays so that arbitrary query times work. We
 * chose it over multi-resolution tiles (O(log W) merges per query, O(log W)
 * partial updates per event) and FiBA (O(log) updates, far more code)
 * because serving queries at t near the newest event dominate, and those
 * cost one merge; and over prefix sums because min/max, sketches and last_n
 * are not invertible.
 *
 * Keeping the split useful: a query at b needs S in (b - W + 1, b]. Whenever
 * the newest tile is W/2 or more past S, the update re-splits at
 * S' = clamp(floor(accept_from / hop), newest - W/4, newest) and rebuilds the
 * front suffixes (W merges, so amortised O(1) per tile of progress). Any
 * query with b in [newest - W/4, newest + W/2) is then one merge. Putting S
 * at the accept_from tile means late events (which are >= accept_from) land in
 * the back, where an event at tile j updates acc of tiles j..newest: a
 * handful when lateness is small against the window. Queries elsewhere
 * (history, or an idle entity queried far ahead) fall back to merging the
 * tiles in range one by one — correct, O(W).
 *
 * Decoding does not build acc (ts->lazy): a freshly decoded entity answers
 * the fast-path cases by folding the very partials acc would hold, in the
 * same order (non-heap) or any order (exact heap aggregates), so the bits
 * match; the first update or expire builds acc. Serving decodes, queries once
 * and frees, so it never pays for acc.
 *
 * Determinism: for aggregates whose merge rounds (sums of doubles, variance,
 * decay) acc is always REBUILT by folding the neighbour's acc with p in a fixed
 * order rather than incremented, so acc is a pure function of (tiles, S).
 * The encoding stores tiles and S, hence a decoded entity answers every query
 * bit-for-bit like the original. Heap aggregates (first/last/last_n/sketches)
 * are exact, so incrementing acc gives the same bits and is cheaper.
 *
 * TUMBLING windows are tiles with hop = size and W = 1 (no acc): the value at
 * t is the tile holding t. LIFETIME is one partial. SESSION windows keep a
 * list of sessions sorted by start; two events are in one session when they
 * are less than `gap` apart (and, with max_length L, in the same aligned
 * period [kL, (k+1)L) — an order-independent cut, see docs/aggregates.md).
 * A late event that is within gap of two sessions merges them.
 *
 * All functions run on the thread that owns the entity; no locking.
 */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "agg_window.h"
#include "sl_err.h"

int64_t agg__floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    if ((a % b != 0) && ((a < 0) != (b < 0)))
        q--;
    return q;
}

static bool is_heap_agg(schema_agg_t a)
{
    return a == SCHEMA_AGG_FIRST || a == SCHEMA_AGG_LAST || a == SCHEMA_AGG_LAST_N ||
           a == SCHEMA_AGG_APPROX_DISTINCT || a == SCHEMA_AGG_APPROX_QUANTILE;
}

/* ======================================================================== */
/* tiles                                                                    */
/* ======================================================================== */

static inline agg__tile_t *T(const agg__feature_t *f, const agg__tiles_t *ts, uint32_t i)
{
    return (agg__tile_t *)(ts->v + (size_t)(ts->off + i) * f->tsize);
}

static inline agg_part_t *ACC(const agg__feature_t *f, const agg__tile_t *t)
{
    return (agg_part_t *)((unsigned char *)&t->p + f->psize);
}

static inline size_t tiles_bytes(const agg__feature_t *f, uint32_t cap)
{
    return (size_t)cap * f->tsize + sizeof(agg_part_t);
}

/* First position with idx >= k (n when none). */
static uint32_t tiles_find(const agg__feature_t *f, const agg__tiles_t *ts, int64_t k)
{
    uint32_t lo = 0, hi = ts->n;
    if (!ts->n)
        return 0;
    /* fast paths: past the newest tile; or where k would sit if every tile
     * from k to the newest were present (the common dense case) — both avoid
     * the cache misses of a binary search over a long window */
    int64_t newest = T(f, ts, ts->n - 1)->idx;
    if (newest < k)
        return ts->n;
    if (newest - k < (int64_t)ts->n) {
        uint32_t g = ts->n - 1 - (uint32_t)(newest - k);
        int64_t gi = T(f, ts, g)->idx;
        if (gi == k || (gi < k && T(f, ts, g + 1)->idx >= k))
            return gi == k ? g : g + 1;
        if (gi > k)
            hi = g;
        else
            lo = g + 1;
    } else {
        /* fewer tiles than the distance: position ts->n - 1 - (newest-k) < 0 */
    }
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (T(f, ts, mid)->idx < k)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static inline int64_t sat_sub(int64_t a, int64_t b)
{
    return a < INT64_MIN + b ? INT64_MIN : a - b;
}

/* Oldest tile index whose front acc is kept: windows ending at or after S. */
static inline int64_t front_floor(const agg__feature_t *f, const agg__tiles_t *ts)
{
    return sat_sub(ts->split, f->ntiles - 1);
}

static int fold_back(const agg__feature_t *f, agg__tiles_t *ts, uint32_t sp, uint32_t k)
{
    agg__tile_t *t = T(f, ts, k);
    agg__part_clear(f, ACC(f, t));
    int rc = agg__part_copy(f, ACC(f, t), k == sp ? &t->p : ACC(f, T(f, ts, k - 1)));
    if (!rc && k != sp)
        rc = agg__part_merge(f, ACC(f, t), &t->p);
    return rc;
}

static int fold_front(const agg__feature_t *f, agg__tiles_t *ts, uint32_t sp, uint32_t k)
{
    agg__tile_t *t = T(f, ts, k);
    agg__part_clear(f, ACC(f, t));
    int rc = agg__part_copy(f, ACC(f, t), &t->p);
    if (!rc && k + 1 < sp)
        rc = agg__part_merge(f, ACC(f, t), ACC(f, T(f, ts, k + 1)));
    return rc;
}

/* Rebuilds every acc for split S. */
static int tiles_resplit(const agg__feature_t *f, agg__tiles_t *ts, int64_t split)
{
    int rc = 0;
    ts->split = split;
    uint32_t sp = ts->sp = tiles_find(f, ts, split);
    uint32_t lo = tiles_find(f, ts, front_floor(f, ts));
    for (uint32_t k = 0; k < lo; k++)
        agg__part_clear(f, ACC(f, T(f, ts, k)));
    for (uint32_t k = sp; k-- > lo && !rc;)
        rc = fold_front(f, ts, sp, k);
    for (uint32_t k = sp; k < ts->n && !rc; k++)
        rc = fold_back(f, ts, sp, k);
    return rc;
}

static int64_t split_target(const agg__feature_t *f, int64_t newest, int64_t accept_from)
{
    int64_t lo = newest - f->ntiles / 4;
    int64_t s = accept_from == INT64_MIN ? lo : agg__floor_div(accept_from, f->hop_ms);
    if (s < lo)
        s = lo;
    if (s > newest)
        s = newest;
    return s;
}

static int tiles_insert(const agg__feature_t *f, agg__tiles_t *ts, uint32_t pos, int64_t idx)
{
    if (ts->off + ts->n == ts->cap) {
        if (ts->off > ts->n / 8) {        /* reclaim the dropped head */
            memmove(ts->v, T(f, ts, 0), (size_t)ts->n * f->tsize);
            ts->off = 0;
        } else {
            uint32_t cap = ts->cap ? ts->cap * 2 : 4;
            unsigned char *v = realloc(ts->v, tiles_bytes(f, cap));
            if (!v)
                return SL_ENOMEM;
            memset(v + (size_t)ts->cap * f->tsize, 0, tiles_bytes(f, cap) - (size_t)ts->cap * f->tsize);
            ts->v = v;
            ts->cap = cap;
        }
    }
    agg__tile_t *at = T(f, ts, pos);
    memmove((unsigned char *)at + f->tsize, at, (size_t)(ts->n - pos) * f->tsize);
    memset(at, 0, f->tsize);
    at->idx = idx;
    ts->n++;
    return 0;
}

static int tiles_add(const agg__feature_t *f, agg__tiles_t *ts, const agg__in_t *in,
                     int64_t accept_from)
{
    int rc;
    if (ts->lazy) {
        if ((rc = tiles_resplit(f, ts, ts->split)))
            return rc;
        ts->lazy = false;
    }
    int64_t idx = agg__floor_div(in->t, f->hop_ms);
    uint32_t pos = tiles_find(f, ts, idx);
    bool fresh = pos == ts->n || T(f, ts, pos)->idx != idx;

    if (fresh) {
        if ((rc = tiles_insert(f, ts, pos, idx)))
            return rc;
        if (ts->n == 1) {
            ts->split = idx;
            ts->sp = 0;
        } else if (idx < ts->split) {
            ts->sp++;               /* inserted in front of the split */
        }
    }
    if ((rc = agg__part_add(f, &T(f, ts, pos)->p, in)))
        return rc;
    if (f->ntiles == 1)
        return 0;

    uint32_t sp = ts->sp;
#ifdef AGG_CHECK_SPLIT_POS
    if (sp != tiles_find(f, ts, ts->split))
        abort();
#endif
    bool heap = is_heap_agg(f->agg);
    if (idx >= ts->split) {
        if (!heap) {
            for (uint32_t k = pos; k < ts->n && !rc; k++)
                rc = fold_back(f, ts, sp, k);
        } else {
            if (fresh && pos > sp)
                rc = agg__part_copy(f, ACC(f, T(f, ts, pos)), ACC(f, T(f, ts, pos - 1)));
            for (uint32_t k = pos; k < ts->n && !rc; k++)
                rc = agg__part_add(f, ACC(f, T(f, ts, k)), in);
        }
    } else if (idx >= front_floor(f, ts)) {
        uint32_t lo = tiles_find(f, ts, front_floor(f, ts));
        if (!heap) {
            for (uint32_t k = pos + 1; k-- > lo && !rc;)
                rc = fold_front(f, ts, sp, k);
        } else {
            if (fresh && pos + 1 < sp)
                rc = agg__part_copy(f, ACC(f, T(f, ts, pos)), ACC(f, T(f, ts, pos + 1)));
            for (uint32_t k = lo; k <= pos && !rc; k++)
                rc = agg__part_add(f, ACC(f, T(f, ts, k)), in);
        }
    }
    if (rc)
        return rc;

    int64_t newest = T(f, ts, ts->n - 1)->idx;
    int64_t half = f->ntiles / 2 ? f->ntiles / 2 : 1;
    if (newest - ts->split >= half)
        rc = tiles_resplit(f, ts, split_target(f, newest, accept_from));
    return rc;
}

/* Non-heap partials only (their copy and merge cannot fail). */
static void lazy_suffix(const agg__feature_t *f, const agg__tiles_t *ts, uint32_t sp, uint32_t ja,
                        agg_part_t *out)
{
    memset(out, 0, sizeof(*out));
    (void)agg__part_copy(f, out, &T(f, ts, sp - 1)->p);
    for (uint32_t k = sp - 1; k-- > ja;) {
        agg_part_t x = { 0 };
        (void)agg__part_copy(f, &x, &T(f, ts, k)->p);
        (void)agg__part_merge(f, &x, out);
        *out = x;
    }
}

static void lazy_prefix(const agg__feature_t *f, const agg__tiles_t *ts, uint32_t sp, uint32_t jb,
                        agg_part_t *out)
{
    memset(out, 0, sizeof(*out));
    (void)agg__part_copy(f, out, &T(f, ts, sp)->p);
    for (uint32_t k = sp + 1; k <= jb; k++)
        (void)agg__part_merge(f, out, &T(f, ts, k)->p);
}

static void tiles_query(const agg__feature_t *f, const agg__tiles_t *ts, int64_t t,
                        agg__scratch_t *sc, agg_scalar_t *items, agg_part_t *keep,
                        agg_value_t *out)
{
    static const agg_part_t empty;
    int64_t b = agg__floor_div(t, f->hop_ms);
    int64_t a = sat_sub(b, f->ntiles - 1);
    uint32_t ja = tiles_find(f, ts, a);
    uint32_t jb1 = b == INT64_MAX ? ts->n : tiles_find(f, ts, b + 1);   /* one past jb */

    if (ja >= jb1) {
        agg__part_result(f, &empty, NULL, t, sc, items, out);
        return;
    }
    uint32_t jb = jb1 - 1;
    if (f->ntiles == 1) {
        agg__part_result(f, &T(f, ts, ja)->p, NULL, t, sc, items, out);
        return;
    }
    uint32_t sp = tiles_find(f, ts, ts->split);
    if (ts->lazy && !is_heap_agg(f->agg)) {
        /* freshly decoded: fold the same partials the accumulators would
         * hold, in the same order, so the bits match the encoded entity */
        agg_part_t sfx, pfx;
        if (ja < sp && jb >= sp) {
            lazy_suffix(f, ts, sp, ja, &sfx);
            lazy_prefix(f, ts, sp, jb, &pfx);
            agg__part_result(f, &sfx, &pfx, t, sc, items, out);
            return;
        }
        if (ja == sp) {
            lazy_prefix(f, ts, sp, jb, &pfx);
            agg__part_result(f, &pfx, NULL, t, sc, items, out);
            return;
        }
        if (jb + 1 == sp && T(f, ts, ja)->idx >= front_floor(f, ts)) {
            lazy_suffix(f, ts, sp, ja, &sfx);
            agg__part_result(f, &sfx, NULL, t, sc, items, out);
            return;
        }
    } else if (ts->lazy) {
        /* heap aggregates are exact: any grouping gives the same answer */
    } else if (ja < sp && jb >= sp) {
        agg__part_result(f, ACC(f, T(f, ts, ja)), ACC(f, T(f, ts, jb)), t, sc, items, out);
        return;
    }
    if (ts->lazy)
        goto fold;
    if (ja == sp) {
        agg__part_result(f, ACC(f, T(f, ts, jb)), NULL, t, sc, items, out);
        return;
    }
    if (jb + 1 == sp && T(f, ts, ja)->idx >= front_floor(f, ts)) {
        agg__part_result(f, ACC(f, T(f, ts, ja)), NULL, t, sc, items, out);
        return;
    }
fold:;
    /* slow path: fold the tiles in range */
    agg_part_t tmp = { 0 };
    int rc = 0;
    for (uint32_t k = ja; k <= jb && !rc; k++)
        rc = agg__part_merge(f, &tmp, &T(f, ts, k)->p);
    if (rc)
        memset(out, 0, sizeof(*out));     /* out of memory: NULL */
    else
        agg__part_result(f, &tmp, NULL, t, sc, items, out);
    /* out may point into tmp's strings: hold it until the next query */
    agg__part_clear(f, keep);
    *keep = tmp;
}

static void tiles_drop_before(const agg__feature_t *f, agg__tiles_t *ts, int64_t k)
{
    uint32_t cut = tiles_find(f, ts, k);
    for (uint32_t i = 0; i < cut; i++) {
        agg__part_clear(f, &T(f, ts, i)->p);
        if (f->ntiles > 1)
            agg__part_clear(f, ACC(f, T(f, ts, i)));
    }
    ts->off += cut;
    ts->n -= cut;
    ts->sp = ts->sp > cut ? ts->sp - cut : 0;
    if (!ts->n)
        ts->off = 0;
    if (ts->cap > 16 && ts->n < ts->cap / 4) {
        /* give memory back after a burst; failure to shrink is harmless */
        memmove(ts->v, T(f, ts, 0), (size_t)ts->n * f->tsize);
        ts->off = 0;
        uint32_t cap = ts->n * 2 > 8 ? ts->n * 2 : 8;
        unsigned char *v = realloc(ts->v, tiles_bytes(f, cap));
        if (v) {
            ts->v = v;
            ts->cap = cap;
        }
    }
}

static void tiles_expire(const agg__feature_t *f, agg__tiles_t *ts, int64_t accept_from)
{
    if (accept_from == INT64_MIN || !ts->n)
        return;
    if (ts->lazy) {
        if (tiles_resplit(f, ts, ts->split))
            return;                 /* out of memory: keep everything */
        ts->lazy = false;
    }
    int64_t keep = sat_sub(agg__floor_div(accept_from, f->hop_ms), f->ntiles - 1);
    tiles_drop_before(f, ts, keep);
    if (ts->n && f->ntiles > 1 && keep > ts->split) {
        /* back prefixes started at a dropped tile: re-split (cannot fail for
         * non-heap partials; heap ones may be left partial on ENOMEM and are
         * rebuilt by the next resplit) */
        (void)tiles_resplit(f, ts, split_target(f, T(f, ts, ts->n - 1)->idx, accept_from));
    }
}

/* ======================================================================== */
/* sessions                                                                 */
/* ======================================================================== */

static inline int64_t sess_bucket(const agg__feature_t *f, int64_t t)
{
    return f->max_len_ms ? agg__floor_div(t, f->max_len_ms) : 0;
}

/* Can an event at x join s? */
static bool sess_joins(const agg__feature_t *f, const agg__sess_t *s, int64_t x)
{
    if (sess_bucket(f, x) != sess_bucket(f, s->start))
        return false;
    return x > sat_sub(s->start, f->gap_ms) && sat_sub(x, f->gap_ms) < s->end;
}

static int sess_add(const agg__feature_t *f, agg__sessions_t *ss, const agg__in_t *in)
{
    int64_t x = in->t;
    int hit[2], nhit = 0, rc;
    /* sessions are disjoint and sorted, so only the newest few can match */
    for (uint32_t i = ss->n; i-- > 0;) {
        agg__sess_t *s = &ss->v[i];
        if (s->end <= sat_sub(x, f->gap_ms))
            break;                      /* this and every older one ended too early */
        if (sess_joins(f, s, x) && nhit < 2)
            hit[nhit++] = (int)i;
    }
    if (nhit == 0) {
        uint32_t pos = ss->n;
        while (pos > 0 && ss->v[pos - 1].start > x)
            pos--;
        if (ss->n == ss->cap) {
            uint32_t cap = ss->cap ? ss->cap * 2 : 4;
            agg__sess_t *v = realloc(ss->v, cap * sizeof(agg__sess_t));
            if (!v)
                return SL_ENOMEM;
            ss->v = v;
            ss->cap = cap;
        }
        agg__sess_t ns = { .start = x, .end = x, .events = 0 };
        if ((rc = agg__part_add(f, &ns.p, in))) {
            agg__part_clear(f, &ns.p);
            return rc;
        }
        ns.events = 1;
        memmove(&ss->v[pos + 1], &ss->v[pos], (ss->n - pos) * sizeof(agg__sess_t));
        ss->v[pos] = ns;
        ss->n++;
        return 0;
    }
    agg__sess_t *s = &ss->v[hit[nhit - 1]];         /* the older one */
    if (nhit == 2) {
        agg__sess_t *o = &ss->v[hit[0]];            /* the newer one */
        if ((rc = agg__part_merge(f, &s->p, &o->p)))
            return rc;
        s->end = o->end;
        s->events += o->events;
        agg__part_clear(f, &o->p);
        memmove(o, o + 1, (ss->n - (uint32_t)hit[0] - 1) * sizeof(agg__sess_t));
        ss->n--;
    }
    if ((rc = agg__part_add(f, &s->p, in)))
        return rc;
    if (x < s->start)
        s->start = x;
    if (x > s->end)
        s->end = x;
    s->events++;
    return 0;
}

const agg__sess_t *agg__sess_open(const agg__feature_t *f, const agg__sessions_t *ss, int64_t t)
{
    for (uint32_t i = ss->n; i-- > 0;) {
        const agg__sess_t *s = &ss->v[i];
        if (s->start > t)
            continue;
        if (sat_sub(t, f->gap_ms) < s->end && sess_bucket(f, t) == sess_bucket(f, s->start))
            return s;
        return NULL;
    }
    return NULL;
}

/* Is s closed for good once event time `now` has been seen? */
static bool sess_closed(const agg__feature_t *f, const agg__sess_t *s, int64_t now)
{
    return s->end <= sat_sub(now, f->gap_ms) || sess_bucket(f, s->start) < sess_bucket(f, now);
}

size_t agg__sess_completed(const agg__feature_t *f, const agg__sessions_t *ss, int64_t now_ms,
                           agg_session_t *out, size_t max)
{
    size_t k = 0;
    if (max > (size_t)f->sessions_kept)
        max = (size_t)f->sessions_kept;
    for (uint32_t i = ss->n; i-- > 0 && k < max;) {
        const agg__sess_t *s = &ss->v[i];
        if (!sess_closed(f, s, now_ms))
            continue;
        out[k].start_ms = s->start;
        out[k].end_ms = s->end;
        out[k].events = s->events;
        k++;
    }
    return k;
}

static void sess_expire(const agg__feature_t *f, agg__sessions_t *ss, int64_t accept_from)
{
    if (accept_from == INT64_MIN)
        return;
    /* sessions no accepted event can reach any more form a prefix */
    uint32_t frozen = 0;
    while (frozen < ss->n && sess_closed(f, &ss->v[frozen], accept_from))
        frozen++;
    if (frozen <= (uint32_t)f->sessions_kept)
        return;
    uint32_t drop = frozen - (uint32_t)f->sessions_kept;
    for (uint32_t i = 0; i < drop; i++)
        agg__part_clear(f, &ss->v[i].p);
    memmove(ss->v, ss->v + drop, (ss->n - drop) * sizeof(agg__sess_t));
    ss->n -= drop;
}

/* ======================================================================== */
/* dispatch                                                                 */
/* ======================================================================== */

static bool is_tiles(const agg__feature_t *f)
{
    return f->wkind == SCHEMA_WINDOW_SLIDING || f->wkind == SCHEMA_WINDOW_TUMBLING;
}

void agg__win_free(const agg__feature_t *f, agg__fstate_t *st)
{
    if (is_tiles(f)) {
        agg__tiles_t *ts = &st->tiles;
        /* only heap partials hold anything to free: the others' tiles are
         * cold memory not worth a visit */
        for (uint32_t i = 0; is_heap_agg(f->agg) && i < ts->n; i++) {
            agg__part_clear(f, &T(f, ts, i)->p);
            if (f->ntiles > 1)
                agg__part_clear(f, ACC(f, T(f, ts, i)));
        }
        free(ts->v);
    } else if (f->wkind == SCHEMA_WINDOW_SESSION) {
        for (uint32_t i = 0; i < st->sess.n; i++)
            agg__part_clear(f, &st->sess.v[i].p);
        free(st->sess.v);
    } else {
        agg__part_clear(f, &st->life);
    }
    memset(st, 0, sizeof(*st));
}

void agg__win_prefetch(const agg__feature_t *f, const agg__fstate_t *st, int depth)
{
    if (!is_tiles(f)) {
        if (depth == 1 && f->wkind == SCHEMA_WINDOW_SESSION && st->sess.n)
            __builtin_prefetch(&st->sess.v[st->sess.n - 1], 1);
        return;
    }
    const agg__tiles_t *ts = &st->tiles;
    if (!ts->n)
        return;
    const agg__tile_t *t = T(f, ts, ts->n - 1);
    if (depth == 1) {
        /* the newest tile, where in-order events land, and its accumulator */
        __builtin_prefetch(t, 1);
        __builtin_prefetch((const unsigned char *)t + f->tsize - 1, 1);
        return;
    }
    if (depth == 2) {
        /* (an add finds the split by ts->sp, without its tile) */
        if (!is_heap_agg(f->agg))
            return;
        /* a sparse sketch is one block: its first three lines (up to 46
         * codes) without waiting for its header; depth 3 starts the rest */
        int lines = f->agg == SCHEMA_AGG_APPROX_DISTINCT ? 3 : 1;
        for (int l = 0; l < lines; l++) {
            if (t->p.x)
                __builtin_prefetch((const char *)t->p.x + 64 * l, 1);
            if (f->ntiles > 1 && ACC(f, t)->x)
                __builtin_prefetch((const char *)ACC(f, t)->x + 64 * l, 1);
        }
        return;
    }
    if (depth == 3 && f->agg == SCHEMA_AGG_APPROX_DISTINCT) {
        if (t->p.x)
            agg__hll_prefetch(t->p.x);
        if (f->ntiles > 1 && ACC(f, t)->x)
            agg__hll_prefetch(ACC(f, t)->x);
    }
}

void agg__win_prefetch_all(const agg__feature_t *f, const agg__fstate_t *st, int depth)
{
    if (!is_tiles(f)) {
        if (depth == 1 && f->wkind == SCHEMA_WINDOW_SESSION && st->sess.n) {
            __builtin_prefetch(&st->sess.v[0], 0);
            __builtin_prefetch(&st->sess.v[st->sess.n - 1], 0);
        }
        return;
    }
    const agg__tiles_t *ts = &st->tiles;
    if (!ts->n)
        return;
    if (depth == 1) {
        /* the whole tile array: its first lines, the hardware prefetcher
         * follows a forward walk from there */
        const unsigned char *first = (const unsigned char *)T(f, ts, 0);
        const unsigned char *end = (const unsigned char *)T(f, ts, ts->n - 1) + f->tsize;
        for (const unsigned char *p = first; p < end && p < first + 256; p += 64)
            __builtin_prefetch(p, 0);
        return;
    }
    if (depth == 2 && is_heap_agg(f->agg)) {
        for (uint32_t i = 0; i < ts->n; i++) {
            const agg__tile_t *t = T(f, ts, i);
            if (t->p.x)
                __builtin_prefetch(t->p.x, 0);
        }
    }
}

int agg__win_add(const agg__feature_t *f, agg__fstate_t *st, const agg__in_t *in,
                 int64_t accept_from_ms)
{
    if (is_tiles(f))
        return tiles_add(f, &st->tiles, in, accept_from_ms);
    if (f->wkind == SCHEMA_WINDOW_SESSION)
        return sess_add(f, &st->sess, in);
    return agg__part_add(f, &st->life, in);
}

void agg__win_query(const agg__feature_t *f, const agg__fstate_t *st, int64_t t,
                    agg__scratch_t *sc, agg_scalar_t *items, agg_part_t *keep, agg_value_t *out)
{
    static const agg_part_t empty;
    if (is_tiles(f)) {
        tiles_query(f, &st->tiles, t, sc, items, keep, out);
    } else if (f->wkind == SCHEMA_WINDOW_SESSION) {
        const agg__sess_t *s = agg__sess_open(f, &st->sess, t);
        agg__part_result(f, s ? &s->p : &empty, NULL, t, sc, items, out);
    } else {
        agg__part_result(f, &st->life, NULL, t, sc, items, out);
    }
}

void agg__win_expire(const agg__feature_t *f, agg__fstate_t *st, int64_t accept_from_ms)
{
    if (is_tiles(f))
        tiles_expire(f, &st->tiles, accept_from_ms);
    else if (f->wkind == SCHEMA_WINDOW_SESSION)
        sess_expire(f, &st->sess, accept_from_ms);
}

/* Encoding.
 *   tiles:    varint n; n > 0: svarint split, svarint idx0, part;
 *             then per tile varint (idx - previous idx), part
 *             (a tile's partial stores times relative to idx * hop)
 *   sessions: varint n; per session svarint start, varint end - start,
 *             varint events, part (times relative to start)
 *   lifetime: part */
int agg__win_encode(const agg__feature_t *f, const agg__fstate_t *st, sl_buf_t *buf)
{
    int rc;
    if (is_tiles(f)) {
        const agg__tiles_t *ts = &st->tiles;
        if ((rc = sl_buf_put_varint(buf, ts->n)))
            return rc;
        if (!ts->n)
            return 0;
        if ((rc = sl_buf_put_svarint(buf, ts->split)))
            return rc;
        for (uint32_t i = 0; i < ts->n; i++) {
            const agg__tile_t *t = T(f, ts, i);
            if ((rc = agg__room(buf, 10)))
                return rc;
            unsigned char *w = buf->data + buf->len;
            w = i ? agg__w_varint(w, (uint64_t)(t->idx - T(f, ts, i - 1)->idx))
                  : agg__w_svarint(w, t->idx);
            buf->len = (size_t)(w - buf->data);
            if ((rc = agg__part_encode(f, &t->p, t->idx * f->hop_ms, buf)))
                return rc;
        }
        return 0;
    }
    if (f->wkind == SCHEMA_WINDOW_SESSION) {
        const agg__sessions_t *ss = &st->sess;
        if ((rc = sl_buf_put_varint(buf, ss->n)))
            return rc;
        for (uint32_t i = 0; i < ss->n; i++) {
            const agg__sess_t *s = &ss->v[i];
            if ((rc = sl_buf_put_svarint(buf, s->start)) ||
                (rc = sl_buf_put_varint(buf, (uint64_t)(s->end - s->start))) ||
                (rc = sl_buf_put_varint(buf, (uint64_t)s->events)) ||
                (rc = agg__part_encode(f, &s->p, s->start, buf)))
                return rc;
        }
        return 0;
    }
    return agg__part_encode(f, &st->life, 0, buf);
}

/* On failure the state holds whatever was decoded so far; the caller frees it. */
int agg__win_decode(const agg__feature_t *f, agg__fstate_t *st, sl_reader_t *r, int ver)
{
    uint64_t n, u;
    int64_t s64;
    int rc;

    memset(st, 0, sizeof(*st));
    if (!is_tiles(f) && f->wkind != SCHEMA_WINDOW_SESSION)
        return agg__part_decode(f, r, 0, &st->life, ver);
    if ((rc = sl_read_varint(r, &n)))
        return rc;
    if (n > r->left || n > UINT32_MAX / 2)
        return SL_ECORRUPT;                 /* every element takes >= 1 byte */
    if (is_tiles(f)) {
        agg__tiles_t *ts = &st->tiles;
        if (!n)
            return 0;
        if ((rc = sl_read_svarint(r, &ts->split)))
            return rc;
        ts->v = calloc(1, tiles_bytes(f, (uint32_t)n));
        if (!ts->v)
            return SL_ENOMEM;
        ts->cap = (uint32_t)n;
        for (uint32_t i = 0; i < n; i++) {
            int64_t idx;
            if (i == 0) {
                if ((rc = sl_read_svarint(r, &idx)))
                    return rc;
            } else {
                int64_t prev = T(f, ts, i - 1)->idx;
                if ((rc = sl_read_varint(r, &u)))
                    return rc;
                if (u == 0 || u > (uint64_t)AGG_TIME_LIMIT * 2)
                    return SL_ECORRUPT;
                idx = prev + (int64_t)u;        /* |prev| <= 2^60: no overflow */
            }
            if (idx > AGG_TIME_LIMIT / f->hop_ms || idx < -AGG_TIME_LIMIT / f->hop_ms - 1)
                return SL_ECORRUPT;
            T(f, ts, i)->idx = idx;
            ts->n = i + 1;
            if ((rc = agg__part_decode(f, r, idx * f->hop_ms, &T(f, ts, i)->p, ver)))
                return rc;
        }
        if (ts->split > T(f, ts, ts->n - 1)->idx || ts->split < -AGG_TIME_LIMIT / f->hop_ms - 1)
            return SL_ECORRUPT;
        ts->sp = tiles_find(f, ts, ts->split);
        /* prefix/suffix partials are built on the first update or expire;
         * until then queries fold (serving decodes, queries once, frees) */
        ts->lazy = f->ntiles > 1;
        return 0;
    }
    agg__sessions_t *ss = &st->sess;
    if (!n)
        return 0;
    ss->v = calloc(n, sizeof(agg__sess_t));
    if (!ss->v)
        return SL_ENOMEM;
    ss->cap = (uint32_t)n;
    for (uint32_t i = 0; i < n; i++) {
        agg__sess_t *s = &ss->v[i];
        if ((rc = sl_read_svarint(r, &s64)) || (rc = sl_read_varint(r, &u)))
            return rc;
        if (s64 > AGG_TIME_LIMIT || s64 < -AGG_TIME_LIMIT || u > (uint64_t)(AGG_TIME_LIMIT - s64))
            return SL_ECORRUPT;
        s->start = s64;
        s->end = s64 + (int64_t)u;
        if ((rc = sl_read_varint(r, &u)))
            return rc;
        if (u == 0 || u > AGG_COUNT_LIMIT)
            return SL_ECORRUPT;
        s->events = (int64_t)u;
        ss->n = i + 1;
        if ((rc = agg__part_decode(f, r, s->start, &s->p, ver)))
            return rc;
        if (i && (s->start <= ss->v[i - 1].end ||
                  (s->start - f->gap_ms < ss->v[i - 1].end &&
                   sess_bucket(f, s->start) == sess_bucket(f, ss->v[i - 1].start))))
            return SL_ECORRUPT;
        if (sess_bucket(f, s->start) != sess_bucket(f, s->end))
            return SL_ECORRUPT;
    }
    return 0;
}

size_t agg__win_mem(const agg__feature_t *f, const agg__fstate_t *st)
{
    size_t m = 0;
    if (is_tiles(f)) {
        const agg__tiles_t *ts = &st->tiles;
        m += ts->cap ? tiles_bytes(f, ts->cap) : 0;
        for (uint32_t i = 0; i < ts->n; i++)
            m += agg__part_mem(f, &T(f, ts, i)->p) +
                 (f->ntiles > 1 ? agg__part_mem(f, ACC(f, T(f, ts, i))) : 0);
    } else if (f->wkind == SCHEMA_WINDOW_SESSION) {
        m += st->sess.cap * sizeof(agg__sess_t);
        for (uint32_t i = 0; i < st->sess.n; i++)
            m += agg__part_mem(f, &st->sess.v[i].p);
    } else {
        m += agg__part_mem(f, &st->life);
    }
    return m;
}
