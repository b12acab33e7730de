"""Importing the package pins OpenBLAS's kernels (mnist_lab/__init__.py): results then do not depend on which
x86-64 CPU family ran them (SkylakeX kernels on an AVX-512 Intel machine gave the MLP other last bits than
the Haswell kernels of an AMD one). Checked in fresh processes, where numpy is not loaded yet."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

REPORT = (
    "import os, mnist_lab, numpy, json, threadpoolctl; "
    "print(json.dumps([os.environ.get('OPENBLAS_CORETYPE'), "
    "[lib.get('architecture') for lib in threadpoolctl.threadpool_info() "
    "if lib['internal_api'] == 'openblas']]))"
)


def _flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            return set(
                next((line.split(":", 1)[1].split() for line in cpuinfo if line.startswith("flags")), [])
            )
    except OSError:
        return set()


def kernels(**env: str) -> list:
    clean = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
    done = subprocess.run(
        [sys.executable, "-c", REPORT], env={**clean, **env}, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.skipif(
    platform.machine() != "x86_64" or not {"avx2", "fma"} <= _flags(),
    reason="an x86-64 CPU with AVX2 and FMA",
)
def test_openblas_runs_its_haswell_kernels_unless_told_otherwise() -> None:
    assert kernels() == ["Haswell", ["Haswell"]]
    assert kernels(OPENBLAS_CORETYPE="Sandybridge") == ["Sandybridge", ["Sandybridge"]]  # the user's choice
