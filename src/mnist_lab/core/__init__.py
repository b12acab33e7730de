"""The core: what decides a result. Settings, the IDX format, datasets, features, models (the CNN included),
metrics, figures and results, as pure functions and classes: no MLflow, no DVC, no subprocess, no tracking,
no files beyond what a caller hands in. Everything else in the package calls into here, never the reverse
(`make lint` checks it with import-linter)."""
