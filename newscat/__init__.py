"""newscat: fine-tune a BERT-family model to sort news into topics, tuned with Optuna, tracked and served by MLflow."""

__version__ = "0.1.0"

__all__ = ["__version__"]
