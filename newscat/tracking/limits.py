"""MLflow's limits on what a run or a registry entry can hold: values longer than these are cut, never refused."""

TAG_VALUE_LIMIT = 5000  # characters of a tag value (runs, versions, registered models)
PARAM_VALUE_LIMIT = 500  # characters of a param value we log (MLflow allows more; these stay readable in the UI)
