"""Export: the final model's fast serving paths (ONNX fp32 and int8 graphs, torch bf16), each scored against torch
fp32 on the test split before it may become the model's default."""
