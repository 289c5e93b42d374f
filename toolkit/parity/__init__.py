"""Accuracy parity of every exported artifact against the Keras model it came from, on the whole test
split of the dataset (MNIST's 10,000 images by default), with statistics and gates.

- metrics.py: what a variant's predictions say against the reference's (the numbers and result objects);
- running.py: which checks, the runners, the test split streamed through them;
- render.py: parity.json, parity.md, the disagreements figure, the predictions file.

Every gate is a verdict of toolkit/verdicts.py: pass, fail or inconclusive, decided on an interval.
"""

from toolkit.parity.metrics import ParityReport, Scores, VariantParity, compare, compare_predictions
from toolkit.parity.render import (
    control_markdown,
    markdown,
    predictions_path,
    report_json,
    write_outputs,
)
from toolkit.parity.running import plan_checks, run_parity, select_entries

__all__ = ["ParityReport", "Scores", "VariantParity", "compare",
           "compare_predictions", "control_markdown", "markdown", "plan_checks", "predictions_path", "report_json",
           "run_parity", "select_entries", "write_outputs"]
