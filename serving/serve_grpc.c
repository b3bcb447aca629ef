/*
 * serve_grpc.c — sluice.v1.FeatureService and grpc.health.v1.Health on
 * rpc_server.c.
 *
 * GetOnlineFeatures: the request names columns (feature refs or a feature
 * service) and entity rows (key name -> text). Columns are grouped by view;
 * for each row and each distinct view there is exactly one backend lookup,
 * however many columns come from that view. The consistency token is the
 * committed progress read BEFORE the lookups, so every state read is at
 * least as new as the token says (a safe lower bound for read-your-writes).
 *
 * Error mapping (status codes a client can act on):
 *   malformed protobuf, no columns, bad/missing entity key  INVALID_ARGUMENT
 *   unknown view / feature / service                         NOT_FOUND
 *   too many entity rows, request too large                 RESOURCE_EXHAUSTED
 *   min_token not reached in time                            UNAVAILABLE (retry)
 *   state read / decode failure                              INTERNAL
 *   bearer token missing or wrong (rpc_server.c)             UNAUTHENTICATED
 *
 * Requests are unpacked into, and responses built in, the worker's arena
 * (emptied after each call, its block kept: no malloc per call). Each
 * worker thread owns a backend scratch, a value array and a cache of packed
 * FeatureValue records per (view, entity) (serve_cache.h), so a repeated
 * lookup is a hash probe and a copy; the FeatureVectors are assembled from
 * those bytes (see serve_grpc__get): a row whose views all hit is copied
 * straight from the cache into the response, which rpc_server.c hands to
 * gRPC without another copy. Each call
 * pins the backend (serve_lookup.h: a swappable one may carry a newer
 * schema) and reads schema and values through the pinned one only.
 */
#include "serve_grpc.h"
#include "sl_hist.h"
#include "rpc_server.h"
#include "serve_cache.h"
#include "sl_err.h"
#include "sl_time.h"

#include "grpc/health/v1/health.pb-c.h"
#include "sluice/v1/feature_service.pb-c.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

struct serve_grpc {
    serve_grpc_opts_t opts;
    const serve_backend_t *be;
    size_t max_features;
    rpc_server_t *rpc;
};



typedef struct serve_grpc_thread serve_grpc_thread_t;

/* ---- arena ------------------------------------------------------------- */

typedef struct arena_block { struct arena_block *next; size_t used, cap; max_align_t data[]; } arena_block_t;
typedef struct arena { arena_block_t *head; bool failed; } arena_t;

static void *arena_alloc(arena_t *a, size_t n)
{
    n = (n + sizeof(max_align_t) - 1) & ~(sizeof(max_align_t) - 1);
    if (!a->head || a->head->cap - a->head->used < n) {
        size_t cap = n > 16384 ? n : 16384;
        arena_block_t *b = malloc(sizeof *b + cap);
        if (!b) { a->failed = true; return NULL; }
        b->next = a->head;
        b->used = 0;
        b->cap = cap;
        a->head = b;
    }
    void *p = (char *)a->head->data + a->head->used;
    a->head->used += n;
    memset(p, 0, n);
    return p;
}

/* arena_alloc without the zeroing, for memory the caller fills whole. */
static void *arena_alloc_raw(arena_t *a, size_t n)
{
    n = (n + sizeof(max_align_t) - 1) & ~(sizeof(max_align_t) - 1);
    if (!a->head || a->head->cap - a->head->used < n) return arena_alloc(a, n);
    void *p = (char *)a->head->data + a->head->used;
    a->head->used += n;
    return p;
}

static char *arena_strndup(arena_t *a, const char *s, size_t n)
{
    char *d = arena_alloc(a, n + 1);
    if (!d) return (char *)"";
    memcpy(d, s, n);
    d[n] = 0;
    return d;
}

static void arena_free(arena_t *a)
{
    while (a->head) {
        arena_block_t *n = a->head->next;
        free(a->head);
        a->head = n;
    }
    a->failed = false;
}

/* Empties the arena but keeps its newest block for the next call. */
static void arena_reset(arena_t *a)
{
    if (!a->head) return;
    arena_block_t *keep = a->head;
    a->head = keep->next;
    arena_free(a);
    keep->next = NULL;
    keep->used = 0;
    a->head = keep;
}

/* protobuf-c allocations from the arena (request unpacking): freed with it. */
static void *arena_pb_alloc(void *ad, size_t n) { return arena_alloc(ad, n); }
static void arena_pb_free(void *ad, void *p) { (void)ad; (void)p; }

/* Appends the packed message to buf. */
static int serve_grpc__append_packed(sl_buf_t *buf, const ProtobufCMessage *m)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    if (sl_buf_reserve(buf, n)) return SL_ENOMEM;
    buf->len += protobuf_c_message_pack(m, buf->data + buf->len);
    return 0;
}

static bool arena_pack(arena_t *a, const ProtobufCMessage *m, rpc_reply_t *reply)
{
    if (a->failed) {
        rpc_reply_fail(reply, RPC_RESOURCE_EXHAUSTED, "out of memory building the response");
        return false;
    }
    size_t n = protobuf_c_message_get_packed_size(m);
    if (sl_buf_reserve(&reply->body, n)) {
        rpc_reply_fail(reply, RPC_RESOURCE_EXHAUSTED, "out of memory packing the response");
        return false;
    }
    reply->body.len = protobuf_c_message_pack(m, reply->body.data);
    return true;
}

/* The DenseResults arrays of one LAYOUT_DENSE call, grown as needed and
 * kept by the thread between calls. */
typedef struct dense_arrays {
    sl_buf_t status, kind, vals, times, strs, lists;   /* lists: packed ValueList fields */
    uint64_t n_lists;
} dense_arrays_t;

/* Applies fn (sl_buf_reset or sl_buf_free) to every array. */
static void dense_arrays_each(dense_arrays_t *d, void (*fn)(sl_buf_t *))
{
    sl_buf_t *all[] = { &d->status, &d->kind, &d->vals, &d->times, &d->strs, &d->lists };
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) fn(all[i]);
    d->n_lists = 0;
}

struct serve_grpc_thread {
    serve_scratch_t *sc;
    serve_value_t *vals;
    size_t vals_cap;                  /* features vals has room for */
    state_partition_progress_t *pp;   /* committed progress, grown as needed */
    size_t pp_cap;
    arena_t a;                        /* one call's messages, reset after each call */
    serve_cache_t *cache;             /* packed values per (view, entity); NULL: off */
    sl_buf_t key;                     /* cache key of one entity */
    sl_buf_t vbuf;                    /* packed values of one lookup */
    uint32_t *slices;                 /* their (offset, length) per feature */
    size_t slices_cap;
    sl_buf_t row;                     /* one entity row's column values */
    dense_arrays_t dense;             /* LAYOUT_DENSE: one call's cells */
};

/* Reads the committed progress of every partition into t->pp; returns how
 * many (0 on allocation failure: the token is then empty, never wrong). */
static size_t serve_grpc__progress(const serve_backend_t *be, serve_grpc_thread_t *t)
{
    if (!be->progress) return 0;
    for (;;) {
        size_t n = be->progress(be, t->pp, t->pp_cap);
        if (n <= t->pp_cap) return n;
        state_partition_progress_t *pp = realloc(t->pp, n * 2 * sizeof *pp);
        if (!pp) return 0;
        t->pp = pp;
        t->pp_cap = n * 2;
    }
}

/* ---- values ------------------------------------------------------------ */

static void serve_grpc__scalar(arena_t *a, Sluice__V1__Value *pv, agg_value_type_t t, int64_t i,
                               double d, const char *s, size_t slen)
{
    sluice__v1__value__init(pv);
    switch (t) {
    case AGG_VAL_INT: pv->kind_case = SLUICE__V1__VALUE__KIND_INT64_VALUE; pv->int64_value = i; break;
    case AGG_VAL_DOUBLE: pv->kind_case = SLUICE__V1__VALUE__KIND_DOUBLE_VALUE; pv->double_value = d; break;
    case AGG_VAL_STRING:
        pv->kind_case = SLUICE__V1__VALUE__KIND_STRING_VALUE;
        pv->string_value = arena_strndup(a, s, slen);
        break;
    default: break;
    }
}

