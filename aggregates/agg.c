/*
 * agg.c — the window engine's public face: plans, entity state, event
 * intake, queries, expiry and the versioned state encoding.
 *
 * A plan (immutable after agg_plan_new) is the view's features compiled into
 * agg__feature_t: aggregate, window geometry in tiles, input conversion. An
 * entity is last_event_ms plus one agg__fstate_t per feature (agg_window.c)
 * and query scratch (last_n item arrays, one
 * "keep" partial per feature that holds a slow-path merge the returned
 * values point into). Because queries write that scratch, an entity is
 * queried by its owning thread only, like every other call on it.
 *
 * Event intake: each feature converts the event's field to its input kind
 * (a missing or unconvertible value skips that feature only) and hands it to
 * the window. Late events are refused before anything is touched.
 *
 * Encoding (format version 3; decode still reads 2, whose sparse distinct
 * sketches hold 64-bit hashes), all integers varint / zig-zag varint:
 *
 *   u8 version | u64be view fingerprint | varint n_features |
 *   u8 has_events | svarint last_event_ms | per feature: u8 aggregate, u8 window kind,
 *   window state (agg__win_encode)
 *
 * Derived partials (tile prefix/suffix accumulators) are not stored; decode
 * rebuilds them deterministically, so a decoded entity answers every query
 * bit-for-bit like the encoded one. Decoding checks every length, count,
 * ordering and range and never reads outside the input.
 */
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "agg_window.h"
#include "sl_err.h"

/* One block (agg_entity_new): this header, the feature states right after
 * it (an update reads the header and every state: 5 lines for 5 features),
 * then the query scratch, which ingest never touches: one "keep" partial
 * per feature and the last_n item slots (ent_keep, ent_items). */
struct agg_entity {
    int64_t last_event_ms;
    const agg_plan_t *plan;
    bool any;                       /* an event was applied */
    agg__fstate_t st[];             /* per feature */
};

/* Where an entity's feature states start in its block. */
#define ENT_OFF_ST offsetof(agg_entity_t, st)

static inline size_t ent_off_keep(const agg_plan_t *plan)
{
    return ENT_OFF_ST + (plan->n_features ? plan->n_features : 1) * sizeof(agg__fstate_t);
}

static inline agg_part_t *ent_keep(const agg_entity_t *ent)
{
    return (agg_part_t *)((unsigned char *)ent + ent_off_keep(ent->plan));
}

static inline agg_scalar_t *ent_items(const agg_entity_t *ent)
{
    size_t nf = ent->plan->n_features ? ent->plan->n_features : 1;
    return (agg_scalar_t *)((unsigned char *)ent + ent_off_keep(ent->plan) + nf * sizeof(agg_part_t));
}

/* ---- plan ------------------------------------------------------------------ */

static int plan_fail(char *errstr, size_t errsize, const char *fmt, const char *name)
{
    if (errstr && errsize)
        snprintf(errstr, errsize, fmt, name ? name : "?");
    return SL_EINVAL;
}

