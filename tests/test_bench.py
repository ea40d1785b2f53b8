"""The benchmark's own logic (rnnkit/bench/), on the CPU with tiny
configurations: the suites and shape specs, the cuDNN algorithm rules, the
correctness gate, the timing loop, the reports and the command line.

Most tests put torch.nn on both sides (the `impl` argument), so they test the
benchmark and not the engine; the last ones run the real rnnkit modules end to
end. The whole file takes a few seconds."""
import contextlib
import io
import json
import math
import os
import subprocess
import sys

import pytest
import torch

import rnnkit
from rnnkit.bench import cudnn, report, suite, timing
from rnnkit.bench import __main__ as cli
from rnnkit.bench.environment import environment
from rnnkit.bench.suite import Config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TORCH_IMPL = {name: getattr(torch.nn, name) for name in timing.CLASS_NAMES}
TINY = dict(batch=3, hidden=5, seq=4)


def tiny(cell="LSTM", mode="training", **kw):
    return Config(cell, mode, "fp32", **{**TINY, **kw})


def run_tiny(configs, impl=TORCH_IMPL, **kw):
    kw = {"budget": 0.01, "min_reps": 2, "max_reps": 5, "progress": False, **kw}
    return timing.run_suite(configs, "cpu", impl, **kw)


class PerturbedLSTM(torch.nn.LSTM):
    """Takes the reference weights, then nudges one of them: a broken side."""

    def load_state_dict(self, state_dict, strict=True, assign=False):
        result = super().load_state_dict(state_dict, strict, assign)
        with torch.no_grad():
            self.weight_hh_l0[0, 0] += 0.5
        return result


class PerturbedGRUCell(torch.nn.GRUCell):
    """A cell whose recurrent weight is off: only a non-zero state shows it."""

    def load_state_dict(self, state_dict, strict=True, assign=False):
        result = super().load_state_dict(state_dict, strict, assign)
        with torch.no_grad():
            self.weight_hh[0, 0] += 0.5
        return result


class RaisingGRU(torch.nn.GRU):
    def forward(self, *args, **kwargs):
        raise RuntimeError("engine exploded\nwith details on a second line")


# ---- the suites ----------------------------------------------------------------

def test_sweep_on_cuda_is_the_design_grid():
    grid = suite.sweep("cuda")
    assert len(grid) == len(set(grid))
    single = [c for c in grid if c.layers == 1 and not c.bidirectional]
    assert len(single) == 3 * 2 * 4 * 4 * 2 * 3  # cells, modes, B, H, T, dtypes
    assert {c.batch for c in single} == {1, 8, 64, 256}
    assert {c.hidden for c in single} == {128, 256, 512, 1024}
    assert {c.seq for c in single} == {100, 1000}
    assert {c.dtype for c in single} == {"fp32", "bf16", "fp16"}
    assert {c.cell for c in grid} == {"LSTM", "GRU", "RNN_TANH"}
    assert {(c.layers, c.bidirectional) for c in grid} == {(1, False), (2, False), (1, True), (2, True)}
    assert all(c.input_size == c.hidden and c.call == "layer" for c in grid)
    fast = [c for c in grid if "fastrnns" in c.tags]
    assert {(c.cell, c.mode, c.dtype) for c in fast} == {(c, m, d) for c in suite.SWEEP_CELLS
                                                          for m in suite.MODES for d in ("fp32", "bf16", "fp16")}
    assert all((c.seq, c.batch, c.hidden, c.layers) == (100, 64, 512, 1) for c in fast)


def test_cpu_suites_stay_small():
    full = suite.sweep("cpu")
    assert all(c.batch <= 64 and c.hidden <= 512 and c.seq == 100 and c.dtype == "fp32" for c in full)
    assert any(c.layers == 2 for c in full) and any(c.bidirectional for c in full)
    quick = suite.quick_suite("cpu")
    assert {c.dtype for c in quick} == {"fp32"}
    assert len(quick) <= 12
    assert {(c.cell, c.mode) for c in quick if "fastrnns" in c.tags} == {
        (c, m) for c in suite.SWEEP_CELLS for m in suite.MODES}
    assert "bf16" in {c.dtype for c in suite.quick_suite("cuda")}


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_real_suite_has_the_shapes_of_real_programs(device):
    real = suite.real_suite(device)
    assert len(real) == len(set(real)) and all("real" in c.tags for c in real)
    assert {c.dtype for c in real} == ({"fp32", "fp16"} if device == "cuda" else {"fp32"})
    for d in {c.dtype for c in real}:
        for m in suite.MODES:
            here = [c for c in real if c.dtype == d and c.mode == m]
            # one cell call and one T=1 layer call per cell kind, B in {1, 16}, H in {64, 256, 512}
            for call in ("cell", "layer"):
                step = {(c.cell, c.batch, c.hidden) for c in here if c.call == call and c.seq == 1
                        and c.hidden == c.input_size}
                assert step >= {(k, b, h) for k in suite.SWEEP_CELLS for b in (1, 16) for h in (64, 256, 512)}
            assert {c.cell for c in here if (c.layers, c.input_size, c.hidden, c.batch, c.seq) == (2, 200, 200, 20, 35)
                    } == {"LSTM", "GRU"}
            assert any(c.cell == "LSTM" and c.bidirectional and c.packed and (c.input_size, c.hidden) == (512, 256)
                       for c in here)
            assert any(c.cell == "LSTM" and c.call == "cell" and c.hidden == 1024 for c in here)
            assert any(c.cell == "GRU" and c.call == "steps" and c.batch_first and c.hidden == 512 for c in here)
            assert sum(c.input_size != c.hidden for c in here) >= 3
    assert set(real) <= set(suite.full_suite(device))
    assert set(suite.sweep(device)) <= set(suite.full_suite(device))


