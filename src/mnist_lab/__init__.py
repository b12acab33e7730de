"""mnist-lab: reproducible handwritten-digit experiments with DVC, MLflow and the DagsHub logger.

Importing the package pins OpenBLAS's kernels (`pin_blas_kernels`), before numpy loads its OpenBLAS: a stage,
the CLI and the tests all import this package first."""

import os
import platform

__version__ = "0.1.0"

BLAS_KERNELS = "Haswell"  # AVX2 + FMA: every x86-64 server CPU since 2013 (Intel and AMD)


def pin_blas_kernels() -> None:
    """Have OpenBLAS use its Haswell kernels on any x86-64 CPU that has them, unless OPENBLAS_CORETYPE is
    set. OpenBLAS picks kernels by CPU (SkylakeX on AVX-512 Intel, Haswell on this project's AMD machines),
    and their sums round differently: the MLP's losses differed in the last bits between two machines
    (its predictions did not). Pinned, a committed experiment reruns byte for byte on another machine. It
    takes effect only in a process that has not loaded numpy yet."""
    if "OPENBLAS_CORETYPE" in os.environ or platform.machine().lower() not in ("x86_64", "amd64"):
        return
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as cpuinfo:
            flags = next((line.split(":", 1)[1].split() for line in cpuinfo if line.startswith("flags")), [])
    except OSError:
        return  # not Linux: OpenBLAS chooses
    if "avx2" in flags and "fma" in flags:
        os.environ["OPENBLAS_CORETYPE"] = BLAS_KERNELS


pin_blas_kernels()
