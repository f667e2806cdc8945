"""The agents' hub on a real asyncio loop: a message reaches its agent's streams and the admin's only,
and a stream that stops reading is cut off without holding up the publisher or the others."""

from __future__ import annotations

import asyncio

from callguard.live.serve.hub import AgentHub


def test_messages_reach_their_agent_and_the_admin_only() -> None:
    async def scenario() -> tuple[list[str], list[str], list[str]]:
        hub = AgentHub()
        hub.bind(asyncio.get_running_loop())
        alice, bob, admin = hub.subscribe("alice"), hub.subscribe("bob"), hub.subscribe(None)
        hub.publish("alice", {"call_id": "a"})
        hub.publish("bob", {"call_id": "b"})
        hub.publish("", {"call_id": "nobody's"})
        await asyncio.sleep(0.05)

        def drain(q: asyncio.Queue) -> list[str]:  # type: ignore[type-arg]
            return [q.get_nowait()["call_id"] for _ in range(q.qsize())]

        return drain(alice.queue), drain(bob.queue), drain(admin.queue)

    alice, bob, admin = asyncio.run(scenario())
    assert (alice, bob, admin) == (["a"], ["b"], ["a", "b", "nobody's"])


def test_a_stream_that_stops_reading_is_cut_off_and_the_others_go_on() -> None:
    async def scenario() -> tuple[int, int, object]:
        hub = AgentHub(max_pending=10)
        hub.bind(asyncio.get_running_loop())
        stuck, reading = hub.subscribe("alice"), hub.subscribe("alice")
        got = 0
        for i in range(50):
            hub.publish("alice", {"n": i})
            await asyncio.sleep(0)
            while not reading.queue.empty():
                reading.queue.get_nowait()
                got += 1
        await asyncio.sleep(0.05)
        while not reading.queue.empty():
            reading.queue.get_nowait()
            got += 1
        last = None
        while not stuck.queue.empty():
            last = stuck.queue.get_nowait()
        return got, hub.subscriber_count, last

    got, subscribers, last = asyncio.run(scenario())
    assert got == 50  # the reading stream missed nothing
    assert subscribers == 1  # the stuck one was dropped
    assert last is None  # and told to end (its panel reconnects and gets the whole list again)
