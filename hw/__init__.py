"""The EIE-style sparse inference engine, in Amaranth HDL."""
