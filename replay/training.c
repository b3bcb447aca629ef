/*
 * training.c — point-in-time training sets (contract in training.h).
 *
 * 1. Labels. The label file is read once into memory: per row its time, the
 *    encoded entity key of every entity the service uses (entity_key.h, the
 *    bytes serving looks up), and the row's CSV text for the output. Rows
 *    are then ordered by (time, row number). Memory: O(labels).
 *
 * 2. One pass per source topic feeding the service (features of different
 *    topics never interact). The topic is replayed from the earliest offset
 *    up to the high watermarks of the start (replay.h). Each message goes
 *    through the live path's decisions, partition by partition in offset
 *    order: decode (the source's decoder), then the partition watermark and
 *    the lateness rule (watermark.h) — so exactly the events live ingest
 *    accepts are kept, the same ones dropped.
 *
 * 3. Event-time order. Kept events wait in a min-heap on event time. The
 *    release FRONTIER is the minimum over unfinished partitions of their
 *    accept_from (watermark - allowed lateness); a finished partition does
 *    not count. Any event still to come from partition p has time >=
 *    accept_from(p) >= frontier (accept_from only grows), so the events with
 *    time < frontier are final and leave the heap in time order:
 *
 *        for each released event e (increasing time):
 *            answer every label with ts < e.time     (state = events <= ts)
 *            apply e to its entity in every view of the service on this topic
 *        then answer every label with ts < frontier
 *
 *    When every partition is finished the frontier is +inf and everything
 *    drains. A label at ts is answered with agg_entity_query(ts) on a state
 *    holding exactly the accepted events with time <= ts. Once every label is
 *    answered the pass stops reading.
 *
 * 4. Memory bound: the heap holds at most max_buffered_events (plus one
 *    fetch): above it every unfinished partition except those holding the
 *    frontier is paused (replay_pause_partition), below half it resumes.
 *    The frontier partition always reads, so the frontier always advances.
 *    Only LABELLED entities get a state: before the pass every (view,
 *    entity key) some label names gets a node counting its labels; an
 *    event that feeds no such node with labels still pending is not even
 *    buffered (entities are independent; the watermarks are judged per
 *    partition before, on every event), and a buffered one carries its
 *    nodes, so its keys are encoded and looked up once. A state
 *    is created by its entity's first event and freed once its last label
 *    is answered. Total: O(labels + labelled entities awaiting a label +
 *    buffer), never O(topic), nor O(entities of the topic).
 *
 * 5. Output: label rows in input order, each followed by one cell per
 *    feature of the service, formatted as the serving tier formats values.
 *    Answers are kept per (label, view) as one offset into an arena of
 *    length-prefixed cells (~24 B + the text for 3 views), not per cell.
 *
 * Threads: one.
 */
#include "training.h"

#include "csv.h"
#include "decode.h"
#include "entity_key.h"
#include "replay.h"
#include "resp_reply.h"
#include "watermark.h"

#include "sl_err.h"
#include "sl_log.h"
#include "sl_time.h"

#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#define MAX_ENTS 8            /* distinct entities of one service */
#define KEY_PARTS_MAX 16      /* key components of one entity (as ingest) */

typedef struct label {
    int64_t ts;
    uint32_t row;
    size_t text_off;          /* CSV text of the row in labels arena */
    uint32_t text_len;
    size_t key_off;           /* keys arena: per entity of the service, [u32 len][key bytes] */
} label_t;

/* No answer stored for a (label, view slot): every cell of it is empty. */
#define NO_ANSWER SIZE_MAX
#define MAX_SLOTS 64          /* distinct views of one service */

typedef struct job {
    const sl_config_t *cfg;
    const schema_t *schema;
    const training_options_t *o;
    const schema_service_t *svc;
    training_stats_t *stats;
    int ents[MAX_ENTS];       /* entity indexes used by the service */
    size_t n_ents;
    sl_buf_t header;          /* CSV header of the label file */
    sl_buf_t text, keys, vals;
    label_t *labels;
    size_t n_labels, cap_labels;
    uint32_t *order;          /* label indexes sorted by (ts, row) */
    /* Answers: per (label, slot), slot = one distinct view of the service,
     * the offset in vals of that view's cells for the label, each cell
     * [varint length][text], in the order of the service's refs; NO_ANSWER
     * when the entity had no state at the label's time. ~1 offset per view
     * and 1-2 bytes per cell on top of the text: compact for millions of
     * rows. */
    int slot_view[MAX_SLOTS]; /* slot -> view index */
    size_t n_slots;
    int *ref_slot;            /* [n_refs] */
    size_t *answers;          /* [label * n_slots + slot] */
} job_t;

static void seterr(char *errstr, size_t errsize, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void seterr(char *errstr, size_t errsize, const char *fmt, ...)
{
    if (!errstr || !errsize) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(errstr, errsize, fmt, ap);
    va_end(ap);
}

/* ---- value formatting (as serving does) ------------------------------- */

static int json_str(sl_buf_t *b, const char *s, size_t n)
{
    if (sl_buf_append(b, "\"", 1)) return SL_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        int rc;
        if (c == '"' || c == '\\') rc = sl_buf_printf(b, "\\%c", c);
        else if (c < 0x20) rc = sl_buf_printf(b, "\\u%04x", c);
        else rc = sl_buf_append(b, &c, 1);
        if (rc) return rc;
    }
    return sl_buf_append(b, "\"", 1);
}

