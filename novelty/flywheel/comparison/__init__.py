"""Comparison: the champion and a challenger on the same frozen test data, ceteris paribus, and the gate.

``compare`` (both detectors on the same images: loading, embedding, the leakage check; it re-exports the
names of the modules below it), ``outputs`` (each model's outputs, the rows per condition with their intervals,
the trusted-but-wrong images), ``result`` (the record, ``comparison.json``, and its one reader), ``paired``
(the paired, clustered bootstrap and McNemar), ``gate`` (the promotion rule and its checks), ``report`` (the
HTML report).
"""