def test_every_suite_row_reads_back_from_its_label():
    for device in ("cpu", "cuda"):
        for make in suite.SUITES.values():
            for cfg in make(device):
                again = Config(**suite.parse_shape(cfg.label))
                assert again == cfg, cfg.label


def test_shape_specs():
    got = suite.parse_shape("LSTM:T=35,B=20,I=200,H=200,layers=2,bidirectional,proj=50,batch_first,packed")
    assert got == dict(cell="LSTM", seq=35, batch=20, input_size=200, hidden=200, layers=2, bidirectional=True,
                       proj=50, batch_first=True, packed=True)
    assert suite.parse_shape("rnn:b=1,h=7,t=3") == dict(cell="RNN_TANH", batch=1, hidden=7, seq=3)
    assert suite.parse_shape("gru:B=2,H=8,cell") == dict(cell="GRU", batch=2, hidden=8, call="cell", seq=1)
    assert suite.parse_shape("rnn_relu:T=3,B=1,H=4,steps,mode=training,dtype=fp64")["dtype"] == "fp64"
    bad = {
        "lstm": "expected KIND:",
        "transformer:T=1,B=1,H=1": "unknown cell",
        "lstm:T=1,H=4": "B missing",
        "lstm:T=1,B=x,H=4": "whole number",
        "lstm:T=1,B=1,H=4,width=3": "unknown key",
        "lstm:T=1,B=1,H=4,sideways": "unknown flag",
        "gru:T=3,B=1,H=4,proj=2": "proj is for LSTM",
        "lstm:T=3,B=1,H=4,cell": "a cell call is one step",
        "lstm:T=3,B=1,H=4,steps,packed": "step-by-step",
        "lstm:T=0,B=1,H=4": "at least 1",
        "lstm:T=3,B=1,H=4,dtype=fp8": "unknown value",
    }
    for text, message in bad.items():
        with pytest.raises(Exception, match=message):
            suite.parse_shape(text)


def test_shapes_run_in_the_modes_and_dtypes_asked():
    shapes = [suite.parse_shape("lstm:T=3,B=2,I=3,H=5"), suite.parse_shape("gru:T=2,B=1,H=4,mode=training")]
    made = suite.shape_configs(shapes, ["inference", "training"], ["fp32", "fp64"])
    assert [(c.cell, c.mode, c.dtype) for c in made] == [
        ("LSTM", "inference", "fp32"), ("LSTM", "inference", "fp64"), ("LSTM", "training", "fp32"),
        ("LSTM", "training", "fp64"), ("GRU", "training", "fp32"), ("GRU", "training", "fp64")]
    assert made[0].input_size == 3 and made[0].hidden == 5


def test_filters_slice_the_grid():
    grid = suite.sweep("cuda")
    kept = suite.apply_filters(grid, cell=["LSTM"], mode=["training"], batch=[1, 64], dtype=None)
    assert kept and all(c.cell == "LSTM" and c.mode == "training" and c.batch in (1, 64) for c in kept)
    assert {c.batch for c in kept} == {1, 64}
    assert suite.apply_filters(grid, bidirectional=[True], layers=[2]) == [
        c for c in grid if c.bidirectional and c.layers == 2]
    assert suite.apply_filters(grid) == grid


def test_cli_filters_parse_lists_and_names():
    args = cli.build_parser().parse_args(
        ["--cell", "lstm,rnn", "--cell", "RNN_RELU", "--batch", "1,64", "--mode", "training",
         "--bidirectional", "--dtype", "bf16"])
    assert args.cell == ["LSTM", "RNN_TANH", "RNN_RELU"]
    assert args.batch == [1, 64] and args.mode == ["training"] and args.bidirectional == [True]
    assert cli.build_parser().parse_args(["--bidirectional", "no"]).bidirectional == [False]
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["--cell", "transformer"])
    args = cli.build_parser().parse_args(["--full", "--cell", "gru", "--hidden", "128", "--batch", "8"])
    assert args.suite == "full"
    configs = cli.select_configs(args, "cpu")
    assert configs and all((c.cell, c.hidden, c.batch) == ("GRU", 128, 8) for c in configs)