static int put_double(sl_buf_t *b, double d)
{
    char tmp[40];
    size_t n = resp_format_double(d, tmp, sizeof tmp);
    return sl_buf_append(b, tmp, n);
}

int training_format_value(sl_buf_t *b, const agg_value_t *v)
{
    switch (v->type) {
    case AGG_VAL_INT: return sl_buf_printf(b, "%lld", (long long)v->i);
    case AGG_VAL_DOUBLE: return put_double(b, v->d);
    case AGG_VAL_STRING: return v->slen ? sl_buf_append(b, v->s, v->slen) : 0;
    case AGG_VAL_LIST: {
        int rc = sl_buf_append(b, "[", 1);
        for (size_t i = 0; !rc && i < v->n_items; i++) {
            const agg_scalar_t *s = &v->items[i];
            if (i) rc = sl_buf_append(b, ",", 1);
            if (rc) break;
            if (s->type == AGG_VAL_INT) rc = sl_buf_printf(b, "%lld", (long long)s->i);
            else if (s->type == AGG_VAL_DOUBLE) rc = put_double(b, s->d);
            else if (s->type == AGG_VAL_STRING) rc = json_str(b, s->s, s->slen);
            else rc = sl_buf_append(b, "null", 4);
        }
        return rc ? rc : sl_buf_append(b, "]", 1);
    }
    default: return 0;
    }
}

/* ---- labels ----------------------------------------------------------- */

static int parse_time(const char *s, size_t n, int64_t *out)
{
    if (n == 0) return SL_EPARSE;
    size_t i = s[0] == '-' ? 1 : 0;
    bool digits = i < n;
    for (size_t k = i; k < n && digits; k++) digits = s[k] >= '0' && s[k] <= '9';
    if (digits) {
        if (n - i > 18) return SL_EPARSE;
        errno = 0;
        long long v = strtoll(s, NULL, 10);
        if (errno) return SL_EPARSE;
        *out = v;
        return 0;
    }
    return sl_rfc3339_parse(s, n, out);
}

static int labels_read(job_t *j, char *errstr, size_t errsize)
{
    const char *path = j->o->labels_path;
    const char *tcol = j->o->time_column && *j->o->time_column ? j->o->time_column : "timestamp";
    csv_reader_t *r = NULL;
    char e[512];
    int rc = csv_reader_open(path, &r, e, sizeof e);
    if (rc) { seterr(errstr, errsize, "%s", e); return rc; }
    int n = csv_read_row(r, e, sizeof e);
    if (n <= 0) {
        rc = n < 0 ? n : SL_EINVAL;
        seterr(errstr, errsize, "%s: %s", path, n < 0 ? e : "empty file (a header row is needed)");
        goto out;
    }
    size_t ncols = (size_t)n;
    int time_idx = -1;
    int key_idx[MAX_ENTS][KEY_PARTS_MAX];
    for (size_t c = 0; c < ncols; c++) {
        size_t len;
        const char *f = csv_field(r, c, &len);
        if (strlen(tcol) == len && memcmp(f, tcol, len) == 0) time_idx = (int)c;
        if ((rc = csv_put_field(&j->header, f, len)) || (c + 1 < ncols && sl_buf_append(&j->header, ",", 1)))
            goto nomem;
    }
    if (time_idx < 0) {
        seterr(errstr, errsize, "%s: no timestamp column '%s' in the header (use --time-column)", path, tcol);
        rc = SL_EINVAL;
        goto out;
    }
    for (size_t k = 0; k < j->n_ents; k++) {
        const schema_entity_t *ent = &j->schema->entities[j->ents[k]];
        for (size_t p = 0; p < ent->n_keys; p++) {
            key_idx[k][p] = -1;
            for (size_t c = 0; c < ncols; c++) {
                size_t len;
                const char *f = csv_field(r, c, &len);
                if (strlen(ent->keys[p]) == len && memcmp(f, ent->keys[p], len) == 0) key_idx[k][p] = (int)c;
            }
            if (key_idx[k][p] < 0) {
                seterr(errstr, errsize, "%s: no column '%s' (key of entity '%s') in the header", path,
                       ent->keys[p], ent->name);
                rc = SL_EINVAL;
                goto out;
            }
        }
    }
    int64_t next_note = sl_mono_ns() + j->o->progress_ms * 1000000LL;
    for (;;) {
        n = csv_read_row(r, e, sizeof e);
        if (n == 0) break;
        /* Millions of rows take seconds: say how far reading got. */
        if (j->o->progress_ms > 0 && (j->n_labels & 0xffff) == 0 && sl_mono_ns() >= next_note) {
            sl_info("training", "reading labels: %zu rows so far", j->n_labels);
            next_note = sl_mono_ns() + j->o->progress_ms * 1000000LL;
        }
        if (n < 0) { rc = n; seterr(errstr, errsize, "%s: %s", path, e); goto out; }
        long line = csv_row_line(r);
        if (n == 1) {
            size_t len;
            csv_field(r, 0, &len);
            if (len == 0) continue;           /* blank line */
        }
        if ((size_t)n != ncols) {
            seterr(errstr, errsize, "%s:%ld: %d fields, the header has %zu", path, line, n, ncols);
            rc = SL_EPARSE;
            goto out;
        }
        if (j->n_labels == UINT32_MAX) { seterr(errstr, errsize, "too many label rows"); rc = SL_ETOOBIG; goto out; }
        if (j->n_labels == j->cap_labels) {
            size_t cap = j->cap_labels ? j->cap_labels * 2 : 1024;
            label_t *nl = realloc(j->labels, cap * sizeof *nl);
            if (!nl) goto nomem;
            j->labels = nl;
            j->cap_labels = cap;
        }
        label_t *lb = &j->labels[j->n_labels];
        memset(lb, 0, sizeof *lb);
        lb->row = (uint32_t)j->n_labels;
        size_t tl;
        const char *tf = csv_field(r, (size_t)time_idx, &tl);
        if (parse_time(tf, tl, &lb->ts)) {
            seterr(errstr, errsize, "%s:%ld: timestamp '%.*s' is neither epoch ms nor RFC 3339", path,
                   line, (int)(tl > 64 ? 64 : tl), tf);
            rc = SL_EINVAL;
            goto out;
        }
        lb->text_off = j->text.len;
        for (size_t c = 0; c < ncols; c++) {
            size_t len;
            const char *f = csv_field(r, c, &len);
            if ((c && sl_buf_append(&j->text, ",", 1)) || csv_put_field(&j->text, f, len)) goto nomem;
        }
        lb->text_len = (uint32_t)(j->text.len - lb->text_off);
        for (size_t k = 0; k < j->n_ents; k++) {
            const schema_entity_t *ent = &j->schema->entities[j->ents[k]];
            const char *parts[KEY_PARTS_MAX];
            size_t lens[KEY_PARTS_MAX];
            for (size_t p = 0; p < ent->n_keys; p++) parts[p] = csv_field(r, (size_t)key_idx[k][p], &lens[p]);
            if (k == 0) lb->key_off = j->keys.len;
            size_t at = j->keys.len;
            if (sl_buf_append(&j->keys, "\0\0\0\0", 4)) goto nomem;
            rc = ingest_key_from_text(&j->keys, ent, parts, lens, ent->n_keys);
            if (rc == SL_ENOMEM) goto nomem;
            if (rc) {
                seterr(errstr, errsize, "%s:%ld: the key of entity '%s' is not valid for its type(s)",
                       path, line, ent->name);
                rc = SL_EINVAL;
                goto out;
            }
            uint32_t kl = (uint32_t)(j->keys.len - at - 4);
            memcpy(j->keys.data + at, &kl, 4);
        }
        j->n_labels++;
    }
    rc = 0;
    goto out;
nomem:
    rc = SL_ENOMEM;
    seterr(errstr, errsize, "out of memory reading labels");
out:
    csv_reader_free(r);
    return rc;
}

