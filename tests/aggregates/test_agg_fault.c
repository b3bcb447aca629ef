/*
 * test_agg_fault.c — allocation-failure simulation for the window engine.
 *
 * The test binary is linked with -Wl,--wrap=malloc,--wrap=calloc,
 * --wrap=realloc, so every allocation made by sl_aggregates goes through the
 * counters below. For N = 0, 1, 2, ... the Nth allocation after arming fails
 * (and, in a second pass, every one after it too). Whatever happens, the
 * engine must return 0 or SL_ENOMEM, never crash, leave an entity that still
 * encodes, decodes and answers queries, and leak nothing (LeakSanitizer runs
 * at the end of each test process). It found that a failed string copy in
 * first/last left the new event time on the old value (fixed in sv_set).
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "agg_test_util.h"
#include "sl_buf.h"
#include "sl_err.h"

void *__real_malloc(size_t n);
void *__real_calloc(size_t k, size_t n);
void *__real_realloc(void *p, size_t n);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t k, size_t n);
void *__wrap_realloc(void *p, size_t n);

static long fail_at = -1;      /* -1: disarmed */
static bool fail_after;        /* keep failing once the first failure hit */
static long n_alloc;
static long n_failed;

static bool should_fail(void)
{
    if (fail_at < 0)
        return false;
    long k = n_alloc++;
    if (k == fail_at || (fail_after && k > fail_at)) {
        n_failed++;
        return true;
    }
    return false;
}

void *__wrap_malloc(size_t n) { return should_fail() ? NULL : __real_malloc(n); }
void *__wrap_calloc(size_t k, size_t n) { return should_fail() ? NULL : __real_calloc(k, n); }
void *__wrap_realloc(void *p, size_t n) { return should_fail() ? NULL : __real_realloc(p, n); }

static void arm(long at, bool after)
{
    n_alloc = 0;
    n_failed = 0;
    fail_after = after;
    fail_at = at;
}

static void disarm(void) { fail_at = -1; }

static void fault_run(schema_window_t w, bool after)
{
    schema_t *s = tschema_new(tfeat_all, tfeat_all_n, w, 2);
    agg_plan_t *plan;
    char err[128];
    cr_assert_eq(agg_plan_new(s, 0, &plan, err, sizeof(err)), 0);
    agg_value_t out[64];
    for (long at = 0;; at++) {
        agg_entity_t *ent = agg_entity_new(plan);
        cr_assert(ent);
        uint64_t rs = 99;
        arm(at, after);
        for (int i = 0; i < 60; i++) {
            tev_t e = { .t = trange(&rs, 0, 3000), .has_i = true, .has_d = true, .has_s = true,
                        .has_b = true, .vi = trange(&rs, -9, 9), .vd = (double)trange(&rs, 0, 99),
                        .vb = true };
            snprintf(e.vs, sizeof(e.vs), "s%d", (int)trange(&rs, 0, 80));
            agg_input_t fields[TF__COUNT];
            agg_event_t ev;
            tev_to_event(&e, fields, &ev);
            int rc = agg_entity_update(plan, ent, &ev, INT64_MIN);
            cr_assert(rc == 0 || rc == SL_ENOMEM, "rc %d", rc);
            if (i % 20 == 19)
                agg_entity_expire(plan, ent, e.t - 500);
            agg_entity_query(plan, ent, e.t, out);
        }
        sl_buf_t buf = SL_BUF_INIT;
        int rc = agg_entity_encode(plan, ent, &buf);
        cr_assert(rc == 0 || rc == SL_ENOMEM);
        if (rc == 0) {
            agg_entity_t *d = NULL;
            rc = agg_entity_decode(plan, buf.data, buf.len, &d);
            cr_assert(rc == 0 || rc == SL_ENOMEM, "decode rc %d", rc);
            agg_entity_free(d);
        }
        long failed = n_failed;
        disarm();
        /* unarmed: the entity is still a valid state */
        sl_buf_reset(&buf);
        cr_assert_eq(agg_entity_encode(plan, ent, &buf), 0);
        agg_entity_t *d = NULL;
        cr_assert_eq(agg_entity_decode(plan, buf.data, buf.len, &d), 0);
        agg_entity_query(plan, d, 3000, out);
        agg_entity_free(d);
        sl_buf_free(&buf);
        agg_entity_free(ent);
        if (!failed)
            break;                  /* the run finished before the Nth allocation */
    }
    agg_plan_free(plan);
    tschema_free(s);
}

Test(agg_fault, sliding_each_allocation) { fault_run((schema_window_t){ .kind = SCHEMA_WINDOW_SLIDING, .size_ms = 400, .hop_ms = 20 }, false); }
Test(agg_fault, sliding_from_allocation) { fault_run((schema_window_t){ .kind = SCHEMA_WINDOW_SLIDING, .size_ms = 400, .hop_ms = 20 }, true); }
Test(agg_fault, tumbling_each_allocation) { fault_run((schema_window_t){ .kind = SCHEMA_WINDOW_TUMBLING, .size_ms = 100 }, false); }
Test(agg_fault, session_each_allocation) { fault_run((schema_window_t){ .kind = SCHEMA_WINDOW_SESSION, .gap_ms = 30, .max_length_ms = 500 }, false); }
Test(agg_fault, session_from_allocation) { fault_run((schema_window_t){ .kind = SCHEMA_WINDOW_SESSION, .gap_ms = 30 }, true); }
Test(agg_fault, lifetime_each_allocation) { fault_run((schema_window_t){ .kind = SCHEMA_WINDOW_LIFETIME }, false); }