static Sluice__V1__FeatureValue *serve_grpc__value(arena_t *a, const serve_value_t *v)
{
    Sluice__V1__FeatureValue *fv = arena_alloc(a, sizeof *fv);
    Sluice__V1__Value *pv = arena_alloc(a, sizeof *pv);
    if (!fv || !pv) return NULL;
    sluice__v1__feature_value__init(fv);
    fv->value = pv;
    fv->status = (Sluice__V1__FeatureStatus)(v->status + 1);
    const agg_value_t *x = &v->val;
    if (v->status == SERVE_STATUS_NOT_FOUND || v->status == SERVE_STATUS_OUTSIDE_TTL) {
        sluice__v1__value__init(pv);
        fv->event_time_ms = v->status == SERVE_STATUS_OUTSIDE_TTL ? x->newest_event_ms : 0;
        return fv;
    }
    fv->event_time_ms = x->newest_event_ms;
    if (x->type == AGG_VAL_LIST) {
        sluice__v1__value__init(pv);
        Sluice__V1__ValueList *l = arena_alloc(a, sizeof *l);
        Sluice__V1__Value **items = arena_alloc(a, (x->n_items + 1) * sizeof *items);
        if (!l || !items) return NULL;
        sluice__v1__value_list__init(l);
        for (size_t i = 0; i < x->n_items; i++) {
            items[i] = arena_alloc(a, sizeof **items);
            if (!items[i]) return NULL;
            const agg_scalar_t *s = &x->items[i];
            serve_grpc__scalar(a, items[i], s->type, s->i, s->d, s->s, s->slen);
        }
        l->n_items = x->n_items;
        l->items = items;
        pv->kind_case = SLUICE__V1__VALUE__KIND_LIST_VALUE;
        pv->list_value = l;
    } else {
        serve_grpc__scalar(a, pv, x->type, x->i, x->d, x->s, x->slen);
    }
    return fv;
}

/* One cell of the dense layout as the cache keeps it after a view's
 * records (serve_grpc__vector): followed by obj_len bytes, the text of a
 * STRING value or the packed ValueList of a LIST value. Read with memcpy
 * (no alignment). */
typedef struct dense_cell {
    uint8_t status;                   /* Sluice__V1__FeatureStatus */
    uint8_t kind;                     /* Sluice__V1__ValueKind */
    uint8_t pad[2];
    uint32_t obj_len;
    uint64_t bits;                    /* the int64, or the double's bits */
    int64_t event_ms;
} dense_cell_t;

/* The dense cell of a FeatureValue built by serve_grpc__value. */
static void serve_grpc__dense_cell(const Sluice__V1__FeatureValue *fv, dense_cell_t *c)
{
    memset(c, 0, sizeof *c);
    c->status = (uint8_t)fv->status;
    c->event_ms = fv->event_time_ms;
    switch (fv->value->kind_case) {
    case SLUICE__V1__VALUE__KIND_INT64_VALUE:
        c->kind = SLUICE__V1__VALUE_KIND__VALUE_KIND_INT64;
        c->bits = (uint64_t)fv->value->int64_value;
        break;
    case SLUICE__V1__VALUE__KIND_DOUBLE_VALUE:
        c->kind = SLUICE__V1__VALUE_KIND__VALUE_KIND_DOUBLE;
        memcpy(&c->bits, &fv->value->double_value, sizeof c->bits);
        break;
    case SLUICE__V1__VALUE__KIND_STRING_VALUE: c->kind = SLUICE__V1__VALUE_KIND__VALUE_KIND_STRING; break;
    case SLUICE__V1__VALUE__KIND_LIST_VALUE: c->kind = SLUICE__V1__VALUE_KIND__VALUE_KIND_LIST; break;
    default: c->kind = SLUICE__V1__VALUE_KIND__VALUE_KIND_NONE; break;
    }
}

/* ---- consistency tokens ------------------------------------------------ */

/* Is every partition of `want` at or past its offset in `have`? On false,
 * says which one is behind. */
static bool serve_grpc__token_reached(const Sluice__V1__ConsistencyToken *want,
                                      const state_partition_progress_t *have, size_t n,
                                      char *why, size_t whysize)
{
    for (size_t i = 0; i < want->n_partitions; i++) {
        const Sluice__V1__PartitionPosition *w = want->partitions[i];
        int64_t at = -1;
        for (size_t k = 0; k < n; k++)
            if (have[k].partition == w->partition && strcmp(have[k].topic, w->topic) == 0)
                at = have[k].next_offset;
        if (at < w->next_offset) {
            snprintf(why, whysize, "partition %s/%d is at offset %lld, token asks for %lld",
                     w->topic, w->partition, (long long)at, (long long)w->next_offset);
            return false;
        }
    }
    return true;
}

static Sluice__V1__ConsistencyToken *serve_grpc__token(arena_t *a, const state_partition_progress_t *pp,
                                                       size_t n)
{
    Sluice__V1__ConsistencyToken *t = arena_alloc(a, sizeof *t);
    Sluice__V1__PartitionPosition **parts = arena_alloc(a, (n + 1) * sizeof *parts);
    if (!t || !parts) return NULL;
    sluice__v1__consistency_token__init(t);
    for (size_t i = 0; i < n; i++) {
        Sluice__V1__PartitionPosition *p = arena_alloc(a, sizeof *p);
        if (!p) return NULL;
        sluice__v1__partition_position__init(p);
        p->topic = arena_strndup(a, pp[i].topic, strlen(pp[i].topic));
        p->partition = pp[i].partition;
        p->next_offset = pp[i].next_offset;
        p->watermark_ms = pp[i].watermark_ms;
        parts[i] = p;
    }
    t->n_partitions = n;
    t->partitions = parts;
    return t;
}

/* ---- GetOnlineFeatures ------------------------------------------------- */

typedef struct column { int view, feature; } column_t;

static int serve_grpc__columns(const schema_t *s, const Sluice__V1__GetOnlineFeaturesRequest *req,
                               arena_t *a, column_t **out, size_t *n_out, rpc_reply_t *reply)
{
    size_t n = 0, cap = 0;
    column_t *cols = NULL;
    if (req->features_case == SLUICE__V1__GET_ONLINE_FEATURES_REQUEST__FEATURES_FEATURE_SERVICE) {
        const char *name = req->feature_service;
        const schema_service_t *sv = NULL;
        for (size_t i = 0; i < s->n_services; i++)
            if (strcmp(s->services[i].name, name) == 0) sv = &s->services[i];
        if (!sv) return rpc_reply_fail(reply, RPC_NOT_FOUND, "unknown feature service '%.200s'", name);
        cols = arena_alloc(a, (sv->n_refs + 1) * sizeof *cols);
        if (!cols) return rpc_reply_fail(reply, RPC_RESOURCE_EXHAUSTED, "out of memory");
        for (size_t i = 0; i < sv->n_refs; i++) {
            cols[i].view = sv->refs[i].view;
            cols[i].feature = sv->refs[i].feature;
        }
        n = sv->n_refs;
    } else if (req->features_case == SLUICE__V1__GET_ONLINE_FEATURES_REQUEST__FEATURES_FEATURE_REFS) {
        const Sluice__V1__FeatureRefList *refs = req->feature_refs;
        for (size_t r = 0; r < refs->n_refs; r++) {
            const char *ref = refs->refs[r];
            const char *colon = strchr(ref, ':');
            if (!colon)
                return rpc_reply_fail(reply, RPC_INVALID_ARGUMENT,
                                      "feature ref '%.200s' must be 'view:feature' or 'view:*'", ref);
            int view = -1;
            for (size_t i = 0; i < s->n_views; i++)
                if (strlen(s->views[i].name) == (size_t)(colon - ref) &&
                    memcmp(s->views[i].name, ref, (size_t)(colon - ref)) == 0)
                    view = (int)i;
            if (view < 0)
                return rpc_reply_fail(reply, RPC_NOT_FOUND, "unknown view in feature ref '%.200s'", ref);
            const schema_view_t *v = &s->views[view];
            bool all = strcmp(colon + 1, "*") == 0;
            size_t add = all ? v->n_features : 1;
            if (n + add > cap) {
                size_t ncap = (n + add) * 2;
                column_t *nc = arena_alloc(a, ncap * sizeof *nc);
                if (!nc) return rpc_reply_fail(reply, RPC_RESOURCE_EXHAUSTED, "out of memory");
                if (n) memcpy(nc, cols, n * sizeof *cols);
                cols = nc;
                cap = ncap;
            }
            if (all) {
                for (size_t f = 0; f < v->n_features; f++) cols[n++] = (column_t){ view, (int)f };
                continue;
            }
            int f = -1;
            for (size_t i = 0; i < v->n_features; i++)
                if (strcmp(v->features[i].name, colon + 1) == 0) f = (int)i;
            if (f < 0)
                return rpc_reply_fail(reply, RPC_NOT_FOUND, "unknown feature '%.100s' in view '%s'",
                                      colon + 1, v->name);
            cols[n++] = (column_t){ view, f };
        }
    }
    if (n == 0)
        return rpc_reply_fail(reply, RPC_INVALID_ARGUMENT,
                              "no features requested: set feature_refs or feature_service");
    *out = cols;
    *n_out = n;
    return RPC_OK;
}

