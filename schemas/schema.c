/*
 * schema.c — loads and checks Sluice schema files into a schema_t.
 *
 * Loading runs in passes over all files at once, so a view may refer to an
 * entity or source declared in another file:
 *
 *   parse YAML (libyaml) ──► entities ──► sources ──► views ──► services ──► fingerprints
 *
 * Each pass checks its declarations completely (shape, unknown keys, names,
 * durations, types) and resolves references to indexes, so nothing after
 * schema_load() needs to re-validate. The first error stops loading and is
 * reported as "FILE:LINE:COL: message". The YAML documents stay alive until
 * every pass is done (their marks locate errors), then are freed.
 *
 * Fingerprints hash a canonical text of each view's definition (what decides
 * its state: entity key types, topic, time field, lateness, filter, features
 * in order) with XXH64, so reformatting a file or changing a TTL does not
 * change it, but anything that invalidates stored state does.
 */
#include "schema.h"
#include "schema_yaml.h"
#include "sl_buf.h"
#include "sl_err.h"
#include "sl_time.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#define SCHEMA_NAME_MAX 64
#define SCHEMA_MAX_TILES 200000      /* size/hop bound for sliding windows */
#define SCHEMA_MAX_LAST_N 1000
#define SCHEMA_MAX_SESSIONS_KEPT 100
#define SCHEMA_MAX_FILE_BYTES (16u << 20)

static const char *const agg_names[] = {
#define SCHEMA__A(n, s, f, num) s,
    SCHEMA_AGG_MAP(SCHEMA__A)
#undef SCHEMA__A
};
static const bool agg_field[] = {
#define SCHEMA__A(n, s, f, num) f,
    SCHEMA_AGG_MAP(SCHEMA__A)
#undef SCHEMA__A
};
static const bool agg_numeric[] = {
#define SCHEMA__A(n, s, f, num) num,
    SCHEMA_AGG_MAP(SCHEMA__A)
#undef SCHEMA__A
};
static const char *const type_names[] = {
#define SCHEMA__T(n, s) s,
    SCHEMA_TYPE_MAP(SCHEMA__T)
#undef SCHEMA__T
};

const char *schema_agg_name(schema_agg_t a) { return a < SCHEMA_AGG__COUNT ? agg_names[a] : "?"; }
const char *schema_type_name(schema_type_t t) { return t < SCHEMA_TYPE__COUNT ? type_names[t] : "?"; }
bool schema_agg_needs_field(schema_agg_t a) { return a < SCHEMA_AGG__COUNT && agg_field[a]; }
bool schema_agg_is_numeric(schema_agg_t a) { return a < SCHEMA_AGG__COUNT && agg_numeric[a]; }

const char *schema_window_kind_name(schema_window_kind_t k)
{
    switch (k) {
    case SCHEMA_WINDOW_SLIDING: return "sliding";
    case SCHEMA_WINDOW_TUMBLING: return "tumbling";
    case SCHEMA_WINDOW_SESSION: return "session";
    case SCHEMA_WINDOW_LIFETIME: return "lifetime";
    }
    return "?";
}

/* ---- loader context ---------------------------------------------------- */

typedef struct loader {
    schema_t *s;
    sy_doc_t *docs;
    size_t n_docs;
    char *errstr;
    size_t errsize;
    /* per source: the doc and node of its declaration (for entity_keys) */
    size_t *src_doc;
    yaml_node_t **src_node;
} loader_t;

static char *xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = malloc(n);
    if (p) memcpy(p, s, n);
    return p;
}

/* Grows *arr (of *n elements of size sz) by one zeroed element. */
static void *grow(void *arr_p, size_t *n, size_t sz)
{
    void **arr = arr_p;
    void *p = realloc(*arr, (*n + 1) * sz);
    if (!p) return NULL;
    *arr = p;
    memset((char *)p + *n * sz, 0, sz);
    return (char *)p + (*n)++ * sz;
}

static int oom(loader_t *L)
{
    snprintf(L->errstr, L->errsize, "out of memory while loading the schema");
    return SL_ENOMEM;
}

static schema_loc_t loc_of(sy_doc_t *d, const yaml_node_t *n)
{
    schema_loc_t l = { d->file, (int)n->start_mark.line + 1, (int)n->start_mark.column + 1 };
    return l;
}

static bool is_identifier(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > SCHEMA_NAME_MAX) return false;
    if (!(isalpha((unsigned char)s[0]) || s[0] == '_')) return false;
    for (size_t i = 1; i < n; i++)
        if (!(isalnum((unsigned char)s[i]) || s[i] == '_')) return false;
    return true;
}

/* Field names may also hold '.' and '-' (common in JSON payloads); a dot is
 * part of the name, not a path. */
static bool is_field_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > SCHEMA_NAME_MAX) return false;
    if (!(isalpha((unsigned char)s[0]) || s[0] == '_')) return false;
    for (size_t i = 1; i < n; i++)
        if (!(isalnum((unsigned char)s[i]) || s[i] == '_' || s[i] == '.' || s[i] == '-'))
            return false;
    return true;
}

/* Reads the required 'name' of a declaration and checks it is an identifier. */
static int get_name(sy_doc_t *d, yaml_node_t *decl, const char *what, const char **out,
                    yaml_node_t **node)
{
    int rc = sy_get_string(d, decl, "name", what, true, out, node);
    if (rc) return rc;
    if (!is_identifier(*out))
        return sy_error(d, *node, "invalid %s name '%s': use letters, digits and '_', "
                        "starting with a letter or '_', at most %d characters",
                        what, *out, SCHEMA_NAME_MAX);
    return SL_OK;
}

static int parse_type(sy_doc_t *d, yaml_node_t *n, const char *what, schema_type_t *out)
{
    const char *s = sy_scalar(n);
    for (int t = 0; s && t < SCHEMA_TYPE__COUNT; t++)
        if (!strcmp(s, type_names[t])) { *out = (schema_type_t)t; return SL_OK; }
    return sy_error(d, n, "unknown type '%s' for %s (expected string, int, double or bool)",
                    s ? s : sy_kind_name(n), what);
}

/* A top-level section ("entities") must be a list of mappings, if present. */
static yaml_node_t *section(sy_doc_t *d, const char *name)
{
    yaml_node_t *v = sy_get(d, sy_root(d), name);
    if (!v) return NULL;
    if (sy_is_scalar(v) && !*sy_scalar(v)) return NULL;   /* "entities:" with nothing */
    if (!sy_is_seq(v)) {
        sy_error(d, v, "'%s' must be a list, found %s", name, sy_kind_name(v));
        return NULL;
    }
    return v;
}

/* ---- entities ---------------------------------------------------------- */

