/*
 * fuzz_resp_parse.c — libFuzzer harness for the RESP request parser.
 *
 * The input is cut into feeds at positions taken from its first byte, with
 * tight limits so that every limit path is reached; each command returned
 * must hold argc within max_args and NUL-terminated arguments. ASan and
 * UBSan catch the rest.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "resp_parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    resp_limits_t lim = { 1 + data[0] % 16, 64 + (size_t)data[0] * 4, 16 + data[0] % 64 };
    resp_parser_t *p = resp_parser_new(&lim);
    if (!p) return 0;
    size_t step = 1 + data[0] % 23;
    size_t off = 1;
    while (off < size) {
        size_t n = size - off < step ? size - off : step;
        if (resp_parser_feed(p, data + off, n)) break;
        off += n;
        resp_cmd_t cmd;
        int rc;
        while ((rc = resp_parser_next(p, &cmd)) == 1) {
            if (cmd.argc == 0 || cmd.argc > lim.max_args) abort();
            for (size_t i = 0; i < cmd.argc; i++)
                if (cmd.argv[i][cmd.argvlen[i]] != 0) abort();
        }
        if (rc < 0) {
            if (!resp_parser_error(p)[0]) abort();
            break;
        }
    }
    resp_parser_free(p);
    return 0;
}
