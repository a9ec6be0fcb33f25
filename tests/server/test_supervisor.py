"""The supervisor's policy, with engines that die on cue (the real engine's death and
restart are tested on the real server: test_engine_death.py)."""

from __future__ import annotations

import asyncio

import pytest

from server.errors import EngineUnavailable
from server.metrics import ServerMetrics
from server.settings import ServerSettings
from server.supervisor import EngineSupervisor


class MortalEngine:
    model_name, num_decoder_layers, first_stage_layers, max_num_seqs = "mortal", 4, 4, 2
    built = 0

    def __init__(self, settings):
        MortalEngine.built += 1
        self.dead = self.was_shut_down = False

    def is_dead(self):
        return self.dead

    async def check_health(self):
        if self.dead:
            raise RuntimeError("dead")

    async def generate(self, request, sampling, request_id):
        yield "token"
        if request.get("wait_for_ever"):
            await asyncio.Event().wait()
        if request.get("die_after_first_token"):
            self.dead = True
            raise EngineUnavailable("The engine has stopped", code="engine_dead")

    def shutdown(self):
        self.was_shut_down = True


def settings(**recovery) -> ServerSettings:
    policy = {"check_interval_s": 0.01, "backoff_s": 0.0, **recovery}
    return ServerSettings(engine={"model": "mortal"}, recovery=policy)


async def until(condition, seconds: float = 5.0) -> None:
    for _ in range(int(seconds / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the condition never held")


def supervised(**recovery):
    MortalEngine.built = 0
    gave_up: list[bool] = []
    metrics = ServerMetrics()
    supervisor = EngineSupervisor(
        settings(**recovery), MortalEngine, metrics, give_up=lambda: gave_up.append(True)
    )
    return supervisor, metrics, gave_up


def count(metrics: ServerMetrics, name: str) -> float:
    return metrics.registry.get_sample_value(f"{name}_total") or 0.0


def test_a_dead_engine_is_shut_down_and_replaced_and_counted():
    async def run():
        supervisor, metrics, gave_up = supervised()
        supervisor.start()
        first = supervisor.engine
        first.dead = True
        await until(lambda: supervisor.engine is not first and supervisor.state == "running")
        assert first.was_shut_down and MortalEngine.built == 2 and not gave_up
        assert (count(metrics, "sharp_engine_deaths"), count(metrics, "sharp_engine_restarts")) == (1, 1)
        await supervisor.check_health()  # the new one answers
        assert [token async for token in supervisor.generate({}, {}, "r")] == ["token"]
        supervisor.shutdown()

    asyncio.run(run())


def test_requests_while_restarting_get_503_with_retry_after():
    async def run():
        supervisor, _, _ = supervised(backoff_s=0.5)
        supervisor.start()
        supervisor.engine.dead = True
        await until(lambda: supervisor.state == "restarting")
        for call in (supervisor.check_health(), supervisor.sharp_report("r")):
            with pytest.raises(EngineUnavailable) as refused:
                await call
            assert refused.value.headers == {"Retry-After": "2"} and refused.value.code == "engine_restarting"
        await until(lambda: supervisor.state == "running")
        supervisor.shutdown()

    asyncio.run(run())


def test_a_request_the_engines_death_ends_is_told_when_to_retry():
    async def run():
        supervisor, _, _ = supervised(backoff_s=0.5)
        supervisor.start()
        outputs = supervisor.generate({"die_after_first_token": True}, {}, "r")
        assert await anext(outputs) == "token"
        with pytest.raises(EngineUnavailable) as ended:
            await anext(outputs)
        assert ended.value.headers == {"Retry-After": "2"} and ended.value.code == "engine_dead"
        supervisor.shutdown()

    asyncio.run(run())


def test_a_request_the_dead_engine_would_leave_waiting_is_ended_with_retry_after():
    async def run():
        supervisor, _, _ = supervised()
        supervisor.start()
        first = supervisor.engine

        async def consume():
            return [token async for token in supervisor.generate({"wait_for_ever": True}, {}, "r")]

        waiting = asyncio.create_task(consume())
        await asyncio.sleep(0.05)
        first.dead = True
        with pytest.raises(EngineUnavailable) as ended:
            await asyncio.wait_for(waiting, 5)
        assert ended.value.headers == {"Retry-After": "2"} and ended.value.code == "engine_dead"
        assert not waiting.cancelling()  # the request's task goes on to answer
        await until(lambda: supervisor.engine is not first and supervisor.state == "running")
        assert [token async for token in supervisor.generate({}, {}, "r")] == ["token"]
        supervisor.shutdown()

    asyncio.run(run())


def test_an_engine_that_keeps_dying_ends_the_process():
    async def run():
        supervisor, metrics, gave_up = supervised(max_restarts=2)
        supervisor.start()
        for _ in range(2):
            engine = supervisor.engine
            engine.dead = True
            await until(
                lambda engine=engine: supervisor.engine is not engine and supervisor.state == "running"
            )
        supervisor.engine.dead = True  # a third death within the window
        await until(lambda: bool(gave_up))
        assert supervisor.state == "failed" and MortalEngine.built == 3
        assert (count(metrics, "sharp_engine_deaths"), count(metrics, "sharp_engine_restarts")) == (3, 2)
        supervisor.shutdown()

    asyncio.run(run())


def test_on_engine_death_exit_gives_up_at_once():
    async def run():
        supervisor, _, gave_up = supervised(on_engine_death="exit")
        supervisor.start()
        supervisor.engine.dead = True
        await until(lambda: bool(gave_up))
        assert MortalEngine.built == 1 and supervisor.state == "failed"
        supervisor.shutdown()

    asyncio.run(run())


def test_an_engine_that_does_not_start_again_ends_the_process():
    async def run():
        supervisor, _, gave_up = supervised()

        def broken(_settings):
            raise RuntimeError("out of device memory")

        supervisor.factory = broken
        supervisor.start()
        supervisor.engine.dead = True
        await until(lambda: bool(gave_up))
        assert supervisor.state == "failed"
        supervisor.shutdown()

    asyncio.run(run())
