/*
 * sl_err.h — Sluice's one error-code table.
 *
 * Every fallible function in Sluice returns int: 0 on success, a negative SL_E*
 * code otherwise. Names and messages come from the single X-macro below so they
 * cannot drift apart (the libuv UV_ERRNO_MAP habit). Library errors (RocksDB,
 * librdkafka, gRPC) are translated into these codes by the adapter that calls
 * the library; detail goes into a caller-supplied (char *errstr, size_t size).
 */
#ifndef SL_ERR_H
#define SL_ERR_H

#define SL_ERRNO_MAP(X)                                                        \
    X(NOMEM,     -1, "out of memory")                                          \
    X(INVAL,     -2, "invalid argument")                                       \
    X(PARSE,     -3, "parse error")                                            \
    X(IO,        -4, "I/O error")                                              \
    X(NOTFOUND,  -5, "not found")                                              \
    X(EXISTS,    -6, "already exists")                                         \
    X(CORRUPT,   -7, "corrupt or truncated data")                              \
    X(VERSION,   -8, "unsupported format version")                             \
    X(LATE,      -9, "event later than the allowed lateness")                  \
    X(RANGE,    -10, "value out of range")                                     \
    X(TYPE,     -11, "type mismatch")                                          \
    X(TOOBIG,   -12, "too large")                                              \
    X(BUSY,     -13, "resource busy or locked")                                \
    X(KAFKA,    -14, "Kafka error")                                            \
    X(STATE,    -15, "state store error")                                      \
    X(SCHEMA,   -16, "schema changed")                                         \
    X(AUTH,     -17, "authentication required")                                \
    X(TIMEOUT,  -18, "timed out")                                              \
    X(SHUTDOWN, -19, "shutting down")

enum sl_err {
    SL_OK = 0,
#define SL__ERR_ENUM(name, code, msg) SL_E##name = (code),
    SL_ERRNO_MAP(SL__ERR_ENUM)
#undef SL__ERR_ENUM
};

/* Static message for an error code; "unknown error" for codes not in the map. */
const char *sl_strerror(int rc);
/* Symbolic name ("SL_ELATE") for an error code. */
const char *sl_errname(int rc);

#endif
