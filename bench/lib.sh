# Shared helpers of bench/run and bench/profile: process bookkeeping and cleanup, core pinning,
# config files for nginx and the sidecar, and one measured wrk run. Sourced, not executed.
# shellcheck shell=bash
# Variables set here are read by the scripts that source this file.
# shellcheck disable=SC2034

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$BENCH_DIR/.." && pwd)"
OUT="$BENCH_DIR/out"
WORK="$OUT/work"            # configs, logs and nginx/redis runtime files of the last run
export BENCH_WRK_DIR="$BENCH_DIR/wrk"

CONNECTIONS="${BENCH_CONNECTIONS:-50}"
CLK_TCK="$(getconf CLK_TCK)"
ADMIN_TOKEN="bench-admin-token"
CLIENT_TOKEN="bench-client-token"

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---- processes: everything started here is recorded and stopped on exit, Ctrl-C or failure ----
STARTED_PIDS=()
SIDECAR_PIDS=()

# stop_pid PID [SIGNAL]: asks a process to stop (SIGTERM unless told), escalating to SIGKILL.
# The sidecar is stopped with SIGINT (its fast stop): SIGTERM waits for its grace period.
stop_pid() {
  local pid=$1 signal=${2:-TERM}
  kill -0 "$pid" 2>/dev/null || return 0
  kill "-$signal" "$pid" 2>/dev/null || true
  for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
}

cleanup() {
  local pid
  for pid in "${SIDECAR_PIDS[@]}"; do stop_pid "$pid" INT; done
  for pid in "${STARTED_PIDS[@]}"; do stop_pid "$pid"; done
  STARTED_PIDS=()
  SIDECAR_PIDS=()
}

on_exit() {
  local status=$?
  trap - EXIT INT TERM
  cleanup
  wait 2>/dev/null || true
  exit "$status"
}

install_cleanup_trap() {
  trap on_exit EXIT
  trap 'log "interrupted"; exit 130' INT TERM
}

# start_bg NAME CMD...: runs CMD in the background with its output in $WORK/NAME.log and
# records its pid; sets LAST_PID.
start_bg() {
  local name=$1; shift
  "$@" >"$WORK/$name.log" 2>&1 &
  LAST_PID=$!
  STARTED_PIDS+=("$LAST_PID")
}

# ---- cores: the load generator on one core, the contender on the other ----
# With BENCH_PIN=0 or a single core, nothing is pinned.
if [ "${BENCH_PIN:-1}" != "0" ] && [ "$(nproc)" -ge 2 ]; then
  PIN_LOAD=(taskset -c 0)
  PIN_SUT=(taskset -c 1)
  PINNING="load generator and upstream on core 0, contender on core 1 (taskset)"
else
  PIN_LOAD=()
  PIN_SUT=()
  PINNING="not pinned"
fi

# A free loopback TCP port (asked from the kernel; released at once, so a tiny race remains).
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# cpu_us PID...: utime+stime of these processes (all their threads), in microseconds.
cpu_us() {
  local total=0 pid fields
  for pid in "$@"; do
    # Fields after the command name, which may contain spaces: utime and stime are 14 and 15.
    fields=$(sed 's/^.*) //' "/proc/$pid/stat") || die "process $pid is gone"
    set -- $fields
    total=$((total + ${12} + ${13}))
  done
  echo $((total * 1000000 / CLK_TCK))
}

now_us() { date +%s%6N; }

# steal_ticks: "STEAL TOTAL" clock ticks of all CPUs since boot (/proc/stat): time the
# hypervisor gave this VM's CPUs to someone else, and all time.
steal_ticks() { awk '/^cpu / { t = 0; for (i = 2; i <= NF; i++) t += $i; print $9, t }' /proc/stat; }

# wait_http URL SECONDS PID: waits until URL answers (any HTTP status) while PID lives.
wait_http() {
  local url=$1 seconds=$2 pid=$3
  for _ in $(seq $((seconds * 10))); do
    kill -0 "$pid" 2>/dev/null || return 1
    curl -s -o /dev/null --max-time 1 "$url" && return 0
    sleep 0.1
  done
  return 1
}

sha256() { printf '%s' "$1" | sha256sum | cut -d' ' -f1; }

# ---- nginx ----

# nginx_conf FILE SERVERS: one worker (NGINX_WORKERS), no access log, long keep-alive, runtime
# files in $WORK; NGINX_PRELUDE (main-context lines, e.g. load_module) goes first.
nginx_conf() {
  local file=$1 servers=$2 dir
  dir="$(dirname "$file")"
  mkdir -p "$dir/tmp"
  cat >"$file" <<EOF
${NGINX_PRELUDE:-}
worker_processes ${NGINX_WORKERS:-1};
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    default_type text/plain;
    # Client connections stay open for the whole run, as they do with the sidecar.
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    client_body_temp_path $dir/tmp/body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
$servers
}
EOF
}

