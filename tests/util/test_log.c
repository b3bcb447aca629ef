/*
 * test_log.c — util/sl_log: what `--log-format json` promises log shippers.
 * Every line is checked with parsers nobody here wrote: glibc's iconv says
 * whether the bytes are valid UTF-8, cJSON parses the object and gives back
 * the message, which must equal the one logged (or, for bytes that are not
 * UTF-8, the same with U+FFFD in their place). Also levels, the text format
 * and the configure errors behind `--log-level` / `--log-format`.
 */
#include <criterion/criterion.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <iconv.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sl_err.h"
#include "sl_log.h"

/* Runs fn with fd 2 on a temporary file and returns what was written. */
static char *capture(void (*fn)(const void *), const void *arg)
{
    FILE *tmp = tmpfile();
    cr_assert_not_null(tmp);
    fflush(stderr);
    int saved = dup(STDERR_FILENO);
    cr_assert_geq(saved, 0);
    cr_assert_geq(dup2(fileno(tmp), STDERR_FILENO), 0);
    fn(arg);
    dup2(saved, STDERR_FILENO);
    close(saved);
    long n = ftell(tmp);
    cr_assert_geq(n, 0);
    char *out = malloc((size_t)n + 1);
    rewind(tmp);
    cr_assert_eq(fread(out, 1, (size_t)n, tmp), (size_t)n);
    out[n] = '\0';
    fclose(tmp);
    return out;
}

static bool valid_utf8(const char *s)
{
    iconv_t cd = iconv_open("UTF-8", "UTF-8");
    cr_assert_neq(cd, (iconv_t)-1);
    char buf[16384];
    char *in = (char *)s, *out = buf;
    size_t inleft = strlen(s), outleft = sizeof buf;
    size_t rc = iconv(cd, &in, &inleft, &out, &outleft);
    int e = errno;
    iconv_close(cd);
    cr_assert(rc != (size_t)-1 || e != E2BIG, "test buffer too small");
    return rc != (size_t)-1 && inleft == 0;
}

static void log_msg(const void *msg) { sl_log(SL_LOG_WARN, "ingest", "%s", (const char *)msg); }

/* Logs msg in JSON format; checks the line is one valid JSON object with the
 * four fields, and that its msg is `want`. */
static void check_json(const char *msg, const char *want)
{
    sl_log_set(SL_LOG_INFO, true);
    char *line = capture(log_msg, msg);
    size_t len = strlen(line);
    cr_assert_gt(len, 0);
    cr_assert_eq(line[len - 1], '\n', "one line: %s", line);
    cr_assert_null(memchr(line, '\n', len - 1), "exactly one line: %s", line);
    cr_assert(valid_utf8(line), "the line is not valid UTF-8: %s", line);
    cJSON *o = cJSON_Parse(line);
    cr_assert_not_null(o, "not JSON: %s", line);
    const cJSON *ts = cJSON_GetObjectItemCaseSensitive(o, "ts");
    const cJSON *lv = cJSON_GetObjectItemCaseSensitive(o, "level");
    const cJSON *comp = cJSON_GetObjectItemCaseSensitive(o, "component");
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(o, "msg");
    cr_assert(cJSON_IsString(ts) && strlen(ts->valuestring) == 24 && ts->valuestring[10] == 'T' &&
              ts->valuestring[23] == 'Z', "ts: %s", line);
    cr_assert(cJSON_IsString(lv) && !strcmp(lv->valuestring, "warn"), "%s", line);
    cr_assert(cJSON_IsString(comp) && !strcmp(comp->valuestring, "ingest"), "%s", line);
    cr_assert(cJSON_IsString(m), "%s", line);
    cr_assert_str_eq(m->valuestring, want, "line: %s", line);
    cJSON_Delete(o);
    free(line);
}

