"""hw/sequencer.py: the sequencer alone, between models of its memories and of the engine.

The descriptor and codebook memories answer a cycle after the address (registered read
ports, as in the engine); the engine's model computes for a random number of cycles after
each ``broadcast_start`` (the broadcast unit idle from the next cycle only when done, the PEs
busy at random) and returns ``rows * period`` results, with random gaps, some cycles after
each ``writeback`` pulse.  Checked: the clear after reset, the layers in order with their
descriptor on ``layer``, each layer's codebook in the registers before its compute starts and
left alone until its write-back, the write-back pulse two cycles after the engine settles,
the results' addresses and phases, the cycle counts recorded at the end of each layer, and
a start while busy or of no layers ignored.
"""

import random

import pytest
from amaranth.sim import Simulator

from sparseforge.compiler import isa
from sparseforge.compiler.config import EngineConfig
from sparseforge.hw.sequencer import Sequencer, writeback_latency


def random_descriptor(rng, config):
    return {"in_features": rng.randint(1, config.max_features),
            "out_features": rng.randint(1, config.max_features),
            "rows": rng.randint(1, config.max_rows),
            "groups": rng.randint(1, 10), "pointer_base": rng.randrange(config.pointer_depth),
            "bias_base": rng.randrange(config.bias_depth),
            "occupancy_base": rng.randrange(config.occupancy_depth),
            "shift": rng.randrange(1 << config.shift_bits), "relu": rng.randrange(2)}


def as_dict(layout, value):
    return {name: getattr(value, name) for name, _ in layout}


@pytest.mark.parametrize("pes,writeback_lanes,code_bits,max_layers",
                         [(4, 0, 2, 3), (4, 2, 1, 4), (8, 2, 3, 2), (4, 1, 2, 1)])
@pytest.mark.parametrize("result_gaps", [False, True])
def test_runs_the_layers_in_order(pes, writeback_lanes, code_bits, max_layers, result_gaps):
    config = EngineConfig(pes=pes, writeback_lanes=writeback_lanes, code_bits=code_bits,
                          max_layers=max_layers, max_rows=3, max_features=24,
                          pointer_depth=40, bias_depth=10, occupancy_depth=10)
    dut = Sequencer(config)
    rng = random.Random(pes * 1000 + writeback_lanes * 100 + code_bits * 10 + max_layers
                        + result_gaps)
    period = config.writeback_period
    layout = isa.descriptor_layout(config)
    size = config.codebook_size
    half = 1 << (config.coef_bits - 1)
    runs = []

    async def testbench(ctx):
        descriptors = [random_descriptor(rng, config) for _ in range(max_layers)]
        codebook = [rng.randint(-half, half - 1) for _ in range(max_layers * size)]
        registers = [None] * size               # the PEs' codebook registers
        cycle = 0
        computing_until = None                  # the engine's compute ends at this cycle
        results_at = []                         # cycles with a write-back result
        descriptor_addr = codebook_addr = 0
        log = []                                # (cycle, what, details)

        async def tick():
            """One cycle of the memories and of the engine around the sequencer."""
            nonlocal cycle, computing_until, results_at, descriptor_addr, codebook_addr
            ctx.set(dut.descriptors.data, descriptors[descriptor_addr])
            # Past the last layer's codebook (the loader's last read, not used): junk.
            ctx.set(dut.codebook.data, codebook[codebook_addr] if codebook_addr < len(codebook)
                    else rng.randint(-half, half - 1))
            computing = computing_until is not None and cycle <= computing_until
            ctx.set(dut.broadcast_idle, not computing)
            ctx.set(dut.pes_busy, computing and rng.random() < 0.5)
            ctx.set(dut.results_valid, cycle in results_at)
            if cycle in results_at:
                log.append((cycle, "result", None))
            if ctx.get(dut.result_write.en):
                log.append((cycle, "store", (ctx.get(dut.result_write.addr),
                                             ctx.get(dut.result_write.phase))))
            assert not ctx.get(dut.result_write.en) or ctx.get(dut.result_write.storing)
            if ctx.get(dut.codebook_write.en):
                assert not computing, "the codebook changes while a layer computes"
                registers[ctx.get(dut.codebook_write.index)] = ctx.get(
                    dut.codebook_write.value)
                log.append((cycle, "codebook", None))
            if ctx.get(dut.broadcast_start):
                assert not computing
                computing_until = cycle + rng.randint(1, 12)
                # The engine settles (idle, no PE busy) the cycle after its compute ends.
                log.append((cycle, "compute", (ctx.get(dut.descriptors.addr),
                                               as_dict(layout, ctx.get(dut.layer)),
                                               list(registers), computing_until + 1)))
            if ctx.get(dut.writeback):
                rows = ctx.get(dut.layer.rows)
                first = cycle + writeback_latency(config)
                results_at = []
                for _ in range(rows * period):
                    first += result_gaps and rng.random() < 0.3
                    results_at.append(first)
                    first += 1
                log.append((cycle, "writeback", rows))
            if ctx.get(dut.cycles_write.en):
                log.append((cycle, "cycles", (ctx.get(dut.cycles_write.addr),
                                              ctx.get(dut.cycles_write.data))))
            if ctx.get(dut.done):
                log.append((cycle, "done", None))
            busy = ctx.get(dut.busy)
            descriptor_addr = ctx.get(dut.descriptors.addr)
            codebook_addr = ctx.get(dut.codebook.addr)
            await ctx.tick()
            cycle += 1
            return busy

        # ---- after reset: every accumulator row cleared, nothing stored ----------------------
        assert ctx.get(dut.writeback) and ctx.get(dut.layer.rows) == config.max_rows
        while await tick():
            assert cycle < 100
        assert [what for _, what, _ in log] == \
            ["writeback"] + ["result"] * (config.max_rows * period)
        # Idle from the cycle after the last result.
        assert log[-1][0] == cycle - 2

        # ---- runs ----------------------------------------------------------------------------
        for run in range(3):
            layer_count = rng.randint(1, max_layers)
            if run:
                # The host changes the codebook between runs: the first layer loads anew.
                codebook[:] = [rng.randint(-half, half - 1) for _ in codebook]
            ctx.set(dut.layer_count, 0)          # no layers: refused
            ctx.set(dut.start, 1)
            await tick()
            ctx.set(dut.start, 0)
            assert not await tick()
            log.clear()
            ctx.set(dut.layer_count, layer_count)
            ctx.set(dut.start, 1)
            start = cycle
            await tick()
            ctx.set(dut.start, 0)
            while await tick():
                if cycle == start + 5:
                    ctx.set(dut.start, 1)       # ignored while busy
                    ctx.set(dut.layer_count, max_layers)
                if cycle == start + 6:
                    ctx.set(dut.start, 0)
                    ctx.set(dut.layer_count, layer_count)
                assert cycle - start < 400, "the run never ends"
            total = check_run(config, log, start, layer_count, descriptors, codebook, period)
            assert ctx.get(dut.total_cycles) == total
            runs.append(layer_count)

    simulator = Simulator(dut)
    simulator.add_clock(1e-8)
    simulator.add_testbench(testbench)
    simulator.run()
    assert len(runs) == 3


