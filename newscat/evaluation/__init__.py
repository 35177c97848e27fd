"""Evaluation, computed: metrics, the evaluation report (calibration, confident mistakes), behavioural checks and the
model card. Scoring a model URI and logging the result (`newscat evaluate`, `newscat check`, the gate) lives in
`newscat.registry.evaluations`, beside the versions it links to."""

from newscat.faces import face

# What other packages may use, by the module that defines it.
__all__, __getattr__ = face(
    __name__,
    {
        "card": ("CardFacts", "model_card"),
        "checks": ("CASES_RECORD", "CheckReport", "run_checks"),
        "metrics": ("accuracy_and_macro_f1", "classification_metrics", "confusion", "metric_key"),
        "report": ("Predictions", "expected_calibration_error", "per_class_table", "predict_split", "report_metrics"),
    },
)
