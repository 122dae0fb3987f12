"""Labels: export a selection for people (Label Studio files or a project through its REST API, CVAT, CSV),
accept the head's trusted answers with an audit, and import what people labelled into the versioned dataset.

``labelling`` (export, auto-accept), ``audit`` (the audit's size, its bound and its result), ``labelimport``
(the one import path and its CSV reader), ``labelstudio`` / ``labelstudio_api`` / ``labelstudio_client`` (Label
Studio: the JSON format, the project sync, the HTTP client), ``cvat`` (CVAT XML), ``assisted`` (the auto-accept
rule and its measurement). The selection they read (``selection.json``) is :mod:`novelty.flywheel.selection`'s (``read_selection``).
"""
