/*
 * schema_yaml.h — a thin layer over libyaml's document API, shared by the
 * schema checker and the config loader.
 *
 * sy_doc_load parses a whole YAML text into a libyaml document (all parsing is
 * libyaml's); the helpers then give typed, located access to its nodes and
 * format "FILE:LINE:COL: message" errors. Lines and columns are 1-based.
 */
#ifndef SCHEMA_YAML_H
#define SCHEMA_YAML_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <yaml.h>

typedef struct sy_doc {
    yaml_document_t doc;
    bool loaded;
    const char *file;        /* borrowed name used in messages */
    char *errstr;            /* first error is kept; later ones ignored */
    size_t errsize;
    bool failed;
} sy_doc_t;

/* Parses text. Returns 0, or SL_EPARSE with a located message ("not valid
 * YAML", "empty file", "more than one YAML document"). */
int sy_doc_load(sy_doc_t *d, const char *file, const char *text, size_t len,
                char *errstr, size_t errsize);
void sy_doc_free(sy_doc_t *d);

yaml_node_t *sy_root(sy_doc_t *d);
yaml_node_t *sy_node(sy_doc_t *d, int id);

/* Records an error at a node (first error wins). Always returns SL_EINVAL. */
int sy_error(sy_doc_t *d, const yaml_node_t *n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

bool sy_is_map(const yaml_node_t *n);
bool sy_is_seq(const yaml_node_t *n);
bool sy_is_scalar(const yaml_node_t *n);
const char *sy_scalar(const yaml_node_t *n);   /* NUL-terminated value or NULL */
const char *sy_kind_name(const yaml_node_t *n); /* "mapping", "list", "scalar" */

/* Checks that mapping n has only keys from allowed[] (NULL-terminated) and no
 * duplicates; reports "unknown key 'k' in WHAT (expected one of: ...)". */
int sy_check_keys(sy_doc_t *d, yaml_node_t *n, const char *what, const char *const *allowed);
/* Value node of key in mapping n, or NULL. */
yaml_node_t *sy_get(sy_doc_t *d, yaml_node_t *n, const char *key);
/* The node of key name itself (for locating errors on keys). */
yaml_node_t *sy_get_key(sy_doc_t *d, yaml_node_t *n, const char *key);

/* Typed getters: each reports a located error when the node has the wrong
 * shape. `required` makes an absent key an error ("missing 'k' in WHAT"). */
int sy_get_string(sy_doc_t *d, yaml_node_t *map, const char *key, const char *what,
                  bool required, const char **out, yaml_node_t **node);
int sy_get_int(sy_doc_t *d, yaml_node_t *map, const char *key, const char *what,
               bool required, int64_t min, int64_t max, int64_t *out);
int sy_get_double(sy_doc_t *d, yaml_node_t *map, const char *key, const char *what,
                  bool required, double min, double max, double *out);
int sy_get_bool(sy_doc_t *d, yaml_node_t *map, const char *key, const char *what,
                bool required, bool *out);
int sy_get_duration(sy_doc_t *d, yaml_node_t *map, const char *key, const char *what,
                    bool required, bool allow_zero, int64_t *out_ms);
/* Parses a scalar node as a duration with the messages above. */
int sy_duration(sy_doc_t *d, yaml_node_t *n, const char *what, bool allow_zero, int64_t *out_ms);

/* Parse helpers on plain strings. */
bool sy_parse_int(const char *s, int64_t *out);
bool sy_parse_double(const char *s, double *out);
bool sy_parse_bool(const char *s, bool *out);

/* Iteration helpers. */
#define SY_SEQ_EACH(d, seq, item)                                                  \
    for (yaml_node_item_t *item##_it = (seq)->data.sequence.items.start;           \
         item##_it < (seq)->data.sequence.items.top; item##_it++)                  \
        for (yaml_node_t *item = sy_node((d), *item##_it); item; item = NULL)

#define SY_MAP_EACH(d, map, k, v)                                                  \
    for (yaml_node_pair_t *k##_pair = (map)->data.mapping.pairs.start;             \
         k##_pair < (map)->data.mapping.pairs.top; k##_pair++)                     \
        for (yaml_node_t *k = sy_node((d), k##_pair->key),                         \
                         *v = sy_node((d), k##_pair->value); k; k = NULL)

#endif
