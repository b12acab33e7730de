"""Thin DVC stage entry points (`python -m mnist_lab.stages.<name>`; dvc.yaml runs them as `python -m
mnist_lab.stages <name>`, which starts them warm: see __main__.py): read inputs, call the core, write outputs,
log. Paths come from `dvc.yaml` on the command line."""
