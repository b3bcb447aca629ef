/*
 * watermark.h — per-partition event-time watermark arithmetic.
 *
 *   max_event   newest event time seen on the partition (INGEST_WM_NONE before
 *               the first good event)
 *   watermark   max_event - watermark_delay      (how far event time is known
 *               to have progressed, allowing that much out-of-orderness)
 *   accept_from watermark - allowed_lateness     (older events are late)
 *
 * An event first advances max_event, then is judged against accept_from, so
 * an event is never late relative to itself. Arithmetic saturates at the
 * int64 bounds. The watermark is stored with the partition's offset in every
 * commit, so a restart resumes with the same lateness decisions.
 */
#ifndef INGEST_WATERMARK_H
#define INGEST_WATERMARK_H

#include <stdbool.h>
#include <stdint.h>

#define INGEST_WM_NONE INT64_MIN

typedef struct ingest_wm {
    int64_t max_event_ms;
    int64_t delay_ms;       /* source watermark_delay */
    int64_t lateness_ms;    /* source allowed_lateness */
} ingest_wm_t;

static inline int64_t ingest__sat_sub(int64_t a, int64_t b)
{
    if (a == INT64_MIN) return INT64_MIN;
    if (b > 0 && a < INT64_MIN + b) return INT64_MIN;
    if (b < 0 && a > INT64_MAX + b) return INT64_MAX;
    return a - b;
}

static inline void ingest_wm_init(ingest_wm_t *wm, int64_t delay_ms, int64_t lateness_ms)
{
    wm->max_event_ms = INGEST_WM_NONE;
    wm->delay_ms = delay_ms;
    wm->lateness_ms = lateness_ms;
}

/* Watermark as stored in progress; INGEST_WM_NONE before any event. */
static inline int64_t ingest_wm_watermark(const ingest_wm_t *wm)
{
    return ingest__sat_sub(wm->max_event_ms, wm->delay_ms);
}

/* Restores from a stored watermark (inverse of ingest_wm_watermark). */
static inline void ingest_wm_restore(ingest_wm_t *wm, int64_t watermark_ms)
{
    if (watermark_ms == INGEST_WM_NONE) { wm->max_event_ms = INGEST_WM_NONE; return; }
    wm->max_event_ms = watermark_ms > INT64_MAX - wm->delay_ms ? INT64_MAX
                                                                : watermark_ms + wm->delay_ms;
}

/* Oldest event time still accepted (INT64_MIN accepts everything). */
static inline int64_t ingest_wm_accept_from(const ingest_wm_t *wm)
{
    return ingest__sat_sub(ingest_wm_watermark(wm), wm->lateness_ms);
}

/* Advances with one event's time and says whether that event is late. */
static inline bool ingest_wm_observe_is_late(ingest_wm_t *wm, int64_t event_ms)
{
    if (event_ms > wm->max_event_ms) wm->max_event_ms = event_ms;
    return event_ms < ingest_wm_accept_from(wm);
}

#endif
