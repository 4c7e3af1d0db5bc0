#!/usr/bin/env bash
# Installs the system packages the local stack and the tests need, from Debian's archive.
# Idempotent: does nothing when everything is present. Needs root (or sudo) only when
# something is missing.
set -euo pipefail

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
# Used by the operations tests: a real compose implementation validates docker-compose.yml
# and promtool checks the alert rules.
command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
# The real-browser tests (tests/web) drive Debian's Chromium through Playwright; Playwright's
# own browser download is not used. A font package, so pages render text in screenshots.
command -v chromium >/dev/null 2>&1 || need+=(chromium fonts-liberation)
# The trainer's Spark backend (pyspark, the `spark` extra) runs Spark's JVM: Java 17 or newer.
# A java that is there but older than 17 is reported, not replaced (it may be the system's).
if command -v java >/dev/null 2>&1; then
  java_major=$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1)
  if [ -n "$java_major" ] && [ "$java_major" -lt 17 ]; then
    echo "warning: java $java_major found; the Spark trainer backend needs Java 17+" \
         "(apt-get install openjdk-17-jre-headless, then point JAVA_HOME at it)" >&2
  fi
else
  need+=(openjdk-17-jre-headless)
fi

if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
  SUDO=""
elif command -v sudo >/dev/null 2>&1; then
  SUDO="sudo"
else
  echo "error: missing system packages: ${need[*]}" >&2
  echo "       install them with: apt-get install -y ${need[*]} (needs root)" >&2
  exit 1
fi

echo "installing system packages: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# --no-install-recommends keeps the prometheus package from pulling in its web UI extras.
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# Debian's packages start their services on install where an init system exists; the project
# starts its own instances on free ports, so stop any that came up.
for svc in redis-server prometheus; do
  if command -v service >/dev/null 2>&1; then $SUDO service "$svc" stop >/dev/null 2>&1 || true; fi
done
