/*
 * test_resp_parse.c — the RESP request parser: framing, pipelining, inline
 * commands, every limit, malformed frames.
 *
 * Oracle: commands are generated here (random binary arguments), encoded by
 * a tiny independent encoder, and must come back identical however the
 * byte stream is cut into feeds.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "resp_parse.h"
#include "sl_buf.h"
#include "sl_err.h"

static resp_limits_t lim_default = { 64, 1 << 20, 65536 };

/* Parses all of `s` fed in one go; collects the commands joined as
 * "a b c;" (args separated by spaces) into out. Returns the last rc. */
static int parse_all(const resp_limits_t *lim, const char *s, size_t n, char *out, size_t outsz)
{
    resp_parser_t *p = resp_parser_new(lim);
    cr_assert_not_null(p);
    out[0] = 0;
    int rc = resp_parser_feed(p, s, n);
    while (rc == 0) {
        resp_cmd_t cmd;
        rc = resp_parser_next(p, &cmd);
        if (rc != 1) break;
        rc = 0;
        for (size_t i = 0; i < cmd.argc; i++) {
            strncat(out, cmd.argv[i], outsz - strlen(out) - 1);
            strncat(out, i + 1 < cmd.argc ? " " : ";", outsz - strlen(out) - 1);
        }
    }
    resp_parser_free(p);
    return rc;
}

#define S(x) x, sizeof(x) - 1

Test(resp_parse, one_multibulk)
{
    char out[256];
    cr_assert_eq(parse_all(&lim_default, S("*2\r\n$4\r\nECHO\r\n$5\r\nhello\r\n"), out, sizeof out), 0);
    cr_assert_str_eq(out, "ECHO hello;");
}

Test(resp_parse, pipelined_in_one_feed)
{
    char out[256];
    const char in[] = "*1\r\n$4\r\nPING\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*3\r\n$4\r\nHGET\r\n$7\r\nv:{a|b}\r\n$1\r\nf\r\n";
    cr_assert_eq(parse_all(&lim_default, S(in), out, sizeof out), 0);
    cr_assert_str_eq(out, "PING;GET k;HGET v:{a|b} f;");
}

Test(resp_parse, inline_commands)
{
    char out[256];
    cr_assert_eq(parse_all(&lim_default, S("PING\r\n  echo   hi  \n\r\n\nHGETALL x:1\r\n"), out, sizeof out), 0);
    cr_assert_str_eq(out, "PING;echo hi;HGETALL x:1;");
}

Test(resp_parse, inline_quotes)
{
    resp_parser_t *p = resp_parser_new(&lim_default);
    const char in[] = "SET \"a b\" 'c d' \"\\x41\\n\\\"\" 'it\\'s' \"\"\r\n";
    cr_assert_eq(resp_parser_feed(p, S(in)), 0);
    resp_cmd_t cmd;
    cr_assert_eq(resp_parser_next(p, &cmd), 1);
    cr_assert_eq(cmd.argc, 6);
    cr_assert_str_eq(cmd.argv[1], "a b");
    cr_assert_str_eq(cmd.argv[2], "c d");
    cr_assert_eq(cmd.argvlen[3], 3);
    cr_assert_eq(memcmp(cmd.argv[3], "A\n\"", 3), 0);
    cr_assert_str_eq(cmd.argv[4], "it's");
    cr_assert_eq(cmd.argvlen[5], 0);
    resp_parser_free(p);
}

Test(resp_parse, inline_unbalanced_quotes)
{
    char out[256];
    cr_assert_eq(parse_all(&lim_default, S("ECHO \"abc\r\n"), out, sizeof out), SL_EPARSE);
    cr_assert_eq(parse_all(&lim_default, S("ECHO \"abc\"def\r\n"), out, sizeof out), SL_EPARSE);
}

Test(resp_parse, empty_commands_skipped)
{
    char out[256];
    cr_assert_eq(parse_all(&lim_default, S("*0\r\n*-1\r\n*1\r\n$4\r\nPING\r\n"), out, sizeof out), 0);
    cr_assert_str_eq(out, "PING;");
}

Test(resp_parse, binary_safe_arguments)
{
    resp_parser_t *p = resp_parser_new(&lim_default);
    const char in[] = "*2\r\n$4\r\nECHO\r\n$5\r\na\0\r\nb\r\n";
    cr_assert_eq(resp_parser_feed(p, in, sizeof in - 1), 0);
    resp_cmd_t cmd;
    cr_assert_eq(resp_parser_next(p, &cmd), 1);
    cr_assert_eq(cmd.argvlen[1], 5);
    cr_assert_eq(memcmp(cmd.argv[1], "a\0\r\nb", 5), 0);
    cr_assert_eq(resp_parser_next(p, &cmd), 0);
    resp_parser_free(p);
}

