"""The seed's step 4, reserving a stage's weights in persisting L2: a no-op said in the report
on CPU; on a CUDA GPU (skipped here without one) the weights packed, reserved, unchanged."""

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from layerfit.runtime.l2_cache import _check, _cudart, reserve_weights  # noqa: E402


def test_cpu_reserves_nothing_and_says_so():
    module = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 4))
    report = reserve_weights(module, torch.device("cpu"))
    assert report["reserved_bytes"] == 0 and report["weight_bytes"] == (8 * 8 + 8 + 8 * 4 + 4) * 4
    assert report["note"] == "cpu: no L2 persisting cache to reserve; nothing reserved"


@pytest.mark.skipif(torch.cuda.is_available() or _cudart() is None,
                    reason="needs a CUDA runtime library on a machine without a usable GPU")
def test_a_cuda_call_that_fails_names_its_error():
    # The same ctypes calls the reservation makes, against the real libcudart: without a
    # driver or a GPU they return an error code, which the message names.
    import ctypes

    cudart = _cudart()
    value = ctypes.c_int(0)
    code = cudart.cudaDeviceGetAttribute(ctypes.byref(value), 108, 0)
    assert code != 0
    with pytest.raises(RuntimeError, match=r"^cudaDeviceGetAttribute\(MaxPersistingL2CacheSize\) failed: "
                                           r"cudaError\w+ \(\d+\)$"):
        _check(cudart, code, "cudaDeviceGetAttribute(MaxPersistingL2CacheSize)")
    assert _check(cudart, 0, "any call") is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_packs_and_reserves_the_weights():
    device = torch.device("cuda", 0)
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(256, 256), nn.GELU(), nn.Linear(256, 64)).to(device)
    x = torch.randn(16, 256, device=device)
    before = module(x)
    report = reserve_weights(module, device)
    after = module(x)
    assert torch.equal(before, after)  # the packed views hold the same values
    if torch.cuda.get_device_capability(device)[0] >= 8:
        assert report["reserved_bytes"] >= report["weight_bytes"] > 0 and report["window_bytes"] > 0, report
        flat = module._l2_buffer
        assert all(flat.data_ptr() <= p.data_ptr() < flat.data_ptr() + flat.numel() for p in module.parameters())
    else:
        assert report["reserved_bytes"] == 0 and "before Ampere" in report["note"]
