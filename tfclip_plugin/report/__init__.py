"""Reports of test runs: ranked-results figures, CMC curves, feature maps, training curves, index.html.

``build_report(runs, topk=5, num_queries=8, seed=0)`` is what ``tfclip-reid report RUN_DIR ...`` calls.
"""
from .builder import build_report

__all__ = ["build_report"]
