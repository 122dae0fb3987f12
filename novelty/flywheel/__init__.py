"""The data flywheel: select what to label, label it, retrain, compare, promote.

One module per part (``dataset``, ``labelling``, ``selection``, ``record``, ``registry`` …); import them
directly, e.g. ``from novelty.flywheel.dataset import Dataset``. ``import novelty`` never loads this package.
"""
