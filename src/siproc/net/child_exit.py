"""Wait for a child process to exit without a thread (issue 12, item 3).

``loop.run_in_executor(None, process.wait)`` starts the loop's default executor: a thread pool
whose threads, locks and queues live for the rest of the process. Started when the first media
worker retires, right after a load, those objects land all over a heap that the load has grown
and pin its arenas (net/memory_trim.py). A pidfd (``os.pidfd_open``, Linux 5.3+) turns
readable when the child exits; the executor stays the fallback where there is none.
"""

from __future__ import annotations

import asyncio
import os
import subprocess


async def wait_exit(loop: asyncio.AbstractEventLoop, process: subprocess.Popen[bytes]) -> int:
    """Wait until ``process`` exits, reap it and return its exit status."""
    status = process.poll()
    if status is not None:
        return status
    try:
        pidfd = os.pidfd_open(process.pid)
    except (AttributeError, OSError):  # no pidfd here: a thread waits
        return await loop.run_in_executor(None, process.wait)
    exited: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        if not exited.done():
            exited.set_result(None)

    loop.add_reader(pidfd, readable)
    try:
        await exited
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)
    return process.wait()  # a zombie by now: returns at once
