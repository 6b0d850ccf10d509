#!/usr/bin/env bash
# Runs the real 2007-2013 fio "syslet-rw" engine, built unmodified from
# fio's own history with its own headers (its syslet.h / indirect.h copies,
# its arch-x86_64.h numbers 280-283 or 286-289), against libsyslet under
# LD_PRELOAD with SYSLET_COMPAT_ABI naming the personality.  fio is GPL:
# nothing of it is kept in this repository; its source is fetched here, at
# run time, and built in a scratch directory.  Not part of `make test`
# (network, minutes of compiling); see docs/migration.md, "fio's engine".
#
#   scripts/legacy-fio.sh [ERA ...]        eras: v5 v5-probe v6 v7 v7-2013 (default: all)
#
# Environment:
#   FIO_GIT   where to clone fio from (default https://github.com/axboe/fio.git;
#             a local clone or mirror works too)
#   WORK      scratch directory (default bench/_build/legacy-fio: on the
#             checkout's file system, so O_DIRECT works); kept afterwards
#   VPY       the venv's python (default .venv/bin/python; `make venv` first)
#   URING_SHIM_BACKEND=threadpool   the same on the pool-only backend
#
# Per era: build fio, then, every job through the syslet-rw engine with
# iodepth 32 and 4 KiB blocks on a 16 MiB file:
#   randwrite+verify   random writes with md5 headers, then fio reads every
#                      block back and checks it (buffered, and O_DIRECT);
#   read+verify        sequential O_DIRECT reads, each block checked, of a
#                      file fio's sync engine wrote (not v5: fio 1.14a checks
#                      data only after its own writes);
#   corrupted          the same after one block was changed: fio must report
#                      it (proves the reads are really checked);
#   without ABI        (v6, v7) without SYSLET_COMPAT_ABI the 2007 numbers
#                      are today's timerfd calls: fio's start-up probe must
#                      say syslets do not work.
# v5-probe is fio of September 2007 (after the probe of March 29, before
# Zach Brown's fixes of September 19): its probe passes a NULL atom and a
# head without new_thread_stack, which the contract refuses -- it must stop
# with "syslets do not appear to work".
# Exit status 0 when every era behaved as expected.
set -uo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
FIO_GIT="${FIO_GIT:-https://github.com/axboe/fio.git}"
WORK="${WORK:-$ROOT/bench/_build/legacy-fio}"
VPY="${VPY:-$ROOT/.venv/bin/python}"

# era -> commit, personality, what it is
declare -A COMMIT=([v5]=2dc1bbeb [v5-probe]=7101d9c2 [v6]=67f5b27e [v7]=e6026f9c [v7-2013]=78c1111e)
declare -A ABI=([v5]=v5 [v5-probe]=v5 [v6]=v6 [v7]=v7 [v7-2013]=v7)
declare -A WHAT=(
    [v5]="fio 1.14a, 2007-03-15: v3-v5 engine, batches through next, 280-283"
    [v5-probe]="fio 1.17, 2007-09-12: v5 engine with the NULL-atom probe (expected to refuse)"
    [v6]="fio 1.17.1, 2007-09-28: Zach Brown's fixed-width atoms, 286-289"
    [v7]="fio 1.17.2, 2007-12-12: indirect + syslet_ring, 286/287"
    [v7-2013]="fio 2.0.13, 2013-01-09: the last fio with the engine (v7)")