static const label_t *sort_base;
static int cmp_label(const void *a, const void *b)
{
    const label_t *x = &sort_base[*(const uint32_t *)a], *y = &sort_base[*(const uint32_t *)b];
    if (x->ts != y->ts) return x->ts < y->ts ? -1 : 1;
    return x->row < y->row ? -1 : x->row > y->row;
}

/* ---- per-view entity maps --------------------------------------------- */

/* One labelled entity of a view: its state exists from its first event
 * until its last label is answered (pending == 0), then it is freed and the
 * entity's further events are skipped. An entity no label asks for has no
 * node, and its events are never applied. */
typedef struct enode {
    struct enode *next;
    uint64_t hash;
    agg_entity_t *ent;        /* NULL before its first event and once done */
    uint32_t updates;
    uint32_t pending;         /* labels of this entity not answered yet */
    uint32_t klen;
    unsigned char key[];
} enode_t;

typedef struct emap {
    enode_t **slots;
    size_t n, cap;            /* cap is a power of two */
} emap_t;

static enode_t *emap_find(emap_t *m, const void *key, size_t klen, uint64_t h)
{
    if (!m->cap) return NULL;
    for (enode_t *e = m->slots[h & (m->cap - 1)]; e; e = e->next)
        if (e->hash == h && e->klen == klen && memcmp(e->key, key, klen) == 0) return e;
    return NULL;
}

static enode_t *emap_insert(emap_t *m, const void *key, size_t klen, uint64_t h, agg_entity_t *ent)
{
    if (m->n >= m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 1024;
        enode_t **ns = calloc(cap, sizeof *ns);
        if (!ns) return NULL;
        for (size_t i = 0; i < m->cap; i++)
            for (enode_t *e = m->slots[i], *nx; e; e = nx) {
                nx = e->next;
                e->next = ns[e->hash & (cap - 1)];
                ns[e->hash & (cap - 1)] = e;
            }
        free(m->slots);
        m->slots = ns;
        m->cap = cap;
    }
    enode_t *e = malloc(sizeof *e + klen);
    if (!e) return NULL;
    e->hash = h;
    e->ent = ent;
    e->updates = 0;
    e->pending = 0;
    e->klen = (uint32_t)klen;
    memcpy(e->key, key, klen);
    e->next = m->slots[h & (m->cap - 1)];
    m->slots[h & (m->cap - 1)] = e;
    m->n++;
    return e;
}

