"""Watching the served model: feedback on its traced predictions."""
