#!/usr/bin/env bash
# What `make bench` needs beyond `make venv`: Debian's fio (the baselines of
# bench/bench_blocking.py) and matplotlib in the venv (its plot).  Installs
# only what is missing.  Usage: VPY=.venv/bin/python scripts/bench-deps.sh
set -euo pipefail

VPY="${VPY:-.venv/bin/python}"

if ! command -v fio >/dev/null 2>&1; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "bench-deps: fio is missing; run as root:" >&2
        echo "    sudo apt-get update && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y fio" >&2
        exit 1
    fi
    echo "bench-deps: installing fio"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q fio >/dev/null 2>&1 || { apt-get update -q && apt-get install -y -q fio; }
fi
if ! "$VPY" -c 'import matplotlib' >/dev/null 2>&1; then
    echo "bench-deps: installing matplotlib into the venv"
    "$VPY" -m pip install -q 'matplotlib>=3'
fi
echo "bench-deps: ok ($(fio --version), matplotlib $("$VPY" -c 'import matplotlib; print(matplotlib.__version__)'))"
