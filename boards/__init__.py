"""Board targets, bitstream builds, the UART link and the host runtime."""
