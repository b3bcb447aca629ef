#!/bin/sh
# cli_snapshot.sh SLUICE STATE_FILL — the `sluice snapshot` command end to end:
# create, list, verify, restore (absent / busy / non-empty), corrupt manifest,
# delete, usage errors. Each check compares exit status and message text.
set -u
SLUICE=$1
FILL=$2
T=$(mktemp -d /tmp/sluice-cli-snap-XXXXXX)
trap 'rm -rf "$T"' EXIT
fails=0
check() {  # check NAME WANT_STATUS WANT_TEXT -- command...
    name=$1 want=$2 text=$3; shift 4
    out=$("$@" 2>&1); got=$?
    if [ "$got" != "$want" ]; then echo "FAIL $name: status $got, want $want: $out"; fails=$((fails+1)); return; fi
    case "$out" in *"$text"*) echo "ok   $name";; *) echo "FAIL $name: output lacks '$text': $out"; fails=$((fails+1));; esac
}
"$FILL" "$T/st" 500 || exit 1
check create-missing-dir 1 "does not exist" -- "$SLUICE" snapshot create --state-dir "$T/nope"
check create 0 "created snapshot one in $T/st.snapshots" -- "$SLUICE" snapshot create --state-dir "$T/st" one --fingerprint 00ff
check create-dup 1 "already exists" -- "$SLUICE" snapshot create --state-dir "$T/st" one
check list 0 "events[4] next=4006" -- "$SLUICE" snapshot list --state-dir "$T/st"
check verify 0 "snapshot one is intact (4 partitions, schema 00ff)" -- "$SLUICE" snapshot verify one --state-dir "$T/st"
check restore-nonempty 1 "is not empty" -- "$SLUICE" snapshot restore one --state-dir "$T/st"
check restore 0 "restored snapshot one into $T/r1" -- "$SLUICE" snapshot restore one --snapshot-dir "$T/st.snapshots" --state-dir "$T/r1"
check restored-is-snapshottable 0 "4 partitions" -- "$SLUICE" snapshot create --state-dir "$T/r1" again
# one partition alone, into an existing stopped store
"$FILL" "$T/part" 20 || exit 1
check restore-partition 0 "restored events[2] (1 view) from snapshot one into $T/part" -- "$SLUICE" snapshot restore one --partition events:2 --view clicks --snapshot-dir "$T/st.snapshots" --state-dir "$T/part"
check restore-partition-bad 2 "--partition wants TOPIC:N" -- "$SLUICE" snapshot restore one --partition events --view clicks --state-dir "$T/part"
check restore-partition-noview 2 "needs --view VIEW or -c CONFIG" -- "$SLUICE" snapshot restore one --partition events:1 --state-dir "$T/part"
check restore-partition-absent 1 "no progress for events[7]" -- "$SLUICE" snapshot restore one --partition events:7 --view clicks --snapshot-dir "$T/st.snapshots" --state-dir "$T/part"
# a running worker holds the target
mkfifo "$T/fifo"
"$FILL" "$T/busy" 10 hold < "$T/fifo" > "$T/hold.out" &
holder=$!
exec 3> "$T/fifo"
for i in $(seq 1 120); do grep -q holding "$T/hold.out" 2>/dev/null && break; sleep 0.5; done   # up to 60 s
check restore-busy 1 "state dir $T/busy is in use by pid $holder" -- "$SLUICE" snapshot restore one --snapshot-dir "$T/st.snapshots" --state-dir "$T/busy"
check create-busy-noserve 1 "did not take the snapshot within 1000 ms" -- "$SLUICE" snapshot create --state-dir "$T/busy" --wait 1
exec 3>&-
wait $holder
# a running worker that serves snapshot requests takes it between commits
"$FILL" "$T/busy" 10 serve "$T/busy.snaps" < "$T/fifo" > "$T/hold.out" &
holder=$!
exec 3> "$T/fifo"
for i in $(seq 1 120); do grep -q holding "$T/hold.out" 2>/dev/null && break; sleep 0.5; done   # up to 60 s
check create-running 0 "created snapshot live1 (taken by the running worker)" -- "$SLUICE" snapshot create --state-dir "$T/busy" live1 --wait 30
check create-running-dup 1 "already exists" -- "$SLUICE" snapshot create --state-dir "$T/busy" live1 --wait 30
check list-running 0 "events[4] next=4006" -- "$SLUICE" snapshot list --state-dir "$T/busy" --snapshot-dir "$T/busy.snaps"
exec 3>&-
wait $holder
# corrupt manifest
cp -r "$T/st.snapshots/one" "$T/st.snapshots/bad"
printf '{"format": 1, "name": "bad", "created_ms": ' > "$T/st.snapshots/bad/manifest.json"
check verify-corrupt 1 "snapshot bad: manifest.json is not valid JSON" -- "$SLUICE" snapshot verify bad --state-dir "$T/st"
check restore-corrupt 1 "not valid JSON" -- "$SLUICE" snapshot restore bad --snapshot-dir "$T/st.snapshots" --state-dir "$T/r2"
[ -e "$T/r2" ] && { echo "FAIL restore-corrupt created the target"; fails=$((fails+1)); }
check list-shows-invalid 0 "INVALID: snapshot bad" -- "$SLUICE" snapshot list --state-dir "$T/st"
check delete 0 "deleted snapshot bad" -- "$SLUICE" snapshot delete bad --state-dir "$T/st"
check delete-missing 1 "no snapshot \"bad\"" -- "$SLUICE" snapshot delete bad --state-dir "$T/st"
check delete-bad-name 1 "invalid snapshot name" -- "$SLUICE" snapshot delete ../st --state-dir "$T/st"
check usage-no-command 2 "usage: sluice snapshot" -- "$SLUICE" snapshot
check usage-unknown 2 "unknown command 'frobnicate'" -- "$SLUICE" snapshot frobnicate --state-dir "$T/st"
check usage-no-name 2 "NAME is required" -- "$SLUICE" snapshot restore --state-dir "$T/st"
check usage-no-dirs 2 "--state-dir DIR (or -c CONFIG) is required" -- "$SLUICE" snapshot create
check help 0 "restore NAME" -- "$SLUICE" snapshot --help
echo "$fails failure(s)"
[ "$fails" = 0 ]
