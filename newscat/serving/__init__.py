"""Serving: the code shipped inside every logged model (the PythonModel, input checks, micro-batching, precision,
artifacts and their checksums). Imports nothing here: see `newscat.serving.artifacts.SHIPPED_CODE`."""
