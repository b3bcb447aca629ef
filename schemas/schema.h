/*
 * schema.h — the parsed, checked model of Sluice schema files.
 *
 * A schema is the union of one or more YAML files (see docs/schema.md). After
 * schema_load() succeeds every cross reference has been resolved into indexes
 * and every rule of the language checked, so later modules (aggregates,
 * ingest, serving) can trust the model without re-validating it.
 *
 * Ownership: schema_load() returns a schema_t that owns every string and
 * array in it; schema_free() releases all of it. The model is immutable after
 * loading and may be read from any thread.
 */
#ifndef SCHEMA_H
#define SCHEMA_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>
#include <stdio.h>

/* Types of source fields and entity keys. */
#define SCHEMA_TYPE_MAP(X) \
    X(STRING, "string")    \
    X(INT,    "int")       \
    X(DOUBLE, "double")    \
    X(BOOL,   "bool")

typedef enum {
#define SCHEMA__T(n, s) SCHEMA_TYPE_##n,
    SCHEMA_TYPE_MAP(SCHEMA__T)
#undef SCHEMA__T
    SCHEMA_TYPE__COUNT
} schema_type_t;

/* Aggregates. NEEDS_FIELD: takes an input field. NUMERIC: the field must be
 * int or double. */
#define SCHEMA_AGG_MAP(X)                                   \
    /* name           text               field  numeric */  \
    X(COUNT,          "count",           0,     0)          \
    X(SUM,            "sum",             1,     1)          \
    X(MIN,            "min",             1,     1)          \
    X(MAX,            "max",             1,     1)          \
    X(MEAN,           "mean",            1,     1)          \
    X(FIRST,          "first",           1,     0)          \
    X(LAST,           "last",            1,     0)          \
    X(LAST_N,         "last_n",          1,     0)          \
    X(VARIANCE,       "variance",        1,     1)          \
    X(STDDEV,         "stddev",          1,     1)          \
    X(APPROX_DISTINCT,"approx_distinct", 1,     0)          \
    X(APPROX_QUANTILE,"approx_quantile", 1,     1)          \
    X(DECAYED_SUM,    "decayed_sum",     1,     1)          \
    X(DECAYED_COUNT,  "decayed_count",   0,     0)

typedef enum {
#define SCHEMA__A(n, s, f, num) SCHEMA_AGG_##n,
    SCHEMA_AGG_MAP(SCHEMA__A)
#undef SCHEMA__A
    SCHEMA_AGG__COUNT
} schema_agg_t;

typedef enum {
    SCHEMA_WINDOW_SLIDING,   /* size, hop: value as of t covers (t - size, t] */
    SCHEMA_WINDOW_TUMBLING,  /* size: the current aligned bucket [k*size, (k+1)*size) */
    SCHEMA_WINDOW_SESSION,   /* gap, optional max_length */
    SCHEMA_WINDOW_LIFETIME,  /* every event ever seen */
} schema_window_kind_t;

typedef enum {
    SCHEMA_TIME_EPOCH_MS,
    SCHEMA_TIME_EPOCH_S,
    SCHEMA_TIME_RFC3339,
} schema_time_format_t;

typedef enum {
    SCHEMA_FORMAT_JSON,
    /* SCHEMA_FORMAT_PROTOBUF reserved: the decoder interface in ingest/ takes
     * a format tag so a protobuf decoder can be added beside JSON. */
} schema_format_t;

typedef enum {
    SCHEMA_FILTER_NONE,
    SCHEMA_FILTER_EQ,        /* field == value */
    SCHEMA_FILTER_NE,        /* field != value */
    SCHEMA_FILTER_GT,        /* numeric comparisons */
    SCHEMA_FILTER_GE,
    SCHEMA_FILTER_LT,
    SCHEMA_FILTER_LE,
} schema_filter_op_t;

/* Where a definition came from, for error messages in later stages. */
typedef struct schema_loc {
    const char *file;        /* points into schema_t.files[] */
    int line, column;        /* 1-based */
} schema_loc_t;

typedef struct schema_field {
    char *name;
    schema_type_t type;
} schema_field_t;

typedef struct schema_entity {
    char *name;
    char **keys;             /* key names, in order (composite keys: n_keys > 1) */
    schema_type_t *key_types;
    size_t n_keys;
    schema_loc_t loc;
} schema_entity_t;

typedef struct schema_source {
    char *name;
    char *topic;
    schema_format_t format;
    schema_field_t *fields;  /* declared payload fields and their types */
    size_t n_fields;
    int time_field;          /* index into fields */
    schema_time_format_t time_format;
    int64_t watermark_delay_ms;   /* maximum out-of-orderness */
    int64_t allowed_lateness_ms;  /* accepted behind the watermark */
    /* message_key: the payload fields producers key Kafka messages by, so
     * every event of one key value is in one partition (indexes into
     * fields); n_msg_key_fields 0 = not declared. */
    int *msg_key_fields;
    size_t n_msg_key_fields;
    schema_loc_t loc;
} schema_source_t;

