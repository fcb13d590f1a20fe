#!/usr/bin/env bash
# Makes an `etcd` binary available for the TrellisMeta tests and `--meta etcd`.
# Idempotent: when `etcd` is already on PATH nothing is installed.
# Otherwise installs Debian's etcd-server (needs root), keeping the package from
# starting a system service: tests start their own etcd on loopback ports.
# Prints the path of the etcd binary on success.
set -euo pipefail

find_etcd() {
  command -v etcd 2>/dev/null || { [ -x /usr/bin/etcd ] && echo /usr/bin/etcd; } || true
}

ETCD=$(find_etcd)
if [ -z "$ETCD" ]; then
  export DEBIAN_FRONTEND=noninteractive
  # Forbid maintainer scripts from starting services during the install
  # (docker images usually already ship such a policy; keep theirs if present).
  POLICY=/usr/sbin/policy-rc.d
  OWN_POLICY=0
  if [ ! -e "$POLICY" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$POLICY"
    chmod 755 "$POLICY"
    OWN_POLICY=1
  fi
  cleanup() { if [ "$OWN_POLICY" = 1 ]; then rm -f "$POLICY"; fi; }
  trap cleanup EXIT
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends etcd-server >/dev/null
  cleanup
  OWN_POLICY=0
  ETCD=$(find_etcd)
fi

if [ -z "$ETCD" ]; then
  echo "setup-etcd: etcd not found after installing etcd-server" >&2
  exit 1
fi

# Make sure no packaged service keeps running or starts at boot.
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  systemctl disable --now etcd.service >/dev/null 2>&1 || true
fi
if [ -x /etc/init.d/etcd ]; then
  /etc/init.d/etcd stop >/dev/null 2>&1 || true
  command -v update-rc.d >/dev/null 2>&1 && update-rc.d etcd disable >/dev/null 2>&1 || true
fi
# A daemon started by the package runs as user etcd with the packaged data dir;
# the ones our tests start run as us with a temporary --data-dir.
if command -v pgrep >/dev/null 2>&1; then
  for pid in $(pgrep -u etcd -x etcd 2>/dev/null || true); do
    kill "$pid" 2>/dev/null || true
  done
fi

echo "$ETCD"
