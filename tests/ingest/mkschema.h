/* mkschema.h — test helper: a schema from inline YAML, failing the test on error. */
#ifndef TESTS_INGEST_MKSCHEMA_H
#define TESTS_INGEST_MKSCHEMA_H

#include <criterion/criterion.h>
#include <string.h>

#include "schema.h"

static inline schema_t *mkschema(const char *yaml)
{
    schema_t *s = NULL;
    char err[512] = "";
    int rc = schema_load_string("test.yaml", yaml, strlen(yaml), &s, err, sizeof err);
    cr_assert_eq(rc, 0, "schema: %s", err);
    return s;
}

#endif
