/*
 * agg_window.h — inside aggregates/ only: the per-feature window state
 * (tiles for sliding/tumbling, a session list, or one lifetime partial).
 */
#ifndef AGG_WINDOW_H
#define AGG_WINDOW_H

#include "agg_internal.h"

/* A stored tile is f->tsize bytes: idx, then the f->psize-byte prefix of its
 * own partial p, then (sliding windows only) the same prefix of acc:
 *   front tile j: acc = p[j] ⊕ ... ⊕ p[sp-1];  back tile j: acc = p[sp] ⊕ ... ⊕ p[j]
 * The tile array carries sizeof(agg_part_t) bytes of slack at its end so a
 * pointer to the last prefix still addresses a whole agg_part_t. */
typedef struct agg__tile {
    int64_t idx;            /* tile number: event times [idx*hop, (idx+1)*hop) */
    agg_part_t p;           /* only the first f->psize bytes are stored */
} agg__tile_t;

typedef struct agg__tiles {
    unsigned char *v;       /* tiles at slots [off, off+n), idx strictly increasing */
    uint32_t off, n, cap;
    uint32_t sp;            /* position of the first tile with idx >= split (kept
                             * by every change of the tiles while !lazy, so an
                             * update needs no search nor the split tile's line) */
    int64_t split;          /* tiles with idx >= split are the back part */
    bool lazy;              /* decoded, acc not built yet (all zero) */
} agg__tiles_t;

typedef struct agg__sess {
    int64_t start, end;     /* first and last event time */
    int64_t events;
    agg_part_t p;
} agg__sess_t;

typedef struct agg__sessions {
    agg__sess_t *v;         /* sorted by start, pairwise disjoint */
    uint32_t n, cap;
} agg__sessions_t;

typedef union agg__fstate {
    agg_part_t life;
    agg__tiles_t tiles;
    agg__sessions_t sess;
} agg__fstate_t;

int64_t agg__floor_div(int64_t a, int64_t b);

void agg__win_free(const agg__feature_t *f, agg__fstate_t *st);
/* Memory hints before an update, one level of pointers per depth: 1 the
 * newest tile (reads only st), 2 the heap parts the newest tile points to
 * (reads the tile; a sparse sketch's first three lines), 3 the rest of a
 * long sparse sketch (reads its header).
 * No effect on state. */
void agg__win_prefetch(const agg__feature_t *f, const agg__fstate_t *st, int depth);
/* The same for what agg__win_encode reads: depth 1 the whole tile (or
 * session) array, depth 2 every tile's heap block. */
void agg__win_prefetch_all(const agg__feature_t *f, const agg__fstate_t *st, int depth);
int agg__win_add(const agg__feature_t *f, agg__fstate_t *st, const agg__in_t *in,
                 int64_t accept_from_ms);
void agg__win_query(const agg__feature_t *f, const agg__fstate_t *st, int64_t t,
                    agg__scratch_t *sc, agg_scalar_t *items, agg_part_t *keep, agg_value_t *out);
void agg__win_expire(const agg__feature_t *f, agg__fstate_t *st, int64_t accept_from_ms);
/* dst := dst merged with src (agg_merge.c). 0 or SL_ENOMEM. */
int agg__win_merge(const agg__feature_t *f, agg__fstate_t *dst, const agg__fstate_t *src);
int agg__win_encode(const agg__feature_t *f, const agg__fstate_t *st, sl_buf_t *buf);
int agg__win_decode(const agg__feature_t *f, agg__fstate_t *st, sl_reader_t *r, int ver);
size_t agg__win_mem(const agg__feature_t *f, const agg__fstate_t *st);

/* Sessions: the one open at t (NULL if none) and completed ones as of now_ms. */
const agg__sess_t *agg__sess_open(const agg__feature_t *f, const agg__sessions_t *ss, int64_t t);
size_t agg__sess_completed(const agg__feature_t *f, const agg__sessions_t *ss, int64_t now_ms,
                           agg_session_t *out, size_t max);

#endif
