"""Models-from-code entry for MLflow: the logged model is built from this file, not unpickled.

MLflow executes this file when it loads the model; the package itself never imports it.
"""

import mlflow

from newscat.serving.model import NewsClassifier

mlflow.models.set_model(NewsClassifier())