def test_list_prints_the_selection_without_running(capsys):
    assert cli.main(["--device", "cpu", "--full", "--list", "--layers", "2", "--bidirectional"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert listed == [c.label for c in suite.full_suite("cpu") if c.layers == 2 and c.bidirectional]
    assert len(listed) == 6
    assert cli.main(["--device", "cpu", "--suite", "real", "--list"]) == 0
    assert capsys.readouterr().out.splitlines() == [c.label for c in suite.real_suite("cpu")]


def test_empty_selection_says_what_exists():
    args = cli.build_parser().parse_args(["--batch", "256"])
    with pytest.raises(SystemExit, match="batch: 1, 64.*try --full"):
        cli.select_configs(args, "cpu")


def test_shape_and_suite_filters_do_not_mix():
    args = cli.build_parser().parse_args(["--shape", "lstm:T=3,B=1,H=4", "--batch", "2"])
    with pytest.raises(SystemExit, match="--batch filter the built-in suites"):
        cli.select_configs(args, "cpu")
    args = cli.build_parser().parse_args(["--shape", "lstm:T=3,B=1,H=4", "--dtype", "fp64", "--mode", "training"])
    assert [(c.mode, c.dtype) for c in cli.select_configs(args, "cpu")] == [("training", "fp64")]
    with pytest.raises(SystemExit):  # a bad spec fails while the arguments are read
        cli.build_parser().parse_args(["--shape", "lstm:T=3,H=4"])


def test_gpu_full_suite_fits_one_device_call():
    n = len(suite.full_suite("cuda"))
    budget = cli.default_budget("cuda", "full", n)
    assert cli.MIN_BUDGET_S < budget <= cli.BUDGET["cuda"]
    planned = cli.RESERVE_S + n * (cli.FIXED_S + budget * (1 + timing.WARMUP_SHARE))
    assert planned == pytest.approx(cli.SWEEP_LIMIT_S)
    assert cli.default_budget("cuda", "quick", 18) == cli.BUDGET["cuda"]
    assert cli.default_budget("cpu", "full", n) == cli.BUDGET["cpu"]


# ---- the cuDNN algorithm rules ------------------------------------------------------

H100 = dict(capability=(9, 0), sm_count=132)


def algo(cell="LSTM", dtype="fp16", batch=64, hidden=512, input_size=512, layers=1, bidirectional=False,
         packed=False, seq=100, proj=0, forward=True, capability=(9, 0), sm_count=132):
    return cudnn.cudnn_rnn_algorithm(cell, dtype, batch, hidden, input_size, layers, bidirectional, packed,
                                     capability, sm_count, seq, proj, forward)


def test_cudnn_small_h_limits():
    for cell, fwd, bwd in (("LSTM", 192, 128), ("GRU", 192, 128), ("RNN_TANH", 384, 256), ("RNN_RELU", 384, 256)):
        for dtype in ("fp32", "bf16", "fp16"):
            assert algo(cell, dtype, hidden=fwd) == cudnn.PERSIST_STATIC_SMALL_H
            assert algo(cell, dtype, hidden=bwd, forward=False) == cudnn.PERSIST_STATIC_SMALL_H
            assert algo(cell, dtype, hidden=bwd + 1, forward=False) != cudnn.PERSIST_STATIC_SMALL_H
        assert algo(cell, "fp32", hidden=fwd + 1) == cudnn.STANDARD
        assert algo(cell, "fp64", hidden=17) == cudnn.STANDARD  # never for double
        assert algo(cell, "fp32", hidden=17, capability=(5, 2)) == cudnn.STANDARD
    # small-H ignores layers, directions and batch
    assert algo(hidden=64, layers=3, bidirectional=True, batch=1000, dtype="fp32") == cudnn.PERSIST_STATIC_SMALL_H


def test_cudnn_never_persistent_for_packed_or_projected():
    for kw in (dict(packed=True), dict(proj=64)):
        assert algo(hidden=64, **kw) == cudnn.STANDARD
        assert algo(hidden=512, **kw) == cudnn.STANDARD


def test_cudnn_persist_static_shape_rules():
    assert algo() == cudnn.PERSIST_STATIC  # fp16 LSTM, 1 layer, H = I = 512, B = 64 on an H100
    assert algo(dtype="fp32") == algo(dtype="bf16") == cudnn.STANDARD  # half only
    for kw in (dict(layers=2), dict(bidirectional=True), dict(hidden=1152, input_size=1152),
               dict(hidden=320), dict(input_size=200)):
        assert algo(**kw) == cudnn.STANDARD, kw
    assert algo(hidden=1024, input_size=128) == cudnn.PERSIST_STATIC


def test_cudnn_persist_static_device_rules():
    # sm_80 and up with >= 98 SMs: B % 8 == 0 and B <= 128; never GRU; RNN also B < 96 or H < 896
    assert algo(batch=8) == algo(batch=128) == cudnn.PERSIST_STATIC
    assert algo(batch=12) == algo(batch=136) == cudnn.STANDARD
    assert algo("GRU") == cudnn.STANDARD
    assert algo("RNN_TANH", batch=96, hidden=768, input_size=768) == cudnn.PERSIST_STATIC
    assert algo("RNN_RELU", batch=96, hidden=896, input_size=896) == cudnn.STANDARD
    assert algo("RNN_RELU", batch=88, hidden=1024, input_size=1024) == cudnn.PERSIST_STATIC
    assert algo(capability=(8, 0), sm_count=108) == cudnn.PERSIST_STATIC  # A100
    assert algo(capability=(8, 0), sm_count=56) == cudnn.STANDARD          # fewer SMs (A30)
    assert algo(capability=(8, 6), sm_count=142) == cudnn.STANDARD         # sm_86 (A40)
    assert algo(capability=(8, 9), sm_count=142) == cudnn.PERSIST_STATIC   # sm_89
    # sm_70: B == 8 or a multiple of 16 but 80 and 112, with T long enough for B
    v100 = dict(capability=(7, 0), sm_count=80)
    assert algo(batch=8, seq=10, **v100) == algo(batch=128, seq=40, **v100) == cudnn.PERSIST_STATIC
    assert algo(batch=128, seq=39, **v100) == cudnn.STANDARD
    assert algo(batch=96, seq=20, **v100) == cudnn.PERSIST_STATIC
    assert algo(batch=32, seq=10, **v100) == cudnn.PERSIST_STATIC
    assert algo(batch=48, seq=10, **v100) == cudnn.STANDARD
    for batch in (80, 112, 24):
        assert algo(batch=batch, seq=100, **v100) == cudnn.STANDARD
    assert algo("GRU", batch=64, **v100) == cudnn.PERSIST_STATIC  # the GRU exclusion is sm_80+ only
    assert algo(capability=(7, 5), sm_count=72) == cudnn.STANDARD  # Turing
    assert algo(capability=(6, 1), sm_count=80) == cudnn.STANDARD


def test_cudnn_for_configs():
    caps = ((9, 0), 132)
    assert cudnn.for_config(tiny("LSTM", call="cell", seq=1), *caps) == (None, None)
    train = Config("LSTM", "training", "fp32", 16, 160, 100)
    assert cudnn.for_config(train, *caps) == (cudnn.PERSIST_STATIC_SMALL_H, cudnn.STANDARD)
    infer = Config("LSTM", "inference", "fp16", 64, 512, 100)
    assert cudnn.for_config(infer, *caps) == (cudnn.PERSIST_STATIC, None)
    # a step loop calls the layer with T = 1: on sm_70 that is too short for the persistent kernel
    loop = Config("LSTM", "inference", "fp16", 64, 512, 100, call="steps")
    assert cudnn.for_config(loop, (7, 0), 80) == (cudnn.STANDARD, None)
    assert cudnn.for_config(Config("LSTM", "inference", "fp16", 64, 512, 100), (7, 0), 80)[0] == cudnn.PERSIST_STATIC


# ---- the correctness gate and the timing ------------------------------------

@pytest.mark.parametrize("cell", ["LSTM", "GRU", "RNN_TANH", "RNN_RELU"])
@pytest.mark.parametrize("mode", ["inference", "training"])
def test_agreeing_sides_pass_and_are_timed(cell, mode):
    [row] = run_tiny([tiny(cell, mode, layers=2, bidirectional=True)])
    assert row["status"] == "ok", row["message"]
    expected = {"output"} | ({"input_grad", "weight_grad"} if mode == "training" else set())
    assert set(row["errors"]) == expected
    assert all(e["max_abs"] == 0 and e["max_rel"] == 0 for e in row["errors"].values())
    for side in ("torch", "rnnkit"):
        assert 2 <= row[f"{side}_reps"] <= 5
        assert row[f"{side}_ms"] > 0
        assert math.isclose(row[f"{side}_us_per_step"], row[f"{side}_ms"] * 1e3 / TINY["seq"])
        assert row[f"{side}_peak_mib"] is None  # no CPU allocator statistics: not faked
    assert math.isclose(row["speedup"], row["torch_ms"] / row["rnnkit_ms"])
    assert row["cudnn_algo"] is None and row["cudnn_algo_backward"] is None  # CPU rows


SHAPES = [
    dict(call="cell", seq=1),
    dict(call="steps", batch_first=True),
    dict(call="steps", layers=2),
    dict(packed=True, bidirectional=True, batch=5),
    dict(packed=True, batch_first=True, layers=2),
    dict(input_size=3, hidden=7),
    dict(batch_first=True, input_size=9),
]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items()))
@pytest.mark.parametrize("cell", ["LSTM", "GRU", "RNN_RELU"])
def test_every_way_of_calling_passes_the_gate(cell, shape):
    rows = run_tiny([tiny(cell, m, **shape) for m in suite.MODES])
    for row in rows:
        assert row["status"] == "ok", (row["message"], row["errors"])
        assert row["input_size"] == shape.get("input_size", shape.get("hidden", TINY["hidden"]))


