/*
 * test_agg_cost.c — pins the cost claims of the split prefix/suffix design by
 * counting partial merges and copies (the engine compiled with
 * -DAGG_COUNT_OPS): a 24 h / 1 min sliding query near the newest event costs
 * no merge at all (one combine of two partials inside the result), a query
 * far in the past folds the window tile by tile, and in-order updates cost a
 * small constant number of merges per event, amortised over re-splits.
 */
#include <criterion/criterion.h>

#include "agg_test_util.h"

extern long agg__n_ops;

#define MIN 60000LL
#define HOUR (60 * MIN)

static void feed(agg_plan_t *plan, agg_entity_t *ent, int64_t from, int64_t to, int64_t step)
{
    for (int64_t t = from; t < to; t += step) {
        tev_t e = { .t = t, .has_i = true, .has_d = true, .vi = t % 7, .vd = (double)(t % 11) };
        agg_input_t fields[TF__COUNT];
        agg_event_t ev;
        tev_to_event(&e, fields, &ev);
        cr_assert_eq(agg_entity_update(plan, ent, &ev, t - MIN), 0);
        if (t % HOUR == 0)
            agg_entity_expire(plan, ent, t - MIN);
    }
}

Test(agg_cost, sliding_24h_query_is_constant)
{
    const tfeat_t feats[] = {
        { SCHEMA_AGG_COUNT, -1, 0, 0, 0 },
        { SCHEMA_AGG_SUM, TF_VD, 0, 0, 0 },
        { SCHEMA_AGG_MAX, TF_VI, 0, 0, 0 },
        { SCHEMA_AGG_VARIANCE, TF_VD, 0, 0, 0 },
    };
    schema_window_t w = { .kind = SCHEMA_WINDOW_SLIDING, .size_ms = 24 * HOUR, .hop_ms = MIN };
    schema_t *s = tschema_new(feats, 4, w, 0);
    agg_plan_t *plan;
    char err[128];
    cr_assert_eq(agg_plan_new(s, 0, &plan, err, sizeof(err)), 0);
    agg_entity_t *ent = agg_entity_new(plan);

    int64_t t0 = 1700000000000LL - 1700000000000LL % HOUR, t1 = t0 + 48 * HOUR;
    long events = (long)((t1 - t0) / 10000);
    agg__n_ops = 0;
    feed(plan, ent, t0, t1, 10000);
    double per_event = (double)agg__n_ops / (double)events / 4.0;
    cr_log_info("updates: %.2f merges+copies per feature per event", per_event);
    cr_assert_leq(per_event, 4.0, "%.2f ops per feature-update", per_event);

    agg_value_t out[4];
    int64_t last = t1 - 10000;
    /* serving queries: from the newest event to 11 h after it */
    for (int64_t t = last; t < last + 11 * HOUR; t += 7 * MIN + 13) {
        agg__n_ops = 0;
        agg_entity_query(plan, ent, t, out);
        cr_assert_eq(agg__n_ops, 0, "t = newest + %lld ms: %ld merges", (long long)(t - last),
                     agg__n_ops);
    }
    cr_assert_eq(out[0].type, AGG_VAL_INT);
    /* a query 12 h in the past folds its tiles one by one */
    agg__n_ops = 0;
    agg_entity_query(plan, ent, last - 12 * HOUR, out);
    cr_assert_geq(agg__n_ops, 4 * 700, "%ld", agg__n_ops);

    agg_entity_free(ent);
    agg_plan_free(plan);
    tschema_free(s);
}