/* Builds the key of `view`'s entity from an entity row. */
static int serve_grpc__row_key(const schema_t *s, int view, const Sluice__V1__EntityRow *row,
                               size_t row_i, serve_key_t *key, rpc_reply_t *reply)
{
    const schema_entity_t *ent = &s->entities[s->views[view].entity];
    if (ent->n_keys > SERVE_MAX_KEY_PARTS)
        return rpc_reply_fail(reply, RPC_INTERNAL, "entity '%s' has too many keys", ent->name);
    key->n = ent->n_keys;
    for (size_t k = 0; k < ent->n_keys; k++) {
        const char *val = NULL;
        for (size_t i = 0; i < row->n_keys; i++)
            if (strcmp(row->keys[i]->key, ent->keys[k]) == 0) val = row->keys[i]->value;
        if (!val)
            return rpc_reply_fail(reply, RPC_INVALID_ARGUMENT,
                                  "entity row %zu has no key '%s' (needed by view '%s')", row_i,
                                  ent->keys[k], s->views[view].name);
        key->part[k] = val;
        key->len[k] = strlen(val);
    }
    return RPC_OK;
}

/* ---- request parsing: a fast path for the common shape ------------------ */

/* Reads a varint at *p (< end). Returns false on truncation or > 10 bytes. */
static bool serve_grpc__varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
    uint64_t x = 0;
    for (int i = 0; i < 10 && *p < end; i++) {
        uint8_t b = *(*p)++;
        x |= (uint64_t)(b & 0x7f) << (7 * i);
        if (!(b & 0x80)) {
            *v = x;
            return true;
        }
    }
    return false;
}

/* A length-delimited field with tag byte `tag` at *p: its bytes. */
static bool serve_grpc__len_field(const uint8_t **p, const uint8_t *end, uint8_t tag,
                                  const uint8_t **data, size_t *len)
{
    uint64_t n;
    if (*p >= end || **p != tag) return false;
    (*p)++;
    if (!serve_grpc__varint(p, end, &n) || n > (uint64_t)(end - *p)) return false;
    *data = *p;
    *len = (size_t)n;
    *p += n;
    return true;
}

static char *serve_grpc__arena_str(arena_t *a, const uint8_t *s, size_t n)
{
    char *d = arena_alloc(a, n + 1);
    if (d) {
        memcpy(d, s, n);
        d[n] = 0;
    }
    return d;
}

/* One map entry {1: key, 2: value}: each at most once and in that order;
 * a missing one is "" (proto3 leaves out empty strings). */
static bool serve_grpc__parse_entry(const uint8_t *p, size_t n, const uint8_t **k, size_t *kl,
                                    const uint8_t **v, size_t *vl)
{
    const uint8_t *end = p + n;
    *k = *v = (const uint8_t *)"";
    *kl = *vl = 0;
    if (p < end && *p == 0x0a && !serve_grpc__len_field(&p, end, 0x0a, k, kl)) return false;
    if (p < end && *p == 0x12 && !serve_grpc__len_field(&p, end, 0x12, v, vl)) return false;
    return p == end;
}

/* One EntityRow holding only map entries. NULL: not this shape. The row,
 * its entries and their strings are one arena block. */
static Sluice__V1__EntityRow *serve_grpc__parse_row(arena_t *a, const uint8_t *p, size_t n)
{
    const uint8_t *end = p + n, *q = p;
    size_t n_keys = 0, strs = 0;
    while (q < end) {                         /* count, checking the shape */
        const uint8_t *e = NULL, *k = NULL, *v = NULL;
        size_t el = 0, kl = 0, vl = 0;
        if (!serve_grpc__len_field(&q, end, 0x0a, &e, &el) ||
            !serve_grpc__parse_entry(e, el, &k, &kl, &v, &vl))
            return NULL;
        n_keys++;
        strs += kl + vl + 2;
    }
    Sluice__V1__EntityRow *row;
    Sluice__V1__EntityRow__KeysEntry **keys, *ents;
    size_t head = (sizeof *row + (n_keys + 1) * sizeof *keys + sizeof(max_align_t) - 1) &
                  ~(sizeof(max_align_t) - 1);
    unsigned char *blk = arena_alloc_raw(a, head + n_keys * sizeof *ents + strs);
    if (!blk) return NULL;
    row = (Sluice__V1__EntityRow *)blk;
    keys = (Sluice__V1__EntityRow__KeysEntry **)(row + 1);
    ents = (Sluice__V1__EntityRow__KeysEntry *)(blk + head);
    char *str = (char *)(ents + n_keys);
    sluice__v1__entity_row__init(row);
    row->n_keys = n_keys;
    row->keys = keys;
    q = p;
    for (size_t i = 0; i < n_keys; i++) {
        const uint8_t *e = NULL, *k = NULL, *v = NULL;
        size_t el = 0, kl = 0, vl = 0;
        serve_grpc__len_field(&q, end, 0x0a, &e, &el);
        serve_grpc__parse_entry(e, el, &k, &kl, &v, &vl);
        Sluice__V1__EntityRow__KeysEntry *ke = &ents[i];
        sluice__v1__entity_row__keys_entry__init(ke);
        ke->key = str;
        memcpy(str, k, kl);
        str[kl] = 0;
        str += kl + 1;
        ke->value = str;
        memcpy(str, v, vl);
        str[vl] = 0;
        str += vl + 1;
        keys[i] = ke;
    }
    return row;
}

/* One EntityKeyColumn: its name (at most once, first) then its values.
 * NULL: not this shape. */
static Sluice__V1__EntityKeyColumn *serve_grpc__parse_key_column(arena_t *a, const uint8_t *p, size_t n)
{
    const uint8_t *end = p + n, *q = p, *name = (const uint8_t *)"", *v = NULL;
    size_t name_len = 0, vl = 0, n_values = 0;
    if (q < end && *q == 0x0a && !serve_grpc__len_field(&q, end, 0x0a, &name, &name_len)) return NULL;
    const uint8_t *values = q;
    while (q < end) {
        if (!serve_grpc__len_field(&q, end, 0x12, &v, &vl)) return NULL;
        n_values++;
    }
    Sluice__V1__EntityKeyColumn *col = arena_alloc(a, sizeof *col);
    char **vals = arena_alloc(a, (n_values + 1) * sizeof *vals);
    if (!col || !vals) return NULL;
    sluice__v1__entity_key_column__init(col);
    if (!(col->name = serve_grpc__arena_str(a, name, name_len))) return NULL;
    q = values;
    for (size_t i = 0; i < n_values; i++) {
        serve_grpc__len_field(&q, end, 0x12, &v, &vl);
        if (!(vals[i] = serve_grpc__arena_str(a, v, vl))) return NULL;
    }
    col->n_values = n_values;
    col->values = vals;
    return col;
}

/* GetOnlineFeaturesRequest of the shape nearly every client sends — one
 * feature_service (field 2), entity rows (field 3) of string map
 * entries or key columns (field 7) of a name and values, and at most one
 * layout (field 6), nothing else — parsed straight into the arena; protobuf-c's
 * generic unpacker costs ~10 % of a 100-row call. Anything else (feature
 * refs, a token, repeated or unknown fields, map entry fields repeated or
 * out of order) returns NULL and goes to protobuf-c, so the result is always what
 * protobuf-c would build (tests/serving/test_grpc_parse.c checks). */
