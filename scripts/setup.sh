#!/usr/bin/env bash
# Installs what Trellis and its tests need on a fresh machine (idempotent):
# Debian's etcd-server, the Python venv with the pinned upstream client, and the
# Swift build (release binary for the demo and benchmarks, debug for tests).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
if [ -f scripts/setup-etcd.sh ]; then bash scripts/setup-etcd.sh >/dev/null; fi
# iproute2 (ip, ss): the network-namespace nodes (runtime up --netns, tests/netns).
if ! command -v ip >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends iproute2 >/dev/null \
    || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends iproute2 >/dev/null; }
fi
# zlib1g-dev: the daemon links zlib (the cluster's object records are deflated).
if [ ! -f /usr/include/zlib.h ] && [ "$(id -u)" = 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends zlib1g-dev >/dev/null \
    || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends zlib1g-dev >/dev/null; }
fi
# apache2-utils (htpasswd): the --htpasswd tests write their databases with the real tool
# and compare every verdict with `htpasswd -v` (vineyardd runs that tool itself).
if ! command -v htpasswd >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends apache2-utils >/dev/null \
    || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends apache2-utils >/dev/null; }
fi
# chromium + chromium-driver: the browser tests (tests/browser) open the run report and the
# dashboard in a real headless Chromium, driven by selenium (scripts/requirements.txt).
if { ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; } && [ "$(id -u)" = 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null \
    || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null; }
fi
# python3-dev (Python.h): the trellis package's C extension (zero-copy put) is built against it.
if [ ! -f "$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["include"])')/Python.h" ] && [ "$(id -u)" = 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-dev >/dev/null \
    || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-dev >/dev/null; }
fi
# prometheus (Debian's): tests/metrics scrapes the daemons and the flow runner with a real
# Prometheus of the test's own (temporary config, storage and port). The package's own
# service must not start: where no policy-rc.d forbids it (a container usually has one),
# one is put in place for the install and removed after.
if ! command -v prometheus >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && policy=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null \
    || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }
  if [ -n "$policy" ]; then rm -f /usr/sbin/policy-rc.d; fi
fi
bash scripts/setup-python.sh
# The tests use the debug build (scripts/test.sh builds it); TRELLIS_RELEASE_BUILD=0 skips this one.
if [ "${TRELLIS_RELEASE_BUILD:-1}" != "0" ]; then
  swift build -c release --product trellis 2>&1 | grep -E "error|warning: |Compiling|Build complete" | grep -v "^\[" | tail -3
fi
