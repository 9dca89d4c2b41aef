"""Model compression (Deep Compression and friends); docs/compression.md describes each method.

Every method is a module usable on its own; :func:`api.compress` chains them:

* ``prune``: magnitude (per-layer target or sensitivity scan), gradual prune + retrain with
  masks, load-balance-aware (ESE), structured neurons and conv filters by L1 norm;
* ``share``: k-means weight sharing (linear init, code 0 = the pruned zero), trained centroids;
* ``quantize``: fixed-point calibration to the compiler's ``QuantizedNetwork``;
* ``huffman`` and ``accounting``: storage accounting in Deep Compression's style;
* ``lowrank`` (truncated SVD) and ``distill`` (knowledge distillation);
* ``convert`` (Network <-> torch), ``training``, ``digits`` (the embedded default),
  ``model`` (the ``.sfm`` file).

Nothing heavy is imported here: ``import sparseforge`` stays light.
"""
