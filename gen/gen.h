/*
 * gen.h — a reproducible generator of realistic events for a schema source.
 *
 * Given a source of a schema, gen_next() writes one JSON event (and its
 * Kafka message key) at a time. Entity keys are drawn from fixed populations
 * with a Zipf skew (a few hot cards, merchants, users), numbers from
 * distributions that fit their field names (amounts log-normal, ratings in
 * 1..5), and strings from small vocabularies that include every value the
 * schema's view filters test for, so filtered views see traffic. Event times
 * advance by a fixed spacing from a start time; a configurable share of
 * events is out of order (within the watermark delay, so accepted), late
 * (beyond the allowed lateness, so rejected), or bad (malformed JSON, a
 * missing key, a mistyped field, an unparsable time, a tombstone).
 *
 * Same schema, source, options and seed => byte-identical stream. No I/O:
 * the caller produces to Kafka or writes a file.
 */
#ifndef GEN_H
#define GEN_H

#include <stdbool.h>
#include <stdint.h>

#include "schema.h"
#include "sl_buf.h"

typedef struct gen gen_t;

typedef struct gen_options {
    uint64_t seed;           /* default 1 */
    int64_t start_ms;        /* event time of the first event */
    int64_t spacing_us;      /* event-time step between events, microseconds (default 10000) */
    int64_t entities;        /* population of the key entity (default 10000); others /10 */
    double zipf_s;           /* skew of key popularity (default 1.1; 0 = uniform) */
    double ooo_share;        /* out of order within the watermark delay (default 0.05) */
    double late_share;       /* beyond the allowed lateness (default 0.005) */
    double bad_share;        /* malformed in some way (default 0.005) */
} gen_options_t;

typedef enum {
    GEN_GOOD = 0,            /* in order */
    GEN_OUT_OF_ORDER,        /* accepted: within the watermark delay */
    GEN_LATE,                /* rejected as late */
    GEN_BAD_MALFORMED,       /* not JSON */
    GEN_BAD_MISSING_KEY,     /* an entity key field is absent */
    GEN_BAD_TYPE,            /* a numeric field holds a string */
    GEN_BAD_TIMESTAMP,       /* the time field cannot be parsed */
    GEN_TOMBSTONE,           /* no payload at all (is_null set) */
    GEN__KIND_COUNT
} gen_kind_t;

const char *gen_kind_name(gen_kind_t k);

void gen_options_defaults(gen_options_t *o);

/* Makes a generator for schema->sources[source]. The message key is the key
 * of the first entity that a view of the source uses (so events of one such
 * entity share a partition). Borrows schema. Returns 0, SL_EINVAL (errstr
 * says why: bad shares, no view uses the source) or SL_ENOMEM. */
int gen_new(const schema_t *schema, int source, const gen_options_t *opts, gen_t **out,
            char *errstr, size_t errsize);
void gen_free(gen_t *g);

/* Writes the next event: payload into `payload` and key into `key` (both
 * reset first). *is_null is set for a tombstone (payload empty). Returns the
 * kind of event, or a negative SL_ENOMEM. */
int gen_next(gen_t *g, sl_buf_t *payload, sl_buf_t *key, bool *is_null);

/* Writes the RESP key spec of the most popular entity of view `view` as
 * this generator makes it: "card-000001", or "{city-000001|1}" for a
 * composite key (docs/serving.md). Returns 0, or SL_EINVAL when the view
 * is not fed by this generator's source. */
int gen_example_key(const gen_t *g, int view, char *out, size_t size);

/* Writes key part `k` (0-based, in the entity's key order) of the same
 * entity as plain text, e.g. "city-000001" or "1": the value a gRPC
 * EntityRow gives for that key name. Returns 0, or SL_EINVAL when the view
 * is not fed by this generator's source or k is out of range. */
int gen_example_key_part(const gen_t *g, int view, size_t k, char *out, size_t size);

/* Name of the entity whose key is the message key. */
const char *gen_key_entity(const gen_t *g);

#endif
