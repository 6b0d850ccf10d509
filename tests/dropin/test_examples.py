"""The C examples in examples/ against libsyslet, linked and preloaded.

copy.c and branch.c call libsyslet's exported functions when linked and the
2007 way (syslet calls through syscall() with our numbers,
-DSYSLET_USE_SYSCALL) when built without -lsyslet for LD_PRELOAD; randread.c
always uses syscall(), as fio did, and so do randread_v5.c (personality v5,
or v6 with -DV6) and indirect_v7.c (v7), built with the project's numbers or
with the 2007 x86_64 ones (-DSYSLET_2007_NUMBERS, run under
SYSLET_COMPAT_ABI).  Outputs are checked byte for byte; the
backend of this pytest run is passed to each child and checked through
libsyslet's SYSLET_COMPAT_DEBUG line.
"""
import os

import pytest

from dropin_lib import EXAMPLES, context_line, expected_backend, run

COPY = os.path.join(EXAMPLES, "copy.c")
BRANCH = os.path.join(EXAMPLES, "branch.c")
RANDREAD = os.path.join(EXAMPLES, "randread.c")


def build_example(builder, src, mode, uses_functions=True):
    linked = mode == "linked"
    extra = [] if linked or not uses_functions else ["-DSYSLET_USE_SYSCALL"]
    return builder.build(src, linked=linked, extra=extra)


def run_mode(exe, *args, mode, backend, env=None, **kw):
    return run(exe, *args, backend=backend, preload=mode == "preload", env=env, **kw)


# ---- copy.c ----------------------------------------------------------------

@pytest.mark.parametrize("size,chunks", [(1_000_003, 16), (65536, 1), (0, 0), (3 * 65536 + 1, 4)])
def test_copy(builder, tmp_path, mode, backend, size, chunks):
    exe = build_example(builder, COPY, mode)
    src, dst = tmp_path / "src", tmp_path / "dst"
    data = os.urandom(size)
    src.write_bytes(data)
    r = run_mode(exe, src, dst, mode=mode, backend=backend, env={"SYSLET_COMPAT_DEBUG": "1"})
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"copied {size} bytes in {chunks} chunks; final atom pread64, result 0\n"
    assert dst.read_bytes() == data
    ctx = context_line(r.stderr)
    assert len(ctx) == 1 and ctx[0][0] == expected_backend(backend), r.stderr
    assert ctx[0][1] == backend


def test_copy_errors(builder, tmp_path, mode, backend):
    exe = build_example(builder, COPY, mode)
    r = run_mode(exe, tmp_path / "missing", tmp_path / "dst", mode=mode, backend=backend)
    assert r.returncode == 1
    assert r.stdout == ""
    assert "No such file or directory" in r.stderr
    r = run_mode(exe, mode=mode, backend=backend)
    assert r.returncode == 2 and r.stderr.startswith("usage:")


def test_copy_preload_build_needs_the_library(builder, tmp_path, backend):
    """The syscall() build run without LD_PRELOAD: the kernel says ENOSYS."""
    exe = build_example(builder, COPY, "preload")
    src = tmp_path / "src"
    src.write_bytes(b"x" * 10)
    r = run(exe, src, tmp_path / "dst", backend=backend)
    assert r.returncode == 1
    assert r.stderr == "copy: async_register: Function not implemented\n"


# ---- branch.c --------------------------------------------------------------

BRANCH_CASES = {
    "primary": ("final atom: [4]; branch: primary\n"
                "read 20 bytes; first line: primary text\nclose: ok\n", 0),
    "fallback": ("final atom: [4]; branch: fallback\n"
                 "read 14 bytes; first line: fallback text\nclose: ok\n", 0),
    "neither": ("final atom: [2]; branch: fallback\n"
                "neither file opens: No such file or directory\n", 1),
    "directory": ("final atom: [3]; branch: primary\n"
                  "read failed: Is a directory\n", 1),
}


@pytest.mark.parametrize("case", sorted(BRANCH_CASES))
def test_branch(builder, tmp_path, mode, backend, case):
    exe = build_example(builder, BRANCH, mode)
    (tmp_path / "p.txt").write_text("primary text\nline 2\n")
    (tmp_path / "f.txt").write_text("fallback text\n")
    primary = {"primary": "p.txt", "fallback": "nope", "neither": "nope",
               "directory": "."}[case]
    fallback = "nope2" if case == "neither" else "f.txt"
    r = run_mode(exe, tmp_path / primary, tmp_path / fallback, mode=mode, backend=backend)
    want_out, want_rc = BRANCH_CASES[case]
    assert (r.stdout, r.returncode) == (want_out, want_rc), r.stderr
    assert r.stderr == ""


