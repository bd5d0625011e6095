"""HTML reports built from records alone: any committed results file gives the same page.

python -m bench report RESULTS.jsonl [...] -o reports/NAME.html
"""

from bench.report.page import build

__all__ = ["build"]
