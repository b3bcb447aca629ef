/*
 * entity_key.h — the byte encoding of entity keys, shared by ingest (which
 * writes state under it) and serving (which looks state up by it).
 *
 * Each key component is first rendered as canonical text for its declared
 * type, so that a JSON event and a text request (RESP argument, gRPC string)
 * naming the same entity produce the same bytes:
 *
 *   string  the bytes as they are (may be empty, may hold any byte)
 *   int     decimal, '-' for negatives, no '+', no leading zeros ("0", "-12")
 *   bool    "true" or "false"
 *   double  printf("%.17g") of the value, -0 written as "0"; NaN/Inf refused
 *
 * Key bytes:
 *   one component (n_keys == 1):  the canonical text alone, e.g. "u42"
 *   n_keys > 1:                   for each component in the entity's key
 *                                 order: LEB128 varint(length) + text
 *                                 e.g. ("eu", 7) -> 02 'e' 'u' 01 '7'
 *
 * The number of components is fixed per entity, so both forms are
 * unambiguous, and single keys stay readable in tools.
 */
#ifndef INGEST_ENTITY_KEY_H
#define INGEST_ENTITY_KEY_H

#include <stddef.h>

#include "agg.h"
#include "schema.h"
#include "sl_buf.h"

/* Appends the key of typed values vals[0..n-1] (types[i] is the declared type
 * of component i) to out. Returns 0, SL_EINVAL when a value is missing,
 * SL_ETYPE when a value's type does not match (a DOUBLE component accepts an
 * INT value), SL_ERANGE for NaN/Inf, SL_ENOMEM. On failure out may hold a
 * partial key: callers reset it. */
int ingest_key_encode(sl_buf_t *out, const schema_type_t *types,
                      const agg_input_t *vals, size_t n);

/* Serving side: appends the key for text components parts[0..n-1] (lens[i]
 * bytes each) of entity `ent` to out, parsing each as its declared type
 * ("42", "true", "1.5"). Returns 0, SL_EINVAL (n differs from the entity's
 * key count), SL_ETYPE (a part is not a valid value of its type), SL_ENOMEM. */
int ingest_key_from_text(sl_buf_t *out, const schema_entity_t *ent,
                         const char *const *parts, const size_t *lens, size_t n);

/* Renders key bytes as readable text ("u42", or "eu|7" for composite keys)
 * into out, for logs and tools. Returns 0 or SL_ECORRUPT / SL_ENOMEM. */
int ingest_key_format(sl_buf_t *out, size_t n_keys, const void *key, size_t klen);

#endif