static int load_entity(loader_t *L, sy_doc_t *d, yaml_node_t *n)
{
    static const char *const keys[] = { "name", "keys", "key_type", "description", NULL };
    const char *name, *key_type_s = NULL;
    yaml_node_t *name_node, *kt_node;
    schema_type_t key_type = SCHEMA_TYPE_STRING;
    int rc;

    if ((rc = sy_check_keys(d, n, "entity", keys))) return rc;
    if ((rc = get_name(d, n, "entity", &name, &name_node))) return rc;
    for (size_t i = 0; i < L->s->n_entities; i++)
        if (!strcmp(L->s->entities[i].name, name))
            return sy_error(d, name_node, "duplicate entity '%s' (first declared at %s:%d:%d)",
                            name, L->s->entities[i].loc.file, L->s->entities[i].loc.line,
                            L->s->entities[i].loc.column);
    if ((rc = sy_get_string(d, n, "key_type", "entity", false, &key_type_s, &kt_node))) return rc;
    if (key_type_s && (rc = parse_type(d, kt_node, "an entity key", &key_type))) return rc;
    yaml_node_t *ks = sy_get(d, n, "keys");
    if (!ks) return sy_error(d, n, "missing 'keys' in entity '%s'", name);
    if (!sy_is_seq(ks) || ks->data.sequence.items.top == ks->data.sequence.items.start)
        return sy_error(d, ks, "'keys' of entity '%s' must be a non-empty list of key fields", name);

    schema_entity_t *e = grow(&L->s->entities, &L->s->n_entities, sizeof *e);
    if (!e || !(e->name = xstrdup(name))) return oom(L);
    e->loc = loc_of(d, n);
    SY_SEQ_EACH(d, ks, k) {
        const char *kname;
        schema_type_t ktype = key_type;
        yaml_node_t *knode = k;
        if (sy_is_map(k)) {
            static const char *const kkeys[] = { "name", "type", NULL };
            const char *ts;
            yaml_node_t *tnode;
            if ((rc = sy_check_keys(d, k, "entity key", kkeys))) return rc;
            if ((rc = sy_get_string(d, k, "name", "entity key", true, &kname, &knode))) return rc;
            if ((rc = sy_get_string(d, k, "type", "entity key", true, &ts, &tnode))) return rc;
            if ((rc = parse_type(d, tnode, "an entity key", &ktype))) return rc;
        } else if (!(kname = sy_scalar(k)) || !*kname) {
            return sy_error(d, k, "an entity key must be a name or {name, type}");
        }
        if (!is_field_name(kname))
            return sy_error(d, knode, "invalid key name '%s' in entity '%s'", kname, name);
        if (ktype != SCHEMA_TYPE_STRING && ktype != SCHEMA_TYPE_INT)
            return sy_error(d, knode, "entity key '%s' has type %s: keys must be string or int",
                            kname, type_names[ktype]);
        for (size_t i = 0; i < e->n_keys; i++)
            if (!strcmp(e->keys[i], kname))
                return sy_error(d, knode, "duplicate key '%s' in entity '%s'", kname, name);
        size_t nk = e->n_keys;
        char **kp = grow(&e->keys, &nk, sizeof *kp);
        if (!kp) return oom(L);
        schema_type_t *tp = grow(&e->key_types, &e->n_keys, sizeof *tp);
        if (!tp || !(*kp = xstrdup(kname))) return oom(L);
        *tp = ktype;
    }
    return SL_OK;
}

/* ---- sources ----------------------------------------------------------- */

static int load_source(loader_t *L, size_t di, yaml_node_t *n)
{
    static const char *const keys[] = { "name", "topic", "format", "fields", "event_time",
        "entity_keys", "message_key", "watermark_delay", "allowed_lateness", "description", NULL };
    sy_doc_t *d = &L->docs[di];
    const char *name, *topic, *format = "json";
    yaml_node_t *name_node, *topic_node, *fmt_node;
    int rc;

    if ((rc = sy_check_keys(d, n, "source", keys))) return rc;
    if ((rc = get_name(d, n, "source", &name, &name_node))) return rc;
    for (size_t i = 0; i < L->s->n_sources; i++)
        if (!strcmp(L->s->sources[i].name, name))
            return sy_error(d, name_node, "duplicate source '%s' (first declared at %s:%d:%d)",
                            name, L->s->sources[i].loc.file, L->s->sources[i].loc.line,
                            L->s->sources[i].loc.column);
    if ((rc = sy_get_string(d, n, "topic", "source", true, &topic, &topic_node))) return rc;
    if (strlen(topic) > 249 || strspn(topic, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                             "0123456789._-") != strlen(topic))
        return sy_error(d, topic_node, "invalid Kafka topic name '%s' (letters, digits, '.', "
                        "'_', '-'; at most 249 characters)", topic);
    if ((rc = sy_get_string(d, n, "format", "source", false, &format, &fmt_node))) return rc;
    if (strcmp(format, "json"))
        return sy_error(d, fmt_node, "unsupported source format '%s' (supported: json)", format);

    schema_source_t *src = grow(&L->s->sources, &L->s->n_sources, sizeof *src);
    if (!src) return oom(L);
    size_t si = L->s->n_sources - 1;
    size_t *dp = realloc(L->src_doc, L->s->n_sources * sizeof *dp);
    if (!dp) return oom(L);
    L->src_doc = dp;
    yaml_node_t **np = realloc(L->src_node, L->s->n_sources * sizeof *np);
    if (!np) return oom(L);
    L->src_node = np;
    L->src_doc[si] = di;
    L->src_node[si] = n;
    if (!(src->name = xstrdup(name)) || !(src->topic = xstrdup(topic))) return oom(L);
    src->format = SCHEMA_FORMAT_JSON;
    src->loc = loc_of(d, n);
    src->time_field = -1;

    yaml_node_t *fields = sy_get(d, n, "fields");
    if (!fields) return sy_error(d, n, "missing 'fields' in source '%s'", name);
    if (!sy_is_map(fields) || fields->data.mapping.pairs.top == fields->data.mapping.pairs.start)
        return sy_error(d, fields, "'fields' of source '%s' must map field names to types", name);
    SY_MAP_EACH(d, fields, k, v) {
        const char *fname = sy_scalar(k);
        if (!fname || !is_field_name(fname))
            return sy_error(d, k, "invalid field name '%s' in source '%s'", fname ? fname : "?", name);
        for (size_t i = 0; i < src->n_fields; i++)
            if (!strcmp(src->fields[i].name, fname))
                return sy_error(d, k, "duplicate field '%s' in source '%s'", fname, name);
        schema_type_t t = SCHEMA_TYPE_STRING;
        char what[128];
        snprintf(what, sizeof what, "field '%s'", fname);
        if ((rc = parse_type(d, v, what, &t))) return rc;
        schema_field_t *f = grow(&src->fields, &src->n_fields, sizeof *f);
        if (!f || !(f->name = xstrdup(fname))) return oom(L);
        f->type = t;
    }

    yaml_node_t *et = sy_get(d, n, "event_time");
    if (!et) return sy_error(d, n, "missing 'event_time' in source '%s'", name);
    static const char *const etkeys[] = { "field", "format", NULL };
    if ((rc = sy_check_keys(d, et, "event_time", etkeys))) return rc;
    const char *tf, *tfmt = "epoch_ms";
    yaml_node_t *tf_node, *tfmt_node;
    if ((rc = sy_get_string(d, et, "field", "event_time", true, &tf, &tf_node))) return rc;
    if ((rc = sy_get_string(d, et, "format", "event_time", false, &tfmt, &tfmt_node))) return rc;
    for (size_t i = 0; i < src->n_fields; i++)
        if (!strcmp(src->fields[i].name, tf)) src->time_field = (int)i;
    if (src->time_field < 0)
        return sy_error(d, tf_node, "unknown field '%s' for event_time of source '%s'", tf, name);
    schema_type_t tt = src->fields[src->time_field].type;
    if (!strcmp(tfmt, "epoch_ms")) src->time_format = SCHEMA_TIME_EPOCH_MS;
    else if (!strcmp(tfmt, "epoch_s")) src->time_format = SCHEMA_TIME_EPOCH_S;
    else if (!strcmp(tfmt, "rfc3339")) src->time_format = SCHEMA_TIME_RFC3339;
    else
        return sy_error(d, tfmt_node, "unknown event_time format '%s' (expected epoch_ms, "
                        "epoch_s or rfc3339)", tfmt);
    if (src->time_format == SCHEMA_TIME_RFC3339 ? tt != SCHEMA_TYPE_STRING
                                                : (tt != SCHEMA_TYPE_INT && tt != SCHEMA_TYPE_DOUBLE))
        return sy_error(d, tf_node, "type mismatch: event_time field '%s' is %s but format %s "
                        "needs %s", tf, type_names[tt], tfmt,
                        src->time_format == SCHEMA_TIME_RFC3339 ? "a string" : "an int or double");

    if ((rc = sy_get_duration(d, n, "watermark_delay", "source", false, true,
                              &src->watermark_delay_ms))) return rc;
    if ((rc = sy_get_duration(d, n, "allowed_lateness", "source", false, true,
                              &src->allowed_lateness_ms))) return rc;

    /* message_key: one field name or a list of them */
    yaml_node_t *mk = sy_get(d, n, "message_key");
    if (mk) {
        size_t cnt = sy_is_seq(mk) ? (size_t)(mk->data.sequence.items.top - mk->data.sequence.items.start)
                                   : sy_is_scalar(mk) ? 1 : 0;
        if (!cnt)
            return sy_error(d, mk, "'message_key' of source '%s' must be a field name or a "
                            "non-empty list of field names", name);
        src->msg_key_fields = calloc(cnt, sizeof *src->msg_key_fields);
        if (!src->msg_key_fields) return oom(L);
        for (size_t i = 0; i < cnt; i++) {
            yaml_node_t *item = sy_is_seq(mk) ? sy_node(d, mk->data.sequence.items.start[i]) : mk;
            const char *fname = sy_scalar(item);
            int fi = -1;
            for (size_t f = 0; fname && f < src->n_fields; f++)
                if (!strcmp(src->fields[f].name, fname)) fi = (int)f;
            if (fi < 0)
                return sy_error(d, item, "unknown field '%s' in message_key of source '%s'",
                                fname ? fname : "?", name);
            src->msg_key_fields[src->n_msg_key_fields++] = fi;
        }
    }
    return SL_OK;
}