Test(resp_parse, partial_then_complete)
{
    resp_parser_t *p = resp_parser_new(&lim_default);
    resp_cmd_t cmd;
    cr_assert_eq(resp_parser_feed(p, S("*2\r\n$4\r\nECHO\r\n$5\r\nhel")), 0);
    cr_assert_eq(resp_parser_next(p, &cmd), 0);
    cr_assert_eq(resp_parser_next(p, &cmd), 0);
    cr_assert_eq(resp_parser_feed(p, S("lo\r\nPI")), 0);
    cr_assert_eq(resp_parser_next(p, &cmd), 1);
    cr_assert_str_eq(cmd.argv[1], "hello");
    cr_assert_eq(resp_parser_next(p, &cmd), 0);
    cr_assert_eq(resp_parser_feed(p, S("NG\r\n")), 0);
    cr_assert_eq(resp_parser_next(p, &cmd), 1);
    cr_assert_str_eq(cmd.argv[0], "PING");
    cr_assert_eq(resp_parser_pending(p), 0);
    resp_parser_free(p);
}

/* ---- limits -------------------------------------------------------------- */

Test(resp_parse, limit_args_multibulk)
{
    resp_limits_t lim = { 3, 1 << 20, 1024 };
    char out[256];
    cr_assert_eq(parse_all(&lim, S("*3\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n"), out, sizeof out), 0);
    cr_assert_eq(parse_all(&lim, S("*4\r\n$1\r\na\r\n"), out, sizeof out), SL_ETOOBIG);
    /* a huge announced count is refused before anything is allocated */
    cr_assert_eq(parse_all(&lim, S("*2147483647\r\n"), out, sizeof out), SL_ETOOBIG);
}

Test(resp_parse, limit_args_inline)
{
    resp_limits_t lim = { 3, 1 << 20, 1024 };
    char out[256];
    cr_assert_eq(parse_all(&lim, S("a b c\r\n"), out, sizeof out), 0);
    cr_assert_eq(parse_all(&lim, S("a b c d\r\n"), out, sizeof out), SL_ETOOBIG);
}

Test(resp_parse, limit_request_bytes_bulk)
{
    resp_limits_t lim = { 16, 100, 100 };
    resp_parser_t *p = resp_parser_new(&lim);
    resp_cmd_t cmd;
    /* a bulk announced at 1 GB: refused once the buffered frame passes 100 bytes */
    cr_assert_eq(resp_parser_feed(p, S("*2\r\n$4\r\nECHO\r\n$1000000000\r\n")), 0);
    cr_assert_eq(resp_parser_next(p, &cmd), 0);
    char junk[60];
    memset(junk, 'x', sizeof junk);
    cr_assert_eq(resp_parser_feed(p, junk, sizeof junk), 0);
    cr_assert_eq(resp_parser_next(p, &cmd), 0);
    cr_assert_eq(resp_parser_feed(p, junk, sizeof junk), 0);
    cr_assert_eq(resp_parser_next(p, &cmd), SL_ETOOBIG);
    cr_assert(strstr(resp_parser_error(p), "too large"));
    /* dead afterwards */
    cr_assert_eq(resp_parser_next(p, &cmd), SL_EPARSE);
    resp_parser_free(p);
}

Test(resp_parse, limit_request_bytes_complete_frame)
{
    resp_limits_t lim = { 16, 100, 100 };
    char big[300];
    int n = snprintf(big, sizeof big, "*2\r\n$4\r\nECHO\r\n$150\r\n%0150d\r\n", 0);
    char out[512];
    cr_assert_eq(parse_all(&lim, big, (size_t)n, out, sizeof out), SL_ETOOBIG);
}

Test(resp_parse, limit_feed_unconsumed)
{
    resp_limits_t lim = { 16, 100, 100 };
    resp_parser_t *p = resp_parser_new(&lim);
    size_t n = 200 * 1024;
    char *junk = malloc(n);
    memset(junk, 'x', n);
    cr_assert_eq(resp_parser_feed(p, junk, n), SL_ETOOBIG);
    free(junk);
    resp_parser_free(p);
}

Test(resp_parse, limit_inline_line)
{
    resp_limits_t lim = { 16, 1 << 20, 32 };
    resp_parser_t *p = resp_parser_new(&lim);
    resp_cmd_t cmd;
    cr_assert_eq(resp_parser_feed(p, S("ECHO aaaaaaaaaaaaaaaaaaaaa")), 0);
    cr_assert_eq(resp_parser_next(p, &cmd), 0);
    cr_assert_eq(resp_parser_feed(p, S("aaaaaaaaaaaaaaaaaaaaaaaaaa")), 0);
    cr_assert_eq(resp_parser_next(p, &cmd), SL_ETOOBIG);
    cr_assert(strstr(resp_parser_error(p), "inline"));
    resp_parser_free(p);
}

