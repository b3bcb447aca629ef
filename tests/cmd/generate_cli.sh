#!/usr/bin/env bash
# generate_cli.sh SLUICE SCHEMA — `sluice generate` as a command (issue 7),
# no broker needed (--out):
#   - same seed and --start-time: byte-identical streams; another seed: not;
#   - without --start-time (the stream ends "now"): the same stream shifted
#     in time, every event by the same number of milliseconds;
#   - the share options: a Python oracle classifies every line on its own
#     (not JSON, key missing, mistyped amount, unparsable time; late = behind
#     the running maximum by more than the source's watermark delay plus
#     allowed lateness, out of order = behind it but not late) and must
#     agree with the tally the command prints, which must be near the shares
#     asked for;
#   - --rate paces; bad arguments are refused with a reason.
set -uo pipefail
SLUICE=${1:?usage: generate_cli.sh SLUICE SCHEMA}
SCHEMA=${2:?schema}
. "$(dirname "$0")/testlib.sh"

g() { "$SLUICE" generate --schema "$SCHEMA" --source payments --quiet "$@"; }
T0=1700000000000

g --out "$T/a" --events 20000 --seed 9 --start-time $T0 --spacing-us 1000 \
  --ooo-share 0.1 --late-share 0.05 --bad-share 0.1 2> "$T/a.err" || fail "generate a"
g --out "$T/b" --events 20000 --seed 9 --start-time $T0 --spacing-us 1000 \
  --ooo-share 0.1 --late-share 0.05 --bad-share 0.1 2> /dev/null || fail "generate b"
g --out "$T/c" --events 20000 --seed 10 --start-time $T0 --spacing-us 1000 \
  --ooo-share 0.1 --late-share 0.05 --bad-share 0.1 2> /dev/null || fail "generate c"
cmp -s "$T/a" "$T/b" && ok "same seed, same bytes ($(wc -l < "$T/a") lines)" || fail "same seed gave different streams"
cmp -s "$T/a" "$T/c" && fail "seeds 9 and 10 gave the same stream" || ok "another seed, another stream"

# The classification oracle against the printed tally and the shares.
tally=$(sed -n 's/^generate: by kind: //p' "$T/a.err")
python3 - "$T/a" "$tally" <<'EOF' || fails=$((fails+1))
import json, math, sys
DELAY, LATENESS = 5000, 60000           # card_fraud.yaml: watermark_delay 5s, allowed_lateness 1m
N, OOO, LATE, BAD = 20000, 0.1, 0.05, 0.1
tally = dict(kv.split("=") for kv in sys.argv[2].split())
tally = {k: int(v) for k, v in tally.items()}
got = dict.fromkeys(["good", "out_of_order", "late", "malformed", "missing_key", "type_mismatch",
                     "bad_timestamp"], 0)
mx = None
for line in open(sys.argv[1]):
    try:
        e = json.loads(line)
    except ValueError:
        got["malformed"] += 1; continue
    if "card_id" not in e or "merchant_id" not in e:
        got["missing_key"] += 1; continue
    if not isinstance(e["amount"], (int, float)):
        got["type_mismatch"] += 1; continue
    if not isinstance(e["ts"], int):
        got["bad_timestamp"] += 1; continue
    t = e["ts"]
    if mx is not None and t < mx - DELAY - LATENESS:
        got["late"] += 1
    elif mx is not None and t < mx:
        got["out_of_order"] += 1
    else:
        got["good"] += 1
    mx = t if mx is None else max(mx, t)
errs = []
for k in ("malformed", "missing_key", "type_mismatch", "bad_timestamp", "late"):
    if got[k] != tally.get(k):
        errs.append("%s: oracle %d, tally %s" % (k, got[k], tally.get(k)))
# an out-of-order event is drawn within the watermark delay behind its
# in-order time; the few drawn after the previous event are in order
if not (0.98 * tally["out_of_order"] <= got["out_of_order"] <= tally["out_of_order"]):
    errs.append("out_of_order: oracle %d, tally %d" % (got["out_of_order"], tally["out_of_order"]))
if sum(tally.values()) != N:
    errs.append("tally sums to %d" % sum(tally.values()))