Test(log, json_plain_and_escaped)
{
    check_json("committed 1200 entities in 3.1ms", "committed 1200 entities in 3.1ms");
    check_json("quote \" backslash \\ newline \n tab \t bell \a del \x7f",
               "quote \" backslash \\ newline \n tab \t bell \a del \x7f");
    check_json("", "");
}

Test(log, json_keeps_utf8)
{
    check_json("m\xc3\xbcnchen \xe2\x82\xac \xf0\x9f\x9a\x95 \xef\xbf\xbf",
               "m\xc3\xbcnchen \xe2\x82\xac \xf0\x9f\x9a\x95 \xef\xbf\xbf");
}

/* A malformed payload quoted in a message (a bad event, a Latin-1 file
 * name) must not make the line unreadable for a log shipper. */
Test(log, json_replaces_bytes_that_are_not_utf8)
{
#define R "\xef\xbf\xbd"
    check_json("latin-1 caf\xe9!", "latin-1 caf" R "!");
    check_json("stray \x80\xbf end", "stray " R R " end");
    check_json("overlong \xc0\xaf \xe0\x80\xaf \xf0\x80\x80\xaf", "overlong " R R " " R R R " " R R R R);
    check_json("surrogate \xed\xa0\x80 big \xf4\x90\x80\x80 \xff", "surrogate " R R R " big " R R R R " " R);
    check_json("cut \xe2\x82", "cut " R R);
    check_json("\xc3", R);
#undef R
}

Test(log, json_long_message_stays_one_object)
{
    /* longer than the message buffer, every byte escaped to 6: cut short,
     * but still one closed JSON object on one line */
    char *msg = malloc(5001);
    memset(msg, '\x01', 5000);
    msg[5000] = '\0';
    sl_log_set(SL_LOG_INFO, true);
    char *line = capture(log_msg, msg);
    cJSON *o = cJSON_Parse(line);
    cr_assert_not_null(o, "not JSON (%zu bytes): %.80s...", strlen(line), line);
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(o, "msg");
    cr_assert(cJSON_IsString(m) && strlen(m->valuestring) > 500, "%s", line);
    for (const char *p = m->valuestring; *p; p++) cr_assert_eq(*p, '\x01');
    cJSON_Delete(o);
    free(line);
    free(msg);
}

static void log_levels(const void *arg)
{
    (void)arg;
    sl_debug("run", "d %d", 1);
    sl_info("run", "i %d", 2);
    sl_warn("run", "w %d", 3);
    sl_error("run", "e %d", 4);
}

Test(log, levels_and_text_format)
{
    sl_log_set(SL_LOG_WARN, false);
    char *out = capture(log_levels, NULL);
    /* "2026-11-25T21:30:00.123Z warn  run: w 3" */
    char *second = strchr(out, '\n');
    cr_assert_not_null(second, "%s", out);
    cr_assert_str_eq(second + 1 + 25, "error run: e 4\n", "%s", out);
    *second = '\0';
    cr_assert_eq(strlen(out), 24 + 1 + 14, "%s", out);
    cr_assert_str_eq(out + 25, "warn  run: w 3", "%s", out);
    cr_assert_eq(out[23], 'Z');
    free(out);
    cr_assert_eq(sl_log_configure("debug", "text"), 0);
    out = capture(log_levels, NULL);
    int lines = 0;
    for (char *p = out; *p; p++) lines += *p == '\n';
    cr_assert_eq(lines, 4, "%s", out);
    free(out);
}

Test(log, configure_rejects_unknown_values)
{
    cr_assert_eq(sl_log_configure("verbose", "text"), SL_EINVAL);
    cr_assert_eq(sl_log_configure("info", "xml"), SL_EINVAL);
    cr_assert_eq(sl_log_configure(NULL, "json"), SL_EINVAL);
    cr_assert_eq(sl_log_configure("error", NULL), SL_EINVAL);
    cr_assert_eq(sl_log_configure("error", "json"), 0);
    cr_assert(!sl_log_enabled(SL_LOG_WARN));
    cr_assert(sl_log_enabled(SL_LOG_ERROR));
}
