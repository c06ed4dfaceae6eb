"""The gateway with a simulated full disk, for the fault-injection harness where it cannot mount a small
tmpfs (not root, or no ``mount``)::

    BENCH_FAULT_ENOSPC_FLAG=/tmp/full python -m bench.reliability.enospc_gateway --port 0

It is ``python -m services.gateway`` (same arguments), except that while the flag file exists every
``os.fsync`` fails with ``OSError(ENOSPC)``. ``os.fsync`` is the step of
:func:`hipgen.data.images.write_atomic` — the one writer of every local dataset file — at which a full
disk reports itself on filesystems with delayed allocation; the data was written to the temp file, so
this also exercises the temp-file clean-up. The job database (SQLite does its own syncing) is unaffected.
"""

from __future__ import annotations

import errno
import os
import sys

FLAG_ENV = "BENCH_FAULT_ENOSPC_FLAG"


def main(argv: list[str] | None = None) -> int:
    flag = os.environ[FLAG_ENV]
    fsync = os.fsync

    def full_disk_fsync(fd: int) -> None:
        if os.path.exists(flag):
            raise OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)} (simulated)")
        fsync(fd)

    os.fsync = full_disk_fsync
    from services.gateway.server import main as gateway_main

    return gateway_main(argv)


if __name__ == "__main__":
    sys.exit(main())
