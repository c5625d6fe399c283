#!/usr/bin/env bash
# The peers `logq bench compare` measures logq against, on loopback.
#
#   bench/peers.sh install   # Debian packages: postgresql redis-server nats-server rabbitmq-server
#                            # (nothing to do when all four are there)
#   bench/peers.sh start     # start each installed peer, durable settings, own ports and data dir
#   bench/peers.sh status    # which are up
#   bench/peers.sh stop      # stop them (the data dir stays until the next start)
#
# Ports (the harness's defaults; distinct from each peer's usual port so a
# system service of the same peer never collides): PostgreSQL 25432,
# Redis 26379, NATS 24222, RabbitMQ 25672; LOGQ_PG_PORT, LOGQ_REDIS_PORT,
# LOGQ_NATS_PORT and LOGQ_RABBITMQ_PORT change them (and
# LOGQ_RABBITMQ_DIST_PORT RabbitMQ's Erlang distribution port, 45672). Data: $LOGQ_PEERS_DIR
# (default /tmp/logq-peers), wiped at each start.
set -euo pipefail

DIR=${LOGQ_PEERS_DIR:-/tmp/logq-peers}
PG_PORT=${LOGQ_PG_PORT:-25432}
REDIS_PORT=${LOGQ_REDIS_PORT:-26379}
NATS_PORT=${LOGQ_NATS_PORT:-24222}
RABBIT_PORT=${LOGQ_RABBITMQ_PORT:-25672}
RABBIT_NODE=logqbench$RABBIT_PORT@localhost
# Erlang distribution (node-to-CLI) port: LOGQ_RABBITMQ_DIST_PORT, else 20000 above
RABBIT_DIST_PORT=${LOGQ_RABBITMQ_DIST_PORT:-$((RABBIT_PORT + 20000))}

say() { printf '%s\n' "$*" >&2; }

as_user() { # run "$2..." as system user $1 when root, else as ourselves
    local user=$1
    shift
    if [ "$(id -u)" = 0 ] && id "$user" >/dev/null 2>&1; then
        # runuser starts from the login limits (1024 files): lift them to the
        # hard limit, or RabbitMQ stops accepting near 1,000 connections
        runuser -u "$user" -- sh -c 'ulimit -n "$(ulimit -Hn)"; exec "$@"' sh "$@"
    else
        "$@"
    fi
}

pg_bin() {
    local found
    found=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
    [ -n "$found" ] && printf '%s' "$found"
}

installed() { # all four peers are installed
    pg_bin >/dev/null && command -v redis-server >/dev/null &&
        command -v nats-server >/dev/null && [ -x /usr/lib/rabbitmq/bin/rabbitmq-server ]
}

install_peers() {
    installed && return 0
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo=sudo
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
        postgresql redis-server nats-server rabbitmq-server
}

start_postgres() {
    local bin
    bin=$(pg_bin) || { say "postgresql: not installed, skipped"; return; }
    local data=$DIR/postgres
    mkdir -p "$data"
    [ "$(id -u)" = 0 ] && chown postgres "$data"
    as_user postgres "$bin/initdb" -D "$data/db" -A trust -U postgres >/dev/null
    # fsync on, synchronous commit: a COMMIT returns once its WAL is on disk.
    as_user postgres "$bin/pg_ctl" -D "$data/db" -l "$data/log" -w start -o \
        "-c listen_addresses=127.0.0.1 -c port=$PG_PORT -c unix_socket_directories=$data \
         -c fsync=on -c synchronous_commit=on -c full_page_writes=on \
         -c max_connections=1200 -c shared_buffers=256MB" >/dev/null
    say "postgresql: postgresql://postgres@127.0.0.1:$PG_PORT/postgres"
}

start_redis() {
    command -v redis-server >/dev/null || { say "redis: not installed, skipped"; return; }
    mkdir -p "$DIR/redis"
    # Append-only file, fsync before every reply: as durable as Redis gets.
    redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$DIR/redis" \
        --appendonly yes --appendfsync always --save "" --maxclients 2000 \
        --daemonize yes --pidfile "$DIR/redis/pid" --logfile "$DIR/redis/log"
    for _ in $(seq 100); do
        redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break
        sleep 0.1
    done
    say "redis: redis://127.0.0.1:$REDIS_PORT"
}

