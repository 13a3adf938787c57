"""What the kernels and backends run on: the JIT cache, atomic file writes, CPU count and load, BLAS
threads, and the workers' barrier. Imports nothing of fastmlp above `inputs`.

    jit            cached_njit: Numba's njit with a cache that follows every compiled source file
    aligned        arrays whose data starts on a cache line, on pages of their own (the buffers the SIMD
                   kernels read and the workers write)
    cpu_caches     the L2 cache's size, which some of the kernels' blocking follows
    atomic         atomic_write: a file written under a temporary name, renamed when complete
    blas_threads   usable CPUs, BLAS thread count and limits
    thread_policy  other processes' load, free cores, the numpy backend's BLAS thread policy
    barrier        the spin-then-yield barrier the numba backend's workers meet at
    cycles         the CPU's cycle counter, read from nopython code (the step timeline's stamps)
"""
