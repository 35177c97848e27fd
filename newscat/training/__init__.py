"""Training: model resolution, one Trainer run, the search space and study, the time budget, recovery of dead
workers, and the main job that ties them together."""
