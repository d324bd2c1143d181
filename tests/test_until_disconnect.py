"""``until_disconnect``: the call's result comes back and no task outlives it; a client that
leaves cancels the call and surfaces as ``ClientDisconnected``; any other cancellation of the
caller stays a cancellation."""

import asyncio
from typing import Any

import pytest

from inference.http.deps import until_disconnect
from inference.http.errors import ClientDisconnected


class FakeRequest:
    """What ``until_disconnect`` reads of a request: ``receive``, which gives a disconnect once
    ``leave`` is set."""

    def __init__(self) -> None:
        self.leave = asyncio.Event()

    async def receive(self) -> dict[str, Any]:
        await self.leave.wait()
        return {"type": "http.disconnect"}


def test_a_result_comes_back_and_leaves_no_task() -> None:
    async def scenario() -> tuple[str, set[asyncio.Task[Any]]]:
        async def work() -> str:
            await asyncio.sleep(0.01)
            return "images"

        result = await until_disconnect(FakeRequest(), work())  # type: ignore[arg-type]
        await asyncio.sleep(0)  # the cancelled watcher finishes
        return result, asyncio.all_tasks() - {asyncio.current_task()}  # type: ignore[operator]

    assert asyncio.run(scenario()) == ("images", set())


def test_a_client_that_leaves_cancels_the_call() -> None:
    async def scenario() -> tuple[list[str], int]:
        seen: list[str] = []
        request = FakeRequest()

        async def work() -> str:
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                seen.append("cancelled")
                raise
            return "never"

        asyncio.get_running_loop().call_later(0.01, request.leave.set)
        with pytest.raises(ClientDisconnected):
            await until_disconnect(request, work())  # type: ignore[arg-type]
        task = asyncio.current_task()
        assert task is not None
        return seen, task.cancelling()

    # The caller is not left half-cancelled: it may go on awaiting (an error answer).
    assert asyncio.run(scenario()) == (["cancelled"], 0)


def test_a_cancelled_caller_stays_cancelled() -> None:
    async def scenario() -> None:
        async def caller() -> str:
            return await until_disconnect(FakeRequest(), asyncio.sleep(30, "never"))  # type: ignore[arg-type]

        task = asyncio.ensure_future(caller())
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
