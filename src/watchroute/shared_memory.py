"""Memory the worker processes of one server share (`watchroute serve --workers N`).

The parent maps it before it forks, so that every worker inherits the same pages; the file
descriptor stays open for POSIX record locks (`fcntl.lockf`), which the kernel lets go of when
their holder dies.
"""

from __future__ import annotations

import mmap
import os
import tempfile


def shared_region(name: str, size: int) -> tuple[int, mmap.mmap]:
    """A file descriptor and a shared mapping of `size` zeroed bytes that no other process can
    open by name."""
    if hasattr(os, "memfd_create"):  # Linux: memory with no name in any file system
        fd = os.memfd_create(name)
    else:
        fd, path = tempfile.mkstemp(prefix=f"{name}-")
        os.unlink(path)
    os.ftruncate(fd, size)
    return fd, mmap.mmap(fd, size)  # shared, and so inherited shared across fork