int agg_plan_new(const schema_t *schema, int view, agg_plan_t **out,
                 char *errstr, size_t errsize)
{
    agg_plan_t *plan = NULL;
    int rc;

    *out = NULL;
    if (!schema || view < 0 || (size_t)view >= schema->n_views)
        return plan_fail(errstr, errsize, "no view %s", "index");
    const schema_view_t *v = &schema->views[view];
    if (v->source < 0 || (size_t)v->source >= schema->n_sources)
        return plan_fail(errstr, errsize, "view %s: bad source", v->name);
    const schema_source_t *src = &schema->sources[v->source];

    plan = calloc(1, sizeof(*plan));
    if (!plan)
        return SL_ENOMEM;
    plan->f = calloc(v->n_features ? v->n_features : 1, sizeof(agg__feature_t));
    if (!plan->f) {
        rc = SL_ENOMEM;
        goto fail_plan;
    }
    plan->schema = schema;
    plan->view = view;
    plan->fingerprint = v->fingerprint;
    plan->n_features = v->n_features;

    for (size_t i = 0; i < v->n_features; i++) {
        const schema_feature_t *sf = &v->features[i];
        agg__feature_t *f = &plan->f[i];
        const schema_window_t *w = &sf->window;
        f->agg = sf->agg;
        f->wkind = w->kind;
        f->field = sf->field;
        rc = SL_EINVAL;
        if ((unsigned)sf->agg >= SCHEMA_AGG__COUNT) {
            plan_fail(errstr, errsize, "feature %s: unknown aggregate", sf->name);
            goto fail_plan;
        }
        bool needs = sf->agg != SCHEMA_AGG_COUNT && sf->agg != SCHEMA_AGG_DECAYED_COUNT;
        if (!needs) {
            f->field = -1;
            f->vk = AGG__VK_NONE;
        } else {
            if (sf->field < 0 || (size_t)sf->field >= src->n_fields) {
                plan_fail(errstr, errsize, "feature %s: no input field", sf->name);
                goto fail_plan;
            }
            switch (src->fields[sf->field].type) {
            case SCHEMA_TYPE_INT: f->vk = AGG__VK_INT; break;
            case SCHEMA_TYPE_DOUBLE: f->vk = AGG__VK_DOUBLE; break;
            case SCHEMA_TYPE_BOOL: f->vk = AGG__VK_BOOL; break;
            default: f->vk = AGG__VK_STRING; break;
            }
            bool numeric = sf->agg == SCHEMA_AGG_SUM || sf->agg == SCHEMA_AGG_MIN ||
                           sf->agg == SCHEMA_AGG_MAX || sf->agg == SCHEMA_AGG_MEAN ||
                           sf->agg == SCHEMA_AGG_VARIANCE || sf->agg == SCHEMA_AGG_STDDEV ||
                           sf->agg == SCHEMA_AGG_APPROX_QUANTILE || sf->agg == SCHEMA_AGG_DECAYED_SUM;
            if (numeric && f->vk != AGG__VK_INT && f->vk != AGG__VK_DOUBLE) {
                plan_fail(errstr, errsize, "feature %s: aggregate needs a numeric field", sf->name);
                goto fail_plan;
            }
        }
        if (w->size_ms > AGG_TIME_LIMIT || w->hop_ms > AGG_TIME_LIMIT ||
            w->gap_ms > AGG_TIME_LIMIT || w->max_length_ms > AGG_TIME_LIMIT) {
            plan_fail(errstr, errsize, "feature %s: window longer than 2^60 ms", sf->name);
            goto fail_plan;
        }
        switch (w->kind) {
        case SCHEMA_WINDOW_SLIDING:
            if (w->size_ms <= 0 || w->hop_ms <= 0 || w->size_ms % w->hop_ms ||
                w->size_ms / w->hop_ms > 10000000) {
                plan_fail(errstr, errsize, "feature %s: sliding window needs 0 < hop | size "
                          "and at most 1e7 hops per window", sf->name);
                goto fail_plan;
            }
            f->hop_ms = w->hop_ms;
            f->ntiles = w->size_ms / w->hop_ms;
            break;
        case SCHEMA_WINDOW_TUMBLING:
            if (w->size_ms <= 0) {
                plan_fail(errstr, errsize, "feature %s: tumbling window needs size > 0", sf->name);
                goto fail_plan;
            }
            f->hop_ms = w->size_ms;
            f->ntiles = 1;
            break;
        case SCHEMA_WINDOW_SESSION:
            if (w->gap_ms <= 0 || w->max_length_ms < 0 || sf->sessions_kept < 0 ||
                sf->sessions_kept > 100000) {
                plan_fail(errstr, errsize, "feature %s: session window needs gap > 0", sf->name);
                goto fail_plan;
            }
            f->gap_ms = w->gap_ms;
            f->max_len_ms = w->max_length_ms;
            f->sessions_kept = sf->sessions_kept;
            break;
        case SCHEMA_WINDOW_LIFETIME:
            break;
        default:
            plan_fail(errstr, errsize, "feature %s: unknown window kind", sf->name);
            goto fail_plan;
        }
        f->psize = (uint32_t)agg__part_size(sf->agg);
        f->tsize = (uint32_t)(sizeof(int64_t) + f->psize * (f->ntiles > 1 ? 2 : 1));
        if (sf->agg == SCHEMA_AGG_LAST_N) {
            if (sf->n < 1 || sf->n > 1000) {
                plan_fail(errstr, errsize, "feature %s: last_n needs 1 <= n <= 1000", sf->name);
                goto fail_plan;
            }
            f->last_n = sf->n;
            plan->max_last_n += sf->n;      /* total item slots */
        }
        if (sf->agg == SCHEMA_AGG_APPROX_QUANTILE) {
            if (!(sf->quantile >= 0.0 && sf->quantile <= 1.0)) {
                plan_fail(errstr, errsize, "feature %s: quantile must be in [0, 1]", sf->name);
                goto fail_plan;
            }
            f->quantile = sf->quantile;
        }
        if (sf->agg == SCHEMA_AGG_DECAYED_SUM || sf->agg == SCHEMA_AGG_DECAYED_COUNT) {
            if (sf->half_life_ms <= 0) {
                plan_fail(errstr, errsize, "feature %s: decay needs half_life > 0", sf->name);
                goto fail_plan;
            }
            f->half_life_ms = (double)sf->half_life_ms;
        }
    }
    *out = plan;
    return 0;

fail_plan:
    agg_plan_free(plan);
    return rc;
}