static void emap_free(emap_t *m)
{
    for (size_t i = 0; i < m->cap; i++)
        for (enode_t *e = m->slots[i], *nx; e; e = nx) {
            nx = e->next;
            agg_entity_free(e->ent);
            free(e);
        }
    free(m->slots);
    memset(m, 0, sizeof *m);
}

/* ---- buffered events ---------------------------------------------------- */

typedef struct pev {
    int64_t time;
    int64_t accept_from;      /* the partition's accept_from when it arrived */
    uint64_t seq;             /* (partition << 48) | offset: ties in a fixed order */
    size_t n_fields;
    enode_t **nodes;          /* per view of the pass: the labelled entity it feeds, or NULL */
    agg_input_t fields[];     /* then the node pointers, then the strings */
} pev_t;

/* A min-heap on (time, seq) with the keys beside the pointers, so sifting
 * compares without touching the events (a buffer of ~100k events would
 * otherwise cost two cache misses per level). */
typedef struct hent {
    int64_t time;
    uint64_t seq;
    pev_t *e;
} hent_t;

typedef struct heap {
    hent_t *a;
    size_t n, cap;
} heap_t;

static inline bool hent_less(const hent_t *x, const hent_t *y)
{
    return x->time != y->time ? x->time < y->time : x->seq < y->seq;
}

static int heap_push(heap_t *h, pev_t *e)
{
    if (h->n == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 4096;
        hent_t *na = realloc(h->a, cap * sizeof *na);
        if (!na) return SL_ENOMEM;
        h->a = na;
        h->cap = cap;
    }
    hent_t x = { e->time, e->seq, e };
    size_t i = h->n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!hent_less(&x, &h->a[p])) break;
        h->a[i] = h->a[p];
        i = p;
    }
    h->a[i] = x;
    return 0;
}

static pev_t *heap_pop(heap_t *h)
{
    pev_t *top = h->a[0].e;
    hent_t last = h->a[--h->n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= h->n) break;
        if (c + 1 < h->n && hent_less(&h->a[c + 1], &h->a[c])) c++;
        if (!hent_less(&h->a[c], &last)) break;
        h->a[i] = h->a[c];
        i = c;
    }
    if (h->n) h->a[i] = last;
    return top;
}

static pev_t *pev_copy(const ingest_record_t *rec, int64_t accept_from, uint64_t seq,
                       enode_t *const *nodes, size_t n_views)
{
    size_t strbytes = 0;
    for (size_t i = 0; i < rec->n_fields; i++)
        if (rec->fields[i].type == AGG_IN_STRING) strbytes += rec->fields[i].slen;
    pev_t *e = malloc(sizeof *e + rec->n_fields * sizeof(agg_input_t) + n_views * sizeof(enode_t *) +
                      strbytes);
    if (!e) return NULL;
    e->time = rec->time_ms;
    e->accept_from = accept_from;
    e->seq = seq;
    e->n_fields = rec->n_fields;
    e->nodes = (enode_t **)(e->fields + rec->n_fields);
    if (n_views) memcpy(e->nodes, nodes, n_views * sizeof(enode_t *));
    char *sp = (char *)(e->nodes + n_views);
    for (size_t i = 0; i < rec->n_fields; i++) {
        e->fields[i] = rec->fields[i];
        if (rec->fields[i].type == AGG_IN_STRING) {
            if (rec->fields[i].slen) memcpy(sp, rec->fields[i].s, rec->fields[i].slen);
            e->fields[i].s = sp;
            sp += rec->fields[i].slen;
        }
    }
    return e;
}

/* ---- one topic pass ------------------------------------------------------ */

typedef struct pass {
    job_t *j;
    int source;
    int views[64];            /* service views fed by this source */
    size_t n_views;
    int view_ent[64];         /* index into j->ents */
    size_t slot[64];          /* answer slot of the view (j->slot_view) */
    agg_plan_t *plans[64];
    emap_t maps[64];
    agg_value_t *vals;        /* scratch for queries */
    size_t max_features;
    sl_buf_t key;
    sl_buf_t cell;            /* scratch: one formatted cell */
    agg_input_t keyvals[16];
    size_t cursor;            /* next label in j->order to answer */
    uint64_t live, peak;      /* entity states held now, at most */
} pass_t;

/* The encoded key of entity slot k of a label (the keys arena). */
static const void *label_key(const job_t *j, const label_t *lb, int k, uint32_t *klen)
{
    const unsigned char *kp = j->keys.data + lb->key_off;
    for (int skip = 0;; skip++) {
        memcpy(klen, kp, 4);
        if (skip == k) break;
        kp += 4 + *klen;
    }
    return kp + 4;
}

static int put_varint(sl_buf_t *b, uint64_t v)
{
    unsigned char tmp[10];
    size_t n = 0;
    while (v >= 0x80) { tmp[n++] = (unsigned char)(v | 0x80); v >>= 7; }
    tmp[n++] = (unsigned char)v;
    return sl_buf_append(b, tmp, n);
}

static uint64_t get_varint(const unsigned char **p)
{
    uint64_t v = 0;
    for (int shift = 0;; shift += 7) {
        unsigned char c = *(*p)++;
        v |= (uint64_t)(c & 0x7f) << shift;
        if (!(c & 0x80)) return v;
    }
}

