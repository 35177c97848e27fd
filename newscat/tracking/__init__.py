"""Tracking: every MLflow call of the main job — the store, runs and their states, logged models and checkpoints,
evaluations, the Trainer callback and the study report."""