static Sluice__V1__GetOnlineFeaturesRequest *serve_grpc__parse_fast(arena_t *a, const uint8_t *p,
                                                                    size_t n)
{
    const uint8_t *end = p + n, *q = p, *svc = NULL, *f = NULL;
    size_t svc_len = 0, fl = 0, n_rows = 0, n_kcols = 0;
    uint64_t layout = 0;
    bool has_layout = false;
    while (q < end) {
        if (*q == 0x12 && !svc) {
            if (!serve_grpc__len_field(&q, end, 0x12, &svc, &svc_len)) return NULL;
        } else if (*q == 0x30 && !has_layout) {
            q++;
            if (!serve_grpc__varint(&q, end, &layout) || layout > INT32_MAX) return NULL;
            has_layout = true;
        } else if (*q == 0x1a) {
            if (!serve_grpc__len_field(&q, end, 0x1a, &f, &fl)) return NULL;
            n_rows++;
        } else if (*q == 0x3a) {
            if (!serve_grpc__len_field(&q, end, 0x3a, &f, &fl)) return NULL;
            n_kcols++;
        } else {
            return NULL;
        }
    }
    if (!svc) return NULL;
    Sluice__V1__GetOnlineFeaturesRequest *req = arena_alloc(a, sizeof *req);
    Sluice__V1__EntityRow **rows = arena_alloc(a, (n_rows + 1) * sizeof *rows);
    Sluice__V1__EntityKeyColumn **kcols = arena_alloc(a, (n_kcols + 1) * sizeof *kcols);
    if (!req || !rows || !kcols) return NULL;
    sluice__v1__get_online_features_request__init(req);
    req->features_case = SLUICE__V1__GET_ONLINE_FEATURES_REQUEST__FEATURES_FEATURE_SERVICE;
    if (!(req->feature_service = serve_grpc__arena_str(a, svc, svc_len))) return NULL;
    req->n_entities = n_rows;
    req->entities = rows;
    req->layout = (Sluice__V1__ResponseLayout)layout;
    req->n_entity_columns = n_kcols;
    req->entity_columns = kcols;
    q = p;
    size_t i = 0, kc = 0;
    while (q < end) {
        if (*q == 0x3a) {
            serve_grpc__len_field(&q, end, 0x3a, &f, &fl);
            if (!(kcols[kc++] = serve_grpc__parse_key_column(a, f, fl))) return NULL;
            continue;
        }
        if (*q == 0x12) {
            serve_grpc__len_field(&q, end, 0x12, &f, &fl);
            continue;
        }
        if (*q == 0x30) {
            q++;
            serve_grpc__varint(&q, end, &layout);
            continue;
        }
        serve_grpc__len_field(&q, end, 0x1a, &f, &fl);
        if (!(rows[i++] = serve_grpc__parse_row(a, f, fl))) return NULL;
    }
    return req;
}

static bool serve_grpc__same_str(const char *x, const char *y)
{
    return x && y && strcmp(x, y) == 0;
}

int serve_grpc_parse_check(const void *data, size_t len)
{
    arena_t a = { 0 };
    Sluice__V1__GetOnlineFeaturesRequest *fast = serve_grpc__parse_fast(&a, data, len);
    if (!fast) {
        arena_free(&a);
        return 0;
    }
    Sluice__V1__GetOnlineFeaturesRequest *ref =
        sluice__v1__get_online_features_request__unpack(NULL, len, data);
    bool same = ref && ref->features_case == fast->features_case &&
                serve_grpc__same_str(ref->feature_service, fast->feature_service) &&
                ref->n_entities == fast->n_entities && !ref->min_token &&
                ref->min_token_wait_ms == fast->min_token_wait_ms && ref->layout == fast->layout;
    for (size_t e = 0; same && e < ref->n_entities; e++) {
        const Sluice__V1__EntityRow *x = ref->entities[e], *y = fast->entities[e];
        same = x->n_keys == y->n_keys;
        for (size_t k = 0; same && k < x->n_keys; k++)
            same = serve_grpc__same_str(x->keys[k]->key, y->keys[k]->key) &&
                   serve_grpc__same_str(x->keys[k]->value, y->keys[k]->value);
    }
    same = same && ref->n_entity_columns == fast->n_entity_columns;
    for (size_t c = 0; same && c < ref->n_entity_columns; c++) {
        const Sluice__V1__EntityKeyColumn *x = ref->entity_columns[c], *y = fast->entity_columns[c];
        same = serve_grpc__same_str(x->name, y->name) && x->n_values == y->n_values;
        for (size_t i = 0; same && i < x->n_values; i++)
            same = serve_grpc__same_str(x->values[i], y->values[i]);
    }
    sluice__v1__get_online_features_request__free_unpacked(ref, NULL);
    arena_free(&a);
    return same ? 1 : -1;
}

static unsigned char *serve_grpc__put_varint(unsigned char *w, uint64_t v)
{
    while (v >= 0x80) {
        *w++ = (unsigned char)(v | 0x80);
        v >>= 7;
    }
    *w++ = (unsigned char)v;
    return w;
}

/* Copies n bytes; 8 to 32 (a packed FeatureValue record, usually) in
 * overlapping words instead of a memcpy call. */
static inline void serve_grpc__copy(unsigned char *d, const unsigned char *src, size_t n)
{
    uint64_t w0, w1, w2, w3;
    if (n >= 8 && n <= 16) {
        memcpy(&w0, src, 8);
        memcpy(&w1, src + n - 8, 8);
        memcpy(d, &w0, 8);
        memcpy(d + n - 8, &w1, 8);
    } else if (n > 16 && n <= 32) {
        memcpy(&w0, src, 8);
        memcpy(&w1, src + 8, 8);
        memcpy(&w2, src + n - 16, 8);
        memcpy(&w3, src + n - 8, 8);
        memcpy(d, &w0, 8);
        memcpy(d + 8, &w1, 8);
        memcpy(d + n - 16, &w2, 8);
        memcpy(d + n - 8, &w3, 8);
    } else {
        memcpy(d, src, n);
    }
}

/* The cache key of one entity: each key part as a 4-byte length and its
 * bytes (the text the client sent; a part may hold any byte). */
static int serve_grpc__cache_key(sl_buf_t *b, const serve_key_t *key)
{
    sl_buf_reset(b);
    for (size_t i = 0; i < key->n; i++) {
        uint32_t n = (uint32_t)key->len[i];
        if (sl_buf_append(b, &n, sizeof n) || sl_buf_append(b, key->part[i], key->len[i]))
            return SL_ENOMEM;
    }
    return 0;
}

/* One entity's values of `view` as FeatureVector.values records (tag 0x0a,
 * length, packed FeatureValue: a vector is its columns' records one after
 * the other), slice f = feature f's record, and slice n_features + f =
 * its dense_cell_t (LAYOUT_DENSE) followed by a STRING cell's text or a
 * LIST cell's packed ValueList: from the thread's cache while the backend says they hold
 * (generation `gen` read before, request time before valid_until), else
 * one lookup at `now`, packed and cached. *data / *slices stay valid until
 * the thread's next vector. Returns RPC_OK or the reply's failure. */
