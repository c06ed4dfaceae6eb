"""Server-wide admission control (services.admission) on real servers on 127.0.0.1: over the limit of RPCs
running + queued, RESOURCE_EXHAUSTED at once with a parsable RetryInfo; the slot comes back after normal
completion, errors, a stream the client abandons, a deadline passing (running or queued) and a call
cancelled while queued; health is never refused and never waits behind the queue; the wiring through
``build_server`` settings and through the gateway's proxies."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from prometheus_client import REGISTRY

from hipgen.api.v1 import angle_pb2, angle_pb2_grpc, common_pb2, generate_pb2, generate_pb2_grpc
from hipgen.settings import Settings
from services.admission import AdmissionExecutor, AdmissionInterceptor
from services.metrics import MetricsInterceptor
from services.server import build_server

ANGLE = "hipgen.v1.AngleService"
GENERATE = "hipgen.v1.GenerateService"
HOLD_S = 10.0  # the longest a blocked handler waits to be released: every test releases it sooner


def wait_until(pred: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


class Angle(angle_pb2_grpc.AngleServiceServicer):
    """PredictAngle does what the image's file name says: ``ok``, ``fail`` (raises), ``invalid`` (aborts
    INVALID_ARGUMENT), ``block:<key>`` (waits until ``release(key)``, the client leaves, or HOLD_S) or
    ``until-gone`` (waits for the client to leave)."""

    def __init__(self) -> None:
        self.gates: dict[str, threading.Event] = {}
        self.lock = threading.Lock()
        self.calls: list[str] = []  # names of the calls whose handler ran, in order
        self.all_released = False

    def gate(self, key: str) -> threading.Event:
        with self.lock:
            gate = self.gates.setdefault(key, threading.Event())
            if self.all_released:
                gate.set()
            return gate

    def release(self, *keys: str) -> None:
        """Release the named calls; with no names, every call, those yet to run included."""
        with self.lock:
            if not keys:
                self.all_released = True
                keys = tuple(self.gates)
        for key in keys:
            self.gate(key).set()

    def running(self, name: str) -> bool:
        with self.lock:
            return name in self.calls

    def PredictAngle(self, request: Any, context: grpc.ServicerContext) -> Any:
        name = request.image.file_name
        with self.lock:
            self.calls.append(name)
        if name == "fail":
            raise RuntimeError("boom")
        if name == "invalid":
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "bad image")
        if name.startswith("block:"):
            gate, end = self.gate(name.partition(":")[2]), time.monotonic() + HOLD_S
            while not gate.wait(0.02) and context.is_active() and time.monotonic() < end:
                pass
        if name == "until-gone":
            end = time.monotonic() + HOLD_S
            while context.is_active() and time.monotonic() < end:
                time.sleep(0.02)
        return angle_pb2.PredictAngleResponse()


class Generate(generate_pb2_grpc.GenerateServiceServicer):
    """Generate streams a progress event every 20 ms, at most 500, while the client is there."""

    def __init__(self) -> None:
        self.finished = threading.Event()

    def Generate(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        try:
            for step in range(500):
                if not context.is_active():
                    return
                yield generate_pb2.GenerateResponse(progress=generate_pb2.GenerateProgress(step=step))
                time.sleep(0.02)
        finally:
            self.finished.set()


def predict(name: str) -> angle_pb2.PredictAngleRequest:
    return angle_pb2.PredictAngleRequest(image=common_pb2.Image(data=b"x", file_name=name))


def retry_delay_s(err: grpc.RpcError) -> float | None:
    """The RetryInfo delay of an error's ``google.rpc.Status``, or None when it has none."""
    status = rpc_status.from_call(err)
    for detail in status.details if status else ():
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return info.retry_delay.ToTimedelta().total_seconds()
    return None


def handled(method: str, code: str) -> float:
    return (
        REGISTRY.get_sample_value(
            "grpc_server_handled_total",
            {"grpc_type": "UNARY", "grpc_service": ANGLE, "grpc_method": method, "grpc_code": code},
        )
        or 0.0
    )


