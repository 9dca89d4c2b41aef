"""The golden model (bit-exact NumPy execution of a program image) and the cycle model."""