static int answer_label(pass_t *ps, const label_t *lb)
{
    job_t *j = ps->j;
    size_t nref = j->svc->n_refs;
    size_t li = (size_t)(lb - j->labels);
    for (size_t v = 0; v < ps->n_views; v++) {
        int vi = ps->views[v];
        uint32_t kl;
        const void *key = label_key(j, lb, ps->view_ent[v], &kl);
        enode_t *e = emap_find(&ps->maps[v], key, kl, XXH3_64bits(key, kl));
        assert(e && e->pending > 0);       /* every label's entity has a node (run_pass) */
        bool present = e->ent && !agg_entity_is_idle(ps->plans[v], e->ent, lb->ts);
        if (present) {
            agg_entity_query(ps->plans[v], e->ent, lb->ts, ps->vals);
            j->answers[li * j->n_slots + ps->slot[v]] = j->vals.len;
            for (size_t r = 0; r < nref; r++) {
                if (j->svc->refs[r].view != vi) continue;
                sl_buf_reset(&ps->cell);
                if (training_format_value(&ps->cell, &ps->vals[j->svc->refs[r].feature]) ||
                    put_varint(&j->vals, ps->cell.len) || sl_buf_append(&j->vals, ps->cell.data, ps->cell.len))
                    return SL_ENOMEM;
            }
        }
        /* The entity's last label: its state is never read again. */
        if (--e->pending == 0 && e->ent) {
            agg_entity_free(e->ent);
            e->ent = NULL;
            ps->live--;
        }
    }
    return 0;
}

/* Answers labels (in time order) with ts < limit. */
static int answer_until(pass_t *ps, int64_t limit)
{
    job_t *j = ps->j;
    while (ps->cursor < j->n_labels) {
        const label_t *lb = &j->labels[j->order[ps->cursor]];
        if (lb->ts >= limit) break;
        int rc = answer_label(ps, lb);
        if (rc) return rc;
        ps->cursor++;
    }
    return 0;
}

/* Per view of the pass, the labelled entity an event feeds (NULL: the
 * view's filter drops it, its key is unusable, or no label asks for the
 * entity any more). Entities are independent, so an event that feeds no
 * labelled entity changes no answer and is not buffered at all (watermarks
 * are per partition, judged before). Returns -1 (SL_ENOMEM) or the number
 * of non-NULL nodes. The nodes live until the pass ends (never removed). */
static int event_nodes(pass_t *ps, const agg_input_t *fields, enode_t **nodes)
{
    const schema_t *schema = ps->j->schema;
    int n = 0;
    for (size_t v = 0; v < ps->n_views; v++) {
        nodes[v] = NULL;
        const schema_view_t *view = &schema->views[ps->views[v]];
        if (!ingest_filter_match(&view->filter, fields)) continue;
        const schema_entity_t *ent = &schema->entities[view->entity];
        for (size_t k = 0; k < ent->n_keys; k++) ps->keyvals[k] = fields[view->key_fields[k]];
        sl_buf_reset(&ps->key);
        int rc = ingest_key_encode(&ps->key, ent->key_types, ps->keyvals, ent->n_keys);
        if (rc == SL_ENOMEM) return -1;
        if (rc) continue;
        uint64_t h = XXH3_64bits(ps->key.data, ps->key.len);
        enode_t *e = emap_find(&ps->maps[v], ps->key.data, ps->key.len, h);
        if (!e || e->pending == 0) continue;
        nodes[v] = e;
        n++;
    }
    return n;
}

static int apply_event(pass_t *ps, const pev_t *ev)
{
    agg_event_t aev = { ev->time, ev->fields, ev->n_fields };
    for (size_t v = 0; v < ps->n_views; v++) {
        enode_t *e = ev->nodes[v];
        /* its last label may have been answered since it was buffered */
        if (!e || e->pending == 0) continue;
        if (!e->ent) {
            if (!(e->ent = agg_entity_new(ps->plans[v]))) return SL_ENOMEM;
            if (++ps->live > ps->peak) ps->peak = ps->live;
        }
        int rc = agg_entity_update(ps->plans[v], e->ent, &aev, ev->accept_from);
        if (rc == SL_ENOMEM) return rc;
        /* Pending labels all have ts >= ev->time: state older than every
         * window at that time is never queried again. */
        if ((++e->updates & 255) == 0) agg_entity_expire(ps->plans[v], e->ent, ev->time);
    }
    return 0;
}