void agg_plan_free(agg_plan_t *plan)
{
    if (!plan)
        return;
    free(plan->f);
    free(plan);
}

/* ---- entity ------------------------------------------------------------------ */

agg_entity_t *agg_entity_new(const agg_plan_t *plan)
{
    /* One allocation: the entity, then its per-feature window states, the
     * per-feature "keep" partials and the last_n item slots (an ingest cache
     * holds ~10^5..10^6 of these: fewer, denser blocks mean fewer cache and
     * TLB misses per event). */
    size_t nf = plan->n_features ? plan->n_features : 1;
    size_t ni = plan->max_last_n ? (size_t)plan->max_last_n : 1;
    size_t off_items = ent_off_keep(plan) + nf * sizeof(agg_part_t);
    agg_entity_t *ent = calloc(1, off_items + ni * sizeof(agg_scalar_t));
    if (!ent)
        return NULL;
    ent->plan = plan;
    return ent;
}

void agg_entity_free(agg_entity_t *ent)
{
    if (!ent)
        return;
    size_t n = ent->plan->n_features;
    agg_part_t *keep = ent_keep(ent);
    for (size_t i = 0; i < n; i++)
        agg__win_free(&ent->plan->f[i], &ent->st[i]);
    for (size_t i = 0; i < n; i++)
        agg__part_clear(&ent->plan->f[i], &keep[i]);
    free(ent);
}

/* Converts the event's field to the feature's input; false skips it. */
static bool input_from(const agg__feature_t *f, const agg_event_t *ev, agg__in_t *in)
{
    in->t = ev->time_ms;
    if (f->vk == AGG__VK_NONE)
        return true;
    if (f->field < 0 || (size_t)f->field >= ev->n_fields || !ev->fields)
        return false;
    const agg_input_t *x = &ev->fields[f->field];
    switch (f->vk) {
    case AGG__VK_INT:
    case AGG__VK_BOOL:
        if (x->type == AGG_IN_INT || x->type == AGG_IN_BOOL)
            in->i = x->i;
        else if (x->type == AGG_IN_DOUBLE && x->d >= -9.2e18 && x->d <= 9.2e18)
            in->i = (int64_t)x->d;
        else
            return false;
        if (f->vk == AGG__VK_BOOL)
            in->i = in->i != 0;
        in->d = (double)in->i;
        break;
    case AGG__VK_DOUBLE:
        if (x->type == AGG_IN_DOUBLE)
            in->d = x->d;
        else if (x->type == AGG_IN_INT || x->type == AGG_IN_BOOL)
            in->d = (double)x->i;
        else
            return false;
        break;
    case AGG__VK_STRING:
        if (x->type != AGG_IN_STRING || (!x->s && x->slen))
            return false;
        in->s = x->s;
        in->slen = x->slen;
        break;
    default:
        return false;
    }
    if (f->agg == SCHEMA_AGG_APPROX_DISTINCT) {
        if (f->vk == AGG__VK_STRING) {
            in->hash = XXH3_64bits(in->s ? in->s : "", in->slen);
        } else if (f->vk == AGG__VK_DOUBLE) {
            double d = in->d == 0.0 ? 0.0 : in->d;         /* -0 == 0 */
            in->hash = XXH3_64bits(&d, sizeof(d));
        } else {
            in->hash = XXH3_64bits(&in->i, sizeof(in->i));
        }
    }
    return true;
}

void agg_entity_prefetch(const agg_plan_t *plan, const agg_entity_t *ent, int depth)
{
    if (depth <= 0) {
        /* the entity and its feature states: one block (agg_entity_new),
         * so their lines are known without reading the entity; depth 1
         * reads every feature's state */
        const char *p = (const char *)ent;
        size_t end = ENT_OFF_ST + plan->n_features * sizeof(agg__fstate_t);
        for (size_t off = 0; off < end; off += 64)
            __builtin_prefetch(p + off, 1);
        __builtin_prefetch(p + end - 1, 1);
        return;
    }
    for (size_t i = 0; i < plan->n_features; i++)
        agg__win_prefetch(&plan->f[i], &ent->st[i], depth);
}

