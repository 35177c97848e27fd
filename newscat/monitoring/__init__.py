"""Watching the served model: feedback on its traced predictions."""

from newscat.faces import face

# What other packages may use, by the module that defines it.
__all__, __getattr__ = face(
    __name__,
    {
        "feedback": ("attach_feedback", "read_feedback"),
        "monitor": ("monitor",),
        "retention": ("prune_traces",),
        "retrain": ("retrain",),
        "verdict": ("EXIT_ERROR",),
    },
)
