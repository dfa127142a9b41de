import pytest
import torch
from torch import nn

from fwp.dual import RecordedLinear, dual_output, train_recording
from fwp.errors import UserError

TOL = {"atol": 1e-10, "rtol": 1e-10}


def minibatches(steps, batch, d_in, d_out):
    def randn(*shape):
        return torch.randn(*shape, dtype=torch.float64)

    return [(randn(batch, d_in), randn(batch, d_out)) for _ in range(steps)]


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("loss_fn", [nn.functional.mse_loss, nn.functional.cross_entropy])
def test_trained_layer_is_its_initial_output_plus_attention_over_patterns(bias, loss_fn):
    d_in, d_out = 6, 4
    layer = RecordedLinear(d_in, d_out, bias=bias, dtype=torch.float64)
    before = nn.Linear(d_in, d_out, bias=bias, dtype=torch.float64)
    before.load_state_dict(layer.state_dict())
    batches = minibatches(steps=5, batch=3, d_in=d_in, d_out=d_out)
    if loss_fn is nn.functional.cross_entropy:
        batches = [(x, torch.randint(d_out, (len(x),))) for x, _ in batches]
    record = train_recording(layer, batches, loss_fn, lr=0.3)
    assert record.keys.shape == (15, d_in) and record.values.shape == (15, d_out)
    assert record.steps.tolist() == [s for s in range(5) for _ in range(3)]
    torch.testing.assert_close(record.weight0, before.weight.detach(), **TOL)

    x_test = torch.randn(2, 7, d_in, dtype=torch.float64)
    dual = dual_output(record, x_test)
    assert dual.contributions.shape == (2, 7, 15, d_out)
    with torch.no_grad():
        torch.testing.assert_close(dual.initial, before(x_test), **TOL)
        torch.testing.assert_close(dual.total(), layer(x_test), **TOL)
    assert not torch.allclose(layer.weight, before.weight)


def test_layer_inside_a_network_records_the_error_reaching_it():
    first = RecordedLinear(5, 3, dtype=torch.float64)
    head = nn.Sequential(nn.Tanh(), nn.Linear(3, 2, dtype=torch.float64))
    head_opt = torch.optim.SGD(head.parameters(), lr=0.1)
    for x, target in minibatches(steps=4, batch=6, d_in=5, d_out=2):
        # the layer sees one batch in two halves: both halves' patterns are recorded
        out = torch.cat([head(first(x[:3])), head(first(x[3:]))])
        head_opt.zero_grad()
        first.zero_grad()
        nn.functional.mse_loss(out, target).backward()
        first.sgd_step(0.5)
        head_opt.step()
    record = first.record()
    assert record.keys.shape == (24, 5)
    x_test = torch.randn(4, 5, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(dual_output(record, x_test).total(), first(x_test), **TOL)


def test_no_steps_means_no_patterns():
    layer = RecordedLinear(3, 2, dtype=torch.float64)
    x = torch.randn(4, 3, dtype=torch.float64)
    dual = dual_output(layer.record(), x)
    assert dual.scores.shape == (4, 0)
    with torch.no_grad():
        torch.testing.assert_close(dual.total(), layer(x), **TOL)


def test_misuse_is_reported():
    layer = RecordedLinear(3, 2, dtype=torch.float64)
    with pytest.raises(UserError, match="backward"):
        layer.sgd_step(0.1)
    x = torch.randn(4, 3, dtype=torch.float64)
    (layer(x).sum() + layer.weight.square().sum()).backward()
    with pytest.raises(UserError, match="weight decay"):
        layer.sgd_step(0.1)
    with pytest.raises(UserError, match=r"\[\.\.\., 3\]"):
        dual_output(layer.record(), torch.randn(2, 4))
    with pytest.raises(UserError, match="RecordedLinear"):
        train_recording(nn.Linear(3, 2), [], nn.functional.mse_loss, 0.1)