# start_nginx NAME CONF PIN...: starts nginx in the foreground mode; sets NGINX_PIDS (master
# and worker) once it listens on NGINX_CHECK_URL.
start_nginx() {
  local name=$1 conf=$2; shift 2
  start_bg "$name" "$@" nginx -e "$(dirname "$conf")/error.log" -c "$conf" -g 'daemon off;'
  local master=$LAST_PID
  wait_http "$NGINX_CHECK_URL" 10 "$master" || die "nginx $name did not start (see $WORK/$name.log)"
  mapfile -t NGINX_PIDS < <(echo "$master"; pgrep -P "$master")
}

# ---- the sidecar ----

# sidecar_conf FILE PROXY_PORT ADMIN_PORT UPSTREAM_PORT STORE_TOML: one worker thread (or
# BENCH_THREADS), the header locator, every identity header, an admin credential and a client
# credential (the Knowledge Center flavour with auth = "token").
sidecar_conf() {
  local file=$1 port=$2 admin=$3 upstream=$4 store=$5 dir
  dir="$(dirname "$file")"
  cat >"$file" <<EOF
[server]
listen = ["127.0.0.1:$port"]
admin_listen = "127.0.0.1:$admin"
threads = ${BENCH_THREADS:-1}
grace_period = "1s"
upgrade_sock = "$dir/upgrade.sock"
pid_file = "$dir/sidecar.pid"
$(sidecar_tls_toml)

[upstreams.app]
address = "127.0.0.1:$upstream"

[proxy]
default_upstream = "app"
default_auth = "none"
default_session = "optional"

[sessions]
idle_timeout = "30m"
absolute_timeout = "12h"
max_sessions = ${BENCH_MAX_SESSIONS:-2000000}

[sessions.locate]
header = "X-Session-Id"

[identity_headers]
session_id = "X-Session-Id"
customer_id = "X-Customer-Id"
agent_id = "X-Agent-Id"
visit_id = "X-Visit-Id"
global_visit_id = "X-Global-Visit-Id"
application_key = "X-Application-Key"
logged_in = "X-Session-Logged-In"
credential = "X-Auth-Subject"

$store

# nginx runs with access_log off; the sidecar too unless a row measures its access log.
[access_log]
enabled = ${BENCH_ACCESS_LOG:-false}
path = "$dir/access.log"
$(sidecar_tracing_toml)

[[credentials]]
name = "bench-admin"
token_sha256 = "$(sha256 "$ADMIN_TOKEN")"
admin = true

[[credentials]]
name = "bench-client"
token_sha256 = "$(sha256 "$CLIENT_TOKEN")"
applications = ["*"]

[flavors.knowledge_center]
enabled = true
base_path = "/gks-server/v1"
auth = "token"
allow_client_ids = true
EOF
}

# sidecar_tracing_toml: a [tracing] table when BENCH_TRACE_RATIO is set. Spans go to the
# upstream nginx, whose `return 200` answers OTLP's POST /v1/traces like a collector would,
# so the export costs the sidecar its real encoding and HTTP work and nothing is dropped.
sidecar_tracing_toml() {
  [ -n "${BENCH_TRACE_RATIO:-}" ] || return 0
  printf '[tracing]\nenabled = true\notlp_endpoint = "http://127.0.0.1:%s"\nsample_ratio = %s\n' \
    "$UPSTREAM_PORT" "$BENCH_TRACE_RATIO"
}

# start_sidecar NAME CONF: starts the release binary pinned to the contender core; sets
# SIDECAR_PID once the admin listener answers, or returns 1 when the process ended (its log
# says why).
start_sidecar() {
  local name=$1 conf=$2 admin_port
  admin_port=$(sed -n 's/^admin_listen = "127.0.0.1:\([0-9]*\)"/\1/p' "$conf")
  start_bg "$name" "${PIN_SUT[@]}" "$SIDECAR_BIN" --config "$conf"
  SIDECAR_PID=$LAST_PID
  SIDECAR_PIDS+=("$SIDECAR_PID")
  wait_http "http://127.0.0.1:$admin_port/healthz" 20 "$SIDECAR_PID"
}

# create_admin_session ADMIN_PORT: a session with a full identity through the admin API; prints
# its id.
create_admin_session() {
  curl -sf -X POST "http://127.0.0.1:$1/admin/sessions" \
    -H "Authorization: Bearer $ADMIN_TOKEN" -H 'Content-Type: application/json' \
    -d '{"customer_id":"c-000042","agent_id":"agent-7","visit_id":"visit-1","global_visit_id":"gvisit-1","logged_in":true}' |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])'
}