static int run_pass(job_t *j, int source, char *errstr, size_t errsize)
{
    const schema_t *schema = j->schema;
    const schema_source_t *src = &schema->sources[source];
    pass_t ps;
    memset(&ps, 0, sizeof ps);
    ps.j = j;
    ps.source = source;
    int rc = 0;
    replay_t *r = NULL;
    ingest_decoder_t *dec = NULL;
    ingest_wm_t *wm = NULL;
    heap_t heap = { 0 };
    enode_t *nodes[64];       /* scratch: event_nodes of one event */
    uint64_t n_events = 0, n_bad = 0, n_late = 0;
    size_t cap = j->o->max_buffered_events ? j->o->max_buffered_events : 100000;
    bool throttled = false;

    for (size_t r2 = 0; r2 < j->svc->n_refs; r2++) {
        int vi = j->svc->refs[r2].view;
        if (schema->views[vi].source != source) continue;
        bool seen = false;
        for (size_t v = 0; v < ps.n_views; v++) seen |= ps.views[v] == vi;
        if (seen) continue;
        if (ps.n_views == 64) { seterr(errstr, errsize, "too many views in one service"); rc = SL_EINVAL; goto out; }
        ps.views[ps.n_views] = vi;
        for (size_t k = 0; k < j->n_ents; k++)
            if (j->ents[k] == schema->views[vi].entity) ps.view_ent[ps.n_views] = (int)k;
        for (size_t sl = 0; sl < j->n_slots; sl++)
            if (j->slot_view[sl] == vi) ps.slot[ps.n_views] = sl;
        if ((rc = agg_plan_new(schema, vi, &ps.plans[ps.n_views], errstr, errsize))) goto out;
        if (schema->views[vi].n_features > ps.max_features) ps.max_features = schema->views[vi].n_features;
        ps.n_views++;
    }
    if (!(ps.vals = calloc(ps.max_features ? ps.max_features : 1, sizeof *ps.vals))) { rc = SL_ENOMEM; goto out; }
    /* A node per labelled entity and view, counting its labels: only these
     * entities get a state, each until its last label is answered. */
    for (size_t v = 0; v < ps.n_views; v++)
        for (size_t i = 0; i < j->n_labels; i++) {
            uint32_t kl;
            const void *key = label_key(j, &j->labels[i], ps.view_ent[v], &kl);
            uint64_t h = XXH3_64bits(key, kl);
            enode_t *e = emap_find(&ps.maps[v], key, kl, h);
            if (!e && !(e = emap_insert(&ps.maps[v], key, kl, h, NULL))) { rc = SL_ENOMEM; goto out; }
            e->pending++;
        }
    size_t maxb = j->cfg->max_message_bytes > 0 ? (size_t)j->cfg->max_message_bytes : 0;
    if ((rc = ingest_decoder_new(schema, source, maxb, &dec, errstr, errsize))) goto out;

    char what[300];
    snprintf(what, sizeof what, "training-set %s", src->topic);
    replay_options_t ro = { .topic = src->topic, .from_ms = REPLAY_FROM_EARLIEST, .what = what,
                            .progress_ms = j->o->progress_ms };
    if ((rc = replay_new(j->cfg, &ro, &r, errstr, errsize))) goto out;
    size_t np = replay_partition_count(r);
    if (!(wm = calloc(np, sizeof *wm))) { rc = SL_ENOMEM; goto out; }
    for (size_t p = 0; p < np; p++) ingest_wm_init(&wm[p], src->watermark_delay_ms, src->allowed_lateness_ms);
    if ((rc = replay_start(r, errstr, errsize))) goto out;

    int fatal = 0;
    int64_t frontier = INT64_MIN;
    unsigned iter = 0;
    while (ps.cursor < j->n_labels) {
        rd_kafka_message_t *m = NULL;
        bool done = replay_done(r);
        if (!done) {
            m = replay_poll(r, 100, &fatal);
            if (fatal) { seterr(errstr, errsize, "fatal Kafka error while replaying %s", src->topic); rc = SL_EKAFKA; goto out; }
        }
        bool moved = false;
        if (m) {
            ingest_record_t rec;
            ingest_bad_t bad = ingest_decode(dec, m->payload, m->payload ? m->len : 0, &rec, NULL, 0);
            ingest_wm_t *w = &wm[m->partition];
            int64_t before = ingest_wm_accept_from(w);
            if (bad != INGEST_OK) {
                n_bad++;
            } else if (ingest_wm_observe_is_late(w, rec.time_ms)) {
                n_late++;
            } else {
                /* Ties in event time leave in (partition, offset) order, so
                 * the output never depends on fetch timing or --buffer
                 * (double sums and variances fold in one fixed order). */
                uint64_t key = (uint64_t)m->partition << 48 | ((uint64_t)m->offset & 0xffffffffffffULL);
                int feeds = event_nodes(&ps, rec.fields, nodes);
                if (feeds < 0) { rc = SL_ENOMEM; goto out; }
                if (feeds == 0) {
                    n_events++;             /* accepted; no label reads what it feeds */
                    replay_count_events(r, 1);
                } else {
                    pev_t *e = pev_copy(&rec, ingest_wm_accept_from(w), key, nodes, ps.n_views);
                    if (!e || heap_push(&heap, e)) { free(e); rc = SL_ENOMEM; goto out; }
                    if (heap.n > j->stats->buffered_max) j->stats->buffered_max = heap.n;
                }
            }
            moved = ingest_wm_accept_from(w) != before;
            rd_kafka_message_destroy(m);
        }
        /* Frontier: min accept_from over unfinished partitions. Recomputed
         * when the message moved its partition's accept_from, when idle,
         * and every 256 messages (a stale frontier is lower, so it only
         * delays releases: always safe). */
        if (!m || moved || (++iter & 255) == 0) {
            frontier = INT64_MAX;
            for (size_t p = 0; p < np; p++) {
                replay_part_info_t pi;
                replay_partition(r, p, &pi);
                if (pi.position >= pi.end) continue;
                int64_t af = ingest_wm_accept_from(&wm[p]);
                if (af < frontier) frontier = af;
            }
        }
        while (heap.n && heap.a[0].time < frontier) {
            pev_t *e = heap_pop(&heap);
            if ((rc = answer_until(&ps, e->time)) || (rc = apply_event(&ps, e))) { free(e); goto out; }
            free(e);
            n_events++;
            replay_count_events(r, 1);
        }
        if ((rc = answer_until(&ps, frontier))) goto out;
        if (done && heap.n == 0) break;
        /* Flow control: above the cap, only the partitions holding the
         * frontier read (re-evaluated every time: the frontier moves). */
        if (heap.n > cap) {
            for (size_t p = 0; p < np; p++) {
                if (ingest_wm_accept_from(&wm[p]) > frontier) replay_pause_partition(r, (int32_t)p);
                else replay_resume_partition(r, (int32_t)p);
            }
            throttled = true;
        } else if (throttled && heap.n < cap / 2) {
            for (size_t p = 0; p < np; p++) replay_resume_partition(r, (int32_t)p);
            throttled = false;
        }
        replay_progress(r, false, false);
    }
    if ((rc = answer_until(&ps, INT64_MAX))) goto out;
    replay_progress(r, true, true);
    j->stats->messages += replay_messages(r);
    j->stats->events += n_events;
    j->stats->bad += n_bad;
    j->stats->late += n_late;
    uint64_t labelled = 0;
    for (size_t v = 0; v < ps.n_views; v++) labelled += ps.maps[v].n;
    if (ps.peak > j->stats->entities) j->stats->entities = ps.peak;
    sl_info("training", "topic %s: %llu messages, %llu events applied, %llu bad, %llu late; "
            "%llu labelled entities, at most %llu entity states at once, reorder buffer peak %llu",
            src->topic, (unsigned long long)replay_messages(r),
            (unsigned long long)n_events, (unsigned long long)n_bad, (unsigned long long)n_late,
            (unsigned long long)labelled, (unsigned long long)ps.peak,
            (unsigned long long)j->stats->buffered_max);
out:
    while (heap.n) free(heap_pop(&heap));
    free(heap.a);
    free(wm);
    replay_free(r);
    ingest_decoder_free(dec);
    for (size_t v = 0; v < ps.n_views; v++) {
        emap_free(&ps.maps[v]);
        agg_plan_free(ps.plans[v]);
    }
    free(ps.vals);
    sl_buf_free(&ps.key);
    sl_buf_free(&ps.cell);
    if (rc == SL_ENOMEM && errstr && !errstr[0]) seterr(errstr, errsize, "out of memory");
    return rc;
}