start_nats() {
    command -v nats-server >/dev/null || { say "nats: not installed, skipped"; return; }
    mkdir -p "$DIR/nats"
    nats-server -js -sd "$DIR/nats/store" -a 127.0.0.1 -p "$NATS_PORT" \
        -P "$DIR/nats/pid" -l "$DIR/nats/log" </dev/null >/dev/null 2>&1 &
    disown
    for _ in $(seq 100); do
        (exec 3<>/dev/tcp/127.0.0.1/$NATS_PORT) 2>/dev/null && break
        sleep 0.1
    done
    say "nats: nats://127.0.0.1:$NATS_PORT"
}

rabbit_env() {
    printf '%s\n' \
        "HOME=$DIR/rabbitmq" \
        "RABBITMQ_NODENAME=$RABBIT_NODE" \
        "RABBITMQ_NODE_IP_ADDRESS=127.0.0.1" \
        "RABBITMQ_NODE_PORT=$RABBIT_PORT" \
        "RABBITMQ_DIST_PORT=$RABBIT_DIST_PORT" \
        "RABBITMQ_MNESIA_BASE=$DIR/rabbitmq/mnesia" \
        "RABBITMQ_LOG_BASE=$DIR/rabbitmq/log" \
        "RABBITMQ_PID_FILE=$DIR/rabbitmq/pid" \
        "RABBITMQ_ENABLED_PLUGINS_FILE=$DIR/rabbitmq/enabled_plugins"
}

rabbit() { # rabbit <tool> args...: a RabbitMQ tool against our node
    local tool=$1
    shift
    (cd "$DIR/rabbitmq" && as_user rabbitmq env $(rabbit_env) "/usr/lib/rabbitmq/bin/$tool" "$@")
}

start_rabbitmq() {
    [ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || { say "rabbitmq: not installed, skipped"; return; }
    mkdir -p "$DIR/rabbitmq/log"
    echo "[]." >"$DIR/rabbitmq/enabled_plugins"
    [ "$(id -u)" = 0 ] && chown -R rabbitmq "$DIR/rabbitmq"
    rabbit rabbitmq-server -detached
    rabbit rabbitmqctl -n "$RABBIT_NODE" --timeout 120 wait "$DIR/rabbitmq/pid" >/dev/null
    say "rabbitmq: amqp://guest:guest@127.0.0.1:$RABBIT_PORT/"
}

stop_peers() {
    local bin
    if bin=$(pg_bin) && [ -d "$DIR/postgres/db" ]; then
        as_user postgres "$bin/pg_ctl" -D "$DIR/postgres/db" -m fast -w stop >/dev/null 2>&1 || true
    fi
    command -v redis-cli >/dev/null && redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
    [ -f "$DIR/nats/pid" ] && kill "$(cat "$DIR/nats/pid")" 2>/dev/null || true
    if [ -d "$DIR/rabbitmq" ] && [ -x /usr/lib/rabbitmq/bin/rabbitmqctl ]; then
        rabbit rabbitmqctl -n "$RABBIT_NODE" shutdown >/dev/null 2>&1 || true
    fi
    return 0
}

status_peers() {
    for peer in postgres:$PG_PORT redis:$REDIS_PORT nats:$NATS_PORT rabbitmq:$RABBIT_PORT; do
        if (exec 3<>"/dev/tcp/127.0.0.1/${peer#*:}") 2>/dev/null; then
            say "${peer%%:*}: up on port ${peer#*:}"
        else
            say "${peer%%:*}: down"
        fi
    done
}

case ${1:-} in
install) install_peers ;;
start)
    stop_peers
    rm -rf "$DIR"
    mkdir -p "$DIR"
    chmod 755 "$DIR"
    start_postgres
    start_redis
    start_nats
    start_rabbitmq
    ;;
stop) stop_peers ;;
status) status_peers ;;
*)
    say "usage: $0 install|start|stop|status"
    exit 2
    ;;
esac
