"""Data: load news (Hub, AG News CSV directory, CSV/JSON/Parquet), validate, split, join text, tokenize.

Its face names what other packages use, each name imported from its module on first use: `newscat.data.text`
ships inside every logged model without the rest of the package.
"""

from newscat.faces import face

# What other packages may use, by the module that defines it.
__all__, __getattr__ = face(
    __name__,
    {
        "load": ("NewsData", "load_news", "text_key"),
        "text": ("join_fields", "normalize_text"),
        "tokenize": ("load_tokenizer", "tokenize_news", "tokenize_rows"),
    },
)