class Served:
    def __init__(
        self, executor: AdmissionExecutor, port: int, channel: grpc.Channel, angle: Angle, gen: Generate
    ) -> None:
        self.executor, self.port, self.channel, self.angle, self.gen = executor, port, channel, angle, gen
        self.angle_stub = angle_pb2_grpc.AngleServiceStub(channel)
        self.generate_stub = generate_pb2_grpc.GenerateServiceStub(channel)
        self.health_stub = health_pb2_grpc.HealthStub(channel)

    def call(self, name: str, timeout: float = 15.0) -> Any:
        return self.angle_stub.PredictAngle.future(predict(name), timeout=timeout)

    def drained(self) -> None:
        wait_until(lambda: self.executor.outstanding == 0, what="every slot released")


@contextmanager
def admission_server(limit: int, workers: int = 1) -> Iterator[Served]:
    """A server on the admission executor with the metrics + admission interceptors."""
    executor = AdmissionExecutor(workers)
    server = grpc.server(executor, interceptors=[MetricsInterceptor(), AdmissionInterceptor(executor, limit)])
    angle, gen = Angle(), Generate()
    angle_pb2_grpc.add_AngleServiceServicer_to_server(angle, server)
    generate_pb2_grpc.add_GenerateServiceServicer_to_server(gen, server)
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        grpc.channel_ready_future(channel).result(timeout=10)
        yield Served(executor, port, channel, angle, gen)
    finally:
        angle.release()
        channel.close()
        server.stop(None).wait()
        executor.shutdown(wait=False)


def fill(s: Served, *keys: str) -> list[grpc.Future]:
    """Start one blocked call per key and wait until they all hold a slot."""
    calls = []
    for key in keys:
        calls.append(s.call(f"block:{key}"))
        n = len(calls)
        wait_until(lambda n=n: s.executor.outstanding == n, what=f"{n} calls running or queued")
    return calls


def test_over_the_limit_refused_at_once_with_retry_info_and_queued_calls_count() -> None:
    with admission_server(limit=3, workers=1) as s:
        before = handled("PredictAngle", "RESOURCE_EXHAUSTED")
        blocked = fill(s, "a", "b", "c")  # one running, two queued for the only thread
        assert s.angle.running("block:a") and not s.angle.running("block:b")
        t0 = time.monotonic()
        with pytest.raises(grpc.RpcError) as refused:
            s.angle_stub.PredictAngle(predict("ok"), timeout=15)
        took = time.monotonic() - t0
        err = refused.value
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "limit 3" in err.details()
        delay = retry_delay_s(err)
        assert delay is not None and 0.05 <= delay <= 3.0
        assert took < 3.0, f"the refusal waited {took:.1f} s behind the queue it refused"  # fast lane
        assert s.executor.fast_lane_tasks >= 1
        assert not s.angle.running("ok")
        assert handled("PredictAngle", "RESOURCE_EXHAUSTED") == before + 1  # the metrics saw it
        s.angle.release()
        for f in blocked:
            f.result(timeout=10)
        s.drained()
        s.angle_stub.PredictAngle(predict("ok"), timeout=15)  # admitted again


def test_health_is_never_refused_nor_queued() -> None:
    with admission_server(limit=1, workers=1) as s:
        blocked = fill(s, "a")  # keep the future: a dropped one cancels its call
        for _ in range(5):
            t0 = time.monotonic()
            resp = s.health_stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=15)
            assert resp.status == health_pb2.HealthCheckResponse.SERVING
            assert time.monotonic() - t0 < 3.0  # the only worker is blocked: it came by the fast lane
        with pytest.raises(grpc.RpcError) as refused:
            s.angle_stub.PredictAngle(predict("ok"), timeout=15)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert s.executor.outstanding == 1  # neither health nor the refusal took a slot
        s.angle.release()
        blocked[0].result(timeout=10)
        s.drained()