def test_projected_lstm_passes_the_gate():
    rows = run_tiny([tiny("LSTM", m, hidden=6, proj=3, layers=2, bidirectional=True) for m in suite.MODES])
    assert [r["status"] for r in rows] == ["ok", "ok"], [r["message"] for r in rows]


def test_inputs_match_each_way_of_calling():
    packed = tiny("LSTM", packed=True, batch=6, seq=5, bidirectional=True, proj=2)
    inp = timing.make_inputs(packed, "cpu")
    lengths = inp.packed.batch_sizes.sum().item()
    assert inp.packed.batch_sizes[0] == 6 and len(inp.packed.batch_sizes) == 5  # the longest is T
    assert inp.grad_out.shape == (lengths, 2 * 2)  # packed rows x directions * proj
    assert [s.shape for s in inp.states] == [(2, 6, 2), (2, 6, 5)]
    cell = timing.make_inputs(tiny("GRU", call="cell", seq=1), "cpu")
    assert cell.x.shape == (3, 5) and [s.shape for s in cell.states] == [(3, 5)]
    bf = timing.make_inputs(tiny("RNN_TANH", batch_first=True, input_size=2), "cpu")
    assert bf.x.shape == (3, 4, 2) and bf.grad_out.shape == (3, 4, 5)
    assert all(s.abs().sum() > 0 for s in inp.states + cell.states)  # states are not zero


