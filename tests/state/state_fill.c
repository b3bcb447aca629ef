/*
 * state_fill.c — test helper: `state_fill DIR N [hold]` commits N entities
 * of view "clicks" over 4 partitions with progress events[p] = 1000 + p;
 * with "hold" it keeps the store open until stdin closes (a running worker).
 */
#include "state.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv)
{
    if (argc < 3) { fprintf(stderr, "usage: state_fill DIR N [hold]\n"); return 2; }
    state_store_t *st;
    char err[512];
    if (state_open(argv[1], NULL, &st, err, sizeof err)) { fprintf(stderr, "%s\n", err); return 1; }
    state_batch_t *b = state_batch_new();
    int n = atoi(argv[2]);
    for (int i = 0; i < n; i++) {
        char k[32];
        snprintf(k, sizeof k, "user%d", i);
        state_batch_put(b, "clicks", i % 4, k, strlen(k), "state-bytes", 11);
    }
    for (int p = 0; p < 4; p++) state_batch_progress(b, "events", p, 1000 + p, 1700000000000LL);
    int rc = state_batch_commit(st, b, err, sizeof err);
    if (rc) fprintf(stderr, "%s\n", err);
    if (!rc && argc > 3) {
        printf("holding\n");
        fflush(stdout);
        while (getchar() != EOF) {}
    }
    state_batch_free(b);
    state_close(st);
    return rc ? 1 : 0;
}