# ---- randread.c --------------------------------------------------------------

def plain_output(builder, pattern_file, backend, *opts):
    exe = builder.build(RANDREAD, linked=False)
    r = run(exe, "--plain", "--no-rate", *opts, pattern_file, backend=backend)
    assert r.returncode == 0, r.stderr
    assert " errors=0 " in r.stdout
    return r.stdout


@pytest.mark.parametrize("opts", [
    ("--ios", "20000"),
    ("--ios", "5000", "--async"),
    ("--ios", "3000", "--async", "--iodepth", "4", "--seed", "7"),
    ("--ios", "2000", "--bs", "65536", "--iodepth", "8"),
], ids=["cached", "async", "async-depth4", "bs64k"])
def test_randread(builder, pattern_file, mode, backend, opts):
    """Same first line as the plain pread loop, byte for byte; no errors."""
    want = plain_output(builder, pattern_file, backend, *opts)
    exe = builder.build(RANDREAD, linked=mode == "linked")
    r = run_mode(exe, "--no-rate", "--verbose", *opts, pattern_file, mode=mode, backend=backend,
                 env={"SYSLET_COMPAT_DEBUG": "1"})
    assert r.returncode == 0, r.stderr
    assert r.stdout == want
    n = int(opts[1])
    stats = [ln for ln in r.stderr.splitlines() if ln.startswith("randread: sync=")]
    assert len(stats) == 1, r.stderr
    sync, asyn = (int(x.split("=")[1]) for x in stats[0].split()[1:3])
    assert sync + asyn == n
    if "--async" in opts:
        assert asyn == n and sync == 0       # every completion came through the ring
    ctx = context_line(r.stderr)
    assert ctx and ctx[0][0] == expected_backend(backend)


def counters_line(stderr):
    """libsyslet's SYSLET_COMPAT_DEBUG counters line as a dict."""
    lines = [ln for ln in stderr.splitlines() if " counters: " in ln]
    assert len(lines) == 1, stderr
    return {k: int(v) for k, v in (w.split("=") for w in lines[0].split(" counters: ")[1].split())}


@pytest.mark.parametrize("depth", ["1", "32"])
def test_randread_direct_never_reads_in_the_caller(builder, pattern_file, mode, backend, depth):
    """O_DIRECT reads (which block in RWF_NOWAIT) are never tried in the
    caller: every one goes off its thread, the data is right."""
    opts = ("--ios", "3000", "--iodepth", depth)
    want = plain_output(builder, pattern_file, backend, *opts)
    exe = builder.build(RANDREAD, linked=mode == "linked")
    r = run_mode(exe, "--no-rate", "--verbose", "--direct", *opts, pattern_file, mode=mode,
                 backend=backend, env={"SYSLET_COMPAT_DEBUG": "1"})
    assert r.returncode == 0, r.stderr
    assert r.stdout == want
    k = counters_line(r.stderr)
    assert (k["direct_reads"], k["nowait"], k["inline"]) == (3000, 0, 0), k
    assert k["uring" if expected_backend(backend) == "io_uring" else "pool"] == 3000, k


def test_randread_direct_writes_the_pattern(builder, pattern_file, tmp_path, mode, backend):
    """--write: pwrite64 atoms on an O_DIRECT fd write each block's pattern;
    a zeroed copy read back afterwards holds the pattern where written."""
    exe = builder.build(RANDREAD, linked=mode == "linked")
    target = tmp_path / "w.bin"
    target.write_bytes(bytes(os.path.getsize(pattern_file)))
    r = run_mode(exe, "--no-rate", "--direct", "--write", "--ios", "2000", target, mode=mode,
                 backend=backend, env={"SYSLET_COMPAT_DEBUG": "1"})
    assert r.returncode == 0, r.stderr
    assert " errors=0 " in r.stdout
    k = counters_line(r.stderr)
    assert k["inline"] == 0 and k["uring"] + k["pool"] == 2000, k
    with open(pattern_file, "rb") as f:
        want = f.read()
    data = target.read_bytes()
    written = [i for i in range(0, len(data), 4096) if data[i:i + 4096] != bytes(4096)]
    assert len(written) > 1000
    assert all(data[i:i + 4096] == want[i:i + 4096] for i in written)


