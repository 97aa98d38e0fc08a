"""Fixtures of the vm tests."""

import pytest

from tests.vm.cuda_host import HostKernels, compile_host_kernels


@pytest.fixture(scope="session")
def host_kernels(tmp_path_factory: pytest.TempPathFactory) -> HostKernels:
    """The kernels' CUDA source compiled for the host (skipped without a C++ compiler)."""
    kernels = compile_host_kernels(tmp_path_factory.mktemp("cuda_host"))
    if kernels is None:
        pytest.skip("no host C++ compiler")
    return kernels
