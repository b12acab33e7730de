"""Experiments as git and DVC know them: commit <-> MLflow run links (`linking`), `history`, `compare`,
`reproduce`, the results table (`report`) and the MLflow Projects entry points (`project`)."""
