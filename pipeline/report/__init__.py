"""The run report (`dgbatch report OUT`): what a run says about itself, as OUT/_report/index.html.

pipeline/report/data.py reads a run's output prefix (tolerant, read-only), pipeline/report/plots.py draws the
charts, pipeline/report/page.py writes the page (`write_report`, `error_kind`).
"""

from pipeline.report.page import error_kind, write_report

__all__ = ["error_kind", "write_report"]