def test_gate_fails_a_perturbed_side_and_does_not_time_it():
    impl = {**TORCH_IMPL, "LSTM": PerturbedLSTM}
    rows = run_tiny([tiny("LSTM", "training"), tiny("LSTM", "inference")], impl=impl)
    for row in rows:
        assert row["status"] == "FAILED"
        assert row["speedup"] is None and row["torch_ms"] is None and row["rnnkit_reps"] == 0
        assert row["errors"]["output"]["max_rel"] > row["tolerance"]
        assert "max rel error above" in row["message"]
    assert rows[0]["errors"]["weight_grad"]["param"].startswith("weight_")
    assert rows[0]["errors"]["input_grad"]["max_rel"] > 0


def test_gate_sees_the_recurrent_weight_of_a_single_step():
    # one step from a zero state would not use weight_hh: the inputs give a real state
    impl = {**TORCH_IMPL, "GRUCell": PerturbedGRUCell, "LSTM": PerturbedLSTM}
    rows = run_tiny([tiny("GRU", "inference", call="cell", seq=1), tiny("LSTM", "inference", seq=1)], impl=impl)
    assert [r["status"] for r in rows] == ["FAILED", "FAILED"]


def test_check_correctness_reports_each_tensor():
    cfg = tiny("GRU", "training")
    ref, ours = timing.make_modules(cfg, "cpu", TORCH_IMPL)
    inputs = timing.make_inputs(cfg, "cpu")
    ok, errs, strategy = timing.check_correctness(cfg, ref, ours, inputs, tol=1e-4)
    assert ok and errs["weight_grad"]["max_rel"] == 0
    with torch.no_grad():
        ours.bias_hh_l0[-1] += 1.0  # only the last hidden unit's n gate bias
    ok, errs, _ = timing.check_correctness(cfg, ref, ours, inputs, tol=1e-4)
    assert not ok and errs["output"]["max_abs"] > 1e-3


def test_errors_measure():
    ref = torch.tensor([1.0, -2.0, 0.0])
    assert timing.errors(ref + torch.tensor([0.0, 0.1, 0.0]), ref) == pytest.approx({"max_abs": 0.1, "max_rel": 0.05})
    assert timing.errors(torch.zeros(2), torch.zeros(3))["max_rel"] == math.inf
    nan = timing.errors(torch.tensor([float("nan"), 0.0, 0.0]), ref)
    assert not nan["max_rel"] <= 1.0  # NaN must fail any tolerance


def test_an_exception_is_an_error_row_not_a_crash():
    rows = run_tiny([tiny("GRU", "inference"), tiny("LSTM", "inference")], impl={**TORCH_IMPL, "GRU": RaisingGRU})
    assert rows[0]["status"] == "ERROR" and rows[0]["message"] == "RuntimeError: engine exploded"
    assert rows[1]["status"] == "ok"