void agg_entity_prefetch_encode(const agg_plan_t *plan, const agg_entity_t *ent, int depth)
{
    if (depth <= 0) {
        agg_entity_prefetch(plan, ent, 0);
        return;
    }
    for (size_t i = 0; i < plan->n_features; i++)
        agg__win_prefetch_all(&plan->f[i], &ent->st[i], depth);
}

int agg_entity_update(const agg_plan_t *plan, agg_entity_t *ent,
                      const agg_event_t *ev, int64_t accept_from_ms)
{
    if (ev->time_ms < accept_from_ms)
        return SL_ELATE;
    /* An entity of a large cache is cold: start every feature's loads
     * before the first one stalls (each feature's tiles are their own
     * allocation), then those one pointer further. */
    for (int depth = 1; depth <= 3; depth++)
        for (size_t i = 0; i < plan->n_features; i++)
            agg__win_prefetch(&plan->f[i], &ent->st[i], depth);
    return agg_entity_update_prefetched(plan, ent, ev, accept_from_ms);
}

int agg_entity_update_prefetched(const agg_plan_t *plan, agg_entity_t *ent,
                                 const agg_event_t *ev, int64_t accept_from_ms)
{
    int rc, ret = 0;
    if (ev->time_ms < accept_from_ms)
        return SL_ELATE;
    if (ev->time_ms > AGG_TIME_LIMIT || ev->time_ms < -AGG_TIME_LIMIT)
        return SL_ERANGE;
    for (size_t i = 0; i < plan->n_features; i++) {
        const agg__feature_t *f = &plan->f[i];
        agg__in_t in = { 0 };
        if (!input_from(f, ev, &in))
            continue;
        if ((rc = agg__win_add(f, &ent->st[i], &in, accept_from_ms)))
            ret = rc;               /* keep going: other features stay exact */
    }
    if (ev->time_ms > ent->last_event_ms || !ent->any)
        ent->last_event_ms = ev->time_ms;
    ent->any = true;
    return ret;
}

void agg_entity_query(const agg_plan_t *plan, const agg_entity_t *ent,
                      int64_t t_ms, agg_value_t *out)
{
    agg_entity_t *e = (agg_entity_t *)ent;     /* scratch only; see the top */
    agg_scalar_t *items = ent_items(e);
    agg_part_t *keep = ent_keep(e);
    /* HLL union registers: per call on the stack, not per entity (4 KiB
     * that a cache of entities would otherwise carry for queries alone) */
    uint8_t regs[AGG_HLL_M];
    agg__scratch_t sc = { regs };
    /* keep time arithmetic inside int64 for any t */
    if (t_ms > 2 * AGG_TIME_LIMIT)
        t_ms = 2 * AGG_TIME_LIMIT;
    if (t_ms < -2 * AGG_TIME_LIMIT)
        t_ms = -2 * AGG_TIME_LIMIT;
    for (size_t i = 0; i < plan->n_features; i++) {
        const agg__feature_t *f = &plan->f[i];
        agg__win_query(f, &ent->st[i], t_ms, &sc, items, &keep[i], &out[i]);
        items += f->last_n;
    }
}

void agg_entity_expire(const agg_plan_t *plan, agg_entity_t *ent, int64_t accept_from_ms)
{
    for (size_t i = 0; i < plan->n_features; i++)
        agg__win_expire(&plan->f[i], &ent->st[i], accept_from_ms);
}

int64_t agg_entity_last_event_ms(const agg_entity_t *ent)
{
    return ent->last_event_ms;
}

bool agg_entity_is_idle(const agg_plan_t *plan, const agg_entity_t *ent, int64_t now_ms)
{
    int64_t ttl = plan->schema->views[plan->view].ttl_ms;
    if (ttl <= 0)
        return false;
    return ent->last_event_ms == 0 || now_ms - ent->last_event_ms > ttl;
}

static const agg__feature_t *session_feature(const agg_plan_t *plan, int feature)
{
    if (feature < 0 || (size_t)feature >= plan->n_features)
        return NULL;
    const agg__feature_t *f = &plan->f[feature];
    return f->wkind == SCHEMA_WINDOW_SESSION ? f : NULL;
}

bool agg_entity_open_session(const agg_plan_t *plan, const agg_entity_t *ent,
                             int feature, int64_t t_ms, agg_session_t *out)
{
    const agg__feature_t *f = session_feature(plan, feature);
    if (!f)
        return false;
    const agg__sess_t *s = agg__sess_open(f, &ent->st[feature].sess, t_ms);
    if (!s)
        return false;
    out->start_ms = s->start;
    out->end_ms = s->end;
    out->events = s->events;
    return true;
}

