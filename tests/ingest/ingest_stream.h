/*
 * ingest_stream.h — test helper: a known event stream for the ingest
 * integration tests, the producer that writes it to a real topic, and an
 * independent oracle that recomputes every aggregate and counter from the
 * generator's own values (not from the decoder, not from the engine).
 *
 * The stream is out of order (jittered event times), has late events and
 * (optionally) one bad message of each reason in a cycle. Messages carry an
 * explicit partition; a partition's offsets are its message indexes, since
 * the topic is fresh and produced by one idempotent producer.
 *
 * Schema (STREAM_SCHEMA_FMT, topic name filled in):
 *   user_stats  (entity user, key user):              lifetime count, sum, max, min of amount
 *   route_stats (entity route, key (region, shard)),   filter amount > 50:
 *                                                      lifetime count, sum of amount
 * Source: watermark_delay 1s, allowed_lateness 2s, epoch_ms time in "ts".
 */
#ifndef TESTS_INGEST_STREAM_H
#define TESTS_INGEST_STREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "decode.h"
#include "ingest.h"
#include "state.h"

#define STREAM_DELAY_MS 1000
#define STREAM_LATENESS_MS 2000
#define STREAM_MAX_BYTES 2048

extern const char *const STREAM_SCHEMA_FMT;   /* printf format, one %s: the topic */

typedef struct stream_msg {
    int32_t partition;
    ingest_bad_t kind;        /* INGEST_OK or the reason it is bad */
    char *payload;            /* NULL for a tombstone */
    size_t len;
    char key[24];             /* Kafka message key (the user) */
    /* generator's values of a good event */
    int user, region, shard;
    int64_t amount, ts;
} stream_msg_t;

typedef struct stream {
    stream_msg_t *m;
    size_t n, cap;
    int partitions;
    uint64_t rng;
    int64_t next_ts;
    size_t n_users;
} stream_t;

void stream_init(stream_t *s, int partitions, size_t n_users, uint64_t seed);
/* Appends n messages; a fraction bad_per_1000/1000 of them are bad, cycling
 * through every reason. */
void stream_generate(stream_t *s, size_t n, int bad_per_1000);
void stream_free(stream_t *s);

/* Produces messages [from, to) in order with an idempotent producer and
 * waits for delivery. Returns 0 or -1 with errstr. */
int stream_produce(const stream_t *s, size_t from, size_t to, const char *bootstrap,
                   const char *topic, char *errstr, size_t errsize);

/* Recomputes everything from messages [0, upto) and compares with the store:
 * every entity of both views in every partition (values and the number of
 * stored entities), and each partition's persisted counters. Returns the
 * number of mismatches (0 = equal) and prints the first few to stderr.
 * `schema` must be the one the worker ran with. */
size_t stream_check(const stream_t *s, size_t upto, const schema_t *schema, state_store_t *st,
                    const char *topic, uint64_t bad_out[INGEST_BAD__COUNT], uint64_t *late_out);

/* Index of the message at (partition, offset), or (size_t)-1. */
size_t stream_find(const stream_t *s, int32_t partition, int64_t offset);

#endif
