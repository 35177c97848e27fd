"""Release: a study's final weights become the registered model. The serving paths are gated and the lexical
companion fitted (on validation and training texts only), the test split scored once, the release model logged,
loaded back and checked, described (card, tags) and registered; a registration cut short is resumed.

Below training (which calls `release_best`), above export, registry, tracking, evaluation, serving and data.
"""

from newscat.faces import face

# What other packages may use, by the module that defines it.
__all__, __getattr__ = face(
    __name__,
    {
        "context": ("ReleaseContext", "Weights"),
        "publish": ("Release", "release_best", "resume_release"),
        "verify": ("ReleaseError",),
    },
)