/* ---- malformed frames ----------------------------------------------------- */

Test(resp_parse, malformed_frames)
{
    static const struct { const char *in; size_t n; } bad[] = {
        { S("*1\r\n*1\r\n$1\r\na\r\n") },     /* nested array */
        { S("*1\r\n:5\r\n") },                /* integer argument */
        { S("*1\r\n+OK\r\n") },               /* status argument */
        { S("*1\r\n-ERR\r\n") },              /* error argument */
        { S("*2\r\n$1\r\na\r\n$-1\r\n") },    /* nil bulk */
        { S("*1\r\n!3\r\n") },                /* unknown type byte */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char out[256];
        int rc = parse_all(&lim_default, bad[i].in, bad[i].n, out, sizeof out);
        cr_assert_eq(rc, SL_EPARSE, "case %zu: rc %d", i, rc);
    }
}

/* ---- generated pipelines, cut at random ------------------------------------ */

typedef struct gen_cmd {
    size_t argc;
    char *argv[8];
    size_t len[8];
} gen_cmd_t;

static void encode(sl_buf_t *b, const gen_cmd_t *c, int inl)
{
    if (inl) {
        for (size_t i = 0; i < c->argc; i++) {
            sl_buf_append(b, c->argv[i], c->len[i]);
            sl_buf_append(b, i + 1 < c->argc ? " " : "\r\n", i + 1 < c->argc ? 1 : 2);
        }
        return;
    }
    sl_buf_printf(b, "*%zu\r\n", c->argc);
    for (size_t i = 0; i < c->argc; i++) {
        sl_buf_printf(b, "$%zu\r\n", c->len[i]);
        sl_buf_append(b, c->argv[i], c->len[i]);
        sl_buf_append(b, "\r\n", 2);
    }
}

Test(resp_parse, random_pipelines_any_cut)
{
    srand(12345);
    for (int round = 0; round < 200; round++) {
        gen_cmd_t cmds[20];
        size_t n = 1 + (size_t)rand() % 20;
        sl_buf_t wire = SL_BUF_INIT;
        for (size_t k = 0; k < n; k++) {
            int inl = rand() % 3 == 0;
            cmds[k].argc = 1 + (size_t)rand() % 8;
            for (size_t i = 0; i < cmds[k].argc; i++) {
                size_t len = (inl ? 1 : 0) + (size_t)rand() % 40;
                cmds[k].len[i] = len;
                cmds[k].argv[i] = malloc(len + 1);
                for (size_t j = 0; j < len; j++)
                    cmds[k].argv[i][j] = inl ? (char)('a' + rand() % 26) : (char)(rand() % 256);
            }
            encode(&wire, &cmds[k], inl);
        }
        resp_parser_t *p = resp_parser_new(&lim_default);
        size_t off = 0, got = 0;
        while (off < wire.len || got < n) {
            size_t chunk = round % 4 == 0 ? 1 : 1 + (size_t)rand() % 64;
            if (chunk > wire.len - off) chunk = wire.len - off;
            cr_assert_eq(resp_parser_feed(p, wire.data + off, chunk), 0);
            off += chunk;
            resp_cmd_t cmd;
            int rc;
            while ((rc = resp_parser_next(p, &cmd)) == 1) {
                cr_assert_lt(got, n);
                cr_assert_eq(cmd.argc, cmds[got].argc, "round %d cmd %zu", round, got);
                for (size_t i = 0; i < cmd.argc; i++) {
                    cr_assert_eq(cmd.argvlen[i], cmds[got].len[i]);
                    cr_assert_eq(memcmp(cmd.argv[i], cmds[got].argv[i], cmd.argvlen[i]), 0);
                    cr_assert_eq(cmd.argv[i][cmd.argvlen[i]], 0);
                }
                got++;
            }
            cr_assert_eq(rc, 0, "round %d: %s", round, resp_parser_error(p));
            if (off == wire.len) break;
        }
        cr_assert_eq(got, n, "round %d: %zu of %zu", round, got, n);
        cr_assert_eq(resp_parser_pending(p), 0);
        resp_parser_free(p);
        for (size_t k = 0; k < n; k++)
            for (size_t i = 0; i < cmds[k].argc; i++) free(cmds[k].argv[i]);
        sl_buf_free(&wire);
    }
}
