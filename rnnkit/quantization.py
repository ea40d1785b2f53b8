"""torch.ao dynamic quantization of rnnkit's modules, as of torch.nn's.

quantize_dynamic(model, {nn.LSTM, nn.Linear}, dtype=torch.qint8) — PyTorch's own
recipe — looks modules up by their exact class twice: for the qconfig
(propagate_qconfig_) and for the quantized class (the default dynamic mapping,
whose from_float also wants the exact torch.nn class). So rnnkit registers:
  * in the default dynamic mapping, each rnnkit class with a converter that hands
    torch.ao's from_float the torch.nn twin (same parameters): the result is
    torch's own dynamic-quantized module;
  * around propagate_qconfig_, a qconfig given for a torch.nn class applies to its
    rnnkit twin too (unless the twin has its own entry).
"""
import functools
import importlib

import torch.ao.quantization as tq
from torch.ao.quantization import quantization_mappings

from .convert import RNNKIT_TO_TORCH, TORCH_TO_RNNKIT, torch_twin


def _via_torch_twin(quantized: type) -> type:
    """quantized (a torch.ao dynamic-quantized class) with a from_float that takes
    rnnkit's module and builds a plain `quantized` from its torch.nn twin."""

    def from_float(cls, mod, use_precomputed_fake_quant=False):
        return quantized.from_float(torch_twin(mod),
                                    use_precomputed_fake_quant=use_precomputed_fake_quant)

    return type(f"{quantized.__name__}FromRnnkit", (quantized,),
                {"from_float": classmethod(from_float), "__module__": __name__})


def _with_rnnkit_classes(qconfig_dict):
    """qconfig_dict (not changed) plus, for every torch.nn class in it, the same
    qconfig for its rnnkit twin."""
    if not isinstance(qconfig_dict, dict):
        return qconfig_dict
    extra = {TORCH_TO_RNNKIT[k]: v for k, v in qconfig_dict.items()
             if isinstance(k, type) and k in TORCH_TO_RNNKIT
             and TORCH_TO_RNNKIT[k] not in qconfig_dict}
    return {**qconfig_dict, **extra} if extra else qconfig_dict


def _register() -> None:
    mapping = quantization_mappings.DEFAULT_DYNAMIC_QUANT_MODULE_MAPPINGS
    for mine, theirs in RNNKIT_TO_TORCH.items():
        if theirs in mapping and mine not in mapping:
            mapping[mine] = _via_torch_twin(mapping[theirs])

    # The module, not the function torch.ao.quantization.quantize that shadows its name.
    tq_quantize = importlib.import_module("torch.ao.quantization.quantize")
    propagate = tq_quantize.propagate_qconfig_
    if getattr(propagate, "_rnnkit", False):
        return

    @functools.wraps(propagate)
    def propagate_qconfig_(module, qconfig_dict=None, *args, **kwargs):
        return propagate(module, _with_rnnkit_classes(qconfig_dict), *args, **kwargs)

    propagate_qconfig_._rnnkit = True
    # quantize_dynamic and prepare call it through their module's global.
    tq_quantize.propagate_qconfig_ = propagate_qconfig_
    if getattr(tq, "propagate_qconfig_", None) is propagate:
        tq.propagate_qconfig_ = propagate_qconfig_


_register()