def test_slots_come_back_after_completion_errors_and_aborts() -> None:
    with admission_server(limit=2, workers=2) as s:
        for _ in range(3):
            for name, code in (
                ("fail", grpc.StatusCode.UNKNOWN),
                ("invalid", grpc.StatusCode.INVALID_ARGUMENT),
            ):
                with pytest.raises(grpc.RpcError) as e:
                    s.angle_stub.PredictAngle(predict(name), timeout=15)
                assert e.value.code() == code
            s.angle_stub.PredictAngle(predict("ok"), timeout=15)
        s.drained()
        blocked = fill(s, "a", "b")  # both slots can still be taken
        s.angle.release()
        for f in blocked:
            f.result(timeout=10)
        s.drained()


def test_slot_comes_back_when_the_client_abandons_a_stream() -> None:
    with admission_server(limit=1, workers=1) as s:
        for _ in range(3):
            s.gen.finished.clear()
            stream = s.generate_stub.Generate(generate_pb2.GenerateRequest(), timeout=15)
            assert [next(stream).progress.step for _ in range(3)] == [0, 1, 2]
            assert s.executor.outstanding == 1  # the stream holds its slot while it runs
            with pytest.raises(grpc.RpcError) as refused:
                s.angle_stub.PredictAngle(predict("ok"), timeout=15)
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            stream.cancel()
            assert s.gen.finished.wait(5)
            s.drained()
        s.angle_stub.PredictAngle(predict("ok"), timeout=15)


def test_slot_comes_back_when_a_running_call_passes_its_deadline() -> None:
    with admission_server(limit=1, workers=1) as s:
        with pytest.raises(grpc.RpcError) as e:
            s.angle_stub.PredictAngle(predict("until-gone"), timeout=0.3)
        assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        s.drained()
        s.angle_stub.PredictAngle(predict("ok"), timeout=15)


def test_calls_that_end_while_queued_give_their_slot_back_without_running() -> None:
    with admission_server(limit=4, workers=1) as s:
        blocked = fill(s, "a")
        expiring = s.call("queued-expires", timeout=0.3)
        cancelled = s.call("queued-cancelled")
        wait_until(lambda: s.executor.outstanding == 3, what="two calls queued")
        cancelled.cancel()
        with pytest.raises(grpc.RpcError) as e:
            expiring.result(timeout=10)
        assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert s.executor.outstanding == 3  # still queued: their tasks end once a thread takes them
        s.angle.release()
        blocked[0].result(timeout=10)
        s.drained()
        assert not s.angle.running("queued-expires") and not s.angle.running("queued-cancelled")
        s.angle_stub.PredictAngle(predict("ok"), timeout=15)