static int serve_grpc__vector(serve_grpc_thread_t *t, const serve_backend_t *be, int view,
                              const serve_key_t *key, size_t row, int64_t now, uint64_t gen,
                              const unsigned char **data, const uint32_t **slices,
                              rpc_reply_t *reply)
{
    const schema_view_t *v = &be->schema->views[view];
    bool cacheable = t->cache && be->generation && be->valid_until;
    uint64_t h = 0;
    if (cacheable) {
        if (serve_grpc__cache_key(&t->key, key))
            return rpc_reply_fail(reply, RPC_RESOURCE_EXHAUSTED, "out of memory");
        h = serve_cache_hash(view, t->key.data, t->key.len);
        const serve_cache_entry_t *e =
            serve_cache_get(t->cache, h, be, view, t->key.data, t->key.len, gen, now);
        if (e) {
            *data = e->data;
            *slices = e->slices;
            return RPC_OK;
        }
    }
    char err[200] = "";
    int rc = be->lookup(be, t->sc, view, key, now, t->vals, err, sizeof err);
    if (rc == SL_EINVAL || rc == SL_ETYPE)
        return rpc_reply_fail(reply, RPC_INVALID_ARGUMENT, "entity row %zu, view '%s': bad key: %s",
                              row, v->name, err[0] ? err : sl_strerror(rc));
    if (rc) return rpc_reply_fail(reply, RPC_INTERNAL, "lookup failed: %s", err[0] ? err : sl_strerror(rc));
    size_t nf = v->n_features;
    if (2 * nf > t->slices_cap) {
        uint32_t *ns = realloc(t->slices, nf * 4 * sizeof *ns);
        if (!ns) return rpc_reply_fail(reply, RPC_RESOURCE_EXHAUSTED, "out of memory");
        t->slices = ns;
        t->slices_cap = 2 * nf;
    }
    Sluice__V1__FeatureValue **fvs = arena_alloc(&t->a, (nf + 1) * sizeof *fvs);
    if (!fvs) return rpc_reply_fail(reply, RPC_RESOURCE_EXHAUSTED, "out of memory");
    sl_buf_reset(&t->vbuf);
    for (size_t f = 0; f < nf; f++) {
        Sluice__V1__FeatureValue *fv = fvs[f] = serve_grpc__value(&t->a, &t->vals[f]);
        size_t off = t->vbuf.len;
        size_t n = fv && !t->a.failed ? protobuf_c_message_get_packed_size(&fv->base) : 0;
        size_t need = 11 + n;
        if (!fv || t->a.failed || sl_buf_reserve(&t->vbuf, need) || t->vbuf.len + need > UINT32_MAX)
            return rpc_reply_fail(reply, RPC_RESOURCE_EXHAUSTED, "out of memory");
        /* the record as a FeatureVector holds it: values (1) = the message */
        unsigned char *w = t->vbuf.data + off;
        *w++ = 0x0a;
        w = serve_grpc__put_varint(w, n);
        w += protobuf_c_message_pack(&fv->base, w);
        t->vbuf.len = (size_t)(w - t->vbuf.data);
        t->slices[2 * f] = (uint32_t)off;
        t->slices[2 * f + 1] = (uint32_t)(t->vbuf.len - off);
    }
    for (size_t f = 0; f < nf; f++) {      /* the dense cells, after all records */
        const Sluice__V1__FeatureValue *fv = fvs[f];
        dense_cell_t cell;
        serve_grpc__dense_cell(fv, &cell);
        bool str = cell.kind == SLUICE__V1__VALUE_KIND__VALUE_KIND_STRING;
        bool list = cell.kind == SLUICE__V1__VALUE_KIND__VALUE_KIND_LIST;
        size_t vn = str ? strlen(fv->value->string_value)
                  : list ? protobuf_c_message_get_packed_size(&fv->value->list_value->base) : 0;
        size_t off = t->vbuf.len;
        if (sl_buf_reserve(&t->vbuf, sizeof cell + vn) || off + sizeof cell + vn > UINT32_MAX)
            return rpc_reply_fail(reply, RPC_RESOURCE_EXHAUSTED, "out of memory");
        cell.obj_len = (uint32_t)vn;
        memcpy(t->vbuf.data + off, &cell, sizeof cell);
        if (str) memcpy(t->vbuf.data + off + sizeof cell, fv->value->string_value, vn);
        if (list) protobuf_c_message_pack(&fv->value->list_value->base, t->vbuf.data + off + sizeof cell);
        t->vbuf.len = off + sizeof cell + vn;
        t->slices[2 * (nf + f)] = (uint32_t)off;
        t->slices[2 * (nf + f) + 1] = (uint32_t)(sizeof cell + vn);
    }
    if (cacheable)
        serve_cache_put(t->cache, h, be, view, t->key.data, t->key.len, gen,
                        be->valid_until(be, t->sc), 0, t->vbuf.data, t->vbuf.len, t->slices,
                        2 * nf);
    *data = t->vbuf.data;
    *slices = t->slices;
    return RPC_OK;
}

/* An entity row's vectors of every view in views[] straight from the
 * cache, stored or built nothing: true when all of them hit (vd[k], vs[k]
 * then hold view k's data and slices until the next put on the cache);
 * false on a miss, or on a bad row with the reply failed. The key is built
 * and hashed once per entity, not per view. */
static bool serve_grpc__row_cached(serve_grpc_thread_t *t, const serve_backend_t *be,
                                   const int *views, size_t n_views,
                                   const Sluice__V1__EntityRow *row, size_t row_i, int64_t now,
                                   uint64_t gen, const unsigned char **vd, const uint32_t **vs,
                                   rpc_reply_t *reply)
{
    const schema_t *s = be->schema;
    int ent = -1;
    uint64_t kh = 0;
    for (size_t k = 0; k < n_views; k++) {
        int view = views[k];
        if (s->views[view].entity != ent) {
            serve_key_t key;
            if (serve_grpc__row_key(s, view, row, row_i, &key, reply) != RPC_OK ||
                serve_grpc__cache_key(&t->key, &key))
                return false;             /* (out of memory: the slow path says so) */
            kh = serve_cache_hash_key(t->key.data, t->key.len);
            ent = s->views[view].entity;
        }
        const serve_cache_entry_t *e = serve_cache_get(t->cache, serve_cache_hash_view(kh, view), be,
                                                       view, t->key.data, t->key.len, gen, now);
        if (!e) return false;
        vd[k] = e->data;
        vs[k] = e->slices;
    }
    return true;
}

/* Key columns a request may give: the keys of a few entities (a view's
 * entity has at most SERVE_MAX_KEY_PARTS); the bound keeps the check for
 * repeated names (quadratic) cheap against a request of many empty columns. */
#define SERVE_GRPC_MAX_KEY_COLUMNS 64

/* Entity rows from the request's key columns (entity_columns): row i maps
 * each column's name to its values[i], as an EntityRow in the arena. */
static int serve_grpc__rows_of_columns(arena_t *a, Sluice__V1__GetOnlineFeaturesRequest *req,
                                       size_t max_entities, rpc_reply_t *reply)
{
    size_t nc = req->n_entity_columns, nr = req->entity_columns[0]->n_values;
    if (req->n_entities)
        return rpc_reply_fail(reply, RPC_INVALID_ARGUMENT, "entities and entity_columns both given: use one");
    if (nc > SERVE_GRPC_MAX_KEY_COLUMNS)
        return rpc_reply_fail(reply, RPC_INVALID_ARGUMENT, "too many entity_columns: %zu > %d", nc,
                              SERVE_GRPC_MAX_KEY_COLUMNS);
    for (size_t c = 0; c < nc; c++) {
        const Sluice__V1__EntityKeyColumn *col = req->entity_columns[c];
        if (col->n_values != nr)
            return rpc_reply_fail(reply, RPC_INVALID_ARGUMENT,
                                  "entity_columns differ in length: '%s' has %zu values, '%s' %zu",
                                  req->entity_columns[0]->name, nr, col->name, col->n_values);
        for (size_t d = 0; d < c; d++)
            if (strcmp(req->entity_columns[d]->name, col->name) == 0)
                return rpc_reply_fail(reply, RPC_INVALID_ARGUMENT, "entity column '%s' given twice", col->name);
    }
    if (nr > max_entities)
        return rpc_reply_fail(reply, RPC_RESOURCE_EXHAUSTED, "too many entity rows: %zu > max_entities %zu",
                              nr, max_entities);
    Sluice__V1__EntityRow **rows = arena_alloc(a, (nr + 1) * sizeof *rows);
    Sluice__V1__EntityRow *rowv = arena_alloc(a, (nr + 1) * sizeof *rowv);
    Sluice__V1__EntityRow__KeysEntry *ents = arena_alloc(a, (nr * nc + 1) * sizeof *ents);
    Sluice__V1__EntityRow__KeysEntry **keys = arena_alloc(a, (nr * nc + 1) * sizeof *keys);
    if (!rows || !rowv || !ents || !keys)
        return rpc_reply_fail(reply, RPC_RESOURCE_EXHAUSTED, "out of memory reading the request");
    for (size_t r = 0; r < nr; r++) {
        sluice__v1__entity_row__init(&rowv[r]);
        rowv[r].n_keys = nc;
        rowv[r].keys = keys + r * nc;
        for (size_t c = 0; c < nc; c++) {
            Sluice__V1__EntityRow__KeysEntry *ke = &ents[r * nc + c];
            sluice__v1__entity_row__keys_entry__init(ke);
            ke->key = req->entity_columns[c]->name;
            ke->value = req->entity_columns[c]->values[r];
            keys[r * nc + c] = ke;
        }
        rows[r] = &rowv[r];
    }
    req->entities = rows;
    req->n_entities = nr;
    return RPC_OK;
}

/* LAYOUT_DENSE: appends one entity row's cells (col_src[c] = column c's
 * dense_cell_t and the bytes after it) to the call's arrays. */