static int field_index(const schema_source_t *src, const char *name)
{
    for (size_t i = 0; i < src->n_fields; i++)
        if (!strcmp(src->fields[i].name, name)) return (int)i;
    return -1;
}

static int entity_index(const schema_t *s, const char *name)
{
    for (size_t i = 0; i < s->n_entities; i++)
        if (!strcmp(s->entities[i].name, name)) return (int)i;
    return -1;
}

/* Checks a source's entity_keys: {entity: [field, ...]} against the entities. */
static int check_entity_keys(loader_t *L, size_t si)
{
    sy_doc_t *d = &L->docs[L->src_doc[si]];
    schema_source_t *src = &L->s->sources[si];
    yaml_node_t *ek = sy_get(d, L->src_node[si], "entity_keys");
    if (!ek) return SL_OK;
    if (!sy_is_map(ek))
        return sy_error(d, ek, "'entity_keys' of source '%s' must map entity names to key fields",
                        src->name);
    SY_MAP_EACH(d, ek, k, v) {
        const char *ename = sy_scalar(k);
        int ei = ename ? entity_index(L->s, ename) : -1;
        if (ei < 0)
            return sy_error(d, k, "unknown entity '%s' in entity_keys of source '%s'",
                            ename ? ename : "?", src->name);
        const schema_entity_t *e = &L->s->entities[ei];
        size_t nk = 0;
        if (sy_is_scalar(v) && e->n_keys == 1) {
            nk = 1;
        } else if (sy_is_seq(v)) {
            nk = (size_t)(v->data.sequence.items.top - v->data.sequence.items.start);
        } else {
            return sy_error(d, v, "entity_keys.%s must be a field name or a list of them", ename);
        }
        if (nk != e->n_keys)
            return sy_error(d, v, "entity '%s' has %zu key(s) but source '%s' maps %zu field(s)",
                            ename, e->n_keys, src->name, nk);
        for (size_t i = 0; i < nk; i++) {
            yaml_node_t *f = sy_is_seq(v) ? sy_node(d, v->data.sequence.items.start[i]) : v;
            const char *fname = sy_scalar(f);
            int fi = fname ? field_index(src, fname) : -1;
            if (fi < 0)
                return sy_error(d, f, "unknown field '%s' in source '%s' (entity_keys.%s)",
                                fname ? fname : "?", src->name, ename);
            if (src->fields[fi].type != e->key_types[i])
                return sy_error(d, f, "type mismatch: field '%s' is %s but key '%s' of entity "
                                "'%s' is %s", fname, type_names[src->fields[fi].type],
                                e->keys[i], ename, type_names[e->key_types[i]]);
        }
    }
    return SL_OK;
}

/* Resolves which source fields hold entity ei's keys: entity_keys if the
 * source declares them, else fields named like the keys. */
