/*
 * seed_state.c — test tool: writes entity states for a list of events
 * straight into a state directory, the way ingest would (same decoder, same
 * key encoding, same engine), without Kafka.
 *
 *   seed_state CONFIG EVENTS [view=since_ms ...]
 *
 * EVENTS: one event per line, "SOURCE<TAB>PARTITION<TAB>JSON". Every view of
 * the source whose filter matches gets the event. States are committed in
 * one batch with per-(topic, partition) progress: next_offset = events of
 * the partition, watermark = newest event time. view=since_ms arguments set
 * the "view.<name>.since_ms" coverage meta entries (partial windows).
 * The serving tests compare what the servers return with values computed
 * independently from the same EVENTS file.
 */
#include "agg.h"
#include "decode.h"
#include "entity_key.h"
#include "schema.h"
#include "sl_buf.h"
#include "sl_config.h"
#include "sl_err.h"
#include "state.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct seeded {
    int view;
    int32_t partition;
    sl_buf_t key;
    agg_entity_t *ent;
} seeded_t;

typedef struct progress {
    char topic[256];
    int32_t partition;
    int64_t count, watermark;
} progress_t;

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: seed_state CONFIG EVENTS [view=since_ms ...]\n");
        return 2;
    }
    char err[2048];
    sl_config_t cfg;
    sl_config_defaults(&cfg);
    if (sl_config_load(&cfg, argv[1], err, sizeof err)) { fprintf(stderr, "%s\n", err); return 1; }
    schema_t *s = NULL;
    if (schema_load((const char *const *)cfg.schema_files, cfg.n_schema_files, &s, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    agg_plan_t **plans = calloc(s->n_views, sizeof *plans);
    for (size_t v = 0; v < s->n_views; v++)
        if (agg_plan_new(s, (int)v, &plans[v], err, sizeof err)) { fprintf(stderr, "%s\n", err); return 1; }
    ingest_decoder_t **decs = calloc(s->n_sources, sizeof *decs);
    for (size_t i = 0; i < s->n_sources; i++)
        if (ingest_decoder_new(s, (int)i, 1 << 20, &decs[i], err, sizeof err)) { fprintf(stderr, "%s\n", err); return 1; }

    FILE *f = fopen(argv[2], "r");
    if (!f) { perror(argv[2]); return 1; }
    seeded_t *ents = NULL;
    size_t n_ents = 0, cap_ents = 0;
    progress_t prog[256];
    size_t n_prog = 0;
    char *line = NULL;
    size_t linecap = 0;
    ssize_t len;
    size_t lineno = 0;
    sl_buf_t key = SL_BUF_INIT;
    while ((len = getline(&line, &linecap, f)) > 0) {
        lineno++;
        if (line[len - 1] == '\n') line[--len] = 0;
        char *t1 = strchr(line, '\t');
        char *t2 = t1 ? strchr(t1 + 1, '\t') : NULL;
        if (!t2) { fprintf(stderr, "line %zu: expected SOURCE\\tPARTITION\\tJSON\n", lineno); return 1; }
        *t1 = 0;
        int src = schema_source_index(s, line);
        if (src < 0) { fprintf(stderr, "line %zu: unknown source %s\n", lineno, line); return 1; }
        int32_t part = (int32_t)atoi(t1 + 1);
        ingest_record_t rec;
        char why[256];
        ingest_bad_t bad = ingest_decode(decs[src], t2 + 1, strlen(t2 + 1), &rec, why, sizeof why);
        if (bad != INGEST_OK) { fprintf(stderr, "line %zu: %s: %s\n", lineno, ingest_bad_name(bad), why); return 1; }

        progress_t *p = NULL;
        for (size_t i = 0; i < n_prog; i++)
            if (prog[i].partition == part && !strcmp(prog[i].topic, s->sources[src].topic)) p = &prog[i];
        if (!p) {
            p = &prog[n_prog++];
            snprintf(p->topic, sizeof p->topic, "%s", s->sources[src].topic);
            p->partition = part;
            p->count = 0;
            p->watermark = INT64_MIN;
        }
        p->count++;
        if (rec.time_ms > p->watermark) p->watermark = rec.time_ms;

        for (size_t v = 0; v < s->n_views; v++) {
            const schema_view_t *view = &s->views[v];
            if (view->source != src) continue;
            if (!ingest_filter_match(&view->filter, rec.fields)) continue;
            const schema_entity_t *ent = &s->entities[view->entity];
            agg_input_t kv[8];
            for (size_t k = 0; k < ent->n_keys; k++) kv[k] = rec.fields[view->key_fields[k]];
            sl_buf_reset(&key);
            if (ingest_key_encode(&key, ent->key_types, kv, ent->n_keys)) {
                fprintf(stderr, "line %zu: bad key for view %s\n", lineno, view->name);
                return 1;
            }
            seeded_t *e = NULL;
            for (size_t i = 0; i < n_ents; i++)
                if (ents[i].view == (int)v && ents[i].partition == part && ents[i].key.len == key.len &&
                    !memcmp(ents[i].key.data, key.data, key.len))
                    e = &ents[i];
            if (!e) {
                if (n_ents == cap_ents) {
                    cap_ents = cap_ents ? cap_ents * 2 : 64;
                    ents = realloc(ents, cap_ents * sizeof *ents);
                }
                e = &ents[n_ents++];
                memset(e, 0, sizeof *e);
                e->view = (int)v;
                e->partition = part;
                sl_buf_append(&e->key, key.data, key.len);
                e->ent = agg_entity_new(plans[v]);
            }
            agg_event_t ev = { rec.time_ms, rec.fields, rec.n_fields };
            int rc = agg_entity_update(plans[v], e->ent, &ev, INT64_MIN);
            if (rc) { fprintf(stderr, "line %zu: update: %s\n", lineno, sl_strerror(rc)); return 1; }
        }
    }
    fclose(f);

    state_options_t so = { .create_if_missing = true };
    state_store_t *st = NULL;
    if (state_open(cfg.state_dir, &so, &st, err, sizeof err)) { fprintf(stderr, "%s\n", err); return 1; }
    state_batch_t *b = state_batch_new();
    sl_buf_t val = SL_BUF_INIT;
    for (size_t i = 0; i < n_ents; i++) {
        sl_buf_reset(&val);
        if (agg_entity_encode(plans[ents[i].view], ents[i].ent, &val)) return 1;
        if (state_batch_put(b, s->views[ents[i].view].name, ents[i].partition, ents[i].key.data,
                            ents[i].key.len, val.data, val.len))
            return 1;
    }
    for (size_t i = 0; i < n_prog; i++)
        state_batch_progress(b, prog[i].topic, prog[i].partition, prog[i].count, prog[i].watermark);
    if (state_batch_commit(st, b, err, sizeof err)) { fprintf(stderr, "%s\n", err); return 1; }
    for (int a = 3; a < argc; a++) {
        char *eq = strchr(argv[a], '=');
        if (!eq) { fprintf(stderr, "bad argument %s\n", argv[a]); return 2; }
        char name[600];
        snprintf(name, sizeof name, "view.%.*s.since_ms", (int)(eq - argv[a]), argv[a]);
        if (state_meta_put(st, name, eq + 1, strlen(eq + 1))) return 1;
    }
    printf("seeded %zu entity states, %zu partitions\n", n_ents, n_prog);

    state_batch_free(b);
    state_close(st);
    sl_buf_free(&val);
    sl_buf_free(&key);
    for (size_t i = 0; i < n_ents; i++) {
        sl_buf_free(&ents[i].key);
        agg_entity_free(ents[i].ent);
    }
    free(ents);
    for (size_t i = 0; i < s->n_sources; i++) ingest_decoder_free(decs[i]);
    free(decs);
    for (size_t v = 0; v < s->n_views; v++) agg_plan_free(plans[v]);
    free(plans);
    schema_free(s);
    sl_config_free(&cfg);
    free(line);
    return 0;
}
