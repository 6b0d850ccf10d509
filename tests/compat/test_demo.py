"""`python -m compat demo` (what `make demo` runs), small, on both engine
backends: it says what a syslet is, every section runs and verifies its
results, the cached reads of (d) stay synchronous beside the O_DIRECT ones
that go async, nothing is left in the scratch directory.  (Bad options:
tests/cli/test_cli.py.)"""
import os
import re
import subprocess
import sys

import pytest

from syslet_testlib import skip_unless_io_uring

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize("backend", ["io_uring", "threadpool"])
def test_the_demo_runs_and_verifies_every_section(backend, tmp_path):
    if backend == "io_uring":
        skip_unless_io_uring()
    r = subprocess.run(
        [sys.executable, "-m", "compat", "demo", "--backend", backend, "--size-mib", "4",
         "--reads", "4096", "--chains", "512", "--direct-reads", "512", "--repeat", "1",
         "--dir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    lines = out.splitlines()
    assert lines[0].startswith("A syslet is a small program of system calls")
    assert lines[1].startswith("It runs in the caller")
    assert f"engine backend {backend}" in out
    # (a), (b), (c), (d) cached, and (d) O_DIRECT unless the file system refuses it
    direct = "O_DIRECT: skipped" not in out
    assert out.count("verify: OK") == out.count("verify:") == 4 + direct and "FAILED" not in out
    cached = next(ln for ln in lines if ln.startswith("    cached:"))
    m = re.search(r"(\d+) of 1024 completed synchronously, (\d+) went async", cached)
    assert m and int(m.group(1)) + int(m.group(2)) == 1024 and int(m.group(2)) <= 5, cached
    if direct:
        od = next(ln for ln in lines if ln.startswith("    O_DIRECT:"))
        assert " went async" in od and not od.split(": ")[-1].startswith("0 of")
    assert lines[-1].startswith("all verifications passed")
    assert os.listdir(tmp_path) == []                  # scratch directory removed
