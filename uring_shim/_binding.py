"""The compiled cffi module ``uring_shim._liburing`` and its version check.

Only the engine modules (``_backend``, ``_ring``, ``_pool``) import ``ffi`` and
``lib`` from here.
"""
from ._version import __version__

_REBUILD = ("rebuild it with `pip install -e .` or, from the repository root, "
            "`python3 uring_shim/_build.py`")

try:
    from ._liburing import ffi, lib
except ImportError as exc:  # pragma: no cover - depends on the build
    raise ImportError(f"uring_shim._liburing is not built ({exc}); {_REBUILD}") from exc


__all__ = ["ffi", "lib", "check_version"]


def check_version(compiled: str, expected: str = __version__) -> None:
    """Raise ImportError unless the compiled US_VERSION equals the package version."""
    if compiled != expected:
        raise ImportError(
            f"uring_shim._liburing is stale: it was compiled as version {compiled!r} "
            f"but the Python package is {expected!r}; {_REBUILD}")


check_version(ffi.string(lib.us_version()).decode("ascii"))
