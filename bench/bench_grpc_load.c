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
 * Closed loop (CONCURRENCY calls in flight over CHANNELS channels), or with
 * RPS a constant rate: call i is due at start + i/RPS and its latency is
 * counted from when it was due (no coordinated omission), with at most
 * CONCURRENCY in flight. Prints one line:
 *   calls=N ok=N qps=X p50_ms=X p99_ms=X client_cpu_us_per_call=X
 * Exit 1 when any call fails. One thread, one completion queue.
 */
#include <grpc/byte_buffer.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/time.h>
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
    int64_t due_ns;
} slot_t;

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

int main(int argc, char **argv)
{
    if (argc < 7) {
        fprintf(stderr, "usage: bench_grpc_load HOST:PORT METHOD REQUEST_FILE CALLS CONCURRENCY "
                        "CHANNELS [RPS]\n");
        return 2;
    }
    const char *target = argv[1], *method = argv[2];
    long calls = atol(argv[4]), conc = atol(argv[5]), n_ch = atol(argv[6]);
    double rps = argc > 7 ? atof(argv[7]) : 0;
    if (calls < 1 || conc < 1 || n_ch < 1) return 2;
    FILE *f = fopen(argv[3], "rb");
    if (!f) {
        perror(argv[3]);
        return 2;
    }
    static char reqbuf[1 << 20];
    size_t reqlen = fread(reqbuf, 1, sizeof reqbuf, f);
    fclose(f);

    grpc_init();
    grpc_completion_queue *cq = grpc_completion_queue_create_for_next(NULL);
    grpc_channel_credentials *creds = grpc_insecure_credentials_create();
    grpc_channel **ch = calloc((size_t)n_ch, sizeof *ch);
    for (long i = 0; i < n_ch; i++) {
        /* distinct channel args so each channel gets its own connection */
        grpc_arg arg = { .type = GRPC_ARG_INTEGER, .key = (char *)"sluice.bench.channel",
                         .value.integer = (int)i };
        grpc_channel_args args = { 1, &arg };
        ch[i] = grpc_channel_create(target, creds, &args);
    }
    grpc_slice method_slice = grpc_slice_from_static_string(method);
    grpc_slice req_slice = grpc_slice_from_copied_buffer(reqbuf, reqlen);
    slot_t *slots = calloc((size_t)conc, sizeof *slots);
    int64_t *lat = calloc((size_t)calls, sizeof *lat);
    long started = 0, done = 0, ok = 0;
    int64_t t0 = now_ns();
    double c0 = cpu_s();

    /* starts call number `started` on slot s (due at due_ns) */
#define START(s, due)                                                                          \
    do {                                                                                       \
        slot_t *sl_ = (s);                                                                     \
        memset(sl_, 0, sizeof *sl_);                                                           \
        sl_->due_ns = (due);                                                                   \
        grpc_metadata_array_init(&sl_->md_init);                                               \
        grpc_metadata_array_init(&sl_->md_trail);                                              \
        sl_->call = grpc_channel_create_call(ch[started % n_ch], NULL, GRPC_PROPAGATE_DEFAULTS, \
                                             cq, method_slice, NULL,                           \
                                             gpr_inf_future(GPR_CLOCK_REALTIME), NULL);        \
        grpc_byte_buffer *bb_ = grpc_raw_byte_buffer_create(&req_slice, 1);                     \
        grpc_op ops_[6];                                                                       \
        memset(ops_, 0, sizeof ops_);                                                          \
        ops_[0].op = GRPC_OP_SEND_INITIAL_METADATA;                                            \
        ops_[1].op = GRPC_OP_SEND_MESSAGE;                                                     \
        ops_[1].data.send_message.send_message = bb_;                                          \
        ops_[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;                                           \
        ops_[3].op = GRPC_OP_RECV_INITIAL_METADATA;                                            \
        ops_[3].data.recv_initial_metadata.recv_initial_metadata = &sl_->md_init;              \
        ops_[4].op = GRPC_OP_RECV_MESSAGE;                                                     \
        ops_[4].data.recv_message.recv_message = &sl_->resp;                                   \
        ops_[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;                                            \
        ops_[5].data.recv_status_on_client.trailing_metadata = &sl_->md_trail;                 \
        ops_[5].data.recv_status_on_client.status = &sl_->status;                              \
        ops_[5].data.recv_status_on_client.status_details = &sl_->details;                     \
        if (grpc_call_start_batch(sl_->call, ops_, 6, sl_, NULL) != GRPC_CALL_OK) {            \
            fprintf(stderr, "bench_grpc_load: start_batch failed\n");                          \
            return 1;                                                                          \
        }                                                                                      \
        grpc_byte_buffer_destroy(bb_);                                                         \
        started++;                                                                             \
    } while (0)

    slot_t **free_slots = calloc((size_t)conc, sizeof *free_slots);
    long n_free = 0;
    for (long i = 0; i < conc; i++) free_slots[n_free++] = &slots[i];
    while (done < calls) {
        /* start what is due (closed loop: everything a free slot allows) */
        int64_t now = now_ns();
        while (n_free > 0 && started < calls) {
            int64_t due = rps > 0 ? t0 + (int64_t)((double)started * 1e9 / rps) : now;
            if (due > now) break;
            START(free_slots[--n_free], due);
        }
        gpr_timespec deadline = gpr_inf_future(GPR_CLOCK_MONOTONIC);
        if (rps > 0 && started < calls && n_free > 0) {
            int64_t due = t0 + (int64_t)((double)started * 1e9 / rps);
            int64_t wait = due - now_ns();
            deadline = gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                                    gpr_time_from_nanos(wait > 0 ? wait : 0, GPR_TIMESPAN));
        }
        grpc_event ev = grpc_completion_queue_next(cq, deadline, NULL);
        if (ev.type == GRPC_QUEUE_TIMEOUT) continue;
        if (ev.type != GRPC_OP_COMPLETE) break;
        slot_t *s = ev.tag;
        lat[done++] = now_ns() - s->due_ns;
        if (ev.success && s->status == GRPC_STATUS_OK && s->resp) ok++;
        else if (ok + 5 > done)
            fprintf(stderr, "bench_grpc_load: call failed, status %d: %.*s\n", (int)s->status,
                    (int)GRPC_SLICE_LENGTH(s->details), (const char *)GRPC_SLICE_START_PTR(s->details));
        if (s->resp) grpc_byte_buffer_destroy(s->resp);
        grpc_slice_unref(s->details);
        grpc_metadata_array_destroy(&s->md_init);
        grpc_metadata_array_destroy(&s->md_trail);
        grpc_call_unref(s->call);
        free_slots[n_free++] = s;
    }
    double wall = (double)(now_ns() - t0) / 1e9;
    double cpu = cpu_s() - c0;
    qsort(lat, (size_t)done, sizeof *lat, cmp_i64);
    printf("calls=%ld ok=%ld qps=%.1f p50_ms=%.3f p99_ms=%.3f client_cpu_us_per_call=%.1f\n", done,
           ok, (double)done / wall, (double)lat[done / 2] / 1e6,
           (double)lat[(size_t)((double)done * 0.99)] / 1e6, cpu * 1e6 / (double)done);
    grpc_slice_unref(req_slice);
    for (long i = 0; i < n_ch; i++) grpc_channel_destroy(ch[i]);
    grpc_channel_credentials_release(creds);
    grpc_completion_queue_shutdown(cq);
    while (grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
           GRPC_QUEUE_SHUTDOWN) {
    }
    grpc_completion_queue_destroy(cq);
    free(ch);
    free(slots);
    free(free_slots);
    free(lat);
    grpc_shutdown();
    return ok == done ? 0 : 1;
}
