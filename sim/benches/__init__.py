"""cocotb test modules; run from pytest through sparseforge.sim.runner."""
