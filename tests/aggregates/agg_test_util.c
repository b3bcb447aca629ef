/*
 * agg_test_util.c — test schema builder and brute-force oracle (see .h).
 *
 * The oracle works from the definitions, not from tiles: it sorts the events
 * of a feature by time (stable, so equal times keep arrival order), picks the
 * ones in the window by plain arithmetic on their times, and computes each
 * aggregate directly (two-pass variance, exact distinct count, sorted rank
 * for quantiles, per-event decay).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "agg_test_util.h"

int64_t tfloor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    if (a % b && ((a < 0) != (b < 0)))
        q--;
    return q;
}

const tfeat_t tfeat_all[] = {
    { SCHEMA_AGG_COUNT, -1, 0, 0, 0 },
    { SCHEMA_AGG_SUM, TF_VI, 0, 0, 0 },
    { SCHEMA_AGG_SUM, TF_VD, 0, 0, 0 },
    { SCHEMA_AGG_MIN, TF_VI, 0, 0, 0 },
    { SCHEMA_AGG_MIN, TF_VD, 0, 0, 0 },
    { SCHEMA_AGG_MAX, TF_VI, 0, 0, 0 },
    { SCHEMA_AGG_MAX, TF_VD, 0, 0, 0 },
    { SCHEMA_AGG_MEAN, TF_VI, 0, 0, 0 },
    { SCHEMA_AGG_MEAN, TF_VD, 0, 0, 0 },
    { SCHEMA_AGG_FIRST, TF_VS, 0, 0, 0 },
    { SCHEMA_AGG_FIRST, TF_VI, 0, 0, 0 },
    { SCHEMA_AGG_LAST, TF_VD, 0, 0, 0 },
    { SCHEMA_AGG_LAST, TF_VS, 0, 0, 0 },
    { SCHEMA_AGG_LAST, TF_VB, 0, 0, 0 },
    { SCHEMA_AGG_LAST_N, TF_VS, 3, 0, 0 },
    { SCHEMA_AGG_LAST_N, TF_VD, 5, 0, 0 },
    { SCHEMA_AGG_VARIANCE, TF_VD, 0, 0, 0 },
    { SCHEMA_AGG_STDDEV, TF_VI, 0, 0, 0 },
    { SCHEMA_AGG_APPROX_DISTINCT, TF_VS, 0, 0, 0 },
    { SCHEMA_AGG_APPROX_DISTINCT, TF_VI, 0, 0, 0 },
    { SCHEMA_AGG_APPROX_QUANTILE, TF_VD, 0, 0.5, 0 },
    { SCHEMA_AGG_APPROX_QUANTILE, TF_VI, 0, 0.9, 0 },
    { SCHEMA_AGG_DECAYED_SUM, TF_VD, 0, 0, 700 },
    { SCHEMA_AGG_DECAYED_COUNT, -1, 0, 0, 300 },
};
const size_t tfeat_all_n = sizeof(tfeat_all) / sizeof(tfeat_all[0]);

static const char *field_names[TF__COUNT] = { "ts", "vi", "vd", "vs", "vb" };
static const schema_type_t field_types[TF__COUNT] = {
    SCHEMA_TYPE_INT, SCHEMA_TYPE_INT, SCHEMA_TYPE_DOUBLE, SCHEMA_TYPE_STRING, SCHEMA_TYPE_BOOL
};

schema_t *tschema_new(const tfeat_t *feats, size_t n, schema_window_t w, int sessions_kept)
{
    schema_t *s = calloc(1, sizeof(*s));
    s->n_sources = 1;
    s->sources = calloc(1, sizeof(schema_source_t));
    schema_source_t *src = &s->sources[0];
    src->name = strdup("events");
    src->n_fields = TF__COUNT;
    src->fields = calloc(TF__COUNT, sizeof(schema_field_t));
    for (int i = 0; i < TF__COUNT; i++) {
        src->fields[i].name = strdup(field_names[i]);
        src->fields[i].type = field_types[i];
    }
    src->time_field = TF_TS;
    s->n_views = 1;
    s->views = calloc(1, sizeof(schema_view_t));
    schema_view_t *v = &s->views[0];
    v->name = strdup("v");
    v->fingerprint = 0x5eed0000u + n;
    v->n_features = n;
    v->features = calloc(n, sizeof(schema_feature_t));
    for (size_t i = 0; i < n; i++) {
        schema_feature_t *f = &v->features[i];
        char name[32];
        snprintf(name, sizeof(name), "f%zu", i);
        f->name = strdup(name);
        f->agg = feats[i].agg;
        f->field = feats[i].field;
        f->field_type = feats[i].field >= 0 ? field_types[feats[i].field] : SCHEMA_TYPE_INT;
        f->window = w;
        f->n = feats[i].n;
        f->quantile = feats[i].q;
        f->half_life_ms = feats[i].half_life_ms;
        f->sessions_kept = sessions_kept;
    }
    return s;
}

void tschema_free(schema_t *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->n_sources; i++) {
        for (size_t j = 0; j < s->sources[i].n_fields; j++)
            free(s->sources[i].fields[j].name);
        free(s->sources[i].fields);
        free(s->sources[i].name);
    }
    free(s->sources);
    for (size_t i = 0; i < s->n_views; i++) {
        for (size_t j = 0; j < s->views[i].n_features; j++)
            free(s->views[i].features[j].name);
        free(s->views[i].features);
        free(s->views[i].name);
    }
    free(s->views);
    free(s);
}

void tev_to_event(const tev_t *ev, agg_input_t *fields, agg_event_t *out)
{
    memset(fields, 0, TF__COUNT * sizeof(*fields));
    fields[TF_TS].type = AGG_IN_INT;
    fields[TF_TS].i = ev->t;
    if (ev->has_i) {
        fields[TF_VI].type = AGG_IN_INT;
        fields[TF_VI].i = ev->vi;
    }
    if (ev->has_d) {
        fields[TF_VD].type = AGG_IN_DOUBLE;
        fields[TF_VD].d = ev->vd;
    }
    if (ev->has_s) {
        fields[TF_VS].type = AGG_IN_STRING;
        fields[TF_VS].s = ev->vs;
        fields[TF_VS].slen = strlen(ev->vs);
    }
    if (ev->has_b) {
        fields[TF_VB].type = AGG_IN_BOOL;
        fields[TF_VB].i = ev->vb;
    }
    out->time_ms = ev->t;
    out->fields = fields;
    out->n_fields = TF__COUNT;
}

void oracle_add(oracle_t *o, const tev_t *ev)
{
    if (o->n == o->cap) {
        o->cap = o->cap ? o->cap * 2 : 64;
        o->ev = realloc(o->ev, o->cap * sizeof(tev_t));
    }
    o->ev[o->n++] = *ev;
}

void oracle_free(oracle_t *o)
{
    free(o->ev);
    memset(o, 0, sizeof(*o));
}

/* ---- selection ------------------------------------------------------------ */

