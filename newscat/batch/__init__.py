"""Batch prediction with a logged model: files on one machine (`newscat predict`) or Spark (`--spark`)."""
