"""Thin DVC stage entry points (`python -m mnist_lab.stages.<name>`): read inputs, call the core, write
outputs, log. Paths come from `dvc.yaml` on the command line."""
