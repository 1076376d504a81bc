#!/usr/bin/env bash
# Make sure everything the test-suite talks to is installed and answering:
# PostgreSQL (127.0.0.1:5432, database "test"), MariaDB (127.0.0.1:3306, root,
# database "test"), Redis (127.0.0.1:6379), plus the memcached binary (tests
# start their own servers from it) and Chromium (the demo's browser test).
#
# Idempotent: on a machine where all of it already runs, it only checks.
# Run as root, or as a user with passwordless sudo, when something has to be
# installed or started. A service that cannot be started is an error under
# CI=true and a warning otherwise (those tests then skip, saying why).
set -euo pipefail

WAIT_SECONDS=${WAIT_SECONDS:-30}
problems=0

say() { printf 'ensure-services: %s\n' "$*"; }

complain() {
    say "$*" >&2
    problems=$((problems + 1))
}

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
        sudo -n "$@"
    else
        say "need root for: $*" >&2
        return 1
    fi
}

# apt-get update at most once per run, and only when something is missing.
apt_updated=0
apt_install() {
    if [ "$apt_updated" -eq 0 ]; then
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        apt_updated=1
    fi
    say "installing $*"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# Binaries the tests run themselves --------------------------------------------

command -v memcached >/dev/null || apt_install memcached || complain "could not install memcached"
[ -x /usr/bin/chromium ] || apt_install chromium || complain "could not install chromium"

# Servers the tests connect to ---------------------------------------------------

postgres_up() { pg_isready -q -h 127.0.0.1 -p 5432 -U postgres; }
mariadb_up() { mariadb-admin --connect-timeout=2 -h 127.0.0.1 -P 3306 -u root ping >/dev/null 2>&1; }
redis_up() { [ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" = PONG ]; }

start_postgres() {
    as_root pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start
}
start_mariadb() {
    # mariadbd puts its socket and pid file here; the folder is lost on reboot.
    as_root install -d -o mysql -g mysql /run/mysqld
    as_root start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
}
start_redis() {
    as_root mkdir -p /var/lib/redis /var/log/redis
    as_root redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
        --dir /var/lib/redis --logfile /var/log/redis/ci.log
}

# ensure NAME CLIENT-TOOL: start the service when it does not answer, then
# wait (at most WAIT_SECONDS) until it does. Returns non-zero if it never does.
ensure() {
    local name=$1 tool=$2
    if ! command -v "$tool" >/dev/null; then
        complain "$name: '$tool' is not installed (install the $name server and client)"
        return 1
    fi
    "${name}_up" && return 0
    say "$name is not answering; starting it"
    "start_$name" || true
    local waited=0
    until "${name}_up"; do
        if [ "$waited" -ge "$WAIT_SECONDS" ]; then
            complain "$name did not answer within ${WAIT_SECONDS}s"
            return 1
        fi
        sleep 1
        waited=$((waited + 1))
    done
    say "$name is up"
}

if ensure postgres pg_isready; then
    if [ "$(psql -h 127.0.0.1 -p 5432 -U postgres -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'test'")" != 1 ]; then
        say "creating PostgreSQL database test"
        psql -q -h 127.0.0.1 -p 5432 -U postgres -d postgres -c 'CREATE DATABASE test' || complain "could not create PostgreSQL database test"
    fi
fi
if ensure mariadb mariadb-admin; then
    mariadb -h 127.0.0.1 -P 3306 -u root -e 'CREATE DATABASE IF NOT EXISTS test' \
        || complain "could not create MariaDB database test"
fi
ensure redis redis-cli || true

if [ "$problems" -gt 0 ]; then
    if [ "${CI:-}" = true ]; then
        say "$problems problem(s); failing because CI=true" >&2
        exit 1
    fi
    say "$problems problem(s); tests that need the missing pieces will be skipped" >&2
fi
exit 0
