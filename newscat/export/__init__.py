"""Export: packaging a classifier as a pyfunc model (`pyfunc`: a clean folder of a checkpoint, saved with only the
serving code inside), and the final model's fast serving paths (ONNX fp32 and int8 graphs, torch bf16), each scored
against torch fp32 on validation and training texts, never the test split, before it may become the model's default.
Nothing here talks to a tracking server or a registry."""
