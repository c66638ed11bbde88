#!/usr/bin/env bash
# Throughput and latency of a local broker, measured with `vltava perf`.
#
# Builds the release binary, starts `vltava broker` on an ephemeral 127.0.0.1 port with a
# temporary data dir, runs produce then consume for 1 and 8 partitions, 100 B and 1 KiB
# records, acks=1 and acks=all, and prints a Markdown table; then the one-partition 1 KiB
# produce rows REPEAT times more (3 by default) as medians; then acks=all latency at half of
# the peak rate next to the disk's fsync latency; then a table of producer modes at acks=all
# (plain, idempotent, transactional) for 1 KiB records; then acks=all with replication
# factor 1 and 3 on a local 3-node cluster; and 1,000 partitions with 100 producers and 100
# consumers against 8 partitions with one of each and with 100 of each. Takes a few minutes.
#
# Each produce row also has the yardstick: the same produce against librdkafka's in-memory
# mock broker (`vltava perf mock`), run right after, and the ratio Vltava ÷ mock; and the
# broker's CPU-seconds per GB of record values produced and consumed (utime + stime from
# /proc/PID/stat around each run) and its resident memory after the run, and those CPU
# figures ÷ the machine's floor for the same work (`vltava perf floor`, run first).
#
#   bench/run.sh                      # standard set
#   RECORDS_1K=200000 RECORDS_100=500000 bench/run.sh   # smaller
#   SKIP_BUILD=1 bench/run.sh         # reuse the built binary ($VLTAVA_BIN to pick another)
#   COMPRESSION=lz4 bench/run.sh      # producer compression: none (default), gzip, snappy, lz4, zstd
#   COLD=1 bench/run.sh               # produce into never-touched memory (no recycling run first)
#
# The client and the broker share the machine: numbers measure both together.
set -euo pipefail

cd "$(dirname "$0")/.."
RECORDS_1K=${RECORDS_1K:-1000000}
RECORDS_100=${RECORDS_100:-2000000}
COMPRESSION=${COMPRESSION:-none}
BIN=${VLTAVA_BIN:-target/release/vltava}

if [[ -z "${SKIP_BUILD:-}" ]]; then
    if pgrep -x cargo >/dev/null; then
        echo "bench: another cargo is running; waiting for it so the build does not compete" >&2
        while pgrep -x cargo >/dev/null; do sleep 5; done
    fi
    cargo build --release -p vltava >&2
fi
command -v jq >/dev/null || { echo "bench: needs jq (apt-get install jq)" >&2; exit 1; }

DATA=$(mktemp -d -t vltava-bench.XXXXXX)
READY=$(mktemp -t vltava-bench-ready.XXXXXX)
BROKER_PID=
cleanup() {
    if [[ -n "$BROKER_PID" ]]; then
        kill "$BROKER_PID" 2>/dev/null || true
        wait "$BROKER_PID" 2>/dev/null || true
    fi
    rm -rf "$DATA" "$READY"
}
trap cleanup EXIT

RUST_LOG=warn "$BIN" broker --listeners PLAINTEXT://127.0.0.1:0 --data-dir "$DATA" \
    --override metrics.listeners=http://127.0.0.1:0 >"$READY" &
BROKER_PID=$!
# The metrics line comes after the listening line, once the broker serves both.
for _ in $(seq 150); do
    grep -q 'metrics on' "$READY" && break
    sleep 0.1
done
ADDR=$(sed -n 's/^vltava: listening on //p' "$READY")
[[ -n "$ADDR" ]] || { echo "bench: broker did not start" >&2; exit 1; }
METRICS=$(sed -n 's/^vltava: metrics on //p' "$READY")
[[ -n "$METRICS" ]] || { echo "bench: broker serves no metrics" >&2; exit 1; }
export VLTAVA_BOOTSTRAP=$ADDR

