"""Model Registry: versions and their typed tags, aliases and their history, the champion/challenger gate and
promotion."""