def test_same_weights_and_inputs_on_both_sides():
    cfg = tiny("RNN_RELU", "inference", layers=2)
    ref, ours = timing.make_modules(cfg, "cpu", TORCH_IMPL)
    for (n1, p1), (n2, p2) in zip(ref.named_parameters(), ours.named_parameters()):
        assert n1 == n2 and torch.equal(p1, p2)
    assert ref.nonlinearity == "relu"
    a, b = timing.make_inputs(cfg, "cpu"), timing.make_inputs(cfg, "cpu")
    assert torch.equal(a.x, b.x) and torch.equal(a.grad_out, b.grad_out)  # reproducible per configuration
    assert not torch.equal(a.x, timing.make_inputs(tiny("LSTM", "inference"), "cpu").x)


def test_time_pair_keeps_to_budget_and_bounds():
    calls = []
    steps = {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}
    times = timing.time_pair(steps, "cpu", budget=0.0, min_reps=3, max_reps=10)
    assert len(times["a"]) == len(times["b"]) == 3
    assert calls[:6] == ["a", "b", "b", "a", "a", "b"]  # alternating order
    times = timing.time_pair(steps, "cpu", budget=60.0, min_reps=1, max_reps=7)
    assert len(times["a"]) == 7


def test_spread_is_the_interquartile_range_over_the_median():
    assert timing.spread([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]) == pytest.approx((6.75 - 2.25) / 4.5)
    assert timing.spread([2.0, 2.0, 4.0]) == pytest.approx(1.0)


def test_tf32_setting_is_restored():
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    run_tiny([tiny("LSTM", "inference")], tf32=True)
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before


class CountingLSTM(torch.nn.LSTM):
    """Adds a strategy name to the running record, as the planner does per layer call."""
    record = None

    def forward(self, *args, **kwargs):
        if CountingLSTM.record is not None:
            CountingLSTM.record += ["fused"] * self.num_layers + ["steps"]
        return super().forward(*args, **kwargs)


@contextlib.contextmanager
def fake_record_strategies():
    CountingLSTM.record = []
    try:
        yield CountingLSTM.record
    finally:
        CountingLSTM.record = None


def test_strategy_names_come_from_the_planner_where_it_has_them(monkeypatch):
    cfg = tiny("LSTM", "training", layers=2)
    [row] = run_tiny([cfg], impl={**TORCH_IMPL, "LSTM": CountingLSTM})
    assert row["strategy"] == "-" or hasattr(rnnkit, "record_strategies")
    monkeypatch.setattr(rnnkit, "record_strategies", fake_record_strategies, raising=False)
    [row] = run_tiny([cfg], impl={**TORCH_IMPL, "LSTM": CountingLSTM})
    assert row["status"] == "ok" and row["strategy"] == "fused+steps"  # each name once, in order of first use
    assert "fused+steps" in report.format_table([row])


# ---- reports ---------------------------------------------------------------

@pytest.fixture(scope="module")
def mixed_rows():
    """An ok row per cell and mode at two sizes, a FAILED row and an ERROR row."""
    configs = [tiny(c, m, batch=b, hidden=h) for c in ("LSTM", "GRU") for m in suite.MODES
               for b, h in ((1, 4), (3, 8))]
    rows = run_tiny(configs)
    rows += run_tiny([tiny("LSTM", "training", batch=2)], impl={**TORCH_IMPL, "LSTM": PerturbedLSTM})
    rows += run_tiny([tiny("GRU", "inference", batch=2)], impl={**TORCH_IMPL, "GRU": RaisingGRU})
    return rows


@pytest.fixture(scope="module")
def meta():
    m = environment("cpu", tf32=False)
    m.update(suite="test", budget_s=0.01)
    return m


def test_json_has_the_schema_fields(tmp_path, mixed_rows, meta):
    path = tmp_path / "run.json"
    report.save_json(str(path), meta, mixed_rows)
    data = json.loads(path.read_text())  # strict JSON: no NaN/Infinity literals
    assert data["schema"] == report.SCHEMA
    for key in ("hostname", "cpu", "cpu_simd", "threads", "gpu", "torch", "cuda", "cudnn", "rnnkit_commit", "date",
                "tf32", "device", "rnnkit_built_against_torch"):
        assert key in data["meta"]
    assert data["meta"]["tf32"] is False and data["meta"]["threads"] == torch.get_num_threads()
    assert len(data["rows"]) == len(mixed_rows)
    for row in data["rows"]:
        for key in ("cell", "mode", "dtype", "batch", "hidden", "input_size", "seq", "layers", "bidirectional",
                    "proj", "batch_first", "packed", "call", "status", "errors", "tolerance", "torch_ms", "rnnkit_ms",
                    "torch_us_per_step", "rnnkit_us_per_step", "torch_peak_mib", "rnnkit_peak_mib", "speedup", "tags",
                    "strategy", "cudnn_algo", "cudnn_algo_backward"):
            assert key in row
    assert {r["status"] for r in data["rows"]} == {"ok", "FAILED", "ERROR"}


