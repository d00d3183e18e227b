"""models/build.MaxPool2d: the gradient-free 2 x 2 path equals torch's max pooling, bit for bit."""

import pytest
import torch
import torch.nn.functional as F

from cnnlab.models.build import MaxPool2d


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(3, 5, 8, 6), (2, 1, 4, 4), (1, 7, 2, 2)])
def test_inference_path_equals_torch(dtype, shape):
    torch.manual_seed(0)
    x = torch.randn(shape).to(dtype).contiguous(memory_format=torch.channels_last)
    x[0, 0, 0, 1] = float("nan")  # a NaN wins its window, as in torch's op
    x[-1, -1, 2:4, 2:4] = 1.5  # ties
    pool = MaxPool2d(2, 2)
    with torch.inference_mode():
        fast = pool(x)
        assert fast.shape == (shape[0], shape[1], shape[2] // 2, shape[3] // 2)
        assert torch.equal(fast.nan_to_num(-9.0), F.max_pool2d(x, 2).nan_to_num(-9.0))
        assert fast.isnan().sum() == 1


def test_other_cases_take_torchs_op_and_agree():
    torch.manual_seed(1)
    odd = torch.randn(2, 3, 7, 6).contiguous(memory_format=torch.channels_last)
    nchw = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        for x in (odd, nchw):
            assert torch.equal(MaxPool2d(2, 2)(x), F.max_pool2d(x, 2))
        x = torch.randn(2, 3, 9, 9).contiguous(memory_format=torch.channels_last)
        assert torch.equal(MaxPool2d(3, 2)(x), F.max_pool2d(x, 3, 2))
    # training: torch's op and its gradient (the whole window's gradient goes to one maximum)
    x = torch.randn(1, 2, 4, 4).contiguous(memory_format=torch.channels_last).requires_grad_()
    MaxPool2d(2, 2)(x).sum().backward()
    assert x.grad.sum() == 8 and set(x.grad.unique().tolist()) == {0.0, 1.0}
