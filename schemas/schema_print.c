/*
 * schema_print.c — the one-screen summary `sluice check` prints: counts,
 * then one line per entity, source, view (with its features) and service.
 */
#include "schema.h"
#include "sl_time.h"

#include <stdio.h>

static const char *time_format_name(schema_time_format_t f)
{
    switch (f) {
    case SCHEMA_TIME_EPOCH_MS: return "epoch_ms";
    case SCHEMA_TIME_EPOCH_S: return "epoch_s";
    case SCHEMA_TIME_RFC3339: return "rfc3339";
    }
    return "?";
}

static void print_window(const schema_window_t *w, FILE *f)
{
    char a[32], b[32];
    switch (w->kind) {
    case SCHEMA_WINDOW_SLIDING:
        fprintf(f, "sliding %s hop %s", sl_duration_format(w->size_ms, a, sizeof a),
                sl_duration_format(w->hop_ms, b, sizeof b));
        break;
    case SCHEMA_WINDOW_TUMBLING:
        fprintf(f, "tumbling %s", sl_duration_format(w->size_ms, a, sizeof a));
        break;
    case SCHEMA_WINDOW_SESSION:
        fprintf(f, "session gap %s", sl_duration_format(w->gap_ms, a, sizeof a));
        if (w->max_length_ms)
            fprintf(f, " max %s", sl_duration_format(w->max_length_ms, b, sizeof b));
        break;
    case SCHEMA_WINDOW_LIFETIME:
        fprintf(f, "lifetime");
        break;
    }
}

void schema_print_summary(const schema_t *s, FILE *f)
{
    size_t nf = 0;
    char d1[32], d2[32];
    for (size_t i = 0; i < s->n_views; i++) nf += s->views[i].n_features;
    fprintf(f, "%zu file(s): %zu entities, %zu sources, %zu views, %zu features, %zu services "
            "(fingerprint %016llx)\n", s->n_files, s->n_entities, s->n_sources, s->n_views, nf,
            s->n_services, (unsigned long long)s->fingerprint);

    fprintf(f, "\nentities\n");
    for (size_t i = 0; i < s->n_entities; i++) {
        const schema_entity_t *e = &s->entities[i];
        fprintf(f, "  %-22s key ", e->name);
        for (size_t k = 0; k < e->n_keys; k++)
            fprintf(f, "%s%s:%s", k ? ", " : "", e->keys[k], schema_type_name(e->key_types[k]));
        fputc('\n', f);
    }
    fprintf(f, "\nsources\n");
    for (size_t i = 0; i < s->n_sources; i++) {
        const schema_source_t *src = &s->sources[i];
        fprintf(f, "  %-22s topic %s, json, %zu fields, time %s (%s), watermark delay %s, "
                "lateness %s\n", src->name, src->topic, src->n_fields,
                src->fields[src->time_field].name, time_format_name(src->time_format),
                sl_duration_format(src->watermark_delay_ms, d1, sizeof d1),
                sl_duration_format(src->allowed_lateness_ms, d2, sizeof d2));
        if (src->n_msg_key_fields) {
            fprintf(f, "  %-22s message key", "");
            for (size_t k = 0; k < src->n_msg_key_fields; k++)
                fprintf(f, "%s %s", k ? "," : "", src->fields[src->msg_key_fields[k]].name);
            fputc('\n', f);
        }
    }
    fprintf(f, "\nfeature views\n");
    for (size_t i = 0; i < s->n_views; i++) {
        const schema_view_t *v = &s->views[i];
        const schema_source_t *src = &s->sources[v->source];
        fprintf(f, "  %-22s %s <- %s, ttl %s%s, %zu features, fingerprint %016llx\n", v->name,
                s->entities[v->entity].name, src->name,
                v->ttl_ms ? sl_duration_format(v->ttl_ms, d1, sizeof d1) : "none",
                v->filter.op != SCHEMA_FILTER_NONE ? ", filtered" : "", v->n_features,
                (unsigned long long)v->fingerprint);
        if (v->spans_partitions)
            fprintf(f, "    (%s: one %s's events may be in several partitions; lookups merge them)\n",
                    src->n_msg_key_fields ? "not keyed by the message key" : "source has no message_key",
                    s->entities[v->entity].name);
        for (size_t k = 0; k < v->n_features; k++) {
            const schema_feature_t *ft = &v->features[k];
            char agg[96];
            if (ft->field >= 0)
                snprintf(agg, sizeof agg, "%s(%s)", schema_agg_name(ft->agg),
                         src->fields[ft->field].name);
            else
                snprintf(agg, sizeof agg, "%s()", schema_agg_name(ft->agg));
            fprintf(f, "    %-26s %-28s ", ft->name, agg);
            print_window(&ft->window, f);
            fputc('\n', f);
        }
    }
    fprintf(f, "\nfeature services\n");
    for (size_t i = 0; i < s->n_services; i++) {
        const schema_service_t *svc = &s->services[i];
        fprintf(f, "  %-22s %zu features:", svc->name, svc->n_refs);
        for (size_t k = 0; k < svc->n_refs && k < 4; k++)
            fprintf(f, " %s:%s", s->views[svc->refs[k].view].name,
                    s->views[svc->refs[k].view].features[svc->refs[k].feature].name);
        fprintf(f, "%s\n", svc->n_refs > 4 ? " ..." : "");
    }
}