def test_files_of_the_previous_schema_still_render(tmp_path, meta, mixed_rows):
    old_row = {k: v for k, v in mixed_rows[0].items()
               if k not in ("proj", "batch_first", "packed", "call", "strategy", "cudnn_algo", "cudnn_algo_backward")}
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"schema": "rnnkit.bench/1", "meta": meta, "rows": [old_row]}))
    _, [row] = report.load_json(str(path))
    assert row["call"] == "layer" and row["strategy"] == "-" and row["proj"] == 0
    assert report.format_table([row]).count("\n") == 2


def test_non_finite_errors_survive_json(tmp_path, meta):
    row = timing.empty_row(tiny())
    row.update(status="FAILED", errors={"output": {"max_abs": math.inf, "max_rel": math.nan}})
    path = str(tmp_path / "x.json")
    report.save_json(path, meta, [row])
    _, [back] = report.load_json(path)
    assert back["errors"]["output"]["max_abs"] == math.inf and math.isnan(back["errors"]["output"]["max_rel"])


def test_table_summary_and_markdown(mixed_rows, meta):
    table = report.format_table(mixed_rows)
    lines = table.splitlines()
    assert len(lines) == 2 + len(mixed_rows)
    assert "speedup" in lines[0] and "strategy" in lines[0] and "cuDNN" not in lines[0]  # no GPU rows
    assert "FAILED" in table and "ERROR RuntimeError" in table

    summary = "\n".join(report.summary_lines(mixed_rows))
    assert "geometric-mean speedup" in summary and "5 worst configurations" in summary
    for cell in ("LSTM", "GRU"):
        for mode in suite.MODES:
            assert f"{cell:<9} {mode:<10}" in summary
    ok = [r for r in mixed_rows if r["status"] == "ok"]
    lstm_inf = [r["speedup"] for r in ok if (r["cell"], r["mode"]) == ("LSTM", "inference")]
    assert report.geomeans(mixed_rows)[("LSTM", "inference")] == (
        pytest.approx(math.sqrt(lstm_inf[0] * lstm_inf[1])), 2)
    worst = min(ok, key=lambda r: r["speedup"])
    assert report.describe(worst) in summary.split("worst configurations:")[1].splitlines()[1]

    md = report.to_markdown(meta, mixed_rows)
    table_lines = [ln for ln in md.splitlines() if ln.startswith("|")]
    assert len(table_lines) == 2 + len(mixed_rows)
    assert all(ln.count("|") == table_lines[0].count("|") for ln in table_lines)
    assert "speedup" in table_lines[0] and "TF32 off" in md and meta["cpu"] in md
    assert "| FAILED |" in md and "| ERROR |" in md


def test_gpu_rows_show_the_cudnn_algorithm(mixed_rows, meta):
    rows = [dict(r, cudnn_algo="PERSIST_STATIC_SMALL_H", cudnn_algo_backward="STANDARD") for r in mixed_rows[:2]]
    rows.append(dict(mixed_rows[2], cudnn_algo="PERSIST_STATIC", cudnn_algo_backward=None))
    table = report.format_table(rows)
    assert "cuDNN" in table.splitlines()[0]
    assert "SMALL_H/STANDARD" in table and "PERSIST_STATIC" in table
    assert "SMALL_H/STANDARD" in report.to_markdown(meta, rows)


def test_the_columns_are_explained():
    text = report.columns_help(timing.TOLERANCE)
    for words in ("out, dx, dW", "abs = max|rnnkit - torch.nn|", "rel = abs / max|torch.nn|", "fp32 1e-4",
                  "fp64 1e-9", "bf16 6e-2", "fp32 with TF32 1e-2", "speedup = torch.nn", "strategy", "cuDNN"):
        assert words in " ".join(text.split())
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        cli.main(["--help"])
    helptext = " ".join(out.getvalue().split())
    assert " ".join(text.split()) in helptext and "--shape" in helptext and "batch_first" in helptext


def test_plot_writes_a_png(tmp_path, mixed_rows, meta):
    pytest.importorskip("matplotlib")
    path = tmp_path / "speedup.png"
    report.plot(str(path), meta, mixed_rows)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_without_matplotlib_fails_before_running(tmp_path, monkeypatch):
    real_find_spec = cli.importlib.util.find_spec
    monkeypatch.setattr(cli.importlib.util, "find_spec",
                        lambda name, *a: None if name == "matplotlib" else real_find_spec(name, *a))
    monkeypatch.setattr(timing, "run_suite", lambda *a, **k: pytest.fail("the suite ran"))
    with pytest.raises(SystemExit, match="--plot needs matplotlib"):
        cli.main(["--device", "cpu", "--plot", str(tmp_path / "p.png")])
    with pytest.raises(SystemExit, match="folder .* does not exist"):
        cli.main(["--device", "cpu", "--json", str(tmp_path / "no" / "such" / "run.json")])


