"""Reading what a commit's dvc.lock recorded (`locked_state`), which tells a commit's results from what its
params.yaml would make (the dirty flag of `history`, the board and `reproduce`)."""

from __future__ import annotations

from mnist_lab.core.settings import flatten, load_params_yaml
from mnist_lab.experiments.table import locked_state

LOCK = """\
schema: '2.0'
stages:
  train@sgd:
    cmd: python -m mnist_lab.stages train sgd
    params:
      params.yaml:
        models.sgd.alpha: 1e-05
        models.sgd.search:
          grid:
            alpha:
            - 1e-05
            - 0.0001
    outs:
    - path: models/sgd
      hash: md5
      md5: 0123456789abcdef0123456789abcdef
"""


def test_params_as_dvc_writes_them_read_as_params_yaml_does() -> None:
    # DVC writes 0.00001 as 1e-05, which YAML 1.1 (PyYAML) reads as a string: it is the float params.yaml has
    files, params = locked_state(LOCK)
    written = flatten(
        load_params_yaml(
            "models:\n  sgd:\n    alpha: 0.00001\n    search: {grid: {alpha: [0.00001, 0.0001]}}\n"
        )
    )
    assert params == written and params["models.sgd.alpha"] == 1e-05
    assert files == {"models/sgd": {"0123456789abcdef0123456789abcdef"}}
