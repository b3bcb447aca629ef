#!/bin/sh
# fuzz_decode.sh — build the agg_entity_decode libFuzzer target with clang-14
# (ASan + UBSan), write a seed corpus of valid states, and fuzz for a bounded
# time. Exit status is libFuzzer's: non-zero when it found a crash, a leak or
# an abort (the crashing input is left in WORKDIR).
#
#   tests/aggregates/fuzz_decode.sh [SECONDS=60] [WORKDIR=/tmp/sluice-agg-fuzz]
set -eu

SRC=$(cd "$(dirname "$0")/../.." && pwd)
SECS=${1:-60}
WORK=${2:-/tmp/sluice-agg-fuzz}
CC=${CC_FUZZ:-clang-14}

mkdir -p "$WORK/corpus"
INC="-I$SRC/aggregates -I$SRC/schemas -I$SRC/util -I$SRC/tests/aggregates"
LIBSRC="$SRC/aggregates/agg.c $SRC/aggregates/agg_window.c $SRC/aggregates/agg_part.c $SRC/aggregates/agg_merge.c \
$SRC/aggregates/agg_sketch.c $SRC/util/sl_buf.c $SRC/util/sl_err.c \
$SRC/tests/aggregates/agg_test_util.c"
SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined"

# shellcheck disable=SC2086
$CC -g -O1 $SAN -fsanitize=fuzzer $INC -o "$WORK/fuzz_decode" \
    "$SRC/tests/aggregates/fuzz_decode.c" $LIBSRC -lxxhash -lm
# shellcheck disable=SC2086
$CC -g -O1 $SAN -DFUZZ_MAKE_SEEDS $INC -o "$WORK/fuzz_seeds" \
    "$SRC/tests/aggregates/fuzz_decode.c" $LIBSRC -lxxhash -lm
"$WORK/fuzz_seeds" "$WORK/corpus"

cd "$WORK"
exec "$WORK/fuzz_decode" -max_total_time="$SECS" -max_len=16384 -rss_limit_mb=2048 \
    -timeout=10 -print_final_stats=1 "$WORK/corpus"
