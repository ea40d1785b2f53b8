"""torch.nn as the reference for the raw ops: build a torch.nn layer or cell
(on any device), hand its weights to an rnnkit op, and compare values and
every gradient."""
import torch

from rnnkit.cells import KINDS

MODES = list(KINDS)


def torch_layer(mode, input_size, hidden_size, bias=True, proj_size=0, bidirectional=False,
                dtype=torch.float64, device=None):
    kind = KINDS[mode]
    kwargs = dict(bias=bias, bidirectional=bidirectional, dtype=dtype, device=device,
                  **kind.torch_layer_kwargs())
    if proj_size:
        kwargs["proj_size"] = proj_size
    return kind.torch_layer(input_size, hidden_size, **kwargs)


def torch_cell(mode, input_size, hidden_size, bias=True, dtype=torch.float64, device=None):
    kind = KINDS[mode]
    return kind.torch_cell(input_size, hidden_size, bias, dtype=dtype, device=device,
                           **kind.torch_layer_kwargs())


def layer_weights(module, suffix="_l0"):
    """(w_ih, w_hh, b_ih, b_hh, w_hr) of one layer/direction of a torch.nn module."""
    get = lambda name: getattr(module, name + suffix, None)  # noqa: E731
    return get("weight_ih"), get("weight_hh"), get("bias_ih"), get("bias_hh"), get("weight_hr")


def assert_close(actual, expected, dtype, what):
    tol = {torch.float64: 1e-9, torch.float32: 1e-5}[dtype]
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    if actual.numel() == 0:
        return
    err = (actual - expected).abs().max().item()
    assert err <= tol * max(1.0, expected.abs().max().item()), f"{what}: max error {err:.3e}"


def module_pair(name, dtype=torch.float64, **kwargs):
    """A torch.nn module and its rnnkit drop-in holding the same weights; name is
    an engine mode ("LSTM", "RNN_RELU", ...) or a cell class ("GRUCell", ...)."""
    import rnnkit
    from rnnkit import cells

    if name in cells.KINDS:
        kind = cells.kind(name)
        torch_class, kwargs = kind.torch_layer, {**kind.torch_layer_kwargs(), **kwargs}
    else:
        torch_class = getattr(torch.nn, name)
    ref = torch_class(dtype=dtype, **kwargs)
    mine = getattr(rnnkit, torch_class.__name__)(dtype=dtype, **kwargs)
    mine.load_state_dict(ref.state_dict(), strict=True)
    return ref, mine