typedef struct schema_filter {
    schema_filter_op_t op;
    int field;               /* index into the source's fields */
    schema_type_t type;      /* == the field's type */
    char *s;                 /* STRING value */
    int64_t i;               /* INT / BOOL value */
    double d;                /* DOUBLE value */
} schema_filter_t;

typedef struct schema_window {
    schema_window_kind_t kind;
    int64_t size_ms;         /* sliding, tumbling */
    int64_t hop_ms;          /* sliding; divides size_ms */
    int64_t gap_ms;          /* session inactivity gap */
    int64_t max_length_ms;   /* session maximum length, 0 = unbounded */
} schema_window_t;

typedef struct schema_feature {
    char *name;
    schema_agg_t agg;
    int field;               /* index into the source's fields, -1 for count */
    schema_type_t field_type;
    schema_window_t window;
    int n;                   /* last_n: how many values (1..1000) */
    double quantile;         /* approx_quantile: q in [0, 1] */
    int64_t half_life_ms;    /* decayed_*: exponential half-life */
    int sessions_kept;       /* session windows: completed sessions served (default 5) */
    schema_loc_t loc;
} schema_feature_t;

typedef struct schema_view {
    char *name;
    int entity;              /* index into schema_t.entities */
    int source;              /* index into schema_t.sources */
    int *key_fields;         /* per entity key: index into the source's fields */
    /* One entity's events may be in several partitions of the topic: its
     * entity keys are not the source's declared message_key (or none is
     * declared). Ingest keeps a state per (entity, partition); readers merge
     * them (agg_entity_merge). */
    bool spans_partitions;
    schema_filter_t filter;
    int64_t ttl_ms;          /* 0 = never expires */
    schema_feature_t *features;
    size_t n_features;
    uint64_t fingerprint;    /* stable hash of the definition (not of formatting) */
    schema_loc_t loc;
} schema_view_t;

typedef struct schema_feature_ref {
    int view;                /* index into schema_t.views */
    int feature;             /* index into that view's features */
} schema_feature_ref_t;

typedef struct schema_service {
    char *name;
    schema_feature_ref_t *refs;
    size_t n_refs;
    schema_loc_t loc;
} schema_service_t;

typedef struct schema {
    char **files;            /* the files loaded, in order */
    size_t n_files;
    schema_entity_t *entities;   size_t n_entities;
    schema_source_t *sources;    size_t n_sources;
    schema_view_t *views;        size_t n_views;
    schema_service_t *services;  size_t n_services;
    uint64_t fingerprint;    /* hash over all view fingerprints, in name order */
} schema_t;

/* Loads and checks schema files. On success returns 0 and *out owns the
 * model. On failure returns SL_EPARSE (not YAML, empty) or SL_EINVAL (a rule
 * broken), *out is NULL and errstr holds "FILE:LINE:COL: message" for the
 * first error found. */
int schema_load(const char *const *paths, size_t n_paths, schema_t **out,
                char *errstr, size_t errsize);

/* Same, from in-memory YAML text; `name` is used as the file name in errors. */
int schema_load_string(const char *name, const char *text, size_t len,
                       schema_t **out, char *errstr, size_t errsize);

/* Loads like schema_load and, with the same bytes, fills *pack (a growable
 * buffer the caller frees with free(*pack)) with the files' names and texts
 * in one blob: what schema_load_packed turns back into the same schema (same
 * fingerprints) after the files changed, e.g. the definition a view keeps
 * serving while a backfill rebuilds it across a restart. */
int schema_load_pack(const char *const *paths, size_t n_paths, schema_t **out,
                     char **pack, size_t *pack_len, char *errstr, size_t errsize);
int schema_load_packed(const void *pack, size_t len, schema_t **out, char *errstr, size_t errsize);

void schema_free(schema_t *s);

/* Lookups by name; NULL / -1 when absent. */
int schema_view_index(const schema_t *s, const char *name);
int schema_feature_index(const schema_view_t *v, const char *name);
int schema_service_index(const schema_t *s, const char *name);
int schema_source_index(const schema_t *s, const char *name);

/* Names of enum values ("sum", "sliding", "string"). */
const char *schema_agg_name(schema_agg_t a);
const char *schema_type_name(schema_type_t t);
const char *schema_window_kind_name(schema_window_kind_t k);

/* Does this aggregate need an input field / a numeric one? */
bool schema_agg_needs_field(schema_agg_t a);
bool schema_agg_is_numeric(schema_agg_t a);

/* Writes the human summary printed by `sluice check` to f. */
void schema_print_summary(const schema_t *s, FILE *f);

#endif
