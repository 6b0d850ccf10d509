"""Bad input never crashes: random chains through every entry point.

``fuzz_driver.py`` (run in a child, so a crash is a test failure with a
report rather than a dead pytest) builds random chains from a safe system
call menu plus refused, unknown and >= 2**30 numbers, with random flags and
random atom / next / arg_ptr / ret_ptr / head / ring pointers, runs them and
checks every chain against a sequential model of SYSLET_SPEC.md section 2.
Per backend (the run's URING_SHIM_BACKEND, passed explicitly to the
engine): 40k chains through ``compat.Engine``, 20k through the raw API,
40k through libsyslet's C functions; and per later personality (v5 and v6
chains with their heads, v7 random indirect calls) 10k through
``compat.Engine`` and 10k through libsyslet: 160k per backend; ``make
fuzz-long`` (SYSLET_LONG=1) runs ten times that (1.6M).

Every run is hostile (issue 13 item 6, ``--hostile``): the chains also use
descriptors of odd kinds (epoll, io_uring, inotify, eventfd, timerfd,
signalfd, pipes, sockets, ptys, /dev/zero, /dev/null, procfs, sysfs,
directories, O_DIRECT files) and the engine's own; between batches the
driver dup2s new kinds over those numbers behind the engine's back, closes
some, dup2s over and closes the engine's descriptors, runs
``close_range(3, ~0U)`` (also while syslets run) and unmaps and maps again
pages that chains point into; the model asks the native call for every
call whose answer depends only on its arguments (a differential check).
Every batch runs under a watchdog: one that does not finish in 20 s ends
the child with its chains, the seed and the last hostile steps printed.
"""
import os

import pytest

from rel_lib import HERE, LONG, PY, child_env, describe, last_json, libsyslet_path

import subprocess

DRIVER = os.path.join(HERE, "fuzz_driver.py")
SCALE = 10 if LONG else 1
#: chains per entry point and backend (x10 under SYSLET_LONG=1: 1M per backend)
CHAINS = {"engine": 40_000, "raw": 20_000, "c": 40_000}
#: chains (v7: indirect calls) per later personality, entry point and backend
PERSONALITY_CHAINS = 10_000
SECONDS = 600 if LONG else 90
#: a batch that takes longer is a hang (the driver's watchdog)
WATCHDOG = 20


def run_driver(mode, backend, chains, *extra, env=None, seconds=SECONDS):
    cmd = [PY, DRIVER, "--mode", mode, "--backend", backend, "--chains", str(chains),
           "--seconds", str(seconds), "--hostile", "--watchdog", str(WATCHDOG), *extra]
    if mode == "c":
        cmd += ["--lib", libsyslet_path()]
    p = subprocess.run(cmd, env=child_env(backend, **(env or {})), capture_output=True,
                       text=True, timeout=seconds + 120)
    if p.returncode == 3:
        hang = last_json(p.stdout)
        raise AssertionError(f"HANG: batch {hang['batch']} of seed {hang['seed']} did not finish in "
                             f"{hang['seconds']} s ({' '.join(cmd)} --seed {hang['seed']}):\n"
                             + "\n".join(hang["chains"])[:8000] + "\n" + p.stderr[-3000:])
    assert p.returncode == 0, describe(p)
    return last_json(p.stdout), p


