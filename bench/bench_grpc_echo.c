/*
 * bench_grpc_echo.c — the peer of the gRPC serving benchmark: an echo
 * service (/sluice.bench.Echo/Echo returns its request bytes) on the very
 * same rpc_server.c as sluice.v1.FeatureService, so the two differ only by
 * the lookup work. Runs until SIGINT/SIGTERM.
 *
 *   bench_grpc_echo PORT [THREADS]
 */
#include "rpc_server.h"
#include "sl_buf.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

static void echo(void *ctx, void *tctx, const void *req, size_t len, rpc_reply_t *reply)
{
    (void)ctx; (void)tctx;
    if (len) sl_buf_append(&reply->body, req, len);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: bench_grpc_echo PORT [THREADS]\n");
        return 2;
    }
    static const rpc_method_t methods[] = { { "/sluice.bench.Echo/Echo", echo, true } };
    rpc_server_opts_t o = { .bind = "127.0.0.1", .port = atoi(argv[1]),
                            .threads = argc > 2 ? atoi(argv[2]) : 2, .max_message_bytes = 4 << 20 };
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    rpc_server_t *srv;
    char err[256];
    if (rpc_server_start(&o, methods, 1, &srv, err, sizeof err)) {
        fprintf(stderr, "bench_grpc_echo: %s\n", err);
        return 1;
    }
    fprintf(stderr, "bench_grpc_echo: listening on 127.0.0.1:%d\n", rpc_server_port(srv));
    int sig;
    sigwait(&set, &sig);
    rpc_server_stop(srv);
    return 0;
}
