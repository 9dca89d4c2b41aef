"""sparseforge: compress a PyTorch network and run it on a verified sparse engine on open FPGAs.

    import sparseforge as sf
    cm = sf.compress(model, train=(X, y), val=(Xv, yv), sparsity=0.9, weight_bits=4, act_bits=8)
    prog = sf.compile(cm, pes=8, board="icebreaker")
    ref = sf.reference(prog, X)                         # golden model, integer outputs
    sim = sf.simulate(prog, X, simulator="verilator")   # cocotb on the generated Verilog
    hw = sf.build(prog, board="icebreaker")             # bitstream, Fmax, utilisation

The pipeline is compress -> compile -> engine -> board; each stage consumes the previous
stage's artifact.  Names are imported on first use, so ``import sparseforge`` stays light.
"""

import importlib as _importlib
from importlib import metadata as _metadata

__version__ = _metadata.version("sparseforge")     # pyproject.toml's, the one definition

# public name -> (module, attribute)
_API = {
    "compress": ("sparseforge.compiler.compress.api", "compress"),
    "CompressedModel": ("sparseforge.compiler.compress.model", "CompressedModel"),
    "load_compressed": ("sparseforge.compiler.compress.model", "load_compressed"),
    "load_quantized": ("sparseforge.compiler.quantized.build", "load_quantized"),
    "compile": ("sparseforge.api", "compile"),
    "Program": ("sparseforge.compiler.program", "Program"),
    "load_program": ("sparseforge.compiler.program", "load_program"),
    "reference": ("sparseforge.api", "reference"),
    "simulate": ("sparseforge.api", "simulate"),
    "build": ("sparseforge.api", "build"),
    "sweep": ("sparseforge.sweeps", "sweep"),
    "EngineConfig": ("sparseforge.compiler.config", "EngineConfig"),
}

__all__ = sorted(_API)


def __getattr__(name):
    try:
        module, attribute = _API[name]
    except KeyError:
        raise AttributeError(f"module 'sparseforge' has no attribute {name!r}") from None
    value = getattr(_importlib.import_module(module), attribute)
    globals()[name] = value
    return value


def __dir__():
    # The public names once each (a name used once is in globals() too) and the module's own.
    return sorted({*_API, *(name for name in globals() if name.startswith("__"))})
