"""The daemon's pipeline task stops when cancelled, even when the cancel lands as a reading arrives.

On Python 3.11 `asyncio.wait_for(queue.get(), ...)` swallowed exactly that cancel: the task went on
turning and `edge-agent run` never exited on SIGTERM (found by the 10-minute soak: 100 devices keep the
queue busy, so the race was hit at almost every stop). The reading stays in the queue, where the
session's stop drains it, so nothing is lost either.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from daemon_session import session

from agent.simulation import simulate


def test_a_cancel_landing_with_a_reading_stops_the_pipeline_task(tmp_path: Path) -> None:
    run = session(tmp_path)
    readings, _ = simulate(run.cfg.devices[0], 20.0, 1_000_000.0)

    async def stop_while_a_reading_arrives() -> tuple[int, int]:
        stopped = still_queued = 0
        for reading in readings[:20]:
            task = asyncio.create_task(run._process())
            for _ in range(3):
                await asyncio.sleep(0)  # the task now waits in queue.get()
            run.queue.put_nowait(reading)  # the reading arrives ...
            task.cancel()  # ... and the stop, before the task runs again
            done, _ = await asyncio.wait([task], timeout=2.0)
            stopped += len(done)
            if not done:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            still_queued += len(run._drain_queue())  # what the session's stop commits
        return stopped, still_queued

    stopped, still_queued = asyncio.run(stop_while_a_reading_arrives())
    run.outbox.close()
    assert stopped == 20
    assert still_queued == 20  # each reading stayed in the queue for the stop's drain