def near(n, p):
    return abs(n - N * p) <= 5 * math.sqrt(N * p * (1 - p))
bad = sum(tally[k] for k in ("malformed", "missing_key", "type_mismatch", "bad_timestamp", "tombstone"))
for name, n, p in (("out_of_order", tally["out_of_order"], OOO), ("late", tally["late"], LATE), ("bad", bad, BAD)):
    if not near(n, p):
        errs.append("%s: %d of %d, asked for %.2f" % (name, n, N, p))
if errs:
    print("FAIL shares: " + "; ".join(errs))
    sys.exit(1)
print("ok   oracle agrees with the tally %r" % tally)
EOF

# Default start time: the stream ends now, so a later run is the same stream
# shifted by the time between the runs. The bounds come from the wall clock
# read around the runs (fixed 5 s / 10 s bounds could be outrun by a loaded
# machine's process start-up and exit): the shift is at least the 0.3 s
# between the runs and at most the time from before d to after e; e's newest
# event is no later than e's end.
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
t_d=$(now_ms)
g --out "$T/d" --events 3000 --seed 4 2> /dev/null || fail "generate d"
sleep 0.3
t_e=$(now_ms)
g --out "$T/e" --events 3000 --seed 4 2> /dev/null || fail "generate e"
t_end=$(now_ms)
python3 - "$T/d" "$T/e" "$t_d" "$t_e" "$t_end" <<'EOF' || fails=$((fails+1))
import json, sys
a, b = open(sys.argv[1]).read().splitlines(), open(sys.argv[2]).read().splitlines()
t_d, t_e, t_end = (int(x) for x in sys.argv[3:6])
shifts, other = set(), 0
for x, y in zip(a, b):
    try:
        ex, ey = json.loads(x), json.loads(y)
    except ValueError:
        other += x != y; continue
    if isinstance(ex.get("ts"), int) and isinstance(ey.get("ts"), int):
        shifts.add(ey.pop("ts") - ex.pop("ts"))
    other += ex != ey
newest = max(json.loads(l)["ts"] for l in b if l.startswith("{") and l.endswith("}") and '"ts":"' not in l)
if (len(a) != len(b) or other or len(shifts) != 1 or not 250 <= shifts.copy().pop() <= t_end - t_d
        or not t_e - 10000 <= newest <= t_end):
    print("FAIL default start: %d/%d lines, %d differ beyond ts, shifts %r (runs %d ms apart at most), "
          "newest %d ms before e's end, e ran %d ms"
          % (len(a), len(b), other, sorted(shifts)[:5], t_end - t_d, t_end - newest, t_end - t_e))
    sys.exit(1)
print("ok   without --start-time: the same stream shifted by %d ms, ending now" % shifts.pop())
EOF

# --rate paces the wall clock: 400 events at 1000/s take at least 0.4 s.
t0=$(date +%s%N)
g --out /dev/null --events 400 --rate 1000 2> /dev/null || fail "generate --rate"
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
[ $ms -ge 390 ] && [ $ms -lt 5000 ] && ok "--rate 1000: 400 events in $ms ms" || fail "--rate 1000: 400 events in $ms ms"

# Refusals.
expect() {   # expect STATUS TEXT ARGS...
    local want=$1 text=$2; shift 2
    out=$("$SLUICE" generate "$@" 2>&1); rc=$?
    [ $rc = "$want" ] && [[ "$out" == *"$text"* ]] && ok "refused: $text" || fail "generate $*: exit $rc: $out"
}
expect 2 "are required" --schema "$SCHEMA" --source payments --out /dev/null
expect 2 "are required" --schema "$SCHEMA" --source payments --events 1 --out /dev/null --brokers x:1
expect 1 "no source 'nope'" --schema "$SCHEMA" --source nope --events 1 --out /dev/null
expect 1 "add up to at most 1" --schema "$SCHEMA" --source payments --events 1 --out /dev/null --bad-share 0.7 --late-share 0.4
expect 2 "bad value 'x' for --events" --schema "$SCHEMA" --source payments --events x --out /dev/null
expect 2 "bad value '-0.1' for --ooo-share" --schema "$SCHEMA" --source payments --events 1 --out /dev/null --ooo-share=-0.1

finish generate
