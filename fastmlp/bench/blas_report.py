"""Which BLAS libraries are loaded and on how many threads: the header of the bench report."""

from pathlib import Path

from threadpoolctl import threadpool_info


def blas_threads() -> int:
    """The thread count of the BLAS libraries loaded (NumPy's and SciPy's OpenBLAS), at least 1."""
    return max([i["num_threads"] for i in threadpool_info() if i.get("user_api") == "blas"], default=1)


def blas_info() -> list[str]:
    """The BLAS libraries loaded and their thread counts, as threadpoolctl reports them, each named by the
    package that loaded it: NumPy's (the numpy backend's matmuls) or SciPy's (the sgemm of fastmlp.kernels)."""
    return [f"{_blas_owner(i.get('filepath', ''))}: {i.get('internal_api')} {i.get('version')} "
            f"{i.get('num_threads')} threads ({i.get('prefix')})"
            for i in threadpool_info() if i.get("user_api") == "blas"]


_BLAS_OWNERS = {"numpy": "NumPy's BLAS (numpy backend)", "scipy": "SciPy's BLAS (numba kernels)",
                "torch": "PyTorch's BLAS"}


def _blas_owner(filepath: str) -> str:
    """Which package a BLAS library belongs to, from the folder it was loaded from (numpy.libs/, scipy.libs/)."""
    for part in reversed(Path(filepath).parts[:-1]):
        owner = _BLAS_OWNERS.get(part.split(".")[0].lower())
        if owner:
            return owner
    return "BLAS"
