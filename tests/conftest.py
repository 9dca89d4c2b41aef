"""Test-wide settings, applied before any test module imports torch."""

import os

# The command line runs PyTorch's portable CPU kernels so that compression gives the same model
# on every x86 machine (sparseforge/cli.py); the tests call it in-process and compress through
# the API too, so they choose the same kernels before torch is first imported.
os.environ.setdefault("ATEN_CPU_CAPABILITY", "default")