/* ---- output ------------------------------------------------------------ */

static int write_out(job_t *j, char *errstr, size_t errsize)
{
    const char *path = j->o->out_path;
    bool to_stdout = !path || strcmp(path, "-") == 0;
    FILE *f = to_stdout ? stdout : fopen(path, "wb");
    if (!f) { seterr(errstr, errsize, "%s: %s", path, strerror(errno)); return SL_EIO; }
    sl_buf_t line = SL_BUF_INIT;
    int rc = 0;
    size_t nref = j->svc->n_refs;
    /* One row's cells, found by walking each slot's cells in ref order. */
    const unsigned char **cell = malloc(nref * sizeof *cell);
    size_t *cell_len = malloc(nref * sizeof *cell_len);
    if (!cell || !cell_len) { rc = SL_ENOMEM; goto out; }
    sl_buf_append(&line, j->header.data, j->header.len);
    for (size_t r = 0; r < nref; r++) {
        const schema_view_t *v = &j->schema->views[j->svc->refs[r].view];
        char name[600];
        int n = snprintf(name, sizeof name, "%s.%s", v->name, v->features[j->svc->refs[r].feature].name);
        if (sl_buf_append(&line, ",", 1) || csv_put_field(&line, name, (size_t)n)) rc = SL_ENOMEM;
    }
    if (rc || sl_buf_append(&line, "\n", 1)) { rc = SL_ENOMEM; goto out; }
    int64_t next_note = sl_mono_ns() + j->o->progress_ms * 1000000LL;
    for (size_t i = 0; i < j->n_labels; i++) {
        const label_t *lb = &j->labels[i];
        if (j->o->progress_ms > 0 && (i & 0xffff) == 0 && i && sl_mono_ns() >= next_note) {
            sl_info("training", "writing: %.1f%% %zu/%zu rows", 100.0 * (double)i / (double)j->n_labels, i,
                    j->n_labels);
            next_note = sl_mono_ns() + j->o->progress_ms * 1000000LL;
        }
        if (sl_buf_append(&line, j->text.data + lb->text_off, lb->text_len)) { rc = SL_ENOMEM; goto out; }
        for (size_t sl = 0; sl < j->n_slots; sl++) {
            size_t off = j->answers[i * j->n_slots + sl];
            const unsigned char *p = off == NO_ANSWER ? NULL : j->vals.data + off;
            for (size_t r = 0; r < nref; r++) {
                if ((size_t)j->ref_slot[r] != sl) continue;
                cell_len[r] = p ? (size_t)get_varint(&p) : 0;
                cell[r] = p;
                if (p) p += cell_len[r];
            }
        }
        for (size_t r = 0; r < nref; r++) {
            if (sl_buf_append(&line, ",", 1) ||
                csv_put_field(&line, (const char *)cell[r], cell_len[r])) { rc = SL_ENOMEM; goto out; }
        }
        if (sl_buf_append(&line, "\n", 1)) { rc = SL_ENOMEM; goto out; }
        if (line.len > (1u << 16)) {
            if (fwrite(line.data, 1, line.len, f) != line.len) { rc = SL_EIO; break; }
            sl_buf_reset(&line);
        }
    }
    if (!rc && line.len && fwrite(line.data, 1, line.len, f) != line.len) rc = SL_EIO;
out:
    if (fflush(f) != 0 && !rc) rc = SL_EIO;
    if (!to_stdout && fclose(f) != 0 && !rc) rc = SL_EIO;
    if (rc == SL_EIO) seterr(errstr, errsize, "%s: write failed: %s", to_stdout ? "stdout" : path, strerror(errno));
    if (rc == SL_ENOMEM) seterr(errstr, errsize, "out of memory writing the output");
    sl_buf_free(&line);
    free(cell);
    free(cell_len);
    return rc;
}

