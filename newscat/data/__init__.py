"""Data: load news (Hub, AG News CSV directory, CSV/JSON/Parquet), validate, split, join text, tokenize.

Import from the modules (`newscat.data.load`, `.text`, `.tokenize`): this file imports nothing, because
`newscat.data.text` ships inside every logged model.
"""