static bool has_field(const tev_t *e, int field)
{
    switch (field) {
    case -1: return true;
    case TF_VI: return e->has_i;
    case TF_VD: return e->has_d;
    case TF_VS: return e->has_s;
    case TF_VB: return e->has_b;
    default: return false;
    }
}

static const oracle_t *cmp_o;
static int cmp_time(const void *a, const void *b)
{
    size_t i = *(const size_t *)a, j = *(const size_t *)b;
    int64_t ti = cmp_o->ev[i].t, tj = cmp_o->ev[j].t;
    if (ti != tj)
        return ti < tj ? -1 : 1;
    return i < j ? -1 : i > j;          /* stable: arrival order */
}

/* Indexes of the feature's events sorted by (time, arrival). */
static size_t sorted_events(const oracle_t *o, int field, size_t *idx)
{
    size_t n = 0;
    for (size_t i = 0; i < o->n; i++)
        if (has_field(&o->ev[i], field))
            idx[n++] = i;
    cmp_o = o;
    qsort(idx, n, sizeof(size_t), cmp_time);
    return n;
}

static int64_t bucket(const schema_window_t *w, int64_t t)
{
    return w->max_length_ms ? tfloor_div(t, w->max_length_ms) : 0;
}

/* Sessions as [first, last] ranges over the sorted idx array. */
typedef struct osess { size_t lo, hi; } osess_t;

static size_t sessions_of(const oracle_t *o, const schema_window_t *w, const size_t *idx,
                          size_t n, osess_t *out)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        int64_t t = o->ev[idx[i]].t;
        if (i && t - o->ev[idx[i - 1]].t < w->gap_ms &&
            bucket(w, t) == bucket(w, o->ev[idx[out[k - 1].lo]].t)) {
            out[k - 1].hi = i;
        } else {
            out[k].lo = out[k].hi = i;
            k++;
        }
    }
    return k;
}

/* ---- aggregate computation --------------------------------------------- */

static double num(const tev_t *e, int field)
{
    return field == TF_VI ? (double)e->vi : e->vd;
}

static void set_sv(const tev_t *e, int field, agg_scalar_t *out)
{
    memset(out, 0, sizeof(*out));
    switch (field) {
    case TF_VI: out->type = AGG_VAL_INT; out->i = e->vi; break;
    case TF_VB: out->type = AGG_VAL_INT; out->i = e->vb; break;
    case TF_VD: out->type = AGG_VAL_DOUBLE; out->d = e->vd; break;
    case TF_VS: out->type = AGG_VAL_STRING; out->s = e->vs; out->slen = strlen(e->vs); break;
    }
}

