/*
 * bench_grpc_load.c — a light gRPC load generator for the serving
 * benchmark: one unary method, one pre-serialized request sent as is, the
 * response counted but never decoded. On a box where the load generator
 * shares the cores with the server, ghz spends several times the server's
 * CPU per call decoding responses (more for richer ones), which then sets
 * the ratio between two servers; this client costs both the same few
 * microseconds, so the comparison measures the servers.
 *
 *   bench_grpc_load HOST:PORT METHOD REQUEST_FILE CALLS CONCURRENCY CHANNELS [RPS]
 *
 * Closed loop (no RPS): CONCURRENCY calls in flight over CHANNELS channels,
 * one thread and one completion queue; latency from start to completion.
 *
 * Open loop (RPS): a sender thread starts call i at t0 + i/RPS, whatever is
 * in flight (CONCURRENCY is ignored: a slow answer never delays the next
 * send), sleeping to each due time with clock_nanosleep (gRPC's own timers
 * round to milliseconds), while a receiver thread drains the completion
 * queue. Latency counts from when the call was *due*, so a backlog shows in
 * full (no coordinated omission); the sender's own lateness (start - due)
 * and the latency from the actual start are printed too, to tell a late
 * client from a slow server.
 *
 * Prints one line of key=value:
 *   calls=N ok=N qps=X p50_ms=X p99_ms=X p999_ms=X max_ms=X client_cpu_us_per_call=X
 * and, open loop, also send_lag_p99_ms=X send_lag_max_ms=X svc_p50_ms=X svc_p99_ms=X
 * svc_p999_ms=X max_in_flight=N (svc_* from the actual start).
 * Exit 1 when any call fails.
 */
#define _GNU_SOURCE
#include <grpc/byte_buffer.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/time.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

typedef struct slot {
    grpc_call *call;
    grpc_metadata_array md_init, md_trail;
    grpc_byte_buffer *resp;
    grpc_status_code status;
    grpc_slice details;
    int64_t due_ns;           /* when the call was due (closed loop: when started) */
    int64_t start_ns;         /* when it was started */
} slot_t;

typedef struct load {
    grpc_channel **ch;
    long n_ch;
    grpc_completion_queue *cq;
    grpc_slice method;
    grpc_slice req;
    long calls;
    double rps;
    slot_t *slots;            /* open loop: one per call */
    int64_t t0;
    _Atomic long started;     /* open loop: calls the sender has started */
    int failed;               /* the sender could not start a call */
} load_t;

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static double cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

/* The value at quantile q of n sorted values, in ms. */
static double q_ms(const int64_t *v, long n, double q)
{
    long i = (long)((double)n * q);
    if (i >= n) i = n - 1;
    return (double)v[i] / 1e6;
}

/* Starts call number `i` on slot s, due at `due`. Returns 0, or -1 when
 * gRPC refuses the batch. */
static int start_call(load_t *ld, slot_t *s, long i, int64_t due)
{
    memset(s, 0, sizeof *s);
    s->due_ns = due;
    grpc_metadata_array_init(&s->md_init);
    grpc_metadata_array_init(&s->md_trail);
    s->call = grpc_channel_create_call(ld->ch[i % ld->n_ch], NULL, GRPC_PROPAGATE_DEFAULTS, ld->cq,
                                       ld->method, NULL, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&ld->req, 1);
    grpc_op ops[6];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = bb;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &s->md_init;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &s->resp;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &s->md_trail;
    ops[5].data.recv_status_on_client.status = &s->status;
    ops[5].data.recv_status_on_client.status_details = &s->details;
    s->start_ns = now_ns();
    grpc_call_error e = grpc_call_start_batch(s->call, ops, 6, s, NULL);
    grpc_byte_buffer_destroy(bb);
    if (e != GRPC_CALL_OK) {
        fprintf(stderr, "bench_grpc_load: start_batch failed (%d)\n", (int)e);
        return -1;
    }
    return 0;
}

