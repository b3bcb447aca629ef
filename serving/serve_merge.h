/*
 * serve_merge.h — reading an entity of a view that spans partitions.
 *
 * A view whose entity is not the topic's message key (schema_view_t.
 * spans_partitions) has one state per (entity, partition) in the store.
 * serve_merge_read reads the entity in every partition of the view's topic
 * that the store has progress for, decodes the states found and merges them
 * (agg_entity_merge): the answer is that of one state fed every event.
 */
#ifndef SERVE_MERGE_H
#define SERVE_MERGE_H

#include <stddef.h>

#include "agg.h"
#include "sl_buf.h"
#include "state.h"

/* *out = the merged entity (caller frees), or NULL when no partition holds
 * it. `val` is scratch. Returns 0, or SL_ESTATE / SL_ECORRUPT / SL_ESCHEMA /
 * SL_ENOMEM with errstr set. Thread-safe (state reads only). */
int serve_merge_read(state_store_t *st, const agg_plan_t *plan, const char *view,
                     const char *topic, const void *key, size_t klen, sl_buf_t *val,
                     agg_entity_t **out, char *errstr, size_t errsize);

#endif
