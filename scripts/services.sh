#!/usr/bin/env bash
# Start the PostgreSQL and MariaDB servers the SQL tests use, and the RabbitMQ broker the
# change feed tests use, when they are down.
# On a machine without them (a laptop) it only warns: the SQL tests then skip locally,
# and fail under CI=true so SQL coverage can't silently vanish.
set -u

wait_for() {  # wait_for NAME COMMAND...
  local name=$1; shift
  for _ in $(seq 1 30); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 1
  done
  echo "services: $name did not come up" >&2
  return 1
}

if command -v pg_isready >/dev/null 2>&1; then
  if ! pg_isready -h 127.0.0.1 -p 5432 -q; then
    echo "services: starting PostgreSQL"
    if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
      pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n 1)" main start || true
    fi
    wait_for PostgreSQL pg_isready -h 127.0.0.1 -p 5432 -q || true
  fi
else
  echo "services: PostgreSQL is not installed here; its tests will be skipped (or fail under CI)" >&2
fi

if command -v mariadb-admin >/dev/null 2>&1 || command -v mysqladmin >/dev/null 2>&1; then
  admin=$(command -v mariadb-admin || command -v mysqladmin)
  if ! "$admin" -h 127.0.0.1 -P 3306 -uroot ping >/dev/null 2>&1; then
    echo "services: starting MariaDB"
    if [ -x /usr/sbin/mariadbd ]; then
      start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd || true
    fi
    wait_for MariaDB "$admin" -h 127.0.0.1 -P 3306 -uroot ping || true
  fi
else
  echo "services: MariaDB is not installed here; its tests will be skipped (or fail under CI)" >&2
fi
# The RabbitMQ change feed's tests: the broker on 127.0.0.1:5672 (guest/guest).
port_open() {  # port_open PORT: something accepts TCP connections on 127.0.0.1:PORT
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}
if command -v rabbitmq-server >/dev/null 2>&1; then
  if ! port_open 5672; then
    echo "services: starting RabbitMQ"
    rabbitmq-server -detached >/dev/null 2>&1 || true
    # the Erlang VM takes a few seconds to boot; the AMQP port opens last
    for _ in $(seq 1 60); do port_open 5672 && break; sleep 1; done
    port_open 5672 || echo "services: RabbitMQ did not come up" >&2
  fi
else
  echo "services: RabbitMQ is not installed here; its tests will be skipped (or fail under CI)" >&2
fi

# The status page's tests drive a real headless browser: Debian's chromium.
if ! command -v chromium >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "services: installing chromium (status page tests)"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } \
      >/dev/null || echo "services: chromium could not be installed" >&2
  else
    echo "services: chromium is missing; the status page tests will be skipped (or fail under CI)" >&2
  fi
fi
exit 0
