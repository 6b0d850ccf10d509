"""Fixtures for the C drop-in tests (helpers: dropin_lib.py)."""
import os
import subprocess

import pytest

from dropin_lib import EXAMPLES, Builder, child_env, require_cc


@pytest.fixture(scope="session")
def builder(tmp_path_factory):
    """Compiles C programs once per session (see dropin_lib.Builder)."""
    require_cc()
    return Builder(str(tmp_path_factory.mktemp("dropin-build")))


@pytest.fixture(scope="session")
def pattern_file(builder, tmp_path_factory, backend):
    """An 8 MiB file in randread's pattern (written by randread --make)."""
    exe = builder.build(os.path.join(EXAMPLES, "randread.c"), linked=False)
    path = str(tmp_path_factory.mktemp("dropin-data") / "pattern.bin")
    subprocess.run([exe, "--make", path, "8"], check=True, env=child_env(backend), timeout=60)
    return path


@pytest.fixture(params=["linked", "preload"])
def mode(request):
    """How the program gets libsyslet: linked with -lsyslet, or LD_PRELOAD."""
    return request.param
