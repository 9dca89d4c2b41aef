"""Network capture, the IR and its passes, EIE encoding: compressed model -> program image."""