def check_run(config, log, start, layer_count, descriptors, codebook, period):
    """The events of one run, layer by layer: the layer's codebook loaded (for every layer
    but the first during the previous layer's write-back), its compute started as soon as
    the codebook is in, with its descriptor, no codebook write until its write-back, the
    write-back pulse two cycles after the engine settled, the results stored in order, the
    cycle count recorded at the layer's last result; ``done`` at the last layer's.  Returns
    the run's cycles."""
    size = config.codebook_size
    computes = [(c, details) for c, what, details in log if what == "compute"]
    assert [details[0] for _, details in computes] == list(range(layer_count)), "layer order"
    end = start                 # the previous layer's last result (the start pulse for the first)
    load_from = start           # the previous layer's write-back
    for layer, (compute, (_, descriptor, registers, settled)) in enumerate(computes):
        assert descriptor == descriptors[layer]
        assert registers == codebook[layer * size:(layer + 1) * size], f"layer {layer}'s codebook"
        loads = [c for c, what, _ in log if what == "codebook" and load_from < c < compute]
        assert len(loads) == size, f"layer {layer}'s codebook loads"
        if layer:
            assert loads[0] <= end, "no preload during the previous layer's write-back"
        # FETCH, FETCHED, COMPUTE; or the loaded codebook seen a cycle after the last write.
        assert compute == max(end + 3, loads[-1] + 2)
        end, recorded = next((c, details) for c, what, details in log
                             if what == "cycles" and c > compute)
        window = [(c, what, details) for c, what, details in log if compute < c <= end]
        writebacks = [(c, rows) for c, what, rows in window if what == "writeback"]
        assert writebacks == [(settled + 2, descriptor["rows"])]
        load_from = settled + 2
        assert not [c for c, what, _ in window if what == "codebook" and c <= load_from]
        stores = [details for _, what, details in window if what == "store"]
        assert stores == [(k // period, k % period) for k in range(descriptor["rows"] * period)]
        assert max(c for c, what, _ in window if what == "result") == end
        assert recorded == (layer, end - start)
    assert [c for c, what, _ in log if what == "done"] == [end]
    return end - start