/* Frees what a completed call holds; returns whether it succeeded. */
static int finish_call(slot_t *s, int success, long n_failed)
{
    int ok = success && s->status == GRPC_STATUS_OK && s->resp;
    if (!ok && n_failed < 5)
        fprintf(stderr, "bench_grpc_load: call failed, status %d: %.*s\n", (int)s->status,
                (int)GRPC_SLICE_LENGTH(s->details), (const char *)GRPC_SLICE_START_PTR(s->details));
    if (s->resp) grpc_byte_buffer_destroy(s->resp);
    grpc_slice_unref(s->details);
    grpc_metadata_array_destroy(&s->md_init);
    grpc_metadata_array_destroy(&s->md_trail);
    grpc_call_unref(s->call);
    return ok;
}

/* Open loop: starts every call at its due time. */
static void *sender_main(void *arg)
{
    load_t *ld = arg;
    for (long i = 0; i < ld->calls; i++) {
        int64_t due = ld->t0 + (int64_t)((double)i * 1e9 / ld->rps);
        if (due > now_ns()) {
            struct timespec ts = { .tv_sec = due / 1000000000, .tv_nsec = due % 1000000000 };
            while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
            }
        }
        if (start_call(ld, &ld->slots[i], i, due)) {
            ld->failed = 1;
            break;
        }
        atomic_store_explicit(&ld->started, i + 1, memory_order_release);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 7) {
        fprintf(stderr, "usage: bench_grpc_load HOST:PORT METHOD REQUEST_FILE CALLS CONCURRENCY "
                        "CHANNELS [RPS]\n");
        return 2;
    }
    const char *target = argv[1];
    load_t ld = { .calls = atol(argv[4]), .n_ch = atol(argv[6]),
                  .rps = argc > 7 ? atof(argv[7]) : 0 };
    long conc = atol(argv[5]);
    if (ld.calls < 1 || conc < 1 || ld.n_ch < 1 || ld.rps < 0) return 2;
    FILE *f = fopen(argv[3], "rb");
    if (!f) {
        perror(argv[3]);
        return 2;
    }
    static char reqbuf[1 << 20];
    size_t reqlen = fread(reqbuf, 1, sizeof reqbuf, f);
    fclose(f);

    grpc_init();
    ld.cq = grpc_completion_queue_create_for_next(NULL);
    grpc_channel_credentials *creds = grpc_insecure_credentials_create();
    ld.ch = calloc((size_t)ld.n_ch, sizeof *ld.ch);
    for (long i = 0; i < ld.n_ch; i++) {
        /* distinct channel args so each channel gets its own connection */
        grpc_arg arg = { .type = GRPC_ARG_INTEGER, .key = (char *)"sluice.bench.channel",
                         .value.integer = (int)i };
        grpc_channel_args args = { 1, &arg };
        ld.ch[i] = grpc_channel_create(target, creds, &args);
    }
    ld.method = grpc_slice_from_static_string(argv[2]);
    ld.req = grpc_slice_from_copied_buffer(reqbuf, reqlen);
    bool open_loop = ld.rps > 0;
    long n_slots = open_loop ? ld.calls : conc;
    ld.slots = calloc((size_t)n_slots, sizeof *ld.slots);
    int64_t *lat = calloc((size_t)ld.calls, sizeof *lat);
    int64_t *svc = open_loop ? calloc((size_t)ld.calls, sizeof *svc) : NULL;
    int64_t *lag = open_loop ? calloc((size_t)ld.calls, sizeof *lag) : NULL;
    slot_t **free_slots = calloc((size_t)conc, sizeof *free_slots);
    if (!ld.ch || !ld.slots || !lat || !free_slots || (open_loop && (!svc || !lag))) {
        fprintf(stderr, "bench_grpc_load: out of memory\n");
        return 2;
    }
    long done = 0, ok = 0, started = 0, max_in_flight = 0;
    double c0 = cpu_s();
    ld.t0 = now_ns();
    pthread_t sender;

    if (open_loop) {
        if (pthread_create(&sender, NULL, sender_main, &ld)) return 2;
        while (done < ld.calls) {
            grpc_event ev = grpc_completion_queue_next(
                ld.cq, gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(200, GPR_TIMESPAN)),
                NULL);
            if (ev.type == GRPC_QUEUE_TIMEOUT) {
                if (ld.failed && done >= atomic_load(&ld.started)) break;
                continue;
            }
            if (ev.type != GRPC_OP_COMPLETE) break;
            int64_t t = now_ns();
            slot_t *s = ev.tag;
            long in_flight = atomic_load_explicit(&ld.started, memory_order_acquire) - done;
            if (in_flight > max_in_flight) max_in_flight = in_flight;
            lat[done] = t - s->due_ns;
            svc[done] = t - s->start_ns;
            lag[done] = s->start_ns - s->due_ns;
            done++;
            ok += finish_call(s, ev.success, done - 1 - ok);
        }
        pthread_join(sender, NULL);
    } else {
        long n_free = 0;
        for (long i = 0; i < conc; i++) free_slots[n_free++] = &ld.slots[i];
        while (done < ld.calls) {
            while (n_free > 0 && started < ld.calls) {
                if (start_call(&ld, free_slots[--n_free], started, now_ns())) return 1;
                started++;
            }
            grpc_event ev = grpc_completion_queue_next(ld.cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
            if (ev.type != GRPC_OP_COMPLETE) break;
            slot_t *s = ev.tag;
            lat[done++] = now_ns() - s->due_ns;
            ok += finish_call(s, ev.success, done - 1 - ok);
            free_slots[n_free++] = s;
        }
    }
    double wall = (double)(now_ns() - ld.t0) / 1e9;
    double cpu = cpu_s() - c0;
    if (done == 0) {
        fprintf(stderr, "bench_grpc_load: no call completed\n");
        return 1;
    }
    qsort(lat, (size_t)done, sizeof *lat, cmp_i64);
    printf("calls=%ld ok=%ld qps=%.1f p50_ms=%.3f p99_ms=%.3f p999_ms=%.3f max_ms=%.3f "
           "client_cpu_us_per_call=%.1f",
           done, ok, (double)done / wall, q_ms(lat, done, 0.5), q_ms(lat, done, 0.99),
           q_ms(lat, done, 0.999), q_ms(lat, done, 1.0), cpu * 1e6 / (double)done);
    if (open_loop) {
        qsort(svc, (size_t)done, sizeof *svc, cmp_i64);
        qsort(lag, (size_t)done, sizeof *lag, cmp_i64);
        printf(" send_lag_p99_ms=%.3f send_lag_max_ms=%.3f svc_p50_ms=%.3f svc_p99_ms=%.3f "
               "svc_p999_ms=%.3f max_in_flight=%ld",
               q_ms(lag, done, 0.99), q_ms(lag, done, 1.0), q_ms(svc, done, 0.5),
               q_ms(svc, done, 0.99), q_ms(svc, done, 0.999), max_in_flight);
    }
    printf("\n");
    grpc_slice_unref(ld.req);
    for (long i = 0; i < ld.n_ch; i++) grpc_channel_destroy(ld.ch[i]);
    grpc_channel_credentials_release(creds);
    grpc_completion_queue_shutdown(ld.cq);
    while (grpc_completion_queue_next(ld.cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
           GRPC_QUEUE_SHUTDOWN) {
    }
    grpc_completion_queue_destroy(ld.cq);
    free(ld.ch);
    free(ld.slots);
    free(free_slots);
    free(lat);
    free(svc);
    free(lag);
    grpc_shutdown();
    return ok == done && !ld.failed ? 0 : 1;
}