def test_from_json_round_trip(tmp_path, mixed_rows, meta, capsys):
    src, again, md = tmp_path / "run.json", tmp_path / "again.json", tmp_path / "run.md"
    report.save_json(str(src), meta, mixed_rows)
    args = ["--from-json", str(src), "--json", str(again), "--markdown", str(md)]
    if _has_matplotlib():
        args += ["--plot", str(tmp_path / "run.png")]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert report.machine_line(meta) + "\n\n" + report.format_table(mixed_rows) in out
    assert json.loads(again.read_text()) == json.loads(src.read_text())
    assert md.read_text() == report.to_markdown(meta, mixed_rows)
    with pytest.raises(SystemExit, match="not an rnnkit benchmark"):
        (tmp_path / "other.json").write_text('{"rows": []}')
        cli.main(["--from-json", str(tmp_path / "other.json")])


def test_progress_with_and_without_tqdm(monkeypatch):
    items = ["a", "b", "c"]
    stream = io.StringIO()
    assert list(report.progress(items, str.upper, stream=stream)) == items
    if _has("tqdm"):
        assert "3/3" in stream.getvalue() and "C" in stream.getvalue()
    monkeypatch.setitem(sys.modules, "tqdm", None)  # as on a machine without tqdm
    stream = io.StringIO()
    assert list(report.progress(items, str.upper, stream=stream)) == items
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("[1/3 0:00] A") and lines[2].startswith("[3/3") and "left" in lines[2]
    stream = io.StringIO()
    assert list(report.progress(items, str.upper, enabled=False, stream=stream)) == items
    assert stream.getvalue() == ""


def test_environment_records_rnnkits_own_commit_and_build(meta):
    assert meta["rnnkit"] == rnnkit.__version__
    assert meta["rnnkit_commit"] == rnnkit._build.source_commit()
    assert meta["rnnkit_built_with_cuda"] == rnnkit.built_with_cuda()
    info = rnnkit.build_info()
    assert meta["rnnkit_built_against_torch"] == (info.torch if info else None)


def _has(name):
    try:
        __import__(name)
    except ImportError:
        return False
    return True


def _has_matplotlib():
    return _has("matplotlib")


# ---- the real rnnkit modules, end to end -------------------------------------

@pytest.mark.parametrize("cell", ["LSTM", "GRU", "RNN_TANH", "RNN_RELU"])
def test_rnnkit_modules_pass_the_gate(cell):
    configs = [tiny(cell, m, layers=2, bidirectional=True) for m in suite.MODES]
    configs += [tiny(cell, m, **shape) for m in suite.MODES for shape in SHAPES]
    rows = timing.run_suite(configs, "cpu", budget=0.01, min_reps=1, max_reps=2, progress=False)
    for row in rows:
        assert row["status"] == "ok", (report.describe(row), row["message"], row["errors"])
        assert row["speedup"] > 0


def test_cli_end_to_end(tmp_path):
    out = tmp_path / "cli.json"
    cmd = [sys.executable, "-m", "rnnkit.bench", "--device", "cpu", "--cell", "rnn_tanh", "--batch", "1",
           "--budget", "0.02", "--json", str(out), "--markdown", str(tmp_path / "cli.md")]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "geometric-mean speedup" in done.stdout and "RNN_TANH" in done.stdout
    assert "abs = max|rnnkit - torch.nn|" in done.stdout  # the columns are explained under the table
    assert "2/2" in done.stderr and "2/2" not in done.stdout  # the progress, on stderr only
    meta, rows = report.load_json(str(out))
    assert meta["device"] == "cpu" and meta["suite"] == "quick"
    assert [(r["mode"], r["batch"], r["hidden"]) for r in rows] == [("inference", 1, 256), ("training", 1, 256)]


def test_cli_times_a_shape_of_ones_own(tmp_path):
    out = tmp_path / "shape.json"
    cmd = [sys.executable, "-m", "rnnkit.bench", "--device", "cpu", "--shape", "lstm:T=6,B=3,I=5,H=7,layers=2,"
           "bidirectional,packed", "--shape", "gru:T=4,B=2,H=3,batch_first,steps,mode=training", "--budget", "0.01",
           "--no-progress", "--json", str(out)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    meta, rows = report.load_json(str(out))
    assert meta["suite"] == "shape"
    assert [report.describe(r) for r in rows] == [
        "lstm:T=6,B=3,I=5,H=7,layers=2,bidirectional,packed,mode=inference,dtype=fp32",
        "lstm:T=6,B=3,I=5,H=7,layers=2,bidirectional,packed,mode=training,dtype=fp32",
        "gru:T=4,B=2,H=3,batch_first,steps,mode=training,dtype=fp32"]
    assert all(r["status"] == "ok" for r in rows)