size_t agg_entity_completed_sessions(const agg_plan_t *plan, const agg_entity_t *ent,
                                     int feature, agg_session_t *out, size_t max)
{
    const agg__feature_t *f = session_feature(plan, feature);
    if (!f)
        return 0;
    return agg__sess_completed(f, &ent->st[feature].sess, ent->last_event_ms, out, max);
}

/* ---- encoding --------------------------------------------------------------- */

int agg_entity_encode(const agg_plan_t *plan, const agg_entity_t *ent, sl_buf_t *buf)
{
    int rc;
    size_t mark = buf->len;
    if ((rc = sl_buf_put_u8(buf, AGG_FORMAT_VERSION)) ||
        (rc = sl_buf_put_u64be(buf, plan->fingerprint)) ||
        (rc = sl_buf_put_varint(buf, plan->n_features)) ||
        (rc = sl_buf_put_u8(buf, ent->any)) ||
        (rc = sl_buf_put_svarint(buf, ent->last_event_ms)))
        goto fail;
    for (size_t i = 0; i < plan->n_features; i++) {
        const agg__feature_t *f = &plan->f[i];
        if ((rc = sl_buf_put_u8(buf, (uint8_t)f->agg)) ||
            (rc = sl_buf_put_u8(buf, (uint8_t)f->wkind)) ||
            (rc = agg__win_encode(f, &ent->st[i], buf)))
            goto fail;
    }
    return 0;
fail:
    buf->len = mark;
    return rc;
}

int agg_entity_decode(const agg_plan_t *plan, const void *data, size_t len,
                      agg_entity_t **out)
{
    sl_reader_t r;
    uint8_t ver, a, w;
    uint64_t fp, n;
    int rc;
    agg_entity_t *ent = NULL;

    *out = NULL;
    sl_reader_init(&r, data, len);
    if ((rc = sl_read_u8(&r, &ver)))
        return rc;
    if (ver < AGG_FORMAT_OLDEST || ver > AGG_FORMAT_VERSION)
        return SL_EVERSION;
    if ((rc = sl_read_u64be(&r, &fp)) || (rc = sl_read_varint(&r, &n)))
        return rc;
    if (fp != plan->fingerprint || n != plan->n_features)
        return SL_ESCHEMA;
    ent = agg_entity_new(plan);
    if (!ent)
        return SL_ENOMEM;
    uint8_t any;
    if ((rc = sl_read_u8(&r, &any)) || (rc = sl_read_svarint(&r, &ent->last_event_ms)))
        goto fail_ent;
    ent->any = any;
    if (any > 1 || (!any && ent->last_event_ms) || ent->last_event_ms > AGG_TIME_LIMIT ||
        ent->last_event_ms < -AGG_TIME_LIMIT) {
        rc = SL_ECORRUPT;
        goto fail_ent;
    }
    for (size_t i = 0; i < plan->n_features; i++) {
        const agg__feature_t *f = &plan->f[i];
        if ((rc = sl_read_u8(&r, &a)) || (rc = sl_read_u8(&r, &w)))
            goto fail_ent;
        if (a != (uint8_t)f->agg || w != (uint8_t)f->wkind) {
            rc = SL_ESCHEMA;
            goto fail_ent;
        }
        if ((rc = agg__win_decode(f, &ent->st[i], &r, ver)))
            goto fail_ent;
    }
    if (r.left) {
        rc = SL_ECORRUPT;
        goto fail_ent;
    }
    *out = ent;
    return 0;

fail_ent:
    agg_entity_free(ent);
    return rc == SL_ENOMEM ? rc : rc == SL_ESCHEMA ? rc : SL_ECORRUPT;
}

int agg_entity_merge(const agg_plan_t *plan, agg_entity_t *dst, const agg_entity_t *src)
{
    int rc, ret = 0;
    for (size_t i = 0; i < plan->n_features; i++)
        if ((rc = agg__win_merge(&plan->f[i], &dst->st[i], &src->st[i])))
            ret = rc;
    if (src->any && (!dst->any || src->last_event_ms > dst->last_event_ms))
        dst->last_event_ms = src->last_event_ms;
    dst->any = dst->any || src->any;
    return ret;
}

size_t agg_entity_mem_size(const agg_entity_t *ent)
{
    const agg_plan_t *plan = ent->plan;
    size_t m = sizeof(*ent) + plan->n_features * (sizeof(agg__fstate_t) + sizeof(agg_part_t)) +
               (size_t)plan->max_last_n * sizeof(agg_scalar_t);
    for (size_t i = 0; i < plan->n_features; i++)
        m += agg__win_mem(&plan->f[i], &ent->st[i]);
    return m;
}