static int resolve_key_fields(loader_t *L, sy_doc_t *vd, yaml_node_t *vnode, int si, int ei,
                              int **out)
{
    sy_doc_t *d = &L->docs[L->src_doc[si]];
    schema_source_t *src = &L->s->sources[si];
    const schema_entity_t *e = &L->s->entities[ei];
    yaml_node_t *map = sy_get(d, sy_get(d, L->src_node[si], "entity_keys"), e->name);
    int *kf = calloc(e->n_keys, sizeof *kf);
    if (!kf) return oom(L);
    *out = kf;
    for (size_t i = 0; i < e->n_keys; i++) {
        const char *fname = e->keys[i];
        if (map) fname = sy_scalar(sy_is_seq(map) ? sy_node(d, map->data.sequence.items.start[i]) : map);
        kf[i] = field_index(src, fname);
        if (kf[i] < 0)
            return sy_error(vd, vnode, "source '%s' has no field for key '%s' of entity '%s': "
                            "add it to the source's fields or map it in entity_keys",
                            src->name, e->keys[i], e->name);
        if (!map && src->fields[kf[i]].type != e->key_types[i])
            return sy_error(vd, vnode, "type mismatch: field '%s' of source '%s' is %s but key "
                            "'%s' of entity '%s' is %s", fname, src->name,
                            type_names[src->fields[kf[i]].type], e->keys[i], e->name,
                            type_names[e->key_types[i]]);
    }
    return SL_OK;
}

/* ---- views ------------------------------------------------------------- */

static int parse_window(sy_doc_t *d, yaml_node_t *n, schema_window_t *w)
{
    int rc;
    memset(w, 0, sizeof *w);
    if (sy_is_scalar(n)) {
        if (!strcmp(sy_scalar(n), "lifetime")) { w->kind = SCHEMA_WINDOW_LIFETIME; return SL_OK; }
        return sy_error(d, n, "unknown window '%s' (expected lifetime, {sliding: SIZE, hop: HOP}, "
                        "{tumbling: SIZE} or {session: GAP})", sy_scalar(n));
    }
    if (!sy_is_map(n))
        return sy_error(d, n, "window must be 'lifetime' or a mapping such as {sliding: 1h, hop: 1m}");
    if (sy_get(d, n, "sliding")) {
        static const char *const k[] = { "sliding", "hop", NULL };
        if ((rc = sy_check_keys(d, n, "sliding window", k))) return rc;
        w->kind = SCHEMA_WINDOW_SLIDING;
        if ((rc = sy_get_duration(d, n, "sliding", "window", true, false, &w->size_ms))) return rc;
        if ((rc = sy_get_duration(d, n, "hop", "sliding window", true, false, &w->hop_ms))) return rc;
        if (w->hop_ms > w->size_ms)
            return sy_error(d, sy_get(d, n, "hop"), "window hop is longer than its size");
        if (w->size_ms % w->hop_ms)
            return sy_error(d, sy_get(d, n, "hop"), "window hop does not divide the window size "
                            "(size %lld ms, hop %lld ms)", (long long)w->size_ms, (long long)w->hop_ms);
        if (w->size_ms / w->hop_ms > SCHEMA_MAX_TILES)
            return sy_error(d, sy_get(d, n, "hop"), "window has %lld hops; at most %d are allowed "
                            "(use a larger hop)", (long long)(w->size_ms / w->hop_ms), SCHEMA_MAX_TILES);
    } else if (sy_get(d, n, "tumbling")) {
        static const char *const k[] = { "tumbling", NULL };
        if ((rc = sy_check_keys(d, n, "tumbling window", k))) return rc;
        w->kind = SCHEMA_WINDOW_TUMBLING;
        if ((rc = sy_get_duration(d, n, "tumbling", "window", true, false, &w->size_ms))) return rc;
    } else if (sy_get(d, n, "session")) {
        static const char *const k[] = { "session", "max_length", NULL };
        if ((rc = sy_check_keys(d, n, "session window", k))) return rc;
        w->kind = SCHEMA_WINDOW_SESSION;
        if ((rc = sy_get_duration(d, n, "session", "window", true, false, &w->gap_ms))) return rc;
        if ((rc = sy_get_duration(d, n, "max_length", "session window", false, false,
                                  &w->max_length_ms))) return rc;
        if (w->max_length_ms && w->max_length_ms < w->gap_ms)
            return sy_error(d, sy_get(d, n, "max_length"), "session max_length is shorter than its gap");
    } else if (sy_get(d, n, "lifetime")) {
        return sy_error(d, n, "write a lifetime window as the plain value 'lifetime'");
    } else {
        return sy_error(d, n, "window needs one of: sliding, tumbling, session (or the value 'lifetime')");
    }
    return SL_OK;
}

static int parse_filter(sy_doc_t *d, yaml_node_t *n, const schema_source_t *src, schema_filter_t *f)
{
    static const char *const keys[] = { "field", "op", "value", NULL };
    static const struct { const char *a, *b; schema_filter_op_t op; } ops[] = {
        { "eq", "==", SCHEMA_FILTER_EQ }, { "ne", "!=", SCHEMA_FILTER_NE },
        { "gt", ">", SCHEMA_FILTER_GT },  { "ge", ">=", SCHEMA_FILTER_GE },
        { "lt", "<", SCHEMA_FILTER_LT },  { "le", "<=", SCHEMA_FILTER_LE },
    };
    const char *field, *op = "eq", *value;
    yaml_node_t *fnode, *opnode, *vnode;
    int rc;
    if ((rc = sy_check_keys(d, n, "filter", keys))) return rc;
    if ((rc = sy_get_string(d, n, "field", "filter", true, &field, &fnode))) return rc;
    if ((rc = sy_get_string(d, n, "op", "filter", false, &op, &opnode))) return rc;
    if ((rc = sy_get_string(d, n, "value", "filter", true, &value, &vnode))) return rc;
    f->field = field_index(src, field);
    if (f->field < 0)
        return sy_error(d, fnode, "unknown field '%s' in filter (source '%s')", field, src->name);
    f->op = SCHEMA_FILTER_NONE;
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++)
        if (!strcmp(op, ops[i].a) || !strcmp(op, ops[i].b)) f->op = ops[i].op;
    if (f->op == SCHEMA_FILTER_NONE)
        return sy_error(d, opnode, "unknown filter op '%s' (expected eq, ne, gt, ge, lt, le)", op);
    f->type = src->fields[f->field].type;
    bool ordered = f->op != SCHEMA_FILTER_EQ && f->op != SCHEMA_FILTER_NE;
    switch (f->type) {
    case SCHEMA_TYPE_STRING:
        if (ordered)
            return sy_error(d, opnode, "type mismatch: filter op '%s' needs a numeric field, '%s' is string",
                            op, field);
        if (!(f->s = xstrdup(value))) return SL_ENOMEM;
        break;
    case SCHEMA_TYPE_INT:
        if (!sy_parse_int(value, &f->i))
            return sy_error(d, vnode, "type mismatch: filter value '%s' is not an int (field '%s' is int)",
                            value, field);
        f->d = (double)f->i;
        break;
    case SCHEMA_TYPE_DOUBLE:
        if (!sy_parse_double(value, &f->d))
            return sy_error(d, vnode, "type mismatch: filter value '%s' is not a number (field '%s' is double)",
                            value, field);
        break;
    case SCHEMA_TYPE_BOOL: {
        bool b;
        if (ordered)
            return sy_error(d, opnode, "type mismatch: filter op '%s' needs a numeric field, '%s' is bool",
                            op, field);
        if (!sy_parse_bool(value, &b))
            return sy_error(d, vnode, "type mismatch: filter value '%s' is not true/false (field '%s' is bool)",
                            value, field);
        f->i = b;
        break;
    }
    default:
        break;
    }
    return SL_OK;
}