# metric ADMIN_PORT NAME_WITH_LABELS: a value from the sidecar's /metrics (0 when absent).
metric() {
  curl -sf "http://127.0.0.1:$1/metrics" |
    awk -v m="$2" '$1 == m { v = $2 } END { print (v == "" ? 0 : v) }'
}

# ---- load ----

# run_wrk SECONDS URL ARGS...: one wrk run with the shared connection count, one thread on the
# load core; prints wrk's BENCH_JSON object (the reporter script unless ARGS name another).
run_wrk() {
  local seconds=$1 url=$2; shift 2
  local script=(-s "$BENCH_WRK_DIR/report.lua")
  case " $* " in *" -s "*) script=() ;; esac
  "${PIN_LOAD[@]}" wrk -t1 -c"$CONNECTIONS" -d"${seconds}s" --timeout 5s --latency \
    "${script[@]}" "$@" "$url" >"$WORK/wrk.last" 2>&1 || {
    cat "$WORK/wrk.last" >&2
    die "wrk failed"
  }
  sed -n 's/^BENCH_JSON //p' "$WORK/wrk.last" | tail -1
}

# measure ROW ROUND "PIDS" SECONDS URL ARGS...: one wrk run; the CPU the PIDS used during it
# is recorded with wrk's numbers as one JSON line in $RAW.
measure() {
  local row=$1 round=$2 pids=$3 seconds=$4; shift 4
  local cpu0 cpu1 t0 t1 load
  # shellcheck disable=SC2086
  cpu0=$(cpu_us $pids); t0=$(now_us)
  load=$(run_wrk "$seconds" "$@")
  # shellcheck disable=SC2086
  cpu1=$(cpu_us $pids); t1=$(now_us)
  [ -n "$load" ] || die "row $row: wrk printed no result"
  printf '{"row":"%s","round":%d,"cpu_us":%d,"wall_us":%d,"load":%s}\n' \
    "$row" "$round" $((cpu1 - cpu0)) $((t1 - t0)) "$load" >>"$RAW"
  python3 - "$load" "$row" <<'PY' >&2
import json, sys
l = json.loads(sys.argv[1])
print(f"    row {sys.argv[2]}: {l['requests'] * 1e6 / l['duration_us']:,.0f} req/s, "
      f"p99 {l['p99_us']} us, errors {l['status_errors'] + l['connect_errors'] + l['read_errors'] + l['timeouts']}")
PY
}

# ---- the parts bench/run and bench/profile share ----

# ratio_table RAW REF SECOND [NAME...]: req/s and CPU/request (medians over rounds) of every
# named row of RAW (measure's JSON lines), with the median per-round ratios of CPU/request to
# REF's and SECOND's, and of req/s to REF's.
ratio_table() {
  python3 - "$@" <<'PY'
import json, statistics, sys
path, names = sys.argv[1], sys.argv[2:]
names += [n for n in dict.fromkeys(json.loads(l)["row"] for l in open(path)) if n not in names]
runs = {}
for line in open(path):
    r = json.loads(line)
    runs.setdefault(r["row"], {})[r["round"]] = r
def cpu(r): return r["cpu_us"] / max(r["load"]["requests"], 1)
def rps(r): return r["load"]["requests"] * 1e6 / r["load"]["duration_us"]
def ratio(a, b, f):  # median of per-round ratios: each round's runs were taken back to back
    return statistics.median(f(runs[a][k]) / f(runs[b][k]) for k in runs[a] if k in runs[b])
print(f"{'':22} {'req/s':>9} {'us CPU/req':>11} {'x ' + names[0] + ' CPU':>22} {'x ' + names[1] + ' CPU':>28} {'req/s x ' + names[0]:>22}")
for name in names:
    rs = runs[name].values()
    print(f"{name:22} {statistics.median(rps(r) for r in rs):9,.0f} "
          f"{statistics.median(cpu(r) for r in rs):11.1f} {ratio(name, names[0], cpu):22.2f} "
          f"{ratio(name, names[1], cpu):28.2f} {ratio(name, names[0], rps):22.2f}")
print("(CPU/req: median over rounds; ratios: median of the per-round ratios)")
PY
}

# build_sidecar: sets SIDECAR_BIN to BENCH_SIDECAR_BIN, or builds the release binary.
build_sidecar() {
  if [ -n "${BENCH_SIDECAR_BIN:-}" ]; then
    SIDECAR_BIN="$BENCH_SIDECAR_BIN"
  else
    log "building the release binary"
    (cd "$ROOT" && cargo build --release --quiet --bin session-sidecar)
    SIDECAR_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/session-sidecar"
  fi
  [ -x "$SIDECAR_BIN" ] || die "no sidecar binary at $SIDECAR_BIN"
}