def check(out, chains):
    """No failure, enough chains in time, the model predicted nearly every
    path, and every class of outcome occurred ("heads": broken heads, for
    v7 broken calls)."""
    st = out["stats"]
    assert out["nfails"] == 0, "\n".join(out["fails"]) + f"\nseed={out['seed']}"
    assert st["chains"] >= chains, f"only {st['chains']} chains in time: {st}"
    # the model predicted (almost) every path, and the error classes all occurred
    assert st["verified"] >= 0.9 * st["chains"], st
    for k in ("err_EFAULT", "err_EINVAL", "efault", "enosys", "refused", "async", "sync", "heads"):
        assert st.get(k, 0) > 0, f"{k} never happened: {st}"
    # and the hostile steps all happened (close_range while chains run: v1's loop only)
    hostile = ["reused", "closed", "close_range", "dup2_engine", "close_engine", "wild_rw", "wild_ro",
               "wild_none"]
    if out.get("abi", "v1") == "v1":
        hostile.append("close_range_mid")
    if out.get("abi", "v1") != "v7":
        hostile.append("diff")
    for k in hostile:
        assert st.get(k, 0) > 0, f"{k} never happened: {st}"
    print(f"\nFUZZ {out['mode']} {out.get('abi', 'v1')} {out['backend']}: {st['chains']} chains, "
          f"{st.get('atoms', 0)} atoms, "
          f"{st['seconds']} s, verified {st['verified']}, native-checked {st.get('diff', 0)}, "
          f"hostile: {', '.join(f'{k} {st.get(k, 0)}' for k in hostile if k != 'diff')}, "
          f"seed {out['seed']}")


@pytest.mark.parametrize("mode", ["engine", "raw"])
def test_fuzz_python_entry_points(mode, backend):
    out, _ = run_driver(mode, backend, CHAINS[mode] * SCALE)
    assert out["backend"] == backend
    check(out, CHAINS[mode] * SCALE)
    if mode == "engine":
        assert out["stats"]["eloop"] > 0      # the budget ended random loops


def test_fuzz_c_entry_point(backend):
    """libsyslet's async_register/async_exec/async_unregister and its
    syscall(1001, ...) interposer, loaded with ctypes into a child."""
    out, _ = run_driver("c", backend, CHAINS["c"] * SCALE)
    assert out["backend"] == backend
    check(out, CHAINS["c"] * SCALE)


@pytest.mark.parametrize("mode", ["engine", "c"])
@pytest.mark.parametrize("abi", ["v5", "v6", "v7"])
def test_fuzz_later_personalities(abi, mode, backend):
    """v5/v6: random chains in that layout with their numbers, a head per
    exec (valid ones with their rings, broken ones); v7: random indirect
    calls, plain and syslet, broken on purpose, pending ones through the
    ring."""
    n = PERSONALITY_CHAINS * SCALE
    out, _ = run_driver(mode, backend, n, "--abi", abi)
    assert (out["backend"], out["abi"]) == (backend, abi)
    check(out, n)
    if abi == "v7":
        assert out["stats"]["plain"] > 0
    elif mode == "engine":
        assert out["stats"]["eloop"] > 0


@pytest.mark.parametrize("abi", ["v1", "v7"])
def test_fuzz_checker_can_fail(backend, abi):
    """The model is not vacuous: told that refused numbers go to the kernel
    (-ENOSYS), it reports the engine's -EINVAL as failures."""
    cmd = [PY, DRIVER, "--mode", "engine", "--backend", backend, "--chains", "300",
           "--seconds", "20", "--mutate", "--abi", abi]
    p = subprocess.run(cmd, env=child_env(backend), capture_output=True, text=True, timeout=120)
    out = last_json(p.stdout)
    assert out["nfails"] > 0 and "expected -38" in " ".join(out["fails"]), out


@pytest.mark.parametrize("mode", ["engine", "c"])
def test_fuzz_watchdog_reports_a_hang(backend, mode):
    """The watchdog is not vacuous: a chain that waits for ever (a
    SYSLET_SYNC read of an empty pipe whose writer stays open: read(2)
    waits too) ends the child with status 3, the seed and that chain."""
    cmd = [PY, DRIVER, "--mode", mode, "--backend", backend, "--chains", "5000",
           "--seconds", "60", "--hostile", "--watchdog", "2", "--inject-hang", "3", "--seed", "7"]
    if mode == "c":
        cmd += ["--lib", libsyslet_path()]
    p = subprocess.run(cmd, env=child_env(backend), capture_output=True, text=True, timeout=120)
    assert p.returncode == 3, describe(p)
    out = last_json(p.stdout)
    assert out["hang"] is True and out["seed"] == 7 and out["batch"] == 3, out
    assert any(c.startswith("chain 0 ") and ":nr=0 fl=0x2 " in c for c in out["chains"]), out
    assert "fuzz_driver: seed 7" in p.stderr