static int load_feature(loader_t *L, sy_doc_t *d, yaml_node_t *n, schema_view_t *v,
                        const schema_source_t *src)
{
    static const char *const keys[] = { "name", "aggregate", "field", "window", "n", "quantile",
        "half_life", "sessions_kept", "description", NULL };
    const char *name, *agg, *field = NULL;
    yaml_node_t *name_node, *agg_node, *field_node, *win;
    int rc;

    if ((rc = sy_check_keys(d, n, "feature", keys))) return rc;
    if ((rc = get_name(d, n, "feature", &name, &name_node))) return rc;
    for (size_t i = 0; i < v->n_features; i++)
        if (!strcmp(v->features[i].name, name))
            return sy_error(d, name_node, "duplicate feature '%s' in view '%s'", name, v->name);
    if ((rc = sy_get_string(d, n, "aggregate", "feature", true, &agg, &agg_node))) return rc;
    schema_feature_t *f = grow(&v->features, &v->n_features, sizeof *f);
    if (!f || !(f->name = xstrdup(name))) return oom(L);
    f->loc = loc_of(d, n);
    f->field = -1;
    f->agg = SCHEMA_AGG__COUNT;
    for (int a = 0; a < SCHEMA_AGG__COUNT; a++)
        if (!strcmp(agg, agg_names[a])) f->agg = (schema_agg_t)a;
    if (f->agg == SCHEMA_AGG__COUNT)
        return sy_error(d, agg_node, "unknown aggregate '%s' (expected one of: count, sum, min, max, "
                        "mean, first, last, last_n, variance, stddev, approx_distinct, "
                        "approx_quantile, decayed_sum, decayed_count)", agg);

    if ((rc = sy_get_string(d, n, "field", "feature", false, &field, &field_node))) return rc;
    if (agg_field[f->agg] && !field)
        return sy_error(d, n, "aggregate %s needs a 'field'", agg);
    if (!agg_field[f->agg] && field)
        return sy_error(d, field_node, "aggregate %s takes no 'field'", agg);
    if (field) {
        f->field = field_index(src, field);
        if (f->field < 0)
            return sy_error(d, field_node, "unknown field '%s' (source '%s' has no such field)",
                            field, src->name);
        f->field_type = src->fields[f->field].type;
        if (agg_numeric[f->agg] && f->field_type != SCHEMA_TYPE_INT &&
            f->field_type != SCHEMA_TYPE_DOUBLE)
            return sy_error(d, field_node, "type mismatch: %s needs a numeric field but '%s' is %s",
                            agg, field, type_names[f->field_type]);
    }

    /* Parameters that belong to one aggregate only. */
    if (sy_get(d, n, "n") && f->agg != SCHEMA_AGG_LAST_N)
        return sy_error(d, sy_get_key(d, n, "n"), "'n' applies only to last_n");
    if (sy_get(d, n, "quantile") && f->agg != SCHEMA_AGG_APPROX_QUANTILE)
        return sy_error(d, sy_get_key(d, n, "quantile"), "'quantile' applies only to approx_quantile");
    bool decayed = f->agg == SCHEMA_AGG_DECAYED_SUM || f->agg == SCHEMA_AGG_DECAYED_COUNT;
    if (sy_get(d, n, "half_life") && !decayed)
        return sy_error(d, sy_get_key(d, n, "half_life"), "'half_life' applies only to decayed_sum "
                        "and decayed_count");
    if (f->agg == SCHEMA_AGG_LAST_N) {
        int64_t nn;
        if ((rc = sy_get_int(d, n, "n", "last_n feature", true, 1, SCHEMA_MAX_LAST_N, &nn))) return rc;
        f->n = (int)nn;
    }
    if (f->agg == SCHEMA_AGG_APPROX_QUANTILE &&
        (rc = sy_get_double(d, n, "quantile", "approx_quantile feature", true, 0.0, 1.0, &f->quantile)))
        return rc;
    if (decayed && (rc = sy_get_duration(d, n, "half_life", "feature", true, false, &f->half_life_ms)))
        return rc;

    win = sy_get(d, n, "window");
    if (!win) return sy_error(d, n, "missing 'window' in feature '%s'", name);
    if ((rc = parse_window(d, win, &f->window))) return rc;
    if (sy_get(d, n, "sessions_kept") && f->window.kind != SCHEMA_WINDOW_SESSION)
        return sy_error(d, sy_get_key(d, n, "sessions_kept"), "'sessions_kept' applies only to "
                        "session windows");
    int64_t kept = 5;
    if ((rc = sy_get_int(d, n, "sessions_kept", "feature", false, 0, SCHEMA_MAX_SESSIONS_KEPT, &kept)))
        return rc;
    f->sessions_kept = f->window.kind == SCHEMA_WINDOW_SESSION ? (int)kept : 0;
    return SL_OK;
}

static int load_view(loader_t *L, sy_doc_t *d, yaml_node_t *n)
{
    static const char *const keys[] = { "name", "entity", "source", "filter", "ttl", "features",
        "description", NULL };
    const char *name, *ename, *sname;
    yaml_node_t *name_node, *e_node, *s_node;
    int rc;

    if ((rc = sy_check_keys(d, n, "feature view", keys))) return rc;
    if ((rc = get_name(d, n, "feature view", &name, &name_node))) return rc;
    for (size_t i = 0; i < L->s->n_views; i++)
        if (!strcmp(L->s->views[i].name, name))
            return sy_error(d, name_node, "duplicate feature view '%s' (first declared at %s:%d:%d)",
                            name, L->s->views[i].loc.file, L->s->views[i].loc.line,
                            L->s->views[i].loc.column);
    if ((rc = sy_get_string(d, n, "entity", "feature view", true, &ename, &e_node))) return rc;
    if ((rc = sy_get_string(d, n, "source", "feature view", true, &sname, &s_node))) return rc;
    int ei = entity_index(L->s, ename);
    if (ei < 0) return sy_error(d, e_node, "unknown entity '%s' in view '%s'", ename, name);
    int si = schema_source_index(L->s, sname);
    if (si < 0) return sy_error(d, s_node, "unknown source '%s' in view '%s'", sname, name);

    schema_view_t *v = grow(&L->s->views, &L->s->n_views, sizeof *v);
    if (!v || !(v->name = xstrdup(name))) return oom(L);
    v->loc = loc_of(d, n);
    v->entity = ei;
    v->source = si;
    const schema_source_t *src = &L->s->sources[si];
    if ((rc = resolve_key_fields(L, d, s_node, si, ei, &v->key_fields))) return rc;
    v->spans_partitions = src->n_msg_key_fields != L->s->entities[ei].n_keys;
    for (size_t k = 0; !v->spans_partitions && k < src->n_msg_key_fields; k++)
        v->spans_partitions = v->key_fields[k] != src->msg_key_fields[k];
    yaml_node_t *flt = sy_get(d, n, "filter");
    if (flt && (rc = parse_filter(d, flt, src, &v->filter))) return rc == SL_ENOMEM ? oom(L) : rc;
    if ((rc = sy_get_duration(d, n, "ttl", "feature view", false, true, &v->ttl_ms))) return rc;

    yaml_node_t *fs = sy_get(d, n, "features");
    if (!fs) return sy_error(d, n, "missing 'features' in view '%s'", name);
    if (!sy_is_seq(fs) || fs->data.sequence.items.top == fs->data.sequence.items.start)
        return sy_error(d, fs, "'features' of view '%s' must be a non-empty list", name);
    SY_SEQ_EACH(d, fs, f) {
        if ((rc = load_feature(L, d, f, v, src))) return rc;
    }
    return SL_OK;
}

