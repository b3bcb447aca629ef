/*
 * decode.h — turning one Kafka payload into a typed event for a source.
 *
 * A decoder is made for one source and dispatches on the source's format tag
 * (schema_format_t) to an implementation behind a two-function vtable; JSON
 * (cJSON) is the only one today, protobuf slots in beside it. The decoder
 * checks everything about the payload that can be bad (the payload crosses a
 * trust boundary) and classifies failures into the reasons below, which are
 * what ingest counts and puts in the dead-letter header.
 *
 * Field rules (JSON):
 *   - the payload must be exactly one JSON object (trailing whitespace only);
 *   - a declared field that is absent or null is AGG_IN_MISSING (features
 *     skip it) unless it is required: the time field and every field used as
 *     an entity key by a view of the source -> missing_field;
 *   - a present field must have its declared type: string <- JSON string,
 *     bool <- true/false, double <- any number, int <- an integral number
 *     with |v| <= 2^53 (exact in a JSON double); otherwise type_mismatch;
 *   - the time field is read per the source's time_format: epoch_ms (integral
 *     number), epoch_s (number, fractions rounded to the nearest ms),
 *     rfc3339 (string); anything else -> bad_timestamp;
 *   - undeclared members are ignored.
 *
 * Threads: a decoder is used by one thread at a time. Records point into
 * memory the decoder owns until the next decode call.
 */
#ifndef INGEST_DECODE_H
#define INGEST_DECODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "agg.h"
#include "schema.h"

/* Reasons an input message is skipped ("bad input"). */
#define INGEST_BAD_MAP(X)                  \
    X(MALFORMED,     "malformed")          \
    X(MISSING_FIELD, "missing_field")      \
    X(TYPE_MISMATCH, "type_mismatch")      \
    X(BAD_TIMESTAMP, "bad_timestamp")      \
    X(OVERSIZED,     "oversized")          \
    X(TOMBSTONE,     "tombstone")

typedef enum {
    INGEST_OK = 0,
#define INGEST__B(n, s) INGEST_BAD_##n,
    INGEST_BAD_MAP(INGEST__B)
#undef INGEST__B
    INGEST_BAD__COUNT
} ingest_bad_t;

/* "malformed", ... ("ok" for INGEST_OK). */
const char *ingest_bad_name(ingest_bad_t reason);

typedef struct ingest_record {
    int64_t time_ms;              /* event time */
    const agg_input_t *fields;    /* indexed like schema_source_t.fields */
    size_t n_fields;
} ingest_record_t;

typedef struct ingest_decoder ingest_decoder_t;

/* Makes a decoder for schema->sources[source]. Fields used as entity keys by
 * any view of the source (and the time field) become required.
 * max_bytes: larger payloads are `oversized` (0 = no limit).
 * Returns 0, SL_ENOMEM, or SL_EINVAL (unsupported format; errstr says). */
int ingest_decoder_new(const schema_t *schema, int source, size_t max_bytes,
                       ingest_decoder_t **out, char *errstr, size_t errsize);
void ingest_decoder_free(ingest_decoder_t *dec);

/* Decodes one payload (NULL = tombstone). Returns INGEST_OK and fills rec, or
 * the reason it is bad with a short detail in why (may be NULL). */
ingest_bad_t ingest_decode(ingest_decoder_t *dec, const void *payload, size_t len,
                           ingest_record_t *rec, char *why, size_t whysize);

/* Does a decoded event pass a view's filter? Comparisons with a missing field
 * are false (SQL NULL semantics), so such events are filtered out. */
bool ingest_filter_match(const schema_filter_t *f, const agg_input_t *fields);

#endif
