"""Each kernel of fastmlp.kernels against its NumPy counterpart, on the default net's shapes."""

from fastmlp.bench import BATCH_SIZES, KERNELS, kernel_case


class Kernels:
    """One call of a kernel (`time_fused`) and of what the reference backend writes instead (`time_numpy`)."""

    params = [list(KERNELS), list(BATCH_SIZES)]
    param_names = ["kernel", "batch_size"]

    def setup(self, kernel, batch_size):
        self.case = kernel_case(kernel, batch_size)
        self.case.fused()  # compiles (or loads from Numba's cache) outside the timing

    def time_fused(self, kernel, batch_size):
        self.case.fused()

    def time_numpy(self, kernel, batch_size):
        self.case.numpy()
