/*
 * state_fill.c — test helper: `state_fill DIR N [hold|serve SNAPDIR]`
 * commits N entities of view "clicks" over 4 partitions with progress
 * events[p] = 1000 + p; with "hold" it keeps the store open until stdin
 * closes (a running worker); "serve" also answers snapshot requests into
 * SNAPDIR meanwhile, as the ingest loop does.
 */
#include "snapshot.h"
#include "state.h"

#include <poll.h>
#include <unistd.h>

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
        const char *snapdir = argc > 4 && !strcmp(argv[3], "serve") ? argv[4] : NULL;
        for (;;) {
            struct pollfd pfd = { .fd = 0, .events = POLLIN };
            int pr = poll(&pfd, 1, 50);
            if (pr > 0) {
                char c;
                if (read(0, &c, 1) <= 0) break;
            }
            if (snapdir && state_snapshot_serve_request(st, snapdir, NULL, NULL, NULL, 0, err, sizeof err))
                fprintf(stderr, "serve: %s\n", err);
        }
    }
    state_batch_free(b);
    state_close(st);
    return rc ? 1 : 0;
}