/* ---- services ---------------------------------------------------------- */

static int load_service(loader_t *L, sy_doc_t *d, yaml_node_t *n)
{
    static const char *const keys[] = { "name", "features", "description", NULL };
    const char *name;
    yaml_node_t *name_node;
    int rc;

    if ((rc = sy_check_keys(d, n, "feature service", keys))) return rc;
    if ((rc = get_name(d, n, "feature service", &name, &name_node))) return rc;
    for (size_t i = 0; i < L->s->n_services; i++)
        if (!strcmp(L->s->services[i].name, name))
            return sy_error(d, name_node, "duplicate feature service '%s'", name);
    yaml_node_t *fs = sy_get(d, n, "features");
    if (!fs) return sy_error(d, n, "missing 'features' in feature service '%s'", name);
    if (!sy_is_seq(fs) || fs->data.sequence.items.top == fs->data.sequence.items.start)
        return sy_error(d, fs, "'features' of feature service '%s' must be a non-empty list of "
                        "view:feature references", name);
    schema_service_t *svc = grow(&L->s->services, &L->s->n_services, sizeof *svc);
    if (!svc || !(svc->name = xstrdup(name))) return oom(L);
    svc->loc = loc_of(d, n);
    SY_SEQ_EACH(d, fs, r) {
        const char *ref = sy_scalar(r);
        const char *colon = ref ? strchr(ref, ':') : NULL;
        if (!colon || colon == ref || !colon[1])
            return sy_error(d, r, "feature reference '%s' must be written view:feature (or view:*)",
                            ref ? ref : "?");
        char vname[SCHEMA_NAME_MAX + 2];
        size_t vl = (size_t)(colon - ref);
        if (vl > SCHEMA_NAME_MAX) return sy_error(d, r, "unknown view in '%s'", ref);
        memcpy(vname, ref, vl);
        vname[vl] = '\0';
        int vi = schema_view_index(L->s, vname);
        if (vi < 0) return sy_error(d, r, "unknown view '%s' in feature reference '%s'", vname, ref);
        const schema_view_t *v = &L->s->views[vi];
        size_t lo = 0, hi = v->n_features;
        if (strcmp(colon + 1, "*")) {
            int fi = schema_feature_index(v, colon + 1);
            if (fi < 0)
                return sy_error(d, r, "unknown feature '%s' in view '%s'", colon + 1, vname);
            lo = (size_t)fi;
            hi = lo + 1;
        }
        for (size_t fi = lo; fi < hi; fi++) {
            for (size_t j = 0; j < svc->n_refs; j++)
                if (svc->refs[j].view == vi && svc->refs[j].feature == (int)fi)
                    return sy_error(d, r, "feature %s:%s is listed twice in service '%s'",
                                    vname, v->features[fi].name, name);
            schema_feature_ref_t *fr = grow(&svc->refs, &svc->n_refs, sizeof *fr);
            if (!fr) return oom(L);
            fr->view = vi;
            fr->feature = (int)fi;
        }
    }
    return SL_OK;
}

/* ---- fingerprints ------------------------------------------------------ */

static uint64_t view_fingerprint(const schema_t *s, const schema_view_t *v)
{
    const schema_entity_t *e = &s->entities[v->entity];
    const schema_source_t *src = &s->sources[v->source];
    sl_buf_t b = SL_BUF_INIT;
    int rc = 0;
    rc |= sl_buf_printf(&b, "sluice-view-v1|%s|entity", v->name);
    for (size_t i = 0; i < e->n_keys; i++)
        rc |= sl_buf_printf(&b, "|%s:%s<-%s", e->keys[i], type_names[e->key_types[i]],
                            src->fields[v->key_fields[i]].name);
    rc |= sl_buf_printf(&b, "|topic=%s|format=%d|time=%s/%d|wm=%lld|late=%lld",
                        src->topic, (int)src->format, src->fields[src->time_field].name,
                        (int)src->time_format, (long long)src->watermark_delay_ms,
                        (long long)src->allowed_lateness_ms);
    if (v->filter.op != SCHEMA_FILTER_NONE)
        rc |= sl_buf_printf(&b, "|filter=%s/%d/%s/%lld/%.17g", src->fields[v->filter.field].name,
                            (int)v->filter.op, v->filter.s ? v->filter.s : "",
                            (long long)v->filter.i, v->filter.d);
    for (size_t i = 0; i < v->n_features; i++) {
        const schema_feature_t *f = &v->features[i];
        rc |= sl_buf_printf(&b, "|f=%s/%s/%s:%d/w%d:%lld:%lld:%lld:%lld/n%d/q%.17g/h%lld/k%d",
                            f->name, agg_names[f->agg],
                            f->field >= 0 ? src->fields[f->field].name : "",
                            f->field >= 0 ? (int)f->field_type : -1, (int)f->window.kind,
                            (long long)f->window.size_ms, (long long)f->window.hop_ms,
                            (long long)f->window.gap_ms, (long long)f->window.max_length_ms,
                            f->n, f->quantile, (long long)f->half_life_ms, f->sessions_kept);
    }
    uint64_t h = rc ? 0 : XXH64(b.data, b.len, 0x511CEu);
    sl_buf_free(&b);
    return h;
}

static int cmp_view_name(const void *a, const void *b)
{
    return strcmp((*(const schema_view_t *const *)a)->name, (*(const schema_view_t *const *)b)->name);
}

static int compute_fingerprints(schema_t *s)
{
    const schema_view_t **sorted = malloc((s->n_views ? s->n_views : 1) * sizeof *sorted);
    if (!sorted) return SL_ENOMEM;
    for (size_t i = 0; i < s->n_views; i++) {
        s->views[i].fingerprint = view_fingerprint(s, &s->views[i]);
        sorted[i] = &s->views[i];
    }
    qsort(sorted, s->n_views, sizeof *sorted, cmp_view_name);
    XXH64_state_t *st = XXH64_createState();
    if (!st) { free(sorted); return SL_ENOMEM; }
    XXH64_reset(st, 0);
    for (size_t i = 0; i < s->n_views; i++)
        XXH64_update(st, &sorted[i]->fingerprint, sizeof sorted[i]->fingerprint);
    s->fingerprint = XXH64_digest(st);
    XXH64_freeState(st);
    free(sorted);
    return SL_OK;
}