# start_upstream: nginx answering a static 200 ("ok\n"), one worker, on the load core; sets
# UPSTREAM_PORT and UPSTREAM_PIDS. nginx's `return` is about the cheapest HTTP answer there
# is and every proxy row uses this same upstream, so the rows differ only in the proxy.
# /bench/identity echoes the identity headers it receives, to check the sidecar injects them.
start_upstream() {
  UPSTREAM_PORT=$(free_port)
  mkdir -p "$WORK/upstream"
  nginx_conf "$WORK/upstream/nginx.conf" "
    server {
        listen 127.0.0.1:$UPSTREAM_PORT;
        location / { return 200 \"ok\n\"; }
        location = /bench/identity {
            return 200 \"customer=\$http_x_customer_id agent=\$http_x_agent_id logged_in=\$http_x_session_logged_in\n\";
        }
    }"
  NGINX_CHECK_URL="http://127.0.0.1:$UPSTREAM_PORT/"
  start_nginx upstream "$WORK/upstream/nginx.conf" "${PIN_LOAD[@]}"
  UPSTREAM_PIDS="${NGINX_PIDS[*]}"
}

# start_nginx_contender: nginx on the contender core, one worker, with a proxy to the upstream
# (keep-alive pool, HTTP/1.1, Connection cleared) and a static 200; sets NGINX_PROXY_PORT,
# NGINX_STATIC_PORT and NGINX_CONTENDER_PIDS (master and worker).
start_nginx_contender() {
  NGINX_PROXY_PORT=$(free_port)
  NGINX_STATIC_PORT=$(free_port)
  NGINX_LOGGING_PROXY_PORT=$(free_port) # the same proxy with its access log on (issue 19's reference)
  mkdir -p "$WORK/nginx"
  nginx_conf "$WORK/nginx/nginx.conf" "
    upstream app {
        server 127.0.0.1:$UPSTREAM_PORT;
        keepalive 64;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$NGINX_PROXY_PORT;
        location / {
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
        }
    }
    server {
        listen 127.0.0.1:$NGINX_STATIC_PORT;
        location / { return 200 \"ok\n\"; }
    }
    server {
        listen 127.0.0.1:$NGINX_LOGGING_PROXY_PORT;
        access_log $WORK/nginx/access.log combined;
        location / {
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
        }
    }"
  NGINX_CHECK_URL="http://127.0.0.1:$NGINX_STATIC_PORT/"
  start_nginx contender "$WORK/nginx/nginx.conf" "${PIN_SUT[@]}"
  NGINX_CONTENDER_PIDS="${NGINX_PIDS[*]}"
  [ "$(curl -s "http://127.0.0.1:$NGINX_PROXY_PORT/")" = "ok" ] || die "the nginx proxy does not reach the upstream"
}

# create_kc_session PORT: prints the id of a new Knowledge Center session made through the
# sidecar on PORT with the client credential, or nothing when the build has no such flavour
# (it forwards the PUT to the upstream, which answers "ok", not SessionInfo).
create_kc_session() {
  curl -s -X PUT "http://127.0.0.1:$1/gks-server/v1/sessions/new" \
    -H "Authorization: Bearer $CLIENT_TOKEN" -H 'gkc_customerId: c-000043' |
    python3 -c 'import json,sys
try: print(json.load(sys.stdin)["sessionId"])
except Exception: pass' || true
}

# start_forwarding_sidecar [NAME]: a memory-store sidecar in front of the upstream with one
# live session carrying a full identity; sets SIDECAR_PORT, SIDECAR_ADMIN, SIDECAR_PID,
# SESSION_ID and fails unless the upstream sees the session's identity. BENCH_ACCESS_LOG and
# BENCH_TRACE_RATIO in the environment turn on the access log and tracing (sidecar_conf).
start_forwarding_sidecar() {
  local name=${1:-sidecar}
  SIDECAR_PORT=$(free_port)
  SIDECAR_ADMIN=$(free_port)
  mkdir -p "$WORK/$name"
  sidecar_conf "$WORK/$name/sidecar.toml" "$SIDECAR_PORT" "$SIDECAR_ADMIN" "$UPSTREAM_PORT" \
    $'[store]\nbackend = "memory"\nsnapshot_file = ""'
  start_sidecar "$name" "$WORK/$name/sidecar.toml" || die "the sidecar $name did not start (see $WORK/$name.log)"
  SESSION_ID=$(create_admin_session "$SIDECAR_ADMIN") || die "could not create a session through the admin API"
  local identity
  identity=$(curl -s "http://127.0.0.1:$SIDECAR_PORT/bench/identity" -H "X-Session-Id: $SESSION_ID")
  case "$identity" in
    "customer=c-000042 agent=agent-7 logged_in=true") ;;
    *) die "the sidecar did not inject the session's identity: upstream saw '$identity'" ;;
  esac
}

# ---- the same-job peer and the floor (issue 20, SPEC §13.6) ----

# session_record ADMIN_PORT ID: one line of bench/lua/sidecar.lua's sessions file for the
# session ID, read back from the sidecar's admin API: the dict holds the very same sessions,
# with the idle and absolute timeouts of sidecar_conf's [sessions] (30 min, 12 h).
session_record() {
  curl -sf "http://127.0.0.1:$1/admin/sessions/$2" -H "Authorization: Bearer $ADMIN_TOKEN" |
    python3 -c '
import json, sys, datetime
s = json.load(sys.stdin)
def f(k):
    v = s.get(k)
    return "" if v is None else str(v).lower() if isinstance(v, bool) else str(v)
def ms(k):
    t = datetime.datetime.fromisoformat(s[k].replace("Z", "+00:00"))
    return int(t.timestamp() * 1000)
now = int(datetime.datetime.now(datetime.timezone.utc).timestamp() * 1000)
print("\t".join([s["id"], f("customer_id"), f("agent_id"), f("visit_id"), f("global_visit_id"),
                 f("application_key"), f("tenant_id"), f("logged_in"), str(ms("created_at")),
                 str(ms("expires_at")), str(ms("last_access")), str(30 * 60 * 1000),
                 str(ms("created_at") + 12 * 3600 * 1000), str(max(1, (ms("expires_at") - now) // 1000))]))'
}

# start_nginx_lua NAME WORKERS PIN... : nginx + Lua doing the sidecar's forward job and its KC
# GET answer (bench/lua/sidecar.lua) over the sessions in $WORK/lua-sessions.tsv, with a
# keepalive pool to the upstream; sets LUA_PORT and LUA_PIDS (master and workers).
start_nginx_lua() {
  local name=$1 workers=$2 dir; shift 2
  dir="$WORK/$name"
  LUA_PORT=$(free_port)
  mkdir -p "$dir"
  printf '%s\tbench-client\n%s\tbench-admin\n' "$(sha256 "$CLIENT_TOKEN")" "$(sha256 "$ADMIN_TOKEN")" \
    >"$WORK/lua-tokens.tsv"
  NGINX_WORKERS=$workers NGINX_PRELUDE="load_module /usr/lib/nginx/modules/ndk_http_module.so;
load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;" nginx_conf "$dir/nginx.conf" "
    lua_package_path '$BENCH_DIR/lua/?.lua;/usr/share/lua/5.1/?.lua;;';
    lua_shared_dict sessions 16m;
    init_by_lua_block {
        require('sidecar').load('$WORK/lua-sessions.tsv', '$WORK/lua-tokens.tsv')
    }
    upstream app {
        server 127.0.0.1:$UPSTREAM_PORT;
        keepalive 64;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$LUA_PORT;
        location / {
            access_by_lua_block { require('sidecar').forward(false) }
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
        }
        location /required/ {
            access_by_lua_block { require('sidecar').forward(true) }
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
        }
        location ~ ^/gks-server/v1/sessions/([^/]+)\$ {
            content_by_lua_block { require('sidecar').kc_get(ngx.var[1]) }
        }
        location = /healthz { return 200 \"ok\n\"; }
    }"
  NGINX_CHECK_URL="http://127.0.0.1:$LUA_PORT/healthz"
  start_nginx "$name" "$dir/nginx.conf" "$@"
  LUA_PIDS="${NGINX_PIDS[*]}"
}

# check_nginx_lua PORT SESSION KC_SESSION SIDECAR_PORT: nginx + Lua does the sidecar's job: the
# upstream sees the same identity, a required missing session is 401, and the KC GET answer
# is the sidecar's, byte for byte.
check_nginx_lua() {
  local port=$1 sid=$2 kc=$3 sidecar=$4 identity status ours theirs
  identity=$(curl -s "http://127.0.0.1:$port/bench/identity" -H "X-Session-Id: $sid" \
    -H 'X-Customer-Id: forged')
  [ "$identity" = "customer=c-000042 agent=agent-7 logged_in=true" ] ||
    die "nginx + Lua did not inject the session's identity: upstream saw '$identity'"
  status=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/required/x" \
    -H 'X-Session-Id: no-such-session')
  [ "$status" = "401" ] || die "nginx + Lua answered $status, not 401, for a missing required session"
  [ -n "$kc" ] || return 0
  # Both slide the idle deadline on every GET: expiresAt is the time of the request plus
  # 30 minutes, so the two answers match but for the milliseconds between the requests.
  ours=$(curl -s "http://127.0.0.1:$port/gks-server/v1/sessions/$kc" -H "Authorization: Bearer $CLIENT_TOKEN")
  theirs=$(curl -s "http://127.0.0.1:$sidecar/gks-server/v1/sessions/$kc" -H "Authorization: Bearer $CLIENT_TOKEN")
  # The last 12 characters are expiresAt's minutes, seconds and milliseconds: "MM:SS.mmmZ"}.
  if [ "${#ours}" != "${#theirs}" ] || [ "${ours:0:${#ours}-12}" != "${theirs:0:${#theirs}-12}" ]; then
    die "nginx + Lua's KC GET answer differs from the sidecar's:
  lua:     $ours
  sidecar: $theirs"
  fi
}

# start_plain_pingora ANSWER_FILE: examples/bench-plain-proxy on the contender core, forwarding
# to the upstream and answering /answer with ANSWER_FILE's bytes (the KC GET answer's size and
# type, so the floor writes what the sidecar writes); sets PLAIN_PORT and PLAIN_PID.
start_plain_pingora() {
  PLAIN_PORT=$(free_port)
  start_bg plain-pingora "${PIN_SUT[@]}" "$PLAIN_BIN" "127.0.0.1:$PLAIN_PORT" \
    "127.0.0.1:$UPSTREAM_PORT" "$1"
  PLAIN_PID=$LAST_PID
  SIDECAR_PIDS+=("$PLAIN_PID") # pingora's fast stop is SIGINT, as the sidecar's
  wait_http "http://127.0.0.1:$PLAIN_PORT/answer" 20 "$PLAIN_PID" ||
    die "bench-plain-proxy did not start (see $WORK/plain-pingora.log)"
  cmp -s <(curl -s "http://127.0.0.1:$PLAIN_PORT/answer") "$1" ||
    die "bench-plain-proxy's /answer is not the answer file's bytes"
}

# build_plain_pingora: sets PLAIN_BIN to BENCH_PLAIN_BIN, or builds examples/bench-plain-proxy.
build_plain_pingora() {
  if [ -n "${BENCH_PLAIN_BIN:-}" ]; then
    PLAIN_BIN="$BENCH_PLAIN_BIN"
  else
    log "building examples/bench-plain-proxy.rs"
    (cd "$ROOT" && cargo build --release --quiet --example bench-plain-proxy)
    PLAIN_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/bench-plain-proxy"
  fi
  [ -x "$PLAIN_BIN" ] || die "no bench-plain-proxy binary at $PLAIN_BIN"
}

# ensure_oha: sets OHA_BIN to a rate-limited load generator (oha, from crates.io: -q fixes the
# request rate, --latency-correction measures from each request's scheduled start, so a stall
# is not hidden by the requests it delayed). Installed once into ~/.cargo/bin, with the
# system's OpenSSL (native-tls; libssl-dev) rather than its default rustls + aws-lc, which
# would add a long C build for TLS nothing here uses (oha does not build with neither).
OHA_VERSION="${BENCH_OHA_VERSION:-1.16.0}"
ensure_oha() {
  OHA_BIN=$(command -v oha || echo "$HOME/.cargo/bin/oha")
  if [ ! -x "$OHA_BIN" ]; then
    "$ROOT/scripts/install-packages" libssl-dev pkg-config
    log "installing oha $OHA_VERSION from crates.io (once)"
    cargo install --quiet --locked --no-default-features --features native-tls oha --version "$OHA_VERSION" >"$WORK/oha-install.log" 2>&1 ||
      { cat "$WORK/oha-install.log" >&2; die "could not install oha"; }
    OHA_BIN="$HOME/.cargo/bin/oha"
  fi
}

# ---- TLS and HTTP/2 (issue 17): nginx's TLS termination and the sidecar's tls_listen ----

# make_bench_certs DIR: a CA and a server certificate it signs (localhost, 127.0.0.1), both
# ECDSA P-256, made with openssl at bench time: DIR/ca.pem, DIR/cert.pem, DIR/key.pem. nginx
# and the sidecar serve the very same certificate and key.
make_bench_certs() {
  local dir=$1
  mkdir -p "$dir"
  (
    cd "$dir"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
      -subj '/CN=session-sidecar bench CA' -keyout ca.key -out ca.pem
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
      -subj '/CN=localhost' -keyout key.pem -out cert.csr
    printf '%s\n' 'basicConstraints=critical,CA:FALSE' 'keyUsage=critical,digitalSignature' \
      'extendedKeyUsage=serverAuth' 'subjectAltName=DNS:localhost,IP:127.0.0.1' >cert.ext
    openssl x509 -req -in cert.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
      -extfile cert.ext -out cert.pem
  ) >"$WORK/certs.log" 2>&1 || { cat "$WORK/certs.log" >&2; die "openssl could not make the bench certificates"; }
}

# sidecar_tls_toml: the [server] lines of a TLS listener when BENCH_TLS_PORT is set: tls_listen,
# http2 (h2 by ALPN) and the [server.tls] table with the certificates in BENCH_TLS_CERTS,
# TLS 1.3 only like the nginx contender. Printed inside sidecar_conf's [server] table.
sidecar_tls_toml() {
  [ -n "${BENCH_TLS_PORT:-}" ] || return 0
  printf 'tls_listen = ["127.0.0.1:%s"]\nhttp2 = true\n\n[server.tls]\ncert_file = "%s"\nkey_file = "%s"\nmin_version = "1.3"\n' \
    "$BENCH_TLS_PORT" "$BENCH_TLS_CERTS/cert.pem" "$BENCH_TLS_CERTS/key.pem"
}

# start_nginx_tls CERT_DIR: nginx on the contender core, one worker, terminating TLS 1.3 and
# h2 (`listen ... ssl http2`) with the certificate in CERT_DIR and proxying to the upstream
# exactly as row 2 does (keep-alive pool, HTTP/1.1, Connection cleared). Session resumption is
# left at nginx's defaults, as the sidecar's is at rustls's: both hand out TLS 1.3 tickets,
# which h2load's one-connection clients never use. A plaintext server answers the start-up
# check. Sets NGINX_TLS_PORT and NGINX_TLS_PIDS.
start_nginx_tls() {
  local certs=$1 check_port
  NGINX_TLS_PORT=$(free_port)
  check_port=$(free_port)
  mkdir -p "$WORK/nginx-tls"
  nginx_conf "$WORK/nginx-tls/nginx.conf" "
    upstream app {
        server 127.0.0.1:$UPSTREAM_PORT;
        keepalive 64;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$NGINX_TLS_PORT ssl http2;
        ssl_certificate $certs/cert.pem;
        ssl_certificate_key $certs/key.pem;
        ssl_protocols TLSv1.3;
        location / {
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
        }
    }
    server {
        listen 127.0.0.1:$check_port;
        location / { return 200 \"ok\n\"; }
    }"
  NGINX_CHECK_URL="http://127.0.0.1:$check_port/"
  start_nginx nginx-tls "$WORK/nginx-tls/nginx.conf" "${PIN_SUT[@]}"
  NGINX_TLS_PIDS="${NGINX_PIDS[*]}"
}

# check_tls_forward NAME PORT CA PATH WANT ARGS...: the contender on PORT speaks h2 over TLS
# with a certificate CA verifies, and GET PATH (with ARGS, curl's) answers WANT.
check_tls_forward() {
  local name=$1 port=$2 ca=$3 path=$4 want=$5 answer; shift 5
  answer=$(curl -s --http2 --cacert "$ca" -w ' HTTP/%{http_version}' \
    --resolve "localhost:$port:127.0.0.1" "https://localhost:$port$path" "$@") ||
    die "$name: no answer over TLS on port $port"
  [ "$answer" = "$want
 HTTP/2" ] || die "$name over TLS + h2: GET $path answered '$answer', not '$want' over HTTP/2"
}

# h2load_json FILE [LOG]: h2load's summary in FILE (one or more runs, concatenated) as a load
# JSON object like wrk's reporter prints: requests (the ones that succeeded), duration_us (the
# sum of the runs' "finished in"), failures, p50/p99 of the request times in h2load's
# --log-file LOG (none without one), and what TLS the runs negotiated.
h2load_json() {
  python3 - "$@" <<'PY'
import json, re, sys
text = open(sys.argv[1]).read()
units = {"us": 1, "ms": 1e3, "s": 1e6}
dur = sum(float(v) * units[u] for v, u in re.findall(r"^finished in ([0-9.]+)(us|ms|s),", text, re.M))
counts = {"succeeded": 0, "failed": 0, "errored": 0, "timeout": 0, "done": 0, "total": 0}
for m in re.finditer(r"^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                     r"(\d+) failed, (\d+) errored, (\d+) timeout", text, re.M):
    for k, v in zip(("total", "started", "done", "succeeded", "failed", "errored", "timeout"), m.groups()):
        if k in counts:
            counts[k] += int(v)
non2xx = sum(int(a) + int(b) + int(c) for a, b, c in
             re.findall(r"^status codes: \d+ 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text, re.M))
def seen(label):
    return sorted(set(re.findall(r"^" + label + r": (.*)$", text, re.M)))
# h2load: "errored" are requests that failed for other reasons than their status (the
# connection or the stream failed); requests never done (a client that could not connect
# abandons its requests) count as connect errors.
out = {"requests": counts["succeeded"], "duration_us": int(dur), "p50_us": None, "p99_us": None,
       "status_errors": non2xx, "connect_errors": max(0, counts["total"] - counts["done"]),
       "read_errors": counts["errored"], "write_errors": 0, "timeouts": counts["timeout"],
       "runs": len(re.findall(r"^finished in ", text, re.M)),
       "tls": {"protocol": seen("TLS Protocol"), "cipher": seen("Cipher"),
               "key_exchange": seen("Server Temp Key"), "alpn": seen("Application protocol")}}
if len(sys.argv) > 2:
    times = sorted(int(l.split("\t")[2]) for l in open(sys.argv[2]) if l.count("\t") == 2)
    if times:
        out["p50_us"] = times[len(times) // 2]
        out["p99_us"] = times[min(len(times) - 1, len(times) * 99 // 100)]
print(json.dumps(out))
PY
}

# record_h2load ROW ROUND CPU_US WALL_US LOAD_JSON: one measured run into $RAW, a line like
# measure's (its load from h2load_json), and what it measured on stderr. Dies unless every
# connection negotiated TLS 1.3 and h2.
record_h2load() {
  local row=$1 round=$2 cpu=$3 wall=$4 load=$5
  printf '{"row":"%s","round":%d,"cpu_us":%d,"wall_us":%d,"load":%s}\n' \
    "$row" "$round" "$cpu" "$wall" "$load" >>"$RAW"
  python3 - "$load" "$row" <<'PY' >&2 || die "row $row: h2load did not speak TLS 1.3 + h2, or measured nothing"
import json, sys
l, row = json.loads(sys.argv[1]), sys.argv[2]
if l["tls"]["protocol"] != ["TLSv1.3"] or l["tls"]["alpn"] != ["h2"] or not l["requests"]:
    print(f"    row {row}: h2load negotiated {l['tls']}, {l['requests']} requests succeeded")
    sys.exit(1)
what = "connections/s (one request each)" if row.startswith("8") else "req/s"
bad = l["status_errors"] + l["connect_errors"] + l["read_errors"] + l["timeouts"]
print(f"    row {row}: {l['requests'] * 1e6 / max(l['duration_us'], 1):,.0f} {what}, errors {bad}")
PY
}

# measure_handshakes ROW ROUND "PIDS" SECONDS URL ARGS...: new TLS connections, one h2 request
# each, for SECONDS: h2load runs one after another, each with TLS_BATCH clients that make one
# request each (-c = -n, so every request is a new connection and a full handshake: a client
# never reconnects, so nothing is resumed). Batches of TLS_BATCH keep the burst of SYNs below
# the listen backlog. The rate is connections over the sum of h2load's own run times (its
# start-up between runs is excluded, from the busy share too); CPU is the PIDS' over the loop.
measure_handshakes() {
  local row=$1 round=$2 pids=$3 seconds=$4; shift 4
  local cpu0 cpu1 t0 out="$WORK/h2load-$row.out"
  : >"$out"
  # shellcheck disable=SC2086
  cpu0=$(cpu_us $pids); t0=$(now_us)
  while [ $(($(now_us) - t0)) -lt $((seconds * 1000000)) ]; do
    "${PIN_LOAD[@]}" timeout 60 h2load -c "$TLS_BATCH" -n "$TLS_BATCH" -m 1 "$@" >>"$out" 2>&1 ||
      { tail -20 "$out" >&2; die "row $row: h2load failed"; }
  done
  # shellcheck disable=SC2086
  cpu1=$(cpu_us $pids)
  local load
  load=$(h2load_json "$out")
  record_h2load "$row" "$round" $((cpu1 - cpu0)) \
    "$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["duration_us"])' "$load")" "$load"
}

# measure_h2 ROW ROUND "PIDS" SECONDS URL ARGS...: h2 forwarding over a fixed set of TLS
# connections: h2load -c TLS_H2_CONNECTIONS -m TLS_H2_STREAMS -D SECONDS, request times from
# its --log-file; CPU is the PIDS' over the run.
measure_h2() {
  local row=$1 round=$2 pids=$3 seconds=$4; shift 4
  local cpu0 cpu1 t0 t1 out="$WORK/h2load-$row.out" log="$WORK/h2load-$row.log"
  # shellcheck disable=SC2086
  cpu0=$(cpu_us $pids); t0=$(now_us)
  "${PIN_LOAD[@]}" timeout $((seconds + 60)) h2load -c "$TLS_H2_CONNECTIONS" -m "$TLS_H2_STREAMS" \
    -D "$seconds" --log-file="$log" "$@" >"$out" 2>&1 ||
    { tail -20 "$out" >&2; die "row $row: h2load failed"; }
  # shellcheck disable=SC2086
  cpu1=$(cpu_us $pids); t1=$(now_us)
  record_h2load "$row" "$round" $((cpu1 - cpu0)) $((t1 - t0)) "$(h2load_json "$out" "$log")"
}
