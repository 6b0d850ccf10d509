#!/usr/bin/env bash
# Install the system packages the build needs, only those that are missing.
#   liburing-dev  liburing.a + liburing.h (linked statically into uring_shim._liburing)
#   gcc           compiles the cffi modules
#   python3-dev   Python.h of the interpreter that builds the venv
#   python3-venv  `python -m venv` with ensurepip (Debian splits it out)
# As root: apt-get update && apt-get install -y <missing>.  Otherwise: print the
# exact command and fail.  Usage: PYTHON=python3 scripts/deps.sh
set -euo pipefail

PYTHON="${PYTHON:-python3}"
missing=()

have_liburing() {
    [ -f /usr/include/liburing.h ] || return 1
    local a
    for a in /usr/lib/*/liburing.a /usr/lib/liburing.a /usr/lib64/liburing.a; do
        [ -f "$a" ] && return 0
    done
    return 1
}

have_liburing || missing+=(liburing-dev)
command -v gcc >/dev/null 2>&1 || missing+=(gcc)

if ! command -v "$PYTHON" >/dev/null 2>&1; then
    missing+=(python3 python3-dev python3-venv)
else
    has_h=$("$PYTHON" -c 'import sysconfig,os; print(os.path.exists(os.path.join(sysconfig.get_paths()["include"],"Python.h")))' 2>/dev/null || echo False)
    [ "$has_h" = True ] || missing+=(python3-dev)
    "$PYTHON" -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
fi

if [ ${#missing[@]} -eq 0 ]; then
    echo "deps: ok (liburing-dev, gcc, Python.h and venv for $PYTHON present)"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "deps: missing system packages: ${missing[*]}" >&2
    echo "deps: run as root:" >&2
    echo "    sudo apt-get update && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y ${missing[*]}" >&2
    exit 1
fi

echo "deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q "${missing[@]}"

# Re-check: python3-dev/python3-venv only help Debian's own python3.
if ! have_liburing || ! command -v gcc >/dev/null 2>&1; then
    echo "deps: liburing-dev or gcc still missing after apt-get install" >&2
    exit 1
fi
if ! "$PYTHON" -c 'import sysconfig,os,sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"],"Python.h")))' 2>/dev/null; then
    echo "deps: $PYTHON still has no Python.h (it is not Debian's python3?); set PYTHON=/usr/bin/python3" >&2
    exit 1
fi
echo "deps: ok"