static int serve_grpc__dense_row(dense_arrays_t *d, const unsigned char *const *col_src,
                                 size_t n_cols)
{
    for (size_t c = 0; c < n_cols; c++) {
        dense_cell_t cell;
        memcpy(&cell, col_src[c], sizeof cell);
        d->status.data[d->status.len++] = cell.status;
        d->kind.data[d->kind.len++] = cell.kind;
        uint64_t bits = cell.bits;
        uint64_t ms = (uint64_t)cell.event_ms;
        if (cell.kind == SLUICE__V1__VALUE_KIND__VALUE_KIND_STRING) {     /* strings (7) */
            if (d->strs.len + cell.obj_len > UINT32_MAX || sl_buf_append(&d->strs, col_src[c] + sizeof cell, cell.obj_len))
                return SL_ENOMEM;
            bits = (uint64_t)(d->strs.len - cell.obj_len) | (uint64_t)cell.obj_len << 32;
        } else if (cell.kind == SLUICE__V1__VALUE_KIND__VALUE_KIND_LIST) {  /* lists (8) */
            if (sl_buf_reserve(&d->lists, 11 + cell.obj_len)) return SL_ENOMEM;
            unsigned char *w = d->lists.data + d->lists.len;
            *w++ = 0x42;
            w = serve_grpc__put_varint(w, cell.obj_len);
            memcpy(w, col_src[c] + sizeof cell, cell.obj_len);
            d->lists.len = (size_t)(w - d->lists.data) + cell.obj_len;
            bits = d->n_lists++;
        }
        unsigned char *vw = d->vals.data + d->vals.len, *tw = d->times.data + d->times.len;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        memcpy(vw, &bits, 8);
        memcpy(tw, &ms, 8);
#else
        for (int i = 0; i < 8; i++) {     /* little-endian whatever the host */
            vw[i] = (unsigned char)(bits >> (8 * i));
            tw[i] = (unsigned char)(ms >> (8 * i));
        }
#endif
        d->vals.len += 8;
        d->times.len += 8;
    }
    return 0;
}

