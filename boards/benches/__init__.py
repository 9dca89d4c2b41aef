"""cocotb benches of the board: the host runtime against the simulated UART link."""
