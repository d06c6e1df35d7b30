import pytest
import torch

from groundtruth.devices import resolve_device


def test_auto_is_cuda_exactly_when_torch_sees_one():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device(None).type == expected


def test_cpu_is_cpu():
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("name", ["gpu", "cuda:x", "tpu"])
def test_malformed_names_are_refused_by_name(name):
    with pytest.raises(ValueError, match=repr(name)):
        resolve_device(name)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_a_gpu_is_refused():
    with pytest.raises(ValueError, match="no CUDA device"):
        resolve_device("cuda")
