"""Verification: the NumPy golden and cycle models, and cocotb benches over the generated
Verilog."""
