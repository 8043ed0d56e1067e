#!/bin/sh
# serve: write the configuration (requirepass from REDIS_PASSWORD_FILE, so the password is
# never on a command line) and run redis-server; ping: the health check.
set -eu
password() { [ -n "${REDIS_PASSWORD_FILE:-}" ] && cat "$REDIS_PASSWORD_FILE" || true; }
case "${1:-serve}" in
  ping)
    REDISCLI_AUTH=$(password) exec sh -c '[ "$(redis-cli -h 127.0.0.1 ping)" = PONG ]' ;;
  serve)
    conf=/run/redis-conf/redis.conf
    umask 077
    {
      echo "bind 0.0.0.0 -::*"
      echo "protected-mode no"
      echo "port 6379"
      echo "dir /data"
      echo "appendonly yes"
      echo "appendfsync everysec"
      echo "save \"\""
      echo "maxmemory-policy noeviction"
      pw=$(password)
      [ -z "$pw" ] || printf 'requirepass "%s"\n' "$pw"
    } > "$conf"
    exec redis-server "$conf" ;;
  *) exec "$@" ;;
esac