def test_many_mixed_endings_leak_nothing() -> None:
    with admission_server(limit=3, workers=2) as s:
        pool = futures.ThreadPoolExecutor(6)

        def one(i: int) -> str:
            try:
                if i % 3 == 0:
                    stream = s.generate_stub.Generate(generate_pb2.GenerateRequest(), timeout=15)
                    for _ in range(1 + i % 4):
                        next(stream)
                    stream.cancel()
                    return "cancelled"
                name = ("ok", "fail", "until-gone")[i % 3]
                s.angle_stub.PredictAngle(predict(name), timeout=0.2 if name == "until-gone" else 15)
                return "OK"
            except grpc.RpcError as e:
                return e.code().name

        try:
            outcomes = list(pool.map(one, range(30)))
        finally:
            pool.shutdown()
        assert set(outcomes) <= {"OK", "cancelled", "UNKNOWN", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED"}
        s.drained()
        blocked = fill(s, "x", "y", "z")  # every slot is free again
        s.angle.release()
        for f in blocked:
            f.result(timeout=10)


def test_executor_counts_tasks_until_done_or_cancelled() -> None:
    executor = AdmissionExecutor(1)
    gate = threading.Event()
    first = executor.submit(gate.wait, 5)
    rest = [executor.submit(lambda: None) for _ in range(3)]
    assert executor.outstanding == 4
    executor.shutdown(wait=False, cancel_futures=True)  # the queued ones are cancelled unrun
    assert all(f.cancelled() for f in rest)
    assert executor.outstanding == 1
    gate.set()
    assert first.result(timeout=5) is True
    wait_until(lambda: executor.outstanding == 0, what="the running task to finish")


# --- the wiring: build_server settings, and the gateway --------------------------------------------
def _settings(**kw: Any) -> Settings:
    return Settings(**{"host": "127.0.0.1", "port": 0, "metrics_port": 0, **kw})


@contextmanager
def built(settings: Settings) -> Iterator[tuple[Angle, grpc.Channel]]:
    angle = Angle()
    server, port = build_server(settings, services=[ANGLE], servicers={ANGLE: angle})
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        grpc.channel_ready_future(channel).result(timeout=10)
        yield angle, channel
    finally:
        angle.release()
        channel.close()
        server.stop(None).wait()


def test_build_server_applies_max_concurrent_rpcs() -> None:
    with built(_settings(max_workers=1, max_concurrent_rpcs=1)) as (angle, channel):
        stub = angle_pb2_grpc.AngleServiceStub(channel)
        blocked = stub.PredictAngle.future(predict("block:a"), timeout=15)
        wait_until(lambda: angle.running("block:a"), what="the call to run")
        with pytest.raises(grpc.RpcError) as refused:
            stub.PredictAngle(predict("ok"), timeout=15)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert retry_delay_s(refused.value) is not None
        health_stub = health_pb2_grpc.HealthStub(channel)
        assert health_stub.Check(health_pb2.HealthCheckRequest(), timeout=3).status == 1
        angle.release()
        blocked.result(timeout=10)


def test_max_concurrent_rpcs_zero_turns_it_off() -> None:
    with built(_settings(max_workers=1, max_concurrent_rpcs=0)) as (angle, channel):
        stub = angle_pb2_grpc.AngleServiceStub(channel)
        calls = [stub.PredictAngle.future(predict(f"block:{k}"), timeout=15) for k in "abc"]
        wait_until(lambda: angle.running("block:a"), what="the first call to run")
        time.sleep(0.2)
        assert not any(c.done() for c in calls)  # queued, not refused
        angle.release()
        for c in calls:
            c.result(timeout=10)


def test_gateway_refuses_over_its_limit_and_relays_the_model_servers_refusal(tmp_path: Path) -> None:
    from services.gateway.server import build_gateway

    with admission_server(limit=4, workers=4) as model:
        target = f"127.0.0.1:{model.port}"
        gw = build_gateway(
            _settings(
                max_workers=2,
                max_concurrent_rpcs=2,
                angle_address=target,
                generate_address=target,
                score_address=target,
                dataset_db_url=f"sqlite:///{tmp_path}/jobs.db",
                dataset_output_root=tmp_path,
            )
        )
        gw.start()
        channel = grpc.insecure_channel(f"127.0.0.1:{gw.port}")
        try:
            via = angle_pb2_grpc.AngleServiceStub(channel)
            direct = fill(model, "d", "e", "f")  # the model server: 3 of 4
            a = via.PredictAngle.future(predict("block:a"), timeout=15)  # gateway 1 of 2, model full
            wait_until(lambda: model.angle.running("block:a"), what="the proxied call to run")
            with pytest.raises(grpc.RpcError) as relayed:
                via.PredictAngle(predict("ok"), timeout=15)
            assert relayed.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "limit 4" in relayed.value.details()  # the model server's refusal, relayed
            assert retry_delay_s(relayed.value) is not None

            model.angle.release("d")
            wait_until(lambda: model.executor.outstanding == 3, what="one model slot to free")
            b = via.PredictAngle.future(predict("block:b"), timeout=15)  # gateway 2 of 2
            wait_until(lambda: model.angle.running("block:b"), what="the second proxied call to run")
            with pytest.raises(grpc.RpcError) as refused:
                via.PredictAngle(predict("ok"), timeout=15)
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "limit 2" in refused.value.details()  # the gateway's own refusal
            assert retry_delay_s(refused.value) is not None
            status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=3)
            assert status.status == health_pb2.HealthCheckResponse.SERVING

            model.angle.release()
            for f in (a, b, *direct):
                f.result(timeout=10)
            model.drained()
            via.PredictAngle(predict("ok"), timeout=15)  # the gateway admits again
        finally:
            channel.close()
            gw.stop(None)
