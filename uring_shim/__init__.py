"""uring_shim: a small io_uring toolkit (knows nothing of syslets).

* ``Ring``: setup, opcode probe, generic SQE preparation for every opcode
  (links, fixed files, ...), submit, ``peek``/``wait``, a fused batch path
  (``submit_wait_reap``), registered files; an in-flight table keeps what
  each SQE points to alive until its CQE is reaped.
* ``Pool``: native C threads for system calls without an opcode; their
  completions can arrive through a ring's CQ.
* ``backend()``: ``'io_uring'`` or ``'threadpool'`` (probed, cached,
  ``URING_SHIM_BACKEND=auto|io_uring|threadpool`` forces a choice; any
  other value raises ``EnvVarError``, a ``ValueError`` whose message is one
  line); ``backend_reason()`` says why.

Importing works everywhere the compiled module does, also where io_uring is
disabled; a stale compiled module raises ImportError at import.
"""
from ._version import __version__
from . import _binding  # noqa: F401  (version check at import)
from ._backend import backend, backend_reason, io_uring_available
from ._env import EnvVarError
from . import _constants
from ._constants import *  # noqa: F401,F403
from ._ring import CANCEL_USER_DATA, Completion, Ring, new_cqes, new_descs
from ._pool import AUTO_USER_DATA_BIT, Pool

__all__ = [
    "__version__", "backend", "backend_reason", "io_uring_available", "EnvVarError",
    "Ring", "Pool", "Completion", "new_descs", "new_cqes",
    "CANCEL_USER_DATA", "AUTO_USER_DATA_BIT",
]
__all__ += _constants.__all__