/* ---- driver ------------------------------------------------------------ */

static int load_docs(loader_t *L)
{
    static const char *const top[] = { "version", "entities", "sources", "feature_views",
        "feature_services", "description", NULL };
    int rc;
    for (size_t i = 0; i < L->n_docs; i++) {
        sy_doc_t *d = &L->docs[i];
        yaml_node_t *root = sy_root(d);
        if (!sy_is_map(root))
            return sy_error(d, root, "a schema file must be a mapping with entities, sources, "
                            "feature_views or feature_services, found %s", sy_kind_name(root));
        if ((rc = sy_check_keys(d, root, "schema file", top))) return rc;
        int64_t version = 1;
        if ((rc = sy_get_int(d, root, "version", "schema file", false, 1, 1, &version))) return rc;
    }
#define EACH_DECL(sec, body)                                                   \
    for (size_t di = 0; di < L->n_docs; di++) {                                \
        sy_doc_t *d = &L->docs[di];                                            \
        yaml_node_t *list = section(d, sec);                                   \
        if (d->failed) return SL_EINVAL;                                       \
        if (!list) continue;                                                   \
        SY_SEQ_EACH(d, list, item) {                                           \
            if ((rc = (body))) return rc;                                      \
        }                                                                      \
    }
    EACH_DECL("entities", load_entity(L, d, item));
    EACH_DECL("sources", load_source(L, di, item));
    for (size_t si = 0; si < L->s->n_sources; si++)
        if ((rc = check_entity_keys(L, si))) return rc;
    EACH_DECL("feature_views", load_view(L, d, item));
    EACH_DECL("feature_services", load_service(L, d, item));
#undef EACH_DECL
    if (L->s->n_views == 0 && L->s->n_entities == 0 && L->s->n_sources == 0) {
        sy_error(&L->docs[0], sy_root(&L->docs[0]), "the schema declares nothing: add entities, "
                 "sources and feature_views");
        return SL_EINVAL;
    }
    return compute_fingerprints(L->s) ? oom(L) : SL_OK;
}

static int load_texts(const char *const *names, const char *const *texts, const size_t *lens,
                      size_t n, schema_t **out, char *errstr, size_t errsize)
{
    loader_t L = { 0 };
    int rc = SL_ENOMEM;
    *out = NULL;
    if (errsize) errstr[0] = '\0';
    if (n == 0) {
        snprintf(errstr, errsize, "no schema files given");
        return SL_EINVAL;
    }
    L.errstr = errstr;
    L.errsize = errsize;
    if (!(L.s = calloc(1, sizeof *L.s))) goto fail;
    if (!(L.s->files = calloc(n, sizeof *L.s->files))) goto fail;
    if (!(L.docs = calloc(n, sizeof *L.docs))) goto fail;
    for (size_t i = 0; i < n; i++) {
        if (!(L.s->files[i] = xstrdup(names[i]))) goto fail;
        L.s->n_files++;
    }
    for (size_t i = 0; i < n; i++) {
        rc = sy_doc_load(&L.docs[i], L.s->files[i], texts[i], lens[i], errstr, errsize);
        L.n_docs++;   /* even on failure: sy_doc_free releases what was loaded */
        if (rc) goto fail;
    }
    if ((rc = load_docs(&L))) goto fail;
    for (size_t i = 0; i < L.n_docs; i++) sy_doc_free(&L.docs[i]);
    free(L.docs);
    free(L.src_doc);
    free(L.src_node);
    *out = L.s;
    return SL_OK;
fail:
    if (rc == SL_ENOMEM && !errstr[0]) snprintf(errstr, errsize, "out of memory");
    for (size_t i = 0; i < L.n_docs; i++) sy_doc_free(&L.docs[i]);
    free(L.docs);
    free(L.src_doc);
    free(L.src_node);
    schema_free(L.s);
    return rc;
}

int schema_load_string(const char *name, const char *text, size_t len, schema_t **out,
                       char *errstr, size_t errsize)
{
    return load_texts(&name, &text, &len, 1, out, errstr, errsize);
}

static int read_file(const char *path, char **text, size_t *len, char *errstr, size_t errsize)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(errstr, errsize, "%s: cannot open: %s", path, strerror(errno));
        return SL_EIO;
    }
    sl_buf_t b = SL_BUF_INIT;
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
        if (b.len + n > SCHEMA_MAX_FILE_BYTES) {
            snprintf(errstr, errsize, "%s: file is larger than %u bytes", path, SCHEMA_MAX_FILE_BYTES);
            fclose(f);
            sl_buf_free(&b);
            return SL_ETOOBIG;
        }
        if (sl_buf_append(&b, chunk, n)) {
            fclose(f);
            sl_buf_free(&b);
            return SL_ENOMEM;
        }
    }
    int err = ferror(f);
    fclose(f);
    if (err) {
        snprintf(errstr, errsize, "%s: read error", path);
        sl_buf_free(&b);
        return SL_EIO;
    }
    if (memchr(b.data, '\0', b.len)) {
        snprintf(errstr, errsize, "%s:1:1: not valid YAML: the file contains NUL bytes", path);
        sl_buf_free(&b);
        return SL_EPARSE;
    }
    if (sl_buf_append(&b, "", 1)) { sl_buf_free(&b); return SL_ENOMEM; }
    *text = (char *)b.data;
    *len = b.len - 1;
    return SL_OK;
}

/* The pack: "sluice-schema-pack 1\n", then per file "NAMELEN TEXTLEN\n",
 * the name and the text (no terminators). */
#define PACK_MAGIC "sluice-schema-pack 1\n"

static int pack_texts(const char *const *names, char *const *texts, const size_t *lens, size_t n,
                      char **pack, size_t *pack_len)
{
    sl_buf_t b = SL_BUF_INIT;
    int rc = sl_buf_append_str(&b, PACK_MAGIC);
    for (size_t i = 0; !rc && i < n; i++) {
        size_t nl = strlen(names[i]);
        rc = sl_buf_printf(&b, "%zu %zu\n", nl, lens[i]);
        if (!rc) rc = sl_buf_append(&b, names[i], nl);
        if (!rc) rc = sl_buf_append(&b, texts[i], lens[i]);
    }
    if (rc) {
        sl_buf_free(&b);
        return SL_ENOMEM;
    }
    *pack = (char *)b.data;
    *pack_len = b.len;
    return SL_OK;
}

