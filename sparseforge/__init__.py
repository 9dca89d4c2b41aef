"""sparseforge: compress a PyTorch network and run it on a verified sparse engine on open FPGAs.

The pipeline is compress -> compile -> engine -> board; each stage consumes the previous
stage's artifact.  The public API is re-exported here; heavy modules (torch, amaranth) are only
imported when a name that needs them is used.
"""

__version__ = "0.1.0"
