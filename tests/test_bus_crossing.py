"""The host bus crossing between the link's clock domain and the engine's, in Amaranth's
simulator, with clocks of unrelated periods: every operation arrives exactly once, reads come
back with the engine's data, and the reset pulse and busy cross."""

import random

import pytest
from amaranth import ClockDomain, Module, Signal
from amaranth.sim import Simulator

from sparseforge.boards.gateware.crossing import BusCrossing
from sparseforge.compiler import bus


class EngineModel:
    """The engine's side of the host bus: a word store that answers reads ``READ_LATENCY``
    cycles later and counts every operation it sees."""

    def __init__(self, bus):
        self.bus = bus
        self.words: dict[int, int] = {}
        self.writes: list[tuple[int, int]] = []
        self.reads = 0

    async def serve(self, ctx):
        pending: list[tuple[int, int]] = []          # (cycles left, address)
        async for _, _, address, data, w_en, r_en in ctx.tick().sample(
                self.bus.addr, self.bus.w_data, self.bus.w_en, self.bus.r_en):
            ctx.set(self.bus.r_valid, 0)
            pending = [(left - 1, a) for left, a in pending]
            if pending and pending[0][0] == 0:
                ctx.set(self.bus.r_data, self.words.get(pending[0][1], 0))
                ctx.set(self.bus.r_valid, 1)
                pending.pop(0)
            if w_en:
                self.words[address] = data
                self.writes.append((address, data))
            if r_en:
                self.reads += 1
                pending.append((bus.READ_LATENCY, address))


@pytest.mark.parametrize("link_period, engine_period", [(20e-9, 10e-9), (7e-9, 23e-9),
                                                        (13e-9, 13e-9)])
def test_crossing_carries_every_operation_once(link_period, engine_period):
    m = Module()
    m.domains.link = ClockDomain("link")
    m.submodules.crossing = crossing = BusCrossing("link")
    engine_busy, resets = Signal(), Signal(8)
    m.d.comb += crossing.engine_busy.eq(engine_busy)
    with m.If(crossing.engine_reset):
        m.d.sync += resets.eq(resets + 1)
    engine = EngineModel(crossing.engine)
    rng = random.Random(5)
    operations = [("write", rng.randrange(1 << 32), rng.randrange(1 << 32)) for _ in range(12)]
    operations += [("read", address, data) for _, address, data in operations[:6]]
    operations.insert(4, ("reset", 0, 0))
    rng.shuffle(operations[5:])
    seen = {"read": [], "busy": [], "resets": None}

    async def link_side(ctx):
        link = crossing.link
        written = {}
        for kind, address, data in operations:
            while not ctx.get(crossing.idle):
                await ctx.tick("link")
            ctx.set(link.addr, address)
            ctx.set(link.w_data, data)
            ctx.set(link.w_en, kind == "write")
            ctx.set(link.r_en, kind == "read")
            ctx.set(crossing.link_reset, kind == "reset")
            await ctx.tick("link")
            ctx.set(link.w_en, 0)
            ctx.set(link.r_en, 0)
            ctx.set(crossing.link_reset, 0)
            if kind == "write":
                written[address] = data
            if kind == "read":
                for _ in range(100):
                    if ctx.get(link.r_valid):
                        break
                    await ctx.tick("link")
                else:
                    raise AssertionError("the read never came back")
                seen["read"].append((ctx.get(link.r_data), written.get(address, 0)))
        while not ctx.get(crossing.idle):
            await ctx.tick("link")
        # busy crosses within a few link cycles, both ways
        for level in (1, 0):
            ctx.set(engine_busy, level)
            for _ in range(4):
                await ctx.tick("link")
            seen["busy"].append(ctx.get(crossing.busy))
        seen["resets"] = ctx.get(resets)

    simulator = Simulator(m)
    simulator.add_clock(engine_period)
    simulator.add_clock(link_period, domain="link")
    simulator.add_process(engine.serve)
    simulator.add_testbench(link_side)
    simulator.run_until(4e-6 + 400 * max(link_period, engine_period))

    expected_writes = [(a, d) for kind, a, d in operations if kind == "write"]
    assert engine.writes == expected_writes
    assert engine.reads == sum(kind == "read" for kind, _, _ in operations)
    assert seen["read"] and all(got == want for got, want in seen["read"])
    assert seen["busy"] == [1, 0]
    assert seen["resets"] == 1