def test_randread_detects_corruption(builder, pattern_file, tmp_path, mode, backend):
    bad = tmp_path / "bad.bin"
    with open(pattern_file, "rb") as f:
        data = bytearray(f.read(1 << 20))
    data[4096 * 7 + 100] ^= 0xFF
    bad.write_bytes(bytes(data))
    exe = builder.build(RANDREAD, linked=mode == "linked")
    r = run_mode(exe, "--no-rate", "--ios", "4000", bad, mode=mode, backend=backend)
    assert r.returncode == 1
    assert " errors=0 " not in r.stdout


def test_randread_rate_line(builder, pattern_file, backend):
    exe = builder.build(RANDREAD, linked=False)
    r = run(exe, "--ios", "1000", pattern_file, backend=backend, preload=True)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 2 and lines[1].startswith("reads/s: ") and float(lines[1][9:]) > 0
    r = run(exe, "--ios", "1000", "--cpu-rate", pattern_file, backend=backend, preload=True)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 3 and lines[2].startswith("cpu reads/s: ") and float(lines[2][13:]) > 0


def test_randread_without_library_is_enosys(builder, pattern_file, backend):
    exe = builder.build(RANDREAD, linked=False)
    r = run(exe, "--ios", "10", pattern_file, backend=backend)
    assert r.returncode == 1
    assert r.stderr == "randread: async_register: Function not implemented\n"


# ---- randread_v5.c (personality v5; -DV6: v6) and indirect_v7.c (v7) ------------------

RANDREAD_V5 = os.path.join(EXAMPLES, "randread_v5.c")
INDIRECT_V7 = os.path.join(EXAMPLES, "indirect_v7.c")

#: abi -> (source, extra compiler flags, SYSLET_COMPAT_ABI for the 2007 numbers)
LATER = {"v5": (RANDREAD_V5, []), "v6": (RANDREAD_V5, ["-DV6"]), "v7": (INDIRECT_V7, [])}


def build_later(builder, abi, mode, numbers_2007=False):
    src, extra = LATER[abi]
    extra = extra + (["-DSYSLET_2007_NUMBERS"] if numbers_2007 else [])
    return builder.build(src, linked=mode == "linked", extra=extra)


def verbose_counts(stderr, prog):
    """The example's own --verbose line as a dict."""
    lines = [ln for ln in stderr.splitlines() if ln.startswith(prog + ": ")]
    assert len(lines) == 1, stderr
    return {k.split()[-1]: int(v) for k, v in
            (w.split("=") for w in lines[0][len(prog) + 2:].replace(" calls=", "_calls=").split())}