ERAS=("$@")
[ ${#ERAS[@]} -eq 0 ] && ERAS=(v5 v5-probe v6 v7 v7-2013)

die() { echo "legacy-fio: $*" >&2; exit 2; }
for e in "${ERAS[@]}"; do [ -n "${COMMIT[$e]:-}" ] || die "unknown era $e (v5 v5-probe v6 v7 v7-2013)"; done
for t in git gcc make; do command -v $t >/dev/null || die "$t is missing"; done
[ -x "$VPY" ] || die "$VPY is missing: run make venv first"
PRELOAD="$("$VPY" -m compat config --preload)" || die "python -m compat config failed"
if [ ! -e /usr/include/libaio.h ]; then     # fio of that time links -laio unconditionally
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
        echo "legacy-fio: installing libaio-dev"
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -q libaio-dev >/dev/null 2>&1 || { apt-get update -q && apt-get install -y -q libaio-dev; } \
            || die "could not install libaio-dev"
    else
        die "libaio-dev is missing (fio of that time links -laio)"
    fi
fi

mkdir -p "$WORK" || die "cannot make $WORK"
case "$(stat -f -c %T "$WORK")" in tmpfs|ramfs) echo "legacy-fio: note: $WORK is on tmpfs";; esac
if [ ! -d "$WORK/fio.git" ]; then
    echo "legacy-fio: cloning $FIO_GIT"
    git clone -q --bare "$FIO_GIT" "$WORK/fio.git" || die "git clone $FIO_GIT failed"
fi

# Today's toolchain against 2007 C: headers that moved (S_ISDIR, major()),
# a libc gettid() that fio 2.0 defines itself, the removed <linux/raw.h>
# (fio only names its ioctl), common symbols (-fcommon), old C (-std=gnu89).
INC="$WORK/include"
mkdir -p "$INC/linux"
cat > "$INC/compat-pre.h" <<'EOF'
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>
#define gettid fio_gettid
EOF
cat > "$INC/linux/raw.h" <<'EOF'
/* stand-in for <linux/raw.h>, gone from today's kernel headers */
#include <linux/types.h>
#include <linux/ioctl.h>
#define RAW_SETBIND _IO(0xac, 0)
#define RAW_GETBIND _IO(0xac, 1)
#define RAW_MAJOR 162
struct raw_config_request { int raw_minor; __u64 block_major; __u64 block_minor; };
EOF
FIO_CC="gcc -w -fcommon -std=gnu89 -include $INC/compat-pre.h -I$INC"

FAILS=0
pass() { printf '  %-18s ok   %s\n' "$1" "$2"; }
fail() { printf '  %-18s FAIL %s\n' "$1" "$2"; FAILS=$((FAILS + 1)); }
counters() { sed -n 's/^libsyslet: pid [0-9]* counters: //p' "$1" | tail -1 | \
             tr ' ' '\n' | grep -E '^(sync|async|uring|pool|nowait|published|direct_reads)=' | tr '\n' ' '; }

# run_fio LOG ABI FIO ARGS... : fio through libsyslet
run_fio() {
    local log="$1" abi="$2" fio="$3"; shift 3
    env LD_PRELOAD="$PRELOAD" ${abi:+SYSLET_COMPAT_ABI=$abi} SYSLET_COMPAT_DEBUG=1 \
        timeout -k 5 300 "$fio" "$@" >"$log" 2>&1
}

for era in "${ERAS[@]}"; do
    c="${COMMIT[$era]}" abi="${ABI[$era]}" dir="$WORK/$era"
    echo "== $era: ${WHAT[$era]} (commit $c, SYSLET_COMPAT_ABI=$abi)"
    if [ ! -x "$dir/src/fio" ]; then
        rm -rf "$dir/src" && mkdir -p "$dir/src"
        git -C "$WORK/fio.git" archive "$c" | tar -x -C "$dir/src" || { fail build "git archive $c"; continue; }
        if ! make -C "$dir/src" -j2 CC="$FIO_CC" >"$dir/build.log" 2>&1; then
            fail build "see $dir/build.log"; continue
        fi
    fi
    FIO="$dir/src/fio"
    pass build "$("$FIO" --version 2>&1 | head -1), CC=$FIO_CC"
    data="$dir/data"
    # fio jobs as threads (its 2007 semaphores are not shared across
    # processes with today's glibc); overwrite=1 on a file that exists (its
    # 2007 file layout code sizes a new file 0); norandommap (2.0.13's
    # random map asserts with async engines).
    common=(--name=j --ioengine=syslet-rw --bs=4k --size=16m --iodepth=32 --thread
            --overwrite=1 --filename="$data")
    [ "$era" = v7-2013 ] && common+=(--norandommap)

    if [ "$era" = v5-probe ]; then
        head -c 16M /dev/zero > "$data"
        run_fio "$dir/probe.log" "$abi" "$FIO" "${common[@]}" --rw=randread
        if grep -q "syslets do not appear to work" "$dir/probe.log"; then
            pass probe "refused at init, as the contract says (NULL atom, no new_thread_stack)"
        else
            fail probe "expected 'syslets do not appear to work': see $dir/probe.log"
        fi
        continue
    fi

    for direct in 0 1; do
        name="randwrite+verify"; [ $direct = 1 ] && name="$name,direct"
        head -c 16M /dev/zero > "$data"
        run_fio "$dir/w$direct.log" "$abi" "$FIO" "${common[@]}" --rw=randwrite --verify=md5 \
            --direct=$direct
        if grep -q "err= 0" "$dir/w$direct.log" && ! grep -qiE "verify fail|bad magic|crc|md5: " "$dir/w$direct.log"; then
            pass "$name" "$(counters "$dir/w$direct.log")"
        else
            fail "$name" "see $dir/w$direct.log"
        fi
    done

    if [ "$era" = v5 ]; then
        echo "  (fio 1.14a checks data only in the verify phase after its own writes: no read-only runs)"
        continue
    fi
    # a file of md5-headed blocks written by fio's own sync engine
    head -c 16M /dev/zero > "$data"
    env -u LD_PRELOAD timeout 300 "$FIO" --name=lay --ioengine=sync --rw=write --bs=4k --size=16m \
        --thread --overwrite=1 --filename="$data" --verify=md5 --do_verify=0 >"$dir/layout.log" 2>&1 \
        || { fail layout "see $dir/layout.log"; continue; }
    run_fio "$dir/r.log" "$abi" "$FIO" "${common[@]}" --rw=read --verify=md5 --direct=1
    if grep -q "err= 0" "$dir/r.log" && ! grep -qi "verify fail" "$dir/r.log"; then
        pass "read+verify" "$(counters "$dir/r.log")"
    else
        fail "read+verify" "see $dir/r.log"
    fi
    printf 'XXXX' | dd of="$data" bs=1 seek=$((4096 * 100 + 200)) conv=notrunc 2>/dev/null
    run_fio "$dir/bad.log" "$abi" "$FIO" "${common[@]}" --rw=read --verify=md5 --direct=1
    if grep -qiE "verify fail|bad magic|md5: " "$dir/bad.log"; then
        pass corrupted "fio found the changed block: $(grep -iE -m1 'verify fail|bad magic|md5: ' "$dir/bad.log")"
    else
        fail corrupted "the changed block went unnoticed: see $dir/bad.log"
    fi

    if [ "$abi" != v5 ]; then
        run_fio "$dir/noabi.log" "" "$FIO" "${common[@]}" --rw=randread
        if grep -qE "syslets (do not|don't) appear to work" "$dir/noabi.log"; then
            pass "without ABI" "286 is timerfd_settime today: fio's probe refused, nothing ran"
        else
            fail "without ABI" "see $dir/noabi.log"
        fi
    fi
done
echo "legacy-fio: $([ $FAILS -eq 0 ] && echo "every era as expected" || echo "$FAILS FAILED"); logs in $WORK"
[ $FAILS -eq 0 ]
