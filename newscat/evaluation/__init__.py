"""Evaluation, computed: metrics, the evaluation report (calibration, confident mistakes), behavioural checks and the
model card. Scoring a model URI and logging the result (`newscat evaluate`, `newscat check`, the gate) lives in
`newscat.registry.evaluations`, beside the versions it links to."""