static int load_files(const char *const *paths, size_t n_paths, schema_t **out, char **pack,
                      size_t *pack_len, char *errstr, size_t errsize)
{
    char **texts = calloc(n_paths ? n_paths : 1, sizeof *texts);
    size_t *lens = calloc(n_paths ? n_paths : 1, sizeof *lens);
    int rc = SL_ENOMEM;
    *out = NULL;
    if (!texts || !lens) goto done;
    for (size_t i = 0; i < n_paths; i++)
        if ((rc = read_file(paths[i], &texts[i], &lens[i], errstr, errsize))) goto done;
    rc = load_texts(paths, (const char *const *)texts, lens, n_paths, out, errstr, errsize);
    if (!rc && pack && (rc = pack_texts(paths, texts, lens, n_paths, pack, pack_len))) {
        schema_free(*out);
        *out = NULL;
        snprintf(errstr, errsize, "out of memory");
    }
done:
    if (texts)
        for (size_t i = 0; i < n_paths; i++) free(texts[i]);
    free(texts);
    free(lens);
    return rc;
}

int schema_load(const char *const *paths, size_t n_paths, schema_t **out, char *errstr,
                size_t errsize)
{
    return load_files(paths, n_paths, out, NULL, NULL, errstr, errsize);
}

int schema_load_pack(const char *const *paths, size_t n_paths, schema_t **out, char **pack,
                     size_t *pack_len, char *errstr, size_t errsize)
{
    *pack = NULL;
    *pack_len = 0;
    return load_files(paths, n_paths, out, pack, pack_len, errstr, errsize);
}

/* Reads "A B\n" at *p (decimal, no sign), advancing *p; false if malformed. */
static bool pack_header(const char **p, const char *end, size_t *a, size_t *b)
{
    size_t *outs[2] = { a, b };
    for (int k = 0; k < 2; k++) {
        size_t v = 0, digits = 0;
        while (*p < end && **p >= '0' && **p <= '9' && digits < 19) {
            v = v * 10 + (size_t)(**p - '0');
            (*p)++;
            digits++;
        }
        if (!digits || *p >= end || **p != (k ? '\n' : ' ')) return false;
        (*p)++;
        *outs[k] = v;
    }
    return true;
}

int schema_load_packed(const void *pack, size_t len, schema_t **out, char *errstr, size_t errsize)
{
    const char *p = pack, *end = p + len;
    const size_t ml = sizeof PACK_MAGIC - 1;
    *out = NULL;
    if (len < ml || memcmp(p, PACK_MAGIC, ml) != 0) {
        snprintf(errstr, errsize, "not a packed schema");
        return SL_EPARSE;
    }
    p += ml;
    size_t n = 0, cap = 0;
    char **names = NULL, **texts = NULL;
    size_t *lens = NULL;
    int rc = SL_OK;
    while (p < end) {
        size_t nl, tl;
        if (!pack_header(&p, end, &nl, &tl) || nl > (size_t)(end - p) || tl > (size_t)(end - p) - nl) {
            snprintf(errstr, errsize, "packed schema: file %zu is cut or malformed", n + 1);
            rc = SL_EPARSE;
            goto done;
        }
        if (memchr(p, '\0', nl + tl)) {
            snprintf(errstr, errsize, "packed schema: file %zu holds a NUL byte", n + 1);
            rc = SL_EPARSE;
            goto done;
        }
        if (n == cap) {
            size_t nc = cap ? cap * 2 : 4;
            char **nn = realloc(names, nc * sizeof *nn);
            if (!nn) { rc = SL_ENOMEM; goto done; }
            names = nn;
            char **nt = realloc(texts, nc * sizeof *nt);
            if (!nt) { rc = SL_ENOMEM; goto done; }
            texts = nt;
            size_t *nls = realloc(lens, nc * sizeof *nls);
            if (!nls) { rc = SL_ENOMEM; goto done; }
            lens = nls;
            cap = nc;
        }
        /* copies with a terminator (the pack has none: not strndup, which
         * may look for one past the end) */
        names[n] = malloc(nl + 1);
        texts[n] = malloc(tl + 1);
        lens[n] = tl;
        n++;
        if (!names[n - 1] || !texts[n - 1]) { rc = SL_ENOMEM; goto done; }
        memcpy(names[n - 1], p, nl);
        names[n - 1][nl] = '\0';
        memcpy(texts[n - 1], p + nl, tl);
        texts[n - 1][tl] = '\0';
        p += nl + tl;
    }
    rc = load_texts((const char *const *)names, (const char *const *)texts, lens, n, out, errstr, errsize);
done:
    if (rc == SL_ENOMEM) snprintf(errstr, errsize, "out of memory");
    for (size_t i = 0; i < n; i++) {
        free(names[i]);
        free(texts[i]);
    }
    free(names);
    free(texts);
    free(lens);
    return rc;
}

/* ---- lookups and free -------------------------------------------------- */

int schema_view_index(const schema_t *s, const char *name)
{
    for (size_t i = 0; i < s->n_views; i++)
        if (!strcmp(s->views[i].name, name)) return (int)i;
    return -1;
}

int schema_feature_index(const schema_view_t *v, const char *name)
{
    for (size_t i = 0; i < v->n_features; i++)
        if (!strcmp(v->features[i].name, name)) return (int)i;
    return -1;
}

int schema_service_index(const schema_t *s, const char *name)
{
    for (size_t i = 0; i < s->n_services; i++)
        if (!strcmp(s->services[i].name, name)) return (int)i;
    return -1;
}

int schema_source_index(const schema_t *s, const char *name)
{
    for (size_t i = 0; i < s->n_sources; i++)
        if (!strcmp(s->sources[i].name, name)) return (int)i;
    return -1;
}

void schema_free(schema_t *s)
{
    if (!s) return;
    for (size_t i = 0; i < s->n_files; i++) free(s->files[i]);
    free(s->files);
    for (size_t i = 0; i < s->n_entities; i++) {
        schema_entity_t *e = &s->entities[i];
        for (size_t k = 0; k < e->n_keys; k++) free(e->keys[k]);
        free(e->keys);
        free(e->key_types);
        free(e->name);
    }
    free(s->entities);
    for (size_t i = 0; i < s->n_sources; i++) {
        schema_source_t *src = &s->sources[i];
        for (size_t f = 0; f < src->n_fields; f++) free(src->fields[f].name);
        free(src->fields);
        free(src->msg_key_fields);
        free(src->name);
        free(src->topic);
    }
    free(s->sources);
    for (size_t i = 0; i < s->n_views; i++) {
        schema_view_t *v = &s->views[i];
        for (size_t f = 0; f < v->n_features; f++) free(v->features[f].name);
        free(v->features);
        free(v->key_fields);
        free(v->filter.s);
        free(v->name);
    }
    free(s->views);
    for (size_t i = 0; i < s->n_services; i++) {
        free(s->services[i].refs);
        free(s->services[i].name);
    }
    free(s->services);
    free(s);
}