echo "bench: broker at $ADDR, data in $DATA; $(nproc) cores; compression $COMPRESSION; $(git rev-parse --short HEAD 2>/dev/null || echo '?')" >&2
# Broker CPU time (user + system, seconds) from /proc, and its resident memory in MiB.
CLK_TCK=$(getconf CLK_TCK)
broker_cpu_s() { awk -v t="$CLK_TCK" '{ printf "%.3f", ($14 + $15) / t }' "/proc/$BROKER_PID/stat"; }
broker_rss_mib() { awk '/^VmRSS/ { printf "%d", $2 / 1024 }' "/proc/$BROKER_PID/status"; }
# The broker's metrics (Prometheus text), and the quantiles of one histogram between two
# scrapes: broker_quantiles BEFORE AFTER SERIES prints p50 p99 p99.9 in ms, interpolated
# inside the buckets (each 19 % wider than the last). SERIES is the bucket lines' start up to
# `le=`, e.g. 'kafka_network_requestmetrics_totaltimems_bucket{request="Produce",'.
scrape() { curl -sf "$METRICS"; }
PRODUCE_TIME='kafka_network_requestmetrics_totaltimems_bucket{request="Produce",'
FLUSH_TIME='kafka_log_logflushstats_logflushrateandtimems_bucket{'
# The broker's fsyncs counted in a scrape (on stdin).
flush_count() { awk '/^kafka_log_logflushstats_logflushrateandtimems_count/ { print $NF + 0; f = 1 } END { if (!f) print 0 }'; }
broker_quantiles() {
    awk -v series="$3" '
        function parse(line,   le, n) {
            if (index(line, series "le=\"") != 1) return 0
            le = line; sub(/.*le="/, "", le); sub(/".*/, "", le)
            n = line; sub(/.* /, "", n)
            LE = le; N = n + 0; return 1
        }
        FNR == NR { if (parse($0)) before[LE] = N; next }
        { if (parse($0)) { k++; les[k] = LE; after[k] = N - before[LE] } }
        END {
            total = after[k]
            if (total == 0) { print "- - -"; exit }
            split("0.5 0.99 0.999", qs, " ")
            out = ""
            for (j = 1; j <= 3; j++) {
                target = qs[j] * total; lo = 0; clo = 0
                for (i = 1; i <= k; i++) {
                    if (after[i] >= target) {
                        if (les[i] == "+Inf") v = lo
                        else v = lo + (les[i] - lo) * (target - clo) / (after[i] - clo)
                        break
                    }
                    lo = les[i]; clo = after[i]
                }
                out = out sprintf("%s%.2f", (j > 1 ? " " : ""), v)
            }
            print out
        }' "$1" "$2"
}
# A broker that has run a while writes into page-cache memory it recycles; a fresh VM's free
# memory costs a host fault per page on first touch (see bench/README.md, "The machine's
# floor"), which made one workload's CPU per GB move by 3x between runs. So before each
# measured produce the same volume goes to a topic that is then deleted, and the measured
# run writes into the memory that frees, as the floor's probes do. COLD=1 skips this.
# Then `sync`, so the measured run does not share the disk with writeback of earlier work.
recycle_page_cache() { # PARTITIONS RECORDS SIZE
    if [[ -z "${COLD:-}" ]]; then
        "$BIN" topic create bench-recycle --partitions "$1" >/dev/null
        "$BIN" perf produce --topic bench-recycle --num-records "$2" --record-size "$3" --acks 1 \
            --compression "$COMPRESSION" -o json >/dev/null
        "$BIN" topic delete bench-recycle >/dev/null
    fi
    sync
}
# CPU-seconds per GB of record values: cpu_per_gb START END RECORDS SIZE
cpu_per_gb() { awk -v a="$1" -v b="$2" -v n="$3" -v s="$4" 'BEGIN { printf "%.2f", (b - a) / (n * s / 1e9) }'; }

