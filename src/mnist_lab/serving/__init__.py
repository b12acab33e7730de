"""Models after training: the logged pyfunc model (`pyfunc`), the registry and promotion (`registry`), batch
inference (`inference`) and the REST server (`rest`)."""