@pytest.mark.parametrize("abi", ["v5", "v6", "v7"])
@pytest.mark.parametrize("opts", [
    ("--ios", "20000"),
    ("--ios", "3000", "--iodepth", "4", "--seed", "7"),
    ("--ios", "2000", "--bs", "65536", "--iodepth", "8"),
], ids=["cached", "depth4", "bs64k"])
def test_later_examples_cached(builder, pattern_file, mode, backend, abi, opts):
    """Page-cached reads: the same first line as randread.c's plain loop,
    byte for byte; every syslet completed in the call (nothing in a ring)."""
    want = plain_output(builder, pattern_file, backend, *opts)
    exe = build_later(builder, abi, mode)
    r = run_mode(exe, "--no-rate", "--verbose", *opts, pattern_file, mode=mode, backend=backend,
                 env={"SYSLET_COMPAT_DEBUG": "1"})
    assert r.returncode == 0, r.stderr
    assert r.stdout == want
    n, depth = int(opts[1]), int(dict(zip(opts[::2], opts[1::2])).get("--iodepth", 32))
    if abi == "v7":
        v = verbose_counts(r.stderr, "indirect_v7")
        assert (v["sync"], v["async"]) == (n, 0), v
    else:
        v = verbose_counts(r.stderr, "randread_" + abi)
        # the batches of a cached run: `depth` reads each, the last one the rest
        assert (v["sync_chains"], v["async_chains"]) == (-(-n // depth), 0), v
        assert v["stacks"] == 1, v      # new_thread_stack is never consumed
    k = counters_line(r.stderr)
    # a lone read settles in the caller (RWF_NOWAIT); a chain of reads is one
    # io_uring submission that completes during the submit
    assert k["published"] == 0 and k["inline"] + k["uring"] == n, k
    if abi == "v7" or expected_backend(backend) == "threadpool":
        assert k["nowait"] == n, k
    ctx = context_line(r.stderr)
    assert ctx and ctx[0][0] == expected_backend(backend)


@pytest.mark.parametrize("abi,opts", [
    ("v5", ("--batch", "1")), ("v5", ("--batch", "4")), ("v5", ()),
    ("v6", ("--batch", "1")), ("v6", ("--batch", "8")),
    ("v7", ()), ("v7", ("--ring", "4")),
], ids=["v5-batch1", "v5-batch4", "v5-batch32", "v6-batch1", "v6-batch8", "v7", "v7-ring4"])
def test_later_examples_direct(builder, pattern_file, mode, backend, abi, opts):
    """O_DIRECT reads: none in the caller, every one on io_uring (or the
    pool-only backend's pool), every completion through the ring, the data
    right."""
    common = ("--ios", "3000", "--iodepth", "32")
    want = plain_output(builder, pattern_file, backend, *common)
    exe = build_later(builder, abi, mode)
    r = run_mode(exe, "--no-rate", "--verbose", "--direct", *opts, *common, pattern_file,
                 mode=mode, backend=backend, env={"SYSLET_COMPAT_DEBUG": "1"})
    assert r.returncode == 0, r.stderr
    assert r.stdout == want
    k = counters_line(r.stderr)
    assert (k["nowait"], k["inline"]) == (0, 0), k
    assert k["uring" if expected_backend(backend) == "io_uring" else "pool"] == 3000, k
    lone = abi == "v7" or opts == ("--batch", "1")
    if lone or expected_backend(backend) == "threadpool":
        assert k["direct_reads"] == 3000, k     # asked about O_DIRECT, never tried here
    if abi == "v7":
        v = verbose_counts(r.stderr, "indirect_v7")
        assert v["sync"] + v["async"] == 3000 and v["async"] == k["published"], (v, k)
        assert v["elements"] == (4 if opts else 32)
    else:
        v = verbose_counts(r.stderr, "randread_" + abi)
        assert v["async_chains"] == k["published"] and v["stacks"] == 1, (v, k)


@pytest.mark.parametrize("abi", ["v5", "v6", "v7"])
def test_later_examples_with_the_2007_numbers(builder, pattern_file, mode, backend, abi):
    """Built with the 2007 x86_64 numbers (v5 280-283, v6 286-289, v7 286/287):
    served under SYSLET_COMPAT_ABI, same output as with the project's."""
    opts = ("--ios", "3000", "--iodepth", "8")
    want = plain_output(builder, pattern_file, backend, *opts)
    exe = build_later(builder, abi, mode, numbers_2007=True)
    for extra in ((), ("--direct",)):
        r = run_mode(exe, "--no-rate", *extra, *opts, pattern_file, mode=mode, backend=backend,
                     env={"SYSLET_COMPAT_ABI": abi})
        assert (r.returncode, r.stdout, r.stderr) == (0, want, "")


@pytest.mark.parametrize("abi", ["v5", "v6", "v7"])
def test_later_examples_detect_corruption(builder, pattern_file, tmp_path, mode, backend, abi):
    bad = tmp_path / "bad.bin"
    with open(pattern_file, "rb") as f:
        data = bytearray(f.read(1 << 20))
    data[4096 * 7 + 100] ^= 0xFF
    bad.write_bytes(bytes(data))
    exe = build_later(builder, abi, mode)
    r = run_mode(exe, "--no-rate", "--ios", "4000", bad, mode=mode, backend=backend)
    assert r.returncode == 1
    assert " errors=0 " not in r.stdout


@pytest.mark.parametrize("abi", ["v5", "v6", "v7"])
def test_later_examples_plain_and_rate(builder, pattern_file, backend, abi):
    """--plain is the same pread loop as randread.c's; the rate lines."""
    exe = build_later(builder, abi, "preload")
    opts = ("--ios", "2000", "--seed", "3")
    r = run(exe, "--plain", "--no-rate", *opts, pattern_file, backend=backend)
    assert r.returncode == 0 and r.stdout == plain_output(builder, pattern_file, backend, *opts)
    r = run(exe, "--ios", "1000", "--cpu-rate", pattern_file, backend=backend, preload=True)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 3 and lines[1].startswith("reads/s: ") and lines[2].startswith("cpu reads/s: ")


@pytest.mark.parametrize("abi", ["v5", "v6", "v7"])
def test_later_examples_without_library_are_enosys(builder, pattern_file, backend, abi):
    exe = build_later(builder, abi, "preload")
    r = run(exe, "--ios", "10", pattern_file, backend=backend)
    assert r.returncode == 1
    call = "syslet_ring_wait" if abi == "v7" else "async_wait"
    prog = "indirect_v7" if abi == "v7" else "randread_" + abi
    assert r.stderr == f"{prog}: {call}: Function not implemented\n"
