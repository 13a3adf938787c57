"""`python -m fastmlp.bench` / `fastmlp bench`: training speed of the backends against yardsticks measured
in the same run.

    common           the net, batch sizes and run lengths; the backends and data measured; a timer
    yardsticks       the roofline and the gemm floor
    kernel_cases     each public kernel beside its NumPy reference, at a batch size (asv, pytest-benchmark)
    torch_yardstick  PyTorch CPU training the same net
    throughput       the interleaved epoch-by-epoch run, and the command's main
    children         peak RSS and compile time, each in a process of its own
    report           the tables
    blas_report      the BLAS libraries loaded and their threads
    contention       training beside other work (--contention)
    optimizers       one step's cost per optimiser
    recipe           the CLI's default recipe, trained once per backend
"""

from .blas_report import blas_info
from .children import compile_seconds_in_child
from .common import BATCH_SIZES, INPUTS, LAYER_SIZES, LR, WARMUP_EPOCHS, input_data, load_data, run_child
from .kernel_cases import KERNELS, kernel_case
from .throughput import build_parser, epochwise_ratio, late_over_early, main, measure_training
from .torch_yardstick import TorchBackend
from .yardsticks import GemmFloor, flops_per_sample

__all__ = [
    "BATCH_SIZES", "INPUTS", "KERNELS", "LAYER_SIZES", "LR", "WARMUP_EPOCHS", "GemmFloor", "TorchBackend",
    "blas_info", "build_parser", "compile_seconds_in_child", "epochwise_ratio", "flops_per_sample", "input_data",
    "kernel_case", "late_over_early", "load_data", "main", "measure_training", "run_child",
]
