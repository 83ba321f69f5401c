#!/usr/bin/env bash
# Start each local service the test suite can use if it is not answering already.
# A service that cannot be started is reported; the tests that need it then skip, saying why.
set -u

up() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

start() {
  local name=$1 port=$2; shift 2
  if up "$port"; then return 0; fi
  echo "starting $name"
  "$@" >/dev/null 2>&1 || true
  for _ in $(seq 1 30); do up "$port" && return 0; sleep 0.5; done
  echo "warning: $name did not come up on port $port" >&2
}

if command -v pg_ctlcluster >/dev/null 2>&1; then
  start postgresql 5432 pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n 1)" main start
  # Change capture reads the WAL through logical decoding: wal_level must be logical, which
  # takes a restart. Only when it is not already, so that a running cluster is left alone.
  level=$(psql -h 127.0.0.1 -U postgres -d postgres -Atc 'SHOW wal_level' 2>/dev/null || true)
  if [ -n "$level" ] && [ "$level" != logical ]; then
    echo "setting wal_level = logical (was $level) and restarting postgresql"
    psql -h 127.0.0.1 -U postgres -d postgres -qc 'ALTER SYSTEM SET wal_level = logical' &&
      pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n 1)" main restart ||
      echo "warning: wal_level could not be set to logical; the change capture tests will skip" >&2
    for _ in $(seq 1 30); do up 5432 && break; sleep 0.5; done
  fi
fi
if command -v redis-server >/dev/null 2>&1; then
  start redis 6379 redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" \
    --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
fi
if [ -x /usr/sbin/nats-server ]; then
  start nats 4222 start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- \
    -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log
fi
if [ -x /usr/sbin/mosquitto ]; then
  start mosquitto 1883 mosquitto -d -c /etc/mosquitto/mosquitto.conf
fi
# RabbitMQ takes seconds to boot: started detached, then waited for by its own tool.
if command -v rabbitmq-server >/dev/null 2>&1 && ! up 5672; then
  echo "starting rabbitmq"
  rabbitmq-server -detached >/dev/null 2>&1 || true
  timeout 120 rabbitmqctl await_startup >/dev/null 2>&1 ||
    echo "warning: rabbitmq did not come up on port 5672" >&2
fi
exit 0
