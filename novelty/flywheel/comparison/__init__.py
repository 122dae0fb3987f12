"""Comparison: the champion and a challenger on the same frozen test data, ceteris paribus, and the gate.

``compare`` (both detectors on the same images, per condition, with intervals; ``comparison.json``, its one
reader), ``paired`` (the paired, clustered bootstrap and McNemar), ``gate`` (the promotion rule and its checks),
``report`` (the HTML report).
"""
