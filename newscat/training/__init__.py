"""Training: model resolution, one Trainer run, the search space and study, the time budget, recovery of dead
workers, and the main job that ties them together."""

from newscat.faces import face

# What other packages may use, by the module that defines it.
__all__, __getattr__ = face(
    __name__,
    {
        "job": ("TuneOutcome", "tune_and_register"),
        "recipe": ("champion_recipe", "logged_value"),
        "search_space": ("DEFAULT_SPACE",),
    },
)