static int cmp_dbl(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void compute(const oracle_t *o, const schema_feature_t *f, const size_t *sel, size_t n,
                    int64_t t, agg_scalar_t *items, agg_value_t *out)
{
    memset(out, 0, sizeof(*out));
    int field = f->field;
    bool is_int = field == TF_VI;
    for (size_t k = 0; k < n; k++)
        if (o->ev[sel[k]].t > out->newest_event_ms || k == 0)
            out->newest_event_ms = o->ev[sel[k]].t;
    switch (f->agg) {
    case SCHEMA_AGG_COUNT:
        out->type = AGG_VAL_INT;
        out->i = (int64_t)n;
        return;
    case SCHEMA_AGG_SUM: {
        uint64_t si = 0;
        double sd = 0;
        for (size_t k = 0; k < n; k++) {
            si += (uint64_t)o->ev[sel[k]].vi;
            sd += o->ev[sel[k]].vd;
        }
        if (is_int) {
            out->type = AGG_VAL_INT;
            out->i = (int64_t)si;
        } else {
            out->type = AGG_VAL_DOUBLE;
            out->d = sd;
        }
        return;
    }
    case SCHEMA_AGG_DECAYED_SUM:
    case SCHEMA_AGG_DECAYED_COUNT: {
        double s = 0;
        for (size_t k = 0; k < n; k++) {
            const tev_t *e = &o->ev[sel[k]];
            double v = f->agg == SCHEMA_AGG_DECAYED_COUNT ? 1.0 : num(e, field);
            s += v * exp2(-(double)(t - e->t) / (double)f->half_life_ms);
        }
        out->type = AGG_VAL_DOUBLE;
        out->d = s;
        return;
    }
    case SCHEMA_AGG_APPROX_DISTINCT: {
        size_t d = 0;
        for (size_t k = 0; k < n; k++) {
            const tev_t *e = &o->ev[sel[k]];
            bool seen = false;
            for (size_t j = 0; j < k && !seen; j++) {
                const tev_t *g = &o->ev[sel[j]];
                seen = field == TF_VS ? !strcmp(e->vs, g->vs) : field == TF_VI ? e->vi == g->vi
                                                                                : e->vd == g->vd;
            }
            d += !seen;
        }
        out->type = AGG_VAL_INT;
        out->i = (int64_t)d;
        return;
    }
    case SCHEMA_AGG_LAST_N: {
        size_t k0 = n > (size_t)f->n ? n - (size_t)f->n : 0;
        out->type = AGG_VAL_LIST;
        out->items = items;
        out->n_items = n - k0;
        for (size_t k = k0; k < n; k++)
            set_sv(&o->ev[sel[k]], field, &items[k - k0]);
        return;
    }
    default:
        break;
    }
    if (!n)
        return;
    switch (f->agg) {
    case SCHEMA_AGG_MIN:
    case SCHEMA_AGG_MAX: {
        size_t w = 0;
        for (size_t k = 1; k < n; k++) {
            double a = num(&o->ev[sel[k]], field), b = num(&o->ev[sel[w]], field);
            if (f->agg == SCHEMA_AGG_MIN ? a < b : a > b)
                w = k;
        }
        agg_scalar_t sv;
        set_sv(&o->ev[sel[w]], field, &sv);
        out->type = sv.type;
        out->i = sv.i;
        out->d = sv.d;
        return;
    }
    case SCHEMA_AGG_MEAN: {
        int64_t si = 0;
        double sd = 0;
        for (size_t k = 0; k < n; k++) {
            si += o->ev[sel[k]].vi;
            sd += o->ev[sel[k]].vd;
        }
        out->type = AGG_VAL_DOUBLE;
        out->d = (is_int ? (double)si : sd) / (double)n;
        return;
    }
    case SCHEMA_AGG_FIRST:
    case SCHEMA_AGG_LAST: {
        agg_scalar_t sv;
        set_sv(&o->ev[sel[f->agg == SCHEMA_AGG_FIRST ? 0 : n - 1]], field, &sv);
        out->type = sv.type;
        out->i = sv.i;
        out->d = sv.d;
        out->s = sv.s;
        out->slen = sv.slen;
        return;
    }
    case SCHEMA_AGG_VARIANCE:
    case SCHEMA_AGG_STDDEV: {
        double m = 0, ss = 0;
        for (size_t k = 0; k < n; k++)
            m += num(&o->ev[sel[k]], field);
        m /= (double)n;
        for (size_t k = 0; k < n; k++) {
            double d = num(&o->ev[sel[k]], field) - m;
            ss += d * d;
        }
        out->type = AGG_VAL_DOUBLE;
        out->d = f->agg == SCHEMA_AGG_STDDEV ? sqrt(ss / (double)n) : ss / (double)n;
        return;
    }
    case SCHEMA_AGG_APPROX_QUANTILE: {
        double *v = malloc(n * sizeof(double));
        for (size_t k = 0; k < n; k++)
            v[k] = num(&o->ev[sel[k]], field);
        qsort(v, n, sizeof(double), cmp_dbl);
        out->type = AGG_VAL_DOUBLE;
        out->d = v[(size_t)floor(f->quantile * (double)(n - 1))];
        free(v);
        return;
    }
    default:
        return;
    }
}

void oracle_query(const oracle_t *o, const schema_t *s, size_t fi, int64_t t,
                  agg_scalar_t *items, agg_value_t *out)
{
    const schema_feature_t *f = &s->views[0].features[fi];
    const schema_window_t *w = &f->window;
    size_t *idx = malloc((o->n + 1) * sizeof(size_t));
    size_t *sel = malloc((o->n + 1) * sizeof(size_t));
    size_t n = sorted_events(o, f->field, idx), k = 0;

    switch (w->kind) {
    case SCHEMA_WINDOW_SLIDING: {
        /* the tile holding t and the size/hop - 1 tiles before it */
        int64_t b = tfloor_div(t, w->hop_ms), W = w->size_ms / w->hop_ms;
        for (size_t i = 0; i < n; i++) {
            int64_t tile = tfloor_div(o->ev[idx[i]].t, w->hop_ms);
            if (tile > b - W && tile <= b)
                sel[k++] = idx[i];
        }
        break;
    }
    case SCHEMA_WINDOW_TUMBLING:
        for (size_t i = 0; i < n; i++)
            if (tfloor_div(o->ev[idx[i]].t, w->size_ms) == tfloor_div(t, w->size_ms))
                sel[k++] = idx[i];
        break;
    case SCHEMA_WINDOW_LIFETIME:
        memcpy(sel, idx, n * sizeof(size_t));
        k = n;
        break;
    case SCHEMA_WINDOW_SESSION: {
        osess_t *ss = malloc((n + 1) * sizeof(osess_t));
        size_t ns = sessions_of(o, w, idx, n, ss);
        for (size_t j = 0; j < ns; j++) {
            int64_t st = o->ev[idx[ss[j].lo]].t, en = o->ev[idx[ss[j].hi]].t;
            if (st <= t && t - w->gap_ms < en && bucket(w, t) == bucket(w, st)) {
                for (size_t i = ss[j].lo; i <= ss[j].hi; i++)
                    sel[k++] = idx[i];
            }
        }
        free(ss);
        break;
    }
    }
    compute(o, f, sel, k, t, items, out);
    free(idx);
    free(sel);
}

static size_t oracle_sessions_all(const oracle_t *o, const schema_t *s, size_t fi,
                                  agg_session_t **out)
{
    const schema_feature_t *f = &s->views[0].features[fi];
    size_t *idx = malloc((o->n + 1) * sizeof(size_t));
    size_t n = sorted_events(o, f->field, idx);
    osess_t *ss = malloc((n + 1) * sizeof(osess_t));
    size_t ns = sessions_of(o, &f->window, idx, n, ss);
    *out = malloc((ns + 1) * sizeof(agg_session_t));
    for (size_t j = 0; j < ns; j++) {
        (*out)[j].start_ms = o->ev[idx[ss[j].lo]].t;
        (*out)[j].end_ms = o->ev[idx[ss[j].hi]].t;
        (*out)[j].events = (int64_t)(ss[j].hi - ss[j].lo + 1);
    }
    free(ss);
    free(idx);
    return ns;
}

size_t oracle_sessions(const oracle_t *o, const schema_t *s, size_t fi, agg_session_t *out,
                       size_t max)
{
    const schema_window_t *w = &s->views[0].features[fi].window;
    int64_t now = 0;
    for (size_t i = 0; i < o->n; i++)
        if (i == 0 || o->ev[i].t > now)
            now = o->ev[i].t;
    agg_session_t *all;
    size_t ns = oracle_sessions_all(o, s, fi, &all), k = 0;
    for (size_t j = ns; j-- > 0 && k < max;) {
        if (all[j].end_ms <= now - w->gap_ms || bucket(w, all[j].start_ms) < bucket(w, now))
            out[k++] = all[j];
    }
    free(all);
    return k;
}

bool oracle_open_session(const oracle_t *o, const schema_t *s, size_t fi, int64_t t,
                         agg_session_t *out)
{
    const schema_window_t *w = &s->views[0].features[fi].window;
    agg_session_t *all;
    size_t ns = oracle_sessions_all(o, s, fi, &all);
    bool found = false;
    for (size_t j = 0; j < ns; j++)
        if (all[j].start_ms <= t && t - w->gap_ms < all[j].end_ms &&
            bucket(w, t) == bucket(w, all[j].start_ms)) {
            *out = all[j];
            found = true;
        }
    free(all);
    return found;
}
