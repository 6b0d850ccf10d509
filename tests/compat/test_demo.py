"""`python -m compat demo` (what `make demo` runs), small, on both engine
backends: every section runs and verifies its results, nothing is left in
the scratch directory."""
import os
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
    assert f"engine backend {backend}" in out
    assert out.count("verify: OK") == 4 and "FAILED" not in out
    assert out.rstrip().splitlines()[-1].startswith("all verifications passed")
    assert os.listdir(tmp_path) == []                  # scratch directory removed
