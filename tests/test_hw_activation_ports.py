"""hw/activation_ports.py: writes before reads; among writes the write-back, then the input
stream, then the host; among reads the broadcast unit (computing), the output stream
(unloading), then the host; a result goes to its group's lanes, a single value to its lane."""

import random

import pytest
from amaranth.sim import Simulator

from sparseforge.compiler.config import EngineConfig
from sparseforge.hw.activation_ports import ActivationPorts

CONFIGS = {
    "N=1": dict(pes=1),
    "N=3": dict(pes=3),
    "N=4, a requantizer per PE": dict(pes=4),
    "N=4, one requantizer": dict(pes=4, writeback_lanes=1),
    "N=8, two requantizers": dict(pes=8, writeback_lanes=2),
}


@pytest.mark.parametrize("name", CONFIGS)
def test_arbitration(name):
    config = EngineConfig(scan_lanes=1, max_features=40, **CONFIGS[name])
    pes, period = config.pes, config.writeback_period
    dut = ActivationPorts(config)
    rng = random.Random(name)
    words = config.act_words
    seen = {"result": 0, "stream": 0, "host": 0, "broadcast": 0, "unload": 0, "host_read": 0}

    def value():
        return rng.randrange(-128, 128)

    async def testbench(ctx):
        for _ in range(400):
            request = {
                "result": dict(en=rng.random() < 0.3, addr=rng.randrange(words),
                               phase=rng.randrange(period), storing=rng.random() < 0.5),
                "stream": dict(en=rng.random() < 0.3, offered=rng.random() < 0.5,
                               addr=rng.randrange(words), lane=rng.randrange(pes),
                               value=value()),
                "host_write": dict(en=rng.random() < 0.3, addr=rng.randrange(words),
                                   lane=rng.randrange(pes), value=value()),
            }
            for port, fields in request.items():
                for field, v in fields.items():
                    ctx.set(getattr(getattr(dut, port), field), v)
            results = [value() for _ in range(pes // period)]
            ctx.set(dut.results, results)
            readers = {reader: dict(addr=rng.randrange(words), en=rng.random() < 0.5)
                       for reader in ("broadcast", "unload", "host_read")}
            for reader, fields in readers.items():
                for field, v in fields.items():
                    ctx.set(getattr(getattr(dut, reader), field), v)
            computing, unloading = rng.random() < 0.4, rng.random() < 0.4
            ctx.set(dut.computing, computing)
            ctx.set(dut.unloading, unloading)
            word = [value() for _ in range(pes)]
            ctx.set(dut.buffer.r_data, word)

            result, stream, host = (request[p] for p in ("result", "stream", "host_write"))
            if result["en"]:
                writer, lanes = "result", [k % period == result["phase"] for k in range(pes)]
            elif stream["en"]:
                writer, lanes = "stream", [k == stream["lane"] for k in range(pes)]
            elif host["en"]:
                writer, lanes = "host", [k == host["lane"] for k in range(pes)]
            else:
                writer, lanes = None, [False] * pes
            reader = "broadcast" if computing else "unload" if unloading else "host_read"
            assert [bool(ctx.get(dut.buffer.w_en) >> k & 1) for k in range(pes)] == lanes
            assert ctx.get(dut.buffer.r_en) == readers[reader]["en"]
            if writer is None:
                assert ctx.get(dut.buffer.addr) == readers[reader]["addr"], reader
                seen[reader] += 1
            else:
                assert ctx.get(dut.buffer.addr) == request[
                    "host_write" if writer == "host" else writer]["addr"], writer
                seen[writer] += 1
            single = stream["value"] if stream["offered"] else host["value"]
            expected = [results[k // period] if result["storing"] else single
                        for k in range(pes)]
            assert list(ctx.get(dut.buffer.w_data)) == expected
            for reader in readers:
                assert list(ctx.get(getattr(dut, reader).data)) == word, reader

    simulator = Simulator(dut)
    simulator.add_testbench(testbench)
    simulator.run()
    assert all(seen.values()), seen
