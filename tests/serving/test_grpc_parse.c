/*
 * test_grpc_parse.c — the gRPC front end's fast GetOnlineFeaturesRequest
 * parser against protobuf-c (the oracle): random requests packed by
 * protobuf-c must be taken by the fast path and give the same message; any
 * byte mutation of them must either be declined (protobuf-c then decides)
 * or give the same message (a repeated layout field included: the last
 * one wins); other shapes (feature refs, tokens) are declined.
 */
#include <criterion/criterion.h>

#include "serve_grpc.h"
#include "sluice/v1/feature_service.pb-c.h"

#include <stdlib.h>
#include <string.h>

static char *rand_str(void)
{
    size_t n = (size_t)(rand() % 20);
    char *s = malloc(n + 1);
    for (size_t i = 0; i < n; i++) {
        int r = rand() % 10;
        s[i] = r == 0 ? (char)(0x80 + rand() % 0x40) : r == 1 ? '|' : (char)('a' + rand() % 26);
    }
    s[n] = 0;
    return s;
}

/* A random request (feature_service, rows, a layout, sometimes key
 * columns), packed by protobuf-c. */
static uint8_t *random_request(size_t *len)
{
    Sluice__V1__GetOnlineFeaturesRequest req = SLUICE__V1__GET_ONLINE_FEATURES_REQUEST__INIT;
    req.features_case = SLUICE__V1__GET_ONLINE_FEATURES_REQUEST__FEATURES_FEATURE_SERVICE;
    req.feature_service = rand_str();
    int lr = rand() % 4;      /* rows (default, left out), dense, or an unknown value */
    req.layout = (Sluice__V1__ResponseLayout)(lr < 2 ? 0 : lr == 2 ? 1 : rand() % 300);
    req.n_entities = (size_t)(rand() % 30);
    req.entities = calloc(req.n_entities + 1, sizeof *req.entities);
    for (size_t e = 0; e < req.n_entities; e++) {
        Sluice__V1__EntityRow *row = calloc(1, sizeof *row);
        sluice__v1__entity_row__init(row);
        row->n_keys = (size_t)(rand() % 4);
        row->keys = calloc(row->n_keys + 1, sizeof *row->keys);
        for (size_t k = 0; k < row->n_keys; k++) {
            Sluice__V1__EntityRow__KeysEntry *ke = calloc(1, sizeof *ke);
            sluice__v1__entity_row__keys_entry__init(ke);
            ke->key = rand_str();
            ke->value = rand_str();
            row->keys[k] = ke;
        }
        req.entities[e] = row;
    }
    if (rand() % 3 == 0) {   /* key columns (entity_columns) as well */
        req.n_entity_columns = (size_t)(rand() % 3);
        req.entity_columns = calloc(req.n_entity_columns + 1, sizeof *req.entity_columns);
        for (size_t c = 0; c < req.n_entity_columns; c++) {
            Sluice__V1__EntityKeyColumn *col = calloc(1, sizeof *col);
            sluice__v1__entity_key_column__init(col);
            col->name = rand_str();
            col->n_values = (size_t)(rand() % 40);
            col->values = calloc(col->n_values + 1, sizeof *col->values);
            for (size_t i = 0; i < col->n_values; i++) col->values[i] = rand_str();
            req.entity_columns[c] = col;
        }
    }
    *len = sluice__v1__get_online_features_request__get_packed_size(&req);
    uint8_t *buf = malloc(*len + 1);
    sluice__v1__get_online_features_request__pack(&req, buf);
    for (size_t c = 0; c < req.n_entity_columns; c++) {
        for (size_t i = 0; i < req.entity_columns[c]->n_values; i++) free(req.entity_columns[c]->values[i]);
        free(req.entity_columns[c]->values);
        free(req.entity_columns[c]->name);
        free(req.entity_columns[c]);
    }
    free(req.entity_columns);
    for (size_t e = 0; e < req.n_entities; e++) {
        for (size_t k = 0; k < req.entities[e]->n_keys; k++) {
            free(req.entities[e]->keys[k]->key);
            free(req.entities[e]->keys[k]->value);
            free(req.entities[e]->keys[k]);
        }
        free(req.entities[e]->keys);
        free(req.entities[e]);
    }
    free(req.entities);
    free(req.feature_service);
    return buf;
}

Test(grpc_parse, protobuf_c_packed_requests_take_the_fast_path)
{
    srand(5);
    for (int i = 0; i < 3000; i++) {
        size_t len;
        uint8_t *buf = random_request(&len);
        cr_assert_eq(serve_grpc_parse_check(buf, len), 1, "request %d (%zu bytes)", i, len);
        free(buf);
    }
}

Test(grpc_parse, mutations_are_declined_or_parsed_alike)
{
    srand(6);
    int taken = 0, declined = 0;
    for (int i = 0; i < 20000; i++) {
        size_t len;
        uint8_t *buf = random_request(&len);
        if (len == 0) {
            free(buf);
            continue;
        }
        int m = rand() % 5;
        size_t at = (size_t)rand() % len;
        if (m == 0) buf[at] = (uint8_t)rand();                 /* change a byte */
        else if (m == 1) len = at;                              /* truncate */
        else if (m == 2) buf[at] ^= (uint8_t)(1u << (rand() % 8));
        else if (m == 3) {                                      /* a trailing unknown field */
            buf = realloc(buf, len + 3);
            buf[len] = 0x28; buf[len + 1] = 0x07; len += 2;     /* field 5 varint: min_token_wait_ms */
        } else {                                                /* layout (again): the last one wins */
            buf = realloc(buf, len + 3);
            buf[len] = 0x30; buf[len + 1] = (uint8_t)(rand() % 3); len += 2;
        }
        int rc = serve_grpc_parse_check(buf, len);
        cr_assert_neq(rc, -1, "mutation %d of request %d differs from protobuf-c", m, i);
        if (rc == 1) taken++;
        else declined++;
        free(buf);
    }
    cr_assert_gt(taken, 0);
    cr_assert_gt(declined, 0);
}

Test(grpc_parse, other_shapes_are_declined)
{
    /* feature_refs */
    Sluice__V1__GetOnlineFeaturesRequest req = SLUICE__V1__GET_ONLINE_FEATURES_REQUEST__INIT;
    Sluice__V1__FeatureRefList refs = SLUICE__V1__FEATURE_REF_LIST__INIT;
    char *r[] = { (char *)"user_stats:*" };
    refs.n_refs = 1;
    refs.refs = r;
    req.features_case = SLUICE__V1__GET_ONLINE_FEATURES_REQUEST__FEATURES_FEATURE_REFS;
    req.feature_refs = &refs;
    uint8_t buf[256];
    size_t n = sluice__v1__get_online_features_request__pack(&req, buf);
    cr_assert_eq(serve_grpc_parse_check(buf, n), 0);
    /* a service with a token wait */
    req.features_case = SLUICE__V1__GET_ONLINE_FEATURES_REQUEST__FEATURES_FEATURE_SERVICE;
    req.feature_service = (char *)"svc";
    req.min_token_wait_ms = 5;
    n = sluice__v1__get_online_features_request__pack(&req, buf);
    cr_assert_eq(serve_grpc_parse_check(buf, n), 0);
    /* the empty message */
    cr_assert_eq(serve_grpc_parse_check(buf, 0), 0);
}