/* ---- job ------------------------------------------------------------------ */

int training_set_run(const sl_config_t *cfg, const schema_t *schema,
                     const training_options_t *opts, training_stats_t *stats,
                     char *errstr, size_t errsize)
{
    job_t j;
    training_stats_t local;
    memset(&j, 0, sizeof j);
    if (!stats) stats = &local;
    memset(stats, 0, sizeof *stats);
    j.cfg = cfg;
    j.schema = schema;
    j.o = opts;
    j.stats = stats;
    int rc = 0;
    int64_t t0 = sl_mono_ns();
    if (errstr && errsize) errstr[0] = '\0';

    int si = opts->service ? schema_service_index(schema, opts->service) : -1;
    if (si < 0) {
        seterr(errstr, errsize, "no service '%s' in the schema", opts->service ? opts->service : "");
        return SL_EINVAL;
    }
    j.svc = &schema->services[si];
    if (j.svc->n_refs == 0) { seterr(errstr, errsize, "service '%s' has no features", j.svc->name); return SL_EINVAL; }
    for (size_t r = 0; r < j.svc->n_refs; r++) {
        int e = schema->views[j.svc->refs[r].view].entity;
        bool seen = false;
        for (size_t k = 0; k < j.n_ents; k++) seen |= j.ents[k] == e;
        if (seen) continue;
        if (j.n_ents == MAX_ENTS) { seterr(errstr, errsize, "service '%s' spans too many entities", j.svc->name); return SL_EINVAL; }
        if (schema->entities[e].n_keys > KEY_PARTS_MAX) {
            seterr(errstr, errsize, "entity '%s' has too many key parts", schema->entities[e].name);
            return SL_EINVAL;
        }
        j.ents[j.n_ents++] = e;
    }
    if (!(j.ref_slot = malloc(j.svc->n_refs * sizeof *j.ref_slot))) { seterr(errstr, errsize, "out of memory"); return SL_ENOMEM; }
    for (size_t r = 0; r < j.svc->n_refs; r++) {
        int vi = j.svc->refs[r].view;
        size_t sl = 0;
        while (sl < j.n_slots && j.slot_view[sl] != vi) sl++;
        if (sl == j.n_slots) {
            if (j.n_slots == MAX_SLOTS) {
                seterr(errstr, errsize, "service '%s' spans too many views", j.svc->name);
                rc = SL_EINVAL;
                goto out;
            }
            j.slot_view[j.n_slots++] = vi;
        }
        j.ref_slot[r] = (int)sl;
    }

    if ((rc = labels_read(&j, errstr, errsize))) goto out;
    stats->labels = j.n_labels;
    stats->read_labels_s = (double)(sl_mono_ns() - t0) / 1e9;
    sl_info("training", "%zu label rows read in %.2fs", j.n_labels, stats->read_labels_s);
    if (j.n_labels) {
        j.order = malloc(j.n_labels * sizeof *j.order);
        j.answers = malloc(j.n_labels * j.n_slots * sizeof *j.answers);
        if (!j.order || !j.answers) { rc = SL_ENOMEM; seterr(errstr, errsize, "out of memory"); goto out; }
        for (size_t i = 0; i < j.n_labels * j.n_slots; i++) j.answers[i] = NO_ANSWER;
        for (size_t i = 0; i < j.n_labels; i++) j.order[i] = (uint32_t)i;
        sort_base = j.labels;
        qsort(j.order, j.n_labels, sizeof *j.order, cmp_label);

        int64_t t1 = sl_mono_ns();
        for (size_t s = 0; s < schema->n_sources; s++) {
            bool used = false;
            for (size_t r = 0; r < j.svc->n_refs; r++) used |= schema->views[j.svc->refs[r].view].source == (int)s;
            if (used && (rc = run_pass(&j, (int)s, errstr, errsize))) goto out;
        }
        stats->replay_s = (double)(sl_mono_ns() - t1) / 1e9;
    }
    int64_t t2 = sl_mono_ns();
    if ((rc = write_out(&j, errstr, errsize))) goto out;
    stats->write_s = (double)(sl_mono_ns() - t2) / 1e9;
out:
    stats->total_s = (double)(sl_mono_ns() - t0) / 1e9;
    sl_buf_free(&j.header);
    sl_buf_free(&j.text);
    sl_buf_free(&j.keys);
    sl_buf_free(&j.vals);
    free(j.labels);
    free(j.order);
    free(j.answers);
    free(j.ref_slot);
    return rc;
}
