"""Fused Triton ops, one per module: kernel(s), a launcher (check → allocate → launch) and the
single PyTorch reference that tests, benchmarks and the CPU fallback share.

Importing this package imports Triton: set ``TRITON_INTERPRET=1`` before that to run the kernels
on the CPU (slowly, for testing).
"""