# Idle cost: the broker's resident memory and CPU for 1,000 idle partitions and for 100 idle
# connections (opened with bash's /dev/tcp), before any data is written.
broker_rss_kib() { awk '/^VmRSS/ { print $2 }' "/proc/$BROKER_PID/status"; }
rss0=$(broker_rss_kib)
"$BIN" topic create bench-idle --partitions 1000 >/dev/null
sleep 2
rss1=$(broker_rss_kib)
cpu_idle0=$(broker_cpu_s)
sleep 10
cpu_idle1=$(broker_cpu_s)
host=${ADDR%:*}; port=${ADDR##*:}
conns=()
for _ in $(seq 100); do
    exec {fd}<>"/dev/tcp/$host/$port"
    conns+=("$fd")
done
sleep 2
rss2=$(broker_rss_kib)
for fd in "${conns[@]}"; do exec {fd}>&-; done
"$BIN" topic delete bench-idle >/dev/null
printf '| idle | broker RSS | per item |\n|---|---:|---:|\n'
printf '| 1,000 partitions | +%s KiB | %s KiB |\n' "$(( rss1 - rss0 ))" "$(( (rss1 - rss0) / 1000 ))"
printf '| 100 connections | +%s KiB | %s KiB |\n' "$(( rss2 - rss1 ))" "$(( (rss2 - rss1) / 100 ))"
printf '| broker CPU over 10 s with 1,000 idle partitions | %s s | |\n\n' \
    "$(awk -v a="$cpu_idle0" -v b="$cpu_idle1" 'BEGIN { printf "%.3f", b - a }')"

# The floor under the broker's CPU per GB: what this machine's kernel charges for the work
# no broker can avoid (`vltava perf floor`: loopback receive, CRC-32C, page-cache write,
# fdatasync, sendfile), in the broker's data dir, in this run.
echo "bench: machine floor" >&2
floor=$("$BIN" perf floor --dir "$DATA" -o json)
printf '| machine floor, CPU-s/GB | |\n|---|---:|\n'
for k in tcp_receive crc32c page_cache_write_first page_cache_write write_fdatasync sendfile \
    minimal_acks_1_beside_client minimal_acks_all_beside_client spliced_acks_1 \
    spliced_acks_1_beside_client \
    produce_acks_1 produce_acks_all consume; do
    printf '| %s | %s |\n' "$k" "$(jq -r --arg k "$k" '.[$k] * 1000 | round / 1000' <<<"$floor")"
done
printf '\n'
# Broker CPU-s/GB ÷ a floor: ratio CPU FLOOR_KEY
floor_ratio() { jq -r --arg k "$2" --argjson c "$1" '$c / .[$k] * 100 | round / 100' <<<"$floor"; }

printf '| partitions | record | acks | records | produce rec/s | produce MB/s | p50 ms | p99 ms | p99.9 ms | max ms | mock rec/s | ÷ mock | broker CPU-s/GB in | ÷ floor | ÷ floor beside a client | consume rec/s | consume MB/s | broker CPU-s/GB out | ÷ floor | broker RSS MiB |\n'
printf '|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n'
for partitions in 1 8; do
    for size in 100 1024; do
        if [[ $size == 1024 ]]; then n=$RECORDS_1K; label="1 KiB"; else n=$RECORDS_100; label="100 B"; fi
        for acks in 1 all; do
            topic="bench-p$partitions-s$size-a$acks"
            echo "bench: $topic, $n records" >&2
            "$BIN" topic create "$topic" --partitions "$partitions" >/dev/null
            recycle_page_cache "$partitions" "$n" "$size"
            cpu0=$(broker_cpu_s)
            p=$("$BIN" perf produce --topic "$topic" --num-records "$n" \
                --record-size "$size" --acks "$acks" --compression "$COMPRESSION" -o json)
            cpu1=$(broker_cpu_s)
            c=$("$BIN" perf consume --topic "$topic" --num-records "$n" -o json)
            cpu2=$(broker_cpu_s)
            rss=$(broker_rss_mib)
            if [[ $partitions == 1 && $size == 1024 && $acks == all ]]; then
                PEAK_ALL=$(jq -r '.records_per_sec | floor' <<<"$p")
            fi
            # The yardstick: the same produce against librdkafka's in-memory mock broker.
            m=$("$BIN" perf mock --partitions "$partitions" --num-records "$n" \
                --record-size "$size" --acks "$acks" --compression "$COMPRESSION" -o json)
            cpu_in=$(cpu_per_gb "$cpu0" "$cpu1" "$n" "$size")
            cpu_out=$(cpu_per_gb "$cpu1" "$cpu2" "$n" "$size")
            printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' \
                "$partitions" "$label" "$acks" "$n" \
                "$(jq -r '.records_per_sec | floor' <<<"$p")" \
                "$(jq -r '.mb_per_sec * 10 | round / 10' <<<"$p")" \
                "$(jq -r '.latency_ms.p50' <<<"$p")" \
                "$(jq -r '.latency_ms.p99' <<<"$p")" \
                "$(jq -r '.latency_ms.p999' <<<"$p")" \
                "$(jq -r '.latency_ms.max' <<<"$p")" \
                "$(jq -r '.records_per_sec | floor' <<<"$m")" \
                "$(jq -rn --argjson a "$p" --argjson b "$m" '$a.records_per_sec / $b.records_per_sec * 100 | round / 100')" \
                "$cpu_in" "$(floor_ratio "$cpu_in" "produce_acks_$acks")" \
                "$(floor_ratio "$cpu_in" "minimal_acks_${acks}_beside_client")" \
                "$(jq -r '.records_per_sec | floor' <<<"$c")" \
                "$(jq -r '.mb_per_sec * 10 | round / 10' <<<"$c")" \
                "$cpu_out" "$(floor_ratio "$cpu_out" consume)" \
                "$rss"
            # Keep the disk small: the next workload does not need this one's data.
            "$BIN" topic delete "$topic" >/dev/null
        done
    done
done

# The one-partition 1 KiB produce rows again, REPEAT times each (3 by default), every run
# followed by its mock run: one run's noise on a 2-core machine is often 20 %, so the
# targets are read off these medians. Each run writes into recycled page cache first.
REPEAT=${REPEAT:-3}
# median_range RUNS KEY DIGITS: "median (min–max)" of one field over the runs.
median_range() {
    jq -r --arg k "$2" --argjson d "$3" '
        def r: . * pow(10; $d) | round / pow(10; $d);
        map(.[$k]) | sort | length as $n
        | (if $n % 2 == 1 then .[($n - 1) / 2] else (.[$n / 2 - 1] + .[$n / 2]) / 2 end) as $m
        | "\($m | r) (\(.[0] | r)–\(.[-1] | r))"' <<<"$1"
}
printf '\n| partitions | record | acks | runs | produce rec/s, median (range) | ÷ mock, median (range) | broker CPU-s/GB in, median (range) |\n'
printf '|---:|---:|---|---:|---|---|---|\n'
for acks in 1 all; do
    runs='[]'
    for r in $(seq "$REPEAT"); do
        topic="bench-repeat-a$acks-$r"
        echo "bench: $topic, $RECORDS_1K records (run $r of $REPEAT)" >&2
        "$BIN" topic create "$topic" --partitions 1 >/dev/null
        recycle_page_cache 1 "$RECORDS_1K" 1024
        cpu0=$(broker_cpu_s)
        p=$("$BIN" perf produce --topic "$topic" --num-records "$RECORDS_1K" --record-size 1024 \
            --acks "$acks" --compression "$COMPRESSION" -o json)
        cpu1=$(broker_cpu_s)
        m=$("$BIN" perf mock --partitions 1 --num-records "$RECORDS_1K" --record-size 1024 \
            --acks "$acks" --compression "$COMPRESSION" -o json)
        runs=$(jq -c --argjson p "$p" --argjson m "$m" \
            --argjson cpu "$(cpu_per_gb "$cpu0" "$cpu1" "$RECORDS_1K" 1024)" \
            '. + [{rate: $p.records_per_sec, ratio: ($p.records_per_sec / $m.records_per_sec), cpu: $cpu}]' \
            <<<"$runs")
        "$BIN" topic delete "$topic" >/dev/null
    done
    printf '| 1 | 1 KiB | %s | %s | %s | %s | %s |\n' "$acks" "$REPEAT" \
        "$(median_range "$runs" rate 0)" "$(median_range "$runs" ratio 2)" "$(median_range "$runs" cpu 2)"
done

# Many partitions, many clients: 1,000 partitions written by 100 producers and read by 100
# consumers of one group, against 8 partitions with one producer and one consumer, and 8
# partitions with 100 of each; 1 KiB records, acks=1. The last lines are the ratios of the
# aggregate rates: against one producer, and against as many producers on 8 partitions.
printf '\n| partitions | producers | consumers | records | produce rec/s | mock rec/s | ÷ mock | consume rec/s | broker CPU-s/GB in | broker CPU-s/GB out | broker RSS MiB |\n'
printf '|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n'
declare -A MANY_RATE MANY_MOCK
for shape in "8 1" "8 100" "1000 100"; do
    read -r parts clients <<<"$shape"
    topic="bench-many-p$parts-c$clients"
    echo "bench: $topic, $clients producers and consumers, $RECORDS_1K records" >&2
    "$BIN" topic create "$topic" --partitions "$parts" >/dev/null
    recycle_page_cache "$parts" "$RECORDS_1K" 1024
    cpu0=$(broker_cpu_s)
    p=$("$BIN" perf produce --topic "$topic" --num-records "$RECORDS_1K" --record-size 1024 \
        --acks 1 --clients "$clients" --compression "$COMPRESSION" -o json)
    cpu1=$(broker_cpu_s)
    c=$("$BIN" perf consume --topic "$topic" --num-records "$RECORDS_1K" \
        --group "bench-many-$parts-$clients" --clients "$clients" -o json)
    cpu2=$(broker_cpu_s)
    rss=$(broker_rss_mib)
    m=$("$BIN" perf mock --partitions "$parts" --num-records "$RECORDS_1K" --record-size 1024 \
        --acks 1 --clients "$clients" --compression "$COMPRESSION" -o json)
    MANY_RATE[$parts-$clients]=$(jq -r '.records_per_sec' <<<"$p")
    MANY_MOCK[$parts-$clients]=$(jq -r '.records_per_sec' <<<"$m")
    printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$parts" "$clients" "$clients" "$RECORDS_1K" \
        "$(jq -r '.records_per_sec | floor' <<<"$p")" \
        "$(jq -r '.records_per_sec | floor' <<<"$m")" \
        "$(jq -rn --argjson a "$p" --argjson b "$m" '$a.records_per_sec / $b.records_per_sec * 100 | round / 100')" \
        "$(jq -r '.records_per_sec | floor' <<<"$c")" \
        "$(cpu_per_gb "$cpu0" "$cpu1" "$RECORDS_1K" 1024)" \
        "$(cpu_per_gb "$cpu1" "$cpu2" "$RECORDS_1K" 1024)" \
        "$rss"
    "$BIN" topic delete "$topic" >/dev/null
done
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
printf '\n1,000 partitions × 100 producers ÷ 8 partitions × 1 producer: %s (the mock: %s)\n' \
    "$(ratio "${MANY_RATE[1000-100]}" "${MANY_RATE[8-1]}")" "$(ratio "${MANY_MOCK[1000-100]}" "${MANY_MOCK[8-1]}")"
printf '1,000 partitions × 100 producers ÷ 8 partitions × 100 producers: %s (the mock: %s)\n\n' \
    "$(ratio "${MANY_RATE[1000-100]}" "${MANY_RATE[8-100]}")" "$(ratio "${MANY_MOCK[1000-100]}" "${MANY_MOCK[8-100]}")"

# Latency at half of peak: acks=all, 1 partition, 1 KiB records, paced at 50 % of the rate
# the unpaced run above reached, next to the disk's own write + fdatasync latency measured
# in the broker's data dir in the same run (`vltava perf fsync`), so the ratio is known.
rate=$(( PEAK_ALL / 2 ))
# About ten seconds at that rate, at most RECORDS_1K records.
LAT_RECORDS=${LAT_RECORDS:-$(( rate * 10 < RECORDS_1K ? rate * 10 : RECORDS_1K ))}
echo "bench: latency at $rate rec/s (half of $PEAK_ALL), $LAT_RECORDS records" >&2
f=$("$BIN" perf fsync --dir "$DATA" --count 1000 -o json)
printf '\n| acks=all at | linger.ms | achieved rec/s | client p50 ms | client p99 ms | client p99.9 ms | broker p50 ms | broker p99 ms | broker p99.9 ms | broker flush p50 ms | broker flush p99 ms | probe fsync p50 ms | probe fsync p99 ms | bytes per broker flush | probe at that size p50 ms | probe at that size p99 ms | probe at that size and pace p50 ms | probe at that size and pace p99 ms | broker p99 ÷ probe p99 | broker p99 ÷ probe p99 at flush size | broker p99 ÷ probe p99 at flush size and pace | broker p99 ÷ flush p99 | client p99 ÷ probe p99 |\n'
printf '|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n'
# The client's latency runs from send() to the delivery report and includes its linger
# (librdkafka's default 5 ms; 0 shows less of it). The broker's is the produce request's
# total time, its last byte read to its answer's last byte written; its flushes are the
# fsyncs it ran in that time, of the bytes it really had to sync. Both from its metrics.
SCRAPE0=$(mktemp -t vltava-bench-scrape.XXXXXX)
SCRAPE1=$(mktemp -t vltava-bench-scrape.XXXXXX)
for linger in 5 0; do
    "$BIN" topic create bench-latency --partitions 1 >/dev/null
    sync
    scrape >"$SCRAPE0"
    p=$("$BIN" perf produce --topic bench-latency --num-records "$LAT_RECORDS" --record-size 1024 \
        --acks all --throughput "$rate" --linger-ms "$linger" --compression "$COMPRESSION" -o json)
    scrape >"$SCRAPE1"
    read -r b50 b99 b999 < <(broker_quantiles "$SCRAPE0" "$SCRAPE1" "$PRODUCE_TIME")
    read -r f50 f99 _ < <(broker_quantiles "$SCRAPE0" "$SCRAPE1" "$FLUSH_TIME")
    # The disk again, syncing as many bytes at a time as the broker's fsyncs did on average
    # (the partition's log bytes ÷ the flushes counted), so the two sync the same amount.
    flushes=$(( $(flush_count <"$SCRAPE1") - $(flush_count <"$SCRAPE0") ))
    log_bytes=$(cat "$DATA"/bench-latency-0/*.log | wc -c)
    per_flush=$(( flushes > 0 ? (log_bytes + flushes - 1) / flushes : 4096 ))
    sync
    fs=$("$BIN" perf fsync --dir "$DATA" --count 200 --size "$per_flush" -o json)
    # And once more at the broker's pace too: as many fsyncs, as far apart as its were, so
    # the disk carries the write rate it carried during the produce (its p99 grows with it).
    # (No fsyncs counted, as with metrics missing: 200 rounds back to back instead.)
    interval=0
    if (( flushes > 0 )); then
        interval=$(jq -rn --argjson p "$p" --arg n "$LAT_RECORDS" --arg f "$flushes" \
            '($n | tonumber) / $p.records_per_sec * 1000 / ($f | tonumber)')
    fi
    sync
    fp=$("$BIN" perf fsync --dir "$DATA" --count "$(( flushes > 0 ? flushes : 200 ))" --size "$per_flush" \
        --interval-ms "$interval" -o json)
    "$BIN" topic delete bench-latency >/dev/null
    printf '| %s rec/s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' \
        "$rate" "$linger" \
        "$(jq -r '.records_per_sec | floor' <<<"$p")" \
        "$(jq -r '.latency_ms.p50' <<<"$p")" \
        "$(jq -r '.latency_ms.p99' <<<"$p")" \
        "$(jq -r '.latency_ms.p999' <<<"$p")" \
        "$b50" "$b99" "$b999" "$f50" "$f99" \
        "$(jq -r '.latency_ms.p50' <<<"$f")" \
        "$(jq -r '.latency_ms.p99' <<<"$f")" \
        "$per_flush" \
        "$(jq -r '.latency_ms.p50' <<<"$fs")" \
        "$(jq -r '.latency_ms.p99' <<<"$fs")" \
        "$(jq -r '.latency_ms.p50' <<<"$fp")" \
        "$(jq -r '.latency_ms.p99' <<<"$fp")" \
        "$(jq -rn --argjson b "$f" --arg a "$b99" '($a | tonumber) / $b.latency_ms.p99 * 10 | round / 10')" \
        "$(jq -rn --argjson b "$fs" --arg a "$b99" '($a | tonumber) / $b.latency_ms.p99 * 10 | round / 10')" \
        "$(jq -rn --argjson b "$fp" --arg a "$b99" '($a | tonumber) / $b.latency_ms.p99 * 10 | round / 10')" \
        "$(awk -v a="$b99" -v b="$f99" 'BEGIN { printf "%.1f", (b > 0 ? a / b : 0) }')" \
        "$(jq -rn --argjson a "$p" --argjson b "$f" '$a.latency_ms.p99 / $b.latency_ms.p99 * 10 | round / 10')"
done
rm -f "$SCRAPE0" "$SCRAPE1"

# Producer modes at acks=all: plain, idempotent, and transactional (commits every 10,000
# records), 1 KiB records.
printf '\n| partitions | mode | records | produce rec/s | produce MB/s | p50 ms | p99 ms | p99.9 ms | max ms |\n'
printf '|---:|---|---:|---:|---:|---:|---:|---:|---:|\n'
for partitions in 1 8; do
    for mode in plain idempotent transactional; do
        topic="bench-mode-p$partitions-$mode"
        case $mode in
            plain) flags=() ;;
            idempotent) flags=(--idempotent) ;;
            transactional) flags=(--transactional-id "bench-$partitions" --transaction-size 10000) ;;
        esac
        echo "bench: $topic, $RECORDS_1K records" >&2
        p=$("$BIN" perf produce --topic "$topic" --partitions "$partitions" --num-records "$RECORDS_1K" \
            --record-size 1024 --acks all --compression "$COMPRESSION" "${flags[@]}" -o json)
        printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' \
            "$partitions" "$mode" "$RECORDS_1K" \
            "$(jq -r '.records_per_sec | floor' <<<"$p")" \
            "$(jq -r '.mb_per_sec * 10 | round / 10' <<<"$p")" \
            "$(jq -r '.latency_ms.p50' <<<"$p")" \
            "$(jq -r '.latency_ms.p99' <<<"$p")" \
            "$(jq -r '.latency_ms.p999' <<<"$p")" \
            "$(jq -r '.latency_ms.max' <<<"$p")"
        "$BIN" topic delete "$topic" >/dev/null
    done
done

# Replication: the same acks=all produce and consume on a local three-node cluster
# (`vltava dev cluster`), topics with replication factor 3 and min.insync.replicas=2, next
# to replication factor 1 on that cluster. All three nodes share this machine's cores and
# disk with the client.
CLUSTER_DIR=$(mktemp -d -t vltava-bench-cluster.XXXXXX)
CLUSTER_OUT=$(mktemp -t vltava-bench-cluster-out.XXXXXX)
CLUSTER_BASE=${CLUSTER_BASE:-29192}
"$BIN" dev cluster --nodes 3 --base-port "$CLUSTER_BASE" --data-dir "$CLUSTER_DIR" >"$CLUSTER_OUT" 2>/dev/null &
CLUSTER_PID=$!
stop_cluster() {
    kill "$CLUSTER_PID" 2>/dev/null || true
    wait "$CLUSTER_PID" 2>/dev/null || true
    rm -rf "$CLUSTER_DIR" "$CLUSTER_OUT"
}
trap 'stop_cluster; cleanup' EXIT
for _ in $(seq 300); do
    [[ -s "$CLUSTER_OUT" ]] && break
    sleep 0.1
done
CLUSTER_BOOTSTRAP=$(head -n 1 "$CLUSTER_OUT")
[[ -n "$CLUSTER_BOOTSTRAP" ]] || { echo "bench: the 3-node cluster did not start" >&2; exit 1; }
echo "bench: 3-node cluster at $CLUSTER_BOOTSTRAP" >&2
printf '\n| cluster | partitions | replication factor | acks | records | produce rec/s | produce MB/s | p50 ms | p99 ms | p99.9 ms | consume rec/s |\n'
printf '|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|\n'
for partitions in 1 8; do
    for rf in 1 3; do
        topic="bench-rf$rf-p$partitions"
        echo "bench: $topic, $RECORDS_1K records" >&2
        # As recycle_page_cache does for the one broker: the measured run's page cache, on
        # every node, takes memory just freed.
        if [[ -z "${COLD:-}" ]]; then
            "$BIN" topic create bench-recycle -b "$CLUSTER_BOOTSTRAP" --partitions "$partitions" \
                --replication-factor "$rf" >/dev/null
            # acks=all, so every replica has written it before the topic is deleted.
            "$BIN" perf produce -b "$CLUSTER_BOOTSTRAP" --topic bench-recycle --num-records "$RECORDS_1K" \
                --record-size 1024 --acks all --compression "$COMPRESSION" -o json >/dev/null
            "$BIN" topic delete bench-recycle -b "$CLUSTER_BOOTSTRAP" >/dev/null
        fi
        sync
        "$BIN" topic create "$topic" -b "$CLUSTER_BOOTSTRAP" --partitions "$partitions" \
            --replication-factor "$rf" --config min.insync.replicas=$(( rf < 2 ? 1 : 2 )) >/dev/null
        p=$("$BIN" perf produce -b "$CLUSTER_BOOTSTRAP" --topic "$topic" --num-records "$RECORDS_1K" \
            --record-size 1024 --acks all --compression "$COMPRESSION" -o json)
        c=$("$BIN" perf consume -b "$CLUSTER_BOOTSTRAP" --topic "$topic" --num-records "$RECORDS_1K" -o json)
        printf '| 3 nodes | %s | %s | all | %s | %s | %s | %s | %s | %s | %s |\n' \
            "$partitions" "$rf" "$RECORDS_1K" \
            "$(jq -r '.records_per_sec | floor' <<<"$p")" \
            "$(jq -r '.mb_per_sec * 10 | round / 10' <<<"$p")" \
            "$(jq -r '.latency_ms.p50' <<<"$p")" \
            "$(jq -r '.latency_ms.p99' <<<"$p")" \
            "$(jq -r '.latency_ms.p999' <<<"$p")" \
            "$(jq -r '.records_per_sec | floor' <<<"$c")"
        "$BIN" topic delete "$topic" -b "$CLUSTER_BOOTSTRAP" >/dev/null
    done
done