static size_t serve_grpc__varint_size(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

/* A bytes field (tag, length, data) at w; nothing for an empty one, as
 * proto3 leaves it out. Returns the end. */
static unsigned char *serve_grpc__put_bytes(unsigned char *w, uint8_t tag, const sl_buf_t *b)
{
    if (!b->len) return w;
    *w++ = tag;
    w = serve_grpc__put_varint(w, b->len);
    memcpy(w, b->data, b->len);
    return w + b->len;
}

static size_t serve_grpc__bytes_size(const sl_buf_t *b)
{
    return b->len ? 1 + serve_grpc__varint_size(b->len) + b->len : 0;
}

/* LAYOUT_DENSE: the response's dense (field 5) DenseResults from the
 * call's arrays. */
static int serve_grpc__dense_put(const dense_arrays_t *d, sl_buf_t *body, size_t n_rows, size_t n_cols)
{
    size_t len = (n_rows ? 1 + serve_grpc__varint_size(n_rows) : 0) +
                 (n_cols ? 1 + serve_grpc__varint_size(n_cols) : 0) +
                 serve_grpc__bytes_size(&d->status) + serve_grpc__bytes_size(&d->kind) +
                 serve_grpc__bytes_size(&d->vals) + serve_grpc__bytes_size(&d->times) +
                 serve_grpc__bytes_size(&d->strs) + d->lists.len;
    if (sl_buf_reserve(body, 11 + len)) return SL_ENOMEM;
    unsigned char *w = body->data + body->len;
    *w++ = 0x2a;
    w = serve_grpc__put_varint(w, len);
    if (n_rows) {
        *w++ = 0x08;
        w = serve_grpc__put_varint(w, n_rows);
    }
    if (n_cols) {
        *w++ = 0x10;
        w = serve_grpc__put_varint(w, n_cols);
    }
    w = serve_grpc__put_bytes(w, 0x1a, &d->status);
    w = serve_grpc__put_bytes(w, 0x22, &d->kind);
    w = serve_grpc__put_bytes(w, 0x2a, &d->vals);
    w = serve_grpc__put_bytes(w, 0x32, &d->times);
    w = serve_grpc__put_bytes(w, 0x3a, &d->strs);
    if (d->lists.len) memcpy(w, d->lists.data, d->lists.len);
    w += d->lists.len;
    body->len = (size_t)(w - body->data);
    return 0;
}

/* The response's feature_names (field 1: "view:feature" per column), as
 * protobuf-c would pack them, written straight from the schema's names. */
static int serve_grpc__feature_names(sl_buf_t *body, const schema_t *s, const column_t *cols, size_t n_cols)
{
    for (size_t c = 0; c < n_cols; c++) {
        const schema_view_t *v = &s->views[cols[c].view];
        const char *fname = v->features[cols[c].feature].name;
        size_t vl = strlen(v->name), fl = strlen(fname), n = vl + 1 + fl;
        if (sl_buf_reserve(body, 11 + n)) return SL_ENOMEM;
        unsigned char *w = body->data + body->len;
        *w++ = 0x0a;
        w = serve_grpc__put_varint(w, n);
        memcpy(w, v->name, vl);
        w[vl] = ':';
        memcpy(w + vl + 1, fname, fl);
        body->len = (size_t)(w + n - body->data);
    }
    return 0;
}

/* GetOnlineFeatures. The response is written in three parts, in field
 * order: feature_names (serve_grpc__feature_names); then the results (field 2),
 * each FeatureVector its columns' FeatureValue records one after the other
 * (cached per view and entity, see serve_grpc__vector); then token and served_at_ms packed
 * by protobuf-c. Concatenated protobuf messages are one message, so a
 * client parses exactly what a single pack would have produced. With
 * LAYOUT_DENSE the rows' cells (cached beside the records) go to the
 * thread's flat arrays instead, written as field 5 after the last row. */
static void serve_grpc__get(void *ctx, void *tctx, const void *data, size_t len, rpc_reply_t *reply)
{
    serve_grpc_t *g = ctx;
    serve_grpc_thread_t *t = tctx;
    const serve_backend_t *be = serve_backend_pin(g->be);
    const schema_t *s = be->schema;
    arena_t *a = &t->a;
    ProtobufCAllocator alloc = { arena_pb_alloc, arena_pb_free, a };
    Sluice__V1__GetOnlineFeaturesRequest *req = serve_grpc__parse_fast(a, data, len);
    if (!req && !a->failed) req = sluice__v1__get_online_features_request__unpack(&alloc, len, data);
    column_t *cols = NULL;
    size_t n_cols = 0;
    if (!req) {
        rpc_reply_fail(reply, a->failed ? RPC_RESOURCE_EXHAUSTED : RPC_INVALID_ARGUMENT,
                       a->failed ? "out of memory reading the request" : "malformed GetOnlineFeaturesRequest");
        goto out;
    }
    size_t need = 0;
    for (size_t i = 0; i < s->n_views; i++)
        if (s->views[i].n_features > need) need = s->views[i].n_features;
    if (need > t->vals_cap) {
        serve_value_t *nv = realloc(t->vals, (need + 1) * sizeof *nv);
        if (!nv) { rpc_reply_fail(reply, RPC_RESOURCE_EXHAUSTED, "out of memory"); goto out; }
        t->vals = nv;
        t->vals_cap = need;
    }
    if (req->layout != SLUICE__V1__RESPONSE_LAYOUT__LAYOUT_ROWS &&
        req->layout != SLUICE__V1__RESPONSE_LAYOUT__LAYOUT_DENSE) {
        rpc_reply_fail(reply, RPC_INVALID_ARGUMENT, "unknown layout %d (0 rows, 1 dense)", (int)req->layout);
        goto out;
    }
    if (req->n_entity_columns &&
        serve_grpc__rows_of_columns(a, req, g->opts.max_entities, reply) != RPC_OK)
        goto out;
    if (req->n_entities > g->opts.max_entities) {
        rpc_reply_fail(reply, RPC_RESOURCE_EXHAUSTED, "too many entity rows: %zu > max_entities %zu",
                       req->n_entities, g->opts.max_entities);
        goto out;
    }
    bool dense = req->layout == SLUICE__V1__RESPONSE_LAYOUT__LAYOUT_DENSE;
    if (serve_grpc__columns(s, req, a, &cols, &n_cols, reply) != RPC_OK) goto out;

    /* progress first: the token must not claim more than what we read */
    size_t n_pp = serve_grpc__progress(be, t);
    if (req->min_token && req->min_token->n_partitions) {
        int64_t wait = req->min_token_wait_ms ? req->min_token_wait_ms : 1000;
        if (wait > g->opts.max_token_wait_ms) wait = g->opts.max_token_wait_ms;
        /* never waits here (rpc_server.h): not reached yet, the call is
         * deferred and this handler asked again ~2 ms later */
        int64_t since = reply->since_ns ? reply->since_ns : sl_mono_ns();
        char why[300] = "";
        if (!serve_grpc__token_reached(req->min_token, t->pp, n_pp, why, sizeof why)) {
            if (sl_mono_ns() >= since + wait * 1000000)
                rpc_reply_fail(reply, RPC_UNAVAILABLE, "consistency token not reached within %lld ms: %s",
                               (long long)wait, why);
            else
                rpc_reply_defer(reply);
            goto out;
        }
    }
    /* then the generation: a cached answer serves only while no commit
     * was counted since it was read (it is as new as a fresh read would be
     * for every commit whose count bump precedes this read) */
    uint64_t gen = be->generation ? be->generation(be) : 0;

    int64_t now = sl_now_ms();
    int *views = arena_alloc(a, (n_cols + 1) * sizeof *views);   /* distinct views */
    size_t *col_off = arena_alloc(a, (n_cols + 1) * sizeof *col_off);
    size_t *col_len = arena_alloc(a, (n_cols + 1) * sizeof *col_len);
    size_t *col_vk = arena_alloc(a, (n_cols + 1) * sizeof *col_vk);     /* column -> k in views */
    size_t *col_sl = arena_alloc(a, (n_cols + 1) * sizeof *col_sl);     /* column -> its slice */
    const unsigned char **col_src = arena_alloc(a, (n_cols + 1) * sizeof *col_src);
    const unsigned char **vdk = arena_alloc(a, (n_cols + 1) * sizeof *vdk);  /* per view k */
    const uint32_t **vsk = arena_alloc(a, (n_cols + 1) * sizeof *vsk);
    if (!views || !col_off || !col_len || !col_vk || !col_sl || !col_src ||
        !vdk || !vsk) {
        rpc_reply_fail(reply, RPC_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    size_t n_views = 0;
    for (size_t c = 0; c < n_cols; c++) {
        const schema_view_t *v = &s->views[cols[c].view];
        size_t k = 0;
        while (k < n_views && views[k] != cols[c].view) k++;
        if (k == n_views) views[n_views++] = cols[c].view;
        col_vk[c] = k;
        /* the feature's record, or (dense) its cell after the view's records */
        col_sl[c] = 2 * (size_t)(dense ? v->n_features + (size_t)cols[c].feature : (size_t)cols[c].feature);
    }
    if (dense) {
        dense_arrays_t *d = &t->dense;
        dense_arrays_each(d, sl_buf_reset);
        size_t cells = req->n_entities * n_cols;
        if (sl_buf_reserve(&d->status, cells) || sl_buf_reserve(&d->kind, cells) ||
            sl_buf_reserve(&d->vals, 8 * cells) || sl_buf_reserve(&d->times, 8 * cells)) {
            rpc_reply_fail(reply, RPC_RESOURCE_EXHAUSTED, "out of memory");
            goto out;
        }
    }
    if (serve_grpc__feature_names(&reply->body, s, cols, n_cols)) {
        rpc_reply_fail(reply, RPC_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    bool cacheable = t->cache && be->generation && be->valid_until;
    for (size_t e = 0; e < req->n_entities; e++) {
        /* the row's column records: all views cached (the usual case),
         * read where the cache holds them; otherwise looked up view by
         * view, and with several views each view's records are copied out
         * first (the next vector may reuse the memory) */
        if (cacheable && serve_grpc__row_cached(t, be, views, n_views, req->entities[e], e, now, gen,
                                                vdk, vsk, reply)) {
            for (size_t c = 0; c < n_cols; c++) {
                const uint32_t *sl = vsk[col_vk[c]] + col_sl[c];
                col_src[c] = vdk[col_vk[c]] + sl[0];
                col_len[c] = sl[1];
            }
        } else {
            if (reply->status != RPC_OK) goto out;
            sl_buf_reset(&t->row);
            for (size_t k = 0; k < n_views; k++) {
                serve_key_t key;
                const unsigned char *vd = NULL;
                const uint32_t *vs = NULL;
                if (serve_grpc__row_key(s, views[k], req->entities[e], e, &key, reply) != RPC_OK ||
                    serve_grpc__vector(t, be, views[k], &key, e, now, gen, &vd, &vs, reply) != RPC_OK)
                    goto out;
                for (size_t c = 0; c < n_cols; c++) {
                    if (col_vk[c] != k) continue;
                    const uint32_t *sl = vs + col_sl[c];
                    col_len[c] = sl[1];
                    if (n_views == 1) {
                        col_src[c] = vd + sl[0];
                        continue;
                    }
                    col_off[c] = t->row.len;
                    if (sl_buf_append(&t->row, vd + sl[0], sl[1])) {
                        rpc_reply_fail(reply, RPC_RESOURCE_EXHAUSTED, "out of memory");
                        goto out;
                    }
                }
            }
            if (n_views > 1)
                for (size_t c = 0; c < n_cols; c++) col_src[c] = t->row.data + col_off[c];
        }
        if (dense) {
            if (serve_grpc__dense_row(&t->dense, col_src, n_cols)) {
                rpc_reply_fail(reply, RPC_RESOURCE_EXHAUSTED, "out of memory");
                goto out;
            }
            continue;
        }
        /* results (field 2): FeatureVector { repeated FeatureValue values = 1 } */
        size_t vec_len = 0;
        for (size_t c = 0; c < n_cols; c++) vec_len += col_len[c];
        /* the first row sizes the body for all (rows of strings may need more) */
        size_t want = e == 0 ? req->n_entities * (11 + vec_len) + 64 + 48 * n_pp : 11 + vec_len;
        if (sl_buf_reserve(&reply->body, want)) {
            rpc_reply_fail(reply, RPC_RESOURCE_EXHAUSTED, "out of memory");
            goto out;
        }
        unsigned char *w = reply->body.data + reply->body.len;
        *w++ = 0x12;
        w = serve_grpc__put_varint(w, vec_len);
        for (size_t c = 0; c < n_cols; c++) {
            serve_grpc__copy(w, col_src[c], col_len[c]);
            w += col_len[c];
        }
        reply->body.len = (size_t)(w - reply->body.data);
    }
    if (dense && serve_grpc__dense_put(&t->dense, &reply->body, req->n_entities, n_cols)) {
        rpc_reply_fail(reply, RPC_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    Sluice__V1__GetOnlineFeaturesResponse tail = SLUICE__V1__GET_ONLINE_FEATURES_RESPONSE__INIT;
    tail.served_at_ms = now;
    tail.token = serve_grpc__token(a, t->pp, n_pp);
    if (a->failed || serve_grpc__append_packed(&reply->body, &tail.base))
        rpc_reply_fail(reply, RPC_RESOURCE_EXHAUSTED, "out of memory building the response");
out:
    arena_reset(a);                      /* req lives in the arena too */
    serve_backend_unpin(g->be, be);
}

/* ---- ListFeatures ------------------------------------------------------ */

static void serve_grpc__window(char *buf, size_t size, const schema_window_t *w)
{
    char a[32], b[32];
    switch (w->kind) {
    case SCHEMA_WINDOW_SLIDING:
        snprintf(buf, size, "sliding %s/%s", sl_duration_format(w->size_ms, a, sizeof a),
                 sl_duration_format(w->hop_ms, b, sizeof b));
        break;
    case SCHEMA_WINDOW_TUMBLING:
        snprintf(buf, size, "tumbling %s", sl_duration_format(w->size_ms, a, sizeof a));
        break;
    case SCHEMA_WINDOW_SESSION:
        snprintf(buf, size, "session %s", sl_duration_format(w->gap_ms, a, sizeof a));
        break;
    default: snprintf(buf, size, "lifetime"); break;
    }
}

static void serve_grpc__list(void *ctx, void *tctx, const void *data, size_t len, rpc_reply_t *reply)
{
    serve_grpc_t *g = ctx;
    (void)tctx;
    const serve_backend_t *be = serve_backend_pin(g->be);
    const schema_t *s = be->schema;
    Sluice__V1__ListFeaturesRequest *req = sluice__v1__list_features_request__unpack(NULL, len, data);
    if (!req) {
        rpc_reply_fail(reply, RPC_INVALID_ARGUMENT, "malformed ListFeaturesRequest");
        serve_backend_unpin(g->be, be);
        return;
    }
    sluice__v1__list_features_request__free_unpacked(req, NULL);
    arena_t a = { 0 };
    Sluice__V1__ListFeaturesResponse resp = SLUICE__V1__LIST_FEATURES_RESPONSE__INIT;
    resp.n_views = s->n_views;
    resp.views = arena_alloc(&a, (s->n_views + 1) * sizeof *resp.views);
    for (size_t i = 0; resp.views && i < s->n_views; i++) {
        const schema_view_t *v = &s->views[i];
        const schema_entity_t *ent = &s->entities[v->entity];
        Sluice__V1__ViewInfo *vi = arena_alloc(&a, sizeof *vi);
        if (!vi) break;
        sluice__v1__view_info__init(vi);
        vi->name = v->name;
        vi->entity = ent->name;
        vi->n_entity_keys = ent->n_keys;
        vi->entity_keys = ent->keys;
        vi->ttl_ms = v->ttl_ms;
        vi->n_features = v->n_features;
        vi->features = arena_alloc(&a, (v->n_features + 1) * sizeof *vi->features);
        for (size_t f = 0; vi->features && f < v->n_features; f++) {
            Sluice__V1__FeatureInfo *fi = arena_alloc(&a, sizeof *fi);
            char *win = arena_alloc(&a, 80);
            if (!fi || !win) break;
            sluice__v1__feature_info__init(fi);
            fi->name = v->features[f].name;
            fi->aggregation = (char *)schema_agg_name(v->features[f].agg);
            serve_grpc__window(win, 80, &v->features[f].window);
            fi->window = win;
            vi->features[f] = fi;
        }
        resp.views[i] = vi;
    }
    resp.n_services = s->n_services;
    resp.services = arena_alloc(&a, (s->n_services + 1) * sizeof *resp.services);
    for (size_t i = 0; resp.services && i < s->n_services; i++) {
        const schema_service_t *sv = &s->services[i];
        Sluice__V1__ServiceInfo *si = arena_alloc(&a, sizeof *si);
        if (!si) break;
        sluice__v1__service_info__init(si);
        si->name = sv->name;
        si->n_feature_refs = sv->n_refs;
        si->feature_refs = arena_alloc(&a, (sv->n_refs + 1) * sizeof(char *));
        for (size_t r = 0; si->feature_refs && r < sv->n_refs; r++) {
            const schema_view_t *v = &s->views[sv->refs[r].view];
            const char *fn = v->features[sv->refs[r].feature].name;
            size_t nl = strlen(v->name) + strlen(fn) + 2;
            char *nm = arena_alloc(&a, nl);
            if (nm) snprintf(nm, nl, "%s:%s", v->name, fn);
            si->feature_refs[r] = nm ? nm : (char *)"";
        }
        resp.services[i] = si;
    }
    arena_pack(&a, &resp.base, reply);
    arena_free(&a);
    serve_backend_unpin(g->be, be);
}

/* ---- Health ------------------------------------------------------------ */

static void serve_grpc__health(void *ctx, void *tctx, const void *data, size_t len, rpc_reply_t *reply)
{
    (void)ctx; (void)tctx;
    Grpc__Health__V1__HealthCheckRequest *req = grpc__health__v1__health_check_request__unpack(NULL, len, data);
    if (!req) {
        rpc_reply_fail(reply, RPC_INVALID_ARGUMENT, "malformed HealthCheckRequest");
        return;
    }
    bool known = req->service[0] == 0 || strcmp(req->service, "sluice.v1.FeatureService") == 0;
    if (!known) {
        rpc_reply_fail(reply, RPC_NOT_FOUND, "unknown service '%.200s'", req->service);
    } else {
        Grpc__Health__V1__HealthCheckResponse resp = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
        resp.status = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
        arena_t a = { 0 };
        arena_pack(&a, &resp.base, reply);
    }
    grpc__health__v1__health_check_request__free_unpacked(req, NULL);
}

/* ---- life cycle -------------------------------------------------------- */

static const rpc_method_t serve_grpc__methods[] = {
    { "/sluice.v1.FeatureService/GetOnlineFeatures", serve_grpc__get, false },
    { "/sluice.v1.FeatureService/ListFeatures", serve_grpc__list, false },
    { "/grpc.health.v1.Health/Check", serve_grpc__health, true },
};

static void *serve_grpc__thread_new(void *ctx)
{
    serve_grpc_t *g = ctx;
    serve_grpc_thread_t *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    t->sc = g->be->scratch_new(g->be);
    t->vals = calloc(g->max_features + 1, sizeof *t->vals);
    t->vals_cap = g->max_features;
    if (g->opts.cache_bytes) t->cache = serve_cache_new(g->opts.cache_bytes);
    if (!t->sc || !t->vals || (g->opts.cache_bytes && !t->cache)) {
        if (t->sc) g->be->scratch_free(t->sc);
        serve_cache_free(t->cache);
        free(t->vals);
        free(t);
        return NULL;
    }
    return t;
}

static void serve_grpc__thread_free(void *ctx, void *tctx)
{
    serve_grpc_t *g = ctx;
    serve_grpc_thread_t *t = tctx;
    if (!t) return;
    if (t->sc) g->be->scratch_free(t->sc);
    serve_cache_free(t->cache);
    arena_free(&t->a);
    sl_buf_free(&t->key);
    sl_buf_free(&t->vbuf);
    sl_buf_free(&t->row);
    dense_arrays_each(&t->dense, sl_buf_free);
    free(t->slices);
    free(t->pp);
    free(t->vals);
    free(t);
}

void serve_grpc_opts_default(serve_grpc_opts_t *o)
{
    memset(o, 0, sizeof *o);
    o->bind = "127.0.0.1";
    o->port = 50051;
    o->threads = 2;
    o->max_request_bytes = 1 << 20;
    o->max_entities = 1000;
    o->max_token_wait_ms = 10000;
    o->cache_bytes = (size_t)32 << 20;
}

int serve_grpc_start(const serve_grpc_opts_t *opts, const serve_backend_t *be,
                     serve_grpc_t **out, char *errstr, size_t errsize)
{
    *out = NULL;
    serve_grpc_t *g = calloc(1, sizeof *g);
    if (!g) return SL_ENOMEM;
    g->opts = *opts;
    if (g->opts.max_token_wait_ms <= 0) g->opts.max_token_wait_ms = 10000;
    g->be = be;
    for (size_t i = 0; i < be->schema->n_views; i++)
        if (be->schema->views[i].n_features > g->max_features) g->max_features = be->schema->views[i].n_features;
    rpc_server_opts_t ro = {
        .bind = opts->bind, .port = opts->port, .threads = opts->threads, .token = opts->token,
        .tls_cert_pem = opts->tls_cert_pem, .tls_key_pem = opts->tls_key_pem,
        .max_message_bytes = opts->max_request_bytes, .ctx = g,
        .thread_ctx_new = serve_grpc__thread_new, .thread_ctx_free = serve_grpc__thread_free,
    };
    int rc = rpc_server_start(&ro, serve_grpc__methods,
                              sizeof serve_grpc__methods / sizeof serve_grpc__methods[0], &g->rpc,
                              errstr, errsize);
    if (rc) {
        free(g);
        return rc;
    }
    *out = g;
    return 0;
}

int serve_grpc_port(const serve_grpc_t *g) { return rpc_server_port(g->rpc); }

void serve_grpc_stats(const serve_grpc_t *g, uint64_t *calls, uint64_t *errors,
                      uint64_t *unauthenticated, uint64_t *cancelled)
{
    rpc_server_stats_t st;
    rpc_server_stats(g->rpc, &st);
    *calls = st.calls;
    *errors = st.errors;
    *unauthenticated = st.unauthenticated;
    *cancelled = st.cancelled;
}

void serve_grpc_latency(const serve_grpc_t *g, sl_hist_t *into)
{
    if (g) rpc_server_latency(g->rpc, into);
}

void serve_grpc_drain(serve_grpc_t *g)
{
    if (g) rpc_server_drain(g->rpc);
}

void serve_grpc_stop(serve_grpc_t *g)
{
    if (!g) return;
    rpc_server_stop(g->rpc);
    free(g);
}
