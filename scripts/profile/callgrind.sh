#!/usr/bin/env bash
# Instruction profile of a whole Herald (embedded store, one webhook destination → nginx) for a
# fixed number of published and delivered events. Instruction counts are repeatable on a busy
# machine, unlike timings. Counting is switched on after start-up and set-up and off after the
# last delivery, so the profile holds only the load.
#
# Usage: scripts/profile/callgrind.sh HERALD_BIN OUT_FILE N RATE THREADS
#   light load: ... 200 20 1     (every event commits on its own)
#   heavy load: ... 3000 0 16    (the writer groups commits)
# Then: callgrind_annotate OUT_FILE; instructions per event = PROGRAM TOTALS / N.
# Needs valgrind, nginx (nginx-light), curl and python3.
set -euo pipefail
BIN=$1 OUT=$2 N=$3 RATE=$4 THREADS=$5
HERE=$(cd "$(dirname "$0")" && pwd)
D=$(mktemp -d)
RP=$((20000 + RANDOM % 20000)) HP=$((40000 + RANDOM % 20000))
cleanup() {
  [ -n "${PID:-}" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null || true
  [ -f "$D/pid" ] && kill "$(cat "$D/pid")" 2>/dev/null || true
  rm -rf "$D"
}
trap cleanup EXIT
cat > "$D/nginx.conf" <<NG
worker_processes 1; daemon on; pid $D/pid; error_log $D/error.log;
events { worker_connections 1024; }
http { access_log off; client_body_temp_path $D; proxy_temp_path $D; fastcgi_temp_path $D;
  uwsgi_temp_path $D; scgi_temp_path $D;
  server { listen 127.0.0.1:$RP; location /status { stub_status; } location / { return 200 ok; } } }
NG
nginx -c "$D/nginx.conf"
export HERALD_API_KEY=k HERALD_DATA_DIR=$D/data HERALD_PORT=$HP
valgrind --tool=callgrind --callgrind-out-file="$OUT" --instr-atstart=no "$BIN" serve --dev >"$D/herald.log" 2>&1 &
PID=$!
for _ in $(seq 1 600); do curl -sf "http://127.0.0.1:$HP/healthz" >/dev/null && break; sleep 0.2; done
auth=(-H "Authorization: Bearer k")
curl -sf -X PUT "${auth[@]}" "http://127.0.0.1:$HP/api/v1/tenants/t1" >/dev/null
curl -sf -X POST "${auth[@]}" -H 'content-type: application/json' "http://127.0.0.1:$HP/api/v1/tenants/t1/destinations" \
  -d "{\"type\":\"webhook\",\"topics\":\"*\",\"config\":{\"url\":\"http://127.0.0.1:$RP/hook\"}}" >/dev/null
# Warm up (connections, caches), not counted.
python3 "$HERE/publish.py" "$HP" k 20 0 1 "http://127.0.0.1:$RP/status" >/dev/null
callgrind_control -i on "$PID" >/dev/null
python3 "$HERE/publish.py" "$HP" k "$N" "$RATE" "$THREADS" "http://127.0.0.1:$RP/status"
callgrind_control -i off "$PID" >/dev/null
kill "$PID"; wait "$PID" || true; PID=
callgrind_annotate "$OUT" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",","",$1); printf "instructions per event: %.0f\n", $1 / '"$N"'}'
