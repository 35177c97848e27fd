"""Batch prediction with a logged model: files on one machine (`newscat predict`) or Spark (`--spark`)."""

from newscat.faces import face

# What other packages may use, by the module that defines it.
__all__, __getattr__ = face(
    __name__,
    {
        "files": ("predict_texts", "read_texts"),
        "spark": ("predict_with_spark",),
    },
)
