"""The benchmark's own logic (rnnkit/bench.py, rnnkit/bench_report.py), on the
CPU with tiny configurations: the grid and its filters, the correctness gate,
the timing loop, the JSON/markdown/plot reports and the --from-json round trip.

Most tests put torch.nn on both sides (the `impl` argument), so they test the
benchmark and not the engine; the last ones run the real rnnkit modules end to
end. The whole file takes a few seconds."""
import json
import math
import os
import subprocess
import sys

import pytest
import torch

from rnnkit import bench, bench_report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TORCH_IMPL = {cell: getattr(torch.nn, name) for cell, (name, _) in bench.CELLS.items()}
TINY = dict(batch=3, hidden=5, seq=4)


def tiny(cell="LSTM", mode="training", **kw):
    return bench.Config(cell, mode, "fp32", **{**TINY, **kw})


def run_tiny(configs, impl=TORCH_IMPL, **kw):
    kw = {"budget": 0.01, "min_reps": 2, "max_reps": 5, "progress": False, **kw}
    return bench.run_suite(configs, "cpu", impl, **kw)


class PerturbedLSTM(torch.nn.LSTM):
    """Takes the reference weights, then nudges one of them: a broken side."""

    def load_state_dict(self, state_dict, strict=True, assign=False):
        result = super().load_state_dict(state_dict, strict, assign)
        with torch.no_grad():
            self.weight_hh_l0[0, 0] += 0.5
        return result


class RaisingGRU(torch.nn.GRU):
    def forward(self, *args, **kwargs):
        raise RuntimeError("engine exploded\nwith details on a second line")


# ---- the grid --------------------------------------------------------------

def test_full_sweep_on_cuda_is_the_issue_grid():
    grid = bench.full_sweep("cuda")
    assert len(grid) == len(set(grid))
    single = [c for c in grid if c.layers == 1 and not c.bidirectional]
    assert len(single) == 3 * 2 * 4 * 4 * 2 * 3  # cells, modes, B, H, T, dtypes
    assert {c.batch for c in single} == {1, 8, 64, 256}
    assert {c.hidden for c in single} == {128, 256, 512, 1024}
    assert {c.seq for c in single} == {100, 1000}
    assert {c.dtype for c in single} == {"fp32", "bf16", "fp16"}
    assert {c.cell for c in grid} == {"LSTM", "GRU", "RNN_TANH"}
    assert {(c.layers, c.bidirectional) for c in grid} == {(1, False), (2, False), (1, True), (2, True)}
    assert all(c.input_size == c.hidden for c in grid)
    fast = [c for c in grid if "fastrnns" in c.tags]
    assert {(c.cell, c.mode, c.dtype) for c in fast} == {(c, m, d) for c in bench.SWEEP_CELLS
                                                          for m in bench.MODES for d in ("fp32", "bf16", "fp16")}
    assert all((c.seq, c.batch, c.hidden, c.layers) == (100, 64, 512, 1) for c in fast)


def test_cpu_grids_stay_small():
    full = bench.full_sweep("cpu")
    assert all(c.batch <= 64 and c.hidden <= 512 and c.seq == 100 and c.dtype == "fp32" for c in full)
    assert any(c.layers == 2 for c in full) and any(c.bidirectional for c in full)
    quick = bench.quick_suite("cpu")
    assert {c.dtype for c in quick} == {"fp32"}
    assert len(quick) <= 12
    assert {(c.cell, c.mode) for c in quick if "fastrnns" in c.tags} == {
        (c, m) for c in bench.SWEEP_CELLS for m in bench.MODES}
    assert "bf16" in {c.dtype for c in bench.quick_suite("cuda")}


def test_filters_slice_the_grid():
    grid = bench.full_sweep("cuda")
    kept = bench.apply_filters(grid, cell=["LSTM"], mode=["training"], batch=[1, 64], dtype=None)
    assert kept and all(c.cell == "LSTM" and c.mode == "training" and c.batch in (1, 64) for c in kept)
    assert {c.batch for c in kept} == {1, 64}
    assert bench.apply_filters(grid, bidirectional=[True], layers=[2]) == [
        c for c in grid if c.bidirectional and c.layers == 2]
    assert bench.apply_filters(grid) == grid


def test_cli_filters_parse_lists_and_names():
    args = bench.build_parser().parse_args(
        ["--cell", "lstm,rnn", "--cell", "RNN_RELU", "--batch", "1,64", "--mode", "training",
         "--bidirectional", "--dtype", "bf16"])
    assert args.cell == ["LSTM", "RNN_TANH", "RNN_RELU"]
    assert args.batch == [1, 64] and args.mode == ["training"] and args.bidirectional == [True]
    assert bench.build_parser().parse_args(["--bidirectional", "no"]).bidirectional == [False]
    with pytest.raises(SystemExit):
        bench.build_parser().parse_args(["--cell", "transformer"])
    args = bench.build_parser().parse_args(["--full", "--cell", "gru", "--hidden", "128", "--batch", "8"])
    configs = bench.select_configs(args, "cpu")
    assert configs and all((c.cell, c.hidden, c.batch) == ("GRU", 128, 8) for c in configs)


def test_list_prints_the_selection_without_running(capsys):
    assert bench.main(["--device", "cpu", "--full", "--list", "--layers", "2", "--bidirectional"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert listed == [c.label for c in bench.full_sweep("cpu") if c.layers == 2 and c.bidirectional]
    assert len(listed) == 6


def test_empty_selection_says_what_exists():
    args = bench.build_parser().parse_args(["--batch", "256"])
    with pytest.raises(SystemExit, match="batch: 1, 64.*try --full"):
        bench.select_configs(args, "cpu")


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


def test_gate_fails_a_perturbed_side_and_does_not_time_it():
    rows = run_tiny([tiny("LSTM", "training"), tiny("LSTM", "inference")],
                    impl={**TORCH_IMPL, "LSTM": PerturbedLSTM})
    for row in rows:
        assert row["status"] == "FAILED"
        assert row["speedup"] is None and row["torch_ms"] is None and row["rnnkit_reps"] == 0
        assert row["errors"]["output"]["max_rel"] > row["tolerance"]
        assert "max rel error above" in row["message"]
    assert rows[0]["errors"]["weight_grad"]["param"].startswith("weight_")
    assert rows[0]["errors"]["input_grad"]["max_rel"] > 0


def test_check_correctness_reports_each_tensor():
    cfg = tiny("GRU", "training")
    ref, ours = bench.make_modules(cfg, "cpu", {**TORCH_IMPL, "GRU": torch.nn.GRU})
    x, grad_out = bench.make_inputs(cfg, "cpu")
    ok, errs = bench.check_correctness(cfg, ref, ours, x, grad_out, tol=1e-4)
    assert ok and errs["weight_grad"]["max_rel"] == 0
    with torch.no_grad():
        ours.bias_hh_l0[-1] += 1.0  # only the last hidden unit's n gate bias
    ok, errs = bench.check_correctness(cfg, ref, ours, x, grad_out, tol=1e-4)
    assert not ok and errs["output"]["max_abs"] > 1e-3


def test_errors_measure():
    ref = torch.tensor([1.0, -2.0, 0.0])
    assert bench.errors(ref + torch.tensor([0.0, 0.1, 0.0]), ref) == pytest.approx({"max_abs": 0.1, "max_rel": 0.05})
    assert bench.errors(torch.zeros(2), torch.zeros(3))["max_rel"] == math.inf
    nan = bench.errors(torch.tensor([float("nan"), 0.0, 0.0]), ref)
    assert not nan["max_rel"] <= 1.0  # NaN must fail any tolerance


def test_an_exception_is_an_error_row_not_a_crash():
    rows = run_tiny([tiny("GRU", "inference"), tiny("LSTM", "inference")], impl={**TORCH_IMPL, "GRU": RaisingGRU})
    assert rows[0]["status"] == "ERROR" and rows[0]["message"] == "RuntimeError: engine exploded"
    assert rows[1]["status"] == "ok"


def test_same_weights_and_inputs_on_both_sides():
    cfg = tiny("RNN_RELU", "inference", layers=2)
    ref, ours = bench.make_modules(cfg, "cpu", TORCH_IMPL)
    for (n1, p1), (n2, p2) in zip(ref.named_parameters(), ours.named_parameters()):
        assert n1 == n2 and torch.equal(p1, p2)
    assert ref.nonlinearity == "relu"
    x1, g1 = bench.make_inputs(cfg, "cpu")
    x2, g2 = bench.make_inputs(cfg, "cpu")
    assert torch.equal(x1, x2) and torch.equal(g1, g2)  # reproducible per configuration
    assert not torch.equal(x1, bench.make_inputs(tiny("LSTM", "inference"), "cpu")[0])


def test_time_pair_keeps_to_budget_and_bounds():
    calls = []
    steps = {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}
    times = bench.time_pair(steps, "cpu", budget=0.0, min_reps=3, max_reps=10)
    assert len(times["a"]) == len(times["b"]) == 3
    assert calls[:6] == ["a", "b", "b", "a", "a", "b"]  # alternating order
    times = bench.time_pair(steps, "cpu", budget=60.0, min_reps=1, max_reps=7)
    assert len(times["a"]) == 7


def test_tf32_setting_is_restored():
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    run_tiny([tiny("LSTM", "inference")], tf32=True)
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before


# ---- reports ---------------------------------------------------------------

@pytest.fixture(scope="module")
def mixed_rows():
    """An ok row per cell and mode at two sizes, a FAILED row and an ERROR row."""
    configs = [tiny(c, m, batch=b, hidden=h) for c in ("LSTM", "GRU") for m in bench.MODES
               for b, h in ((1, 4), (3, 8))]
    rows = run_tiny(configs)
    rows += run_tiny([tiny("LSTM", "training", batch=2)], impl={**TORCH_IMPL, "LSTM": PerturbedLSTM})
    rows += run_tiny([tiny("GRU", "inference", batch=2)], impl={**TORCH_IMPL, "GRU": RaisingGRU})
    return rows


@pytest.fixture(scope="module")
def meta():
    m = bench.environment("cpu", tf32=False)
    m.update(suite="test", budget_s=0.01)
    return m


def test_json_has_the_schema_fields(tmp_path, mixed_rows, meta):
    path = tmp_path / "run.json"
    bench_report.save_json(str(path), meta, mixed_rows)
    data = json.loads(path.read_text())  # strict JSON: no NaN/Infinity literals
    assert data["schema"] == bench_report.SCHEMA
    for key in ("hostname", "cpu", "threads", "gpu", "torch", "cuda", "cudnn", "rnnkit_commit", "date", "tf32",
                "device"):
        assert key in data["meta"]
    assert data["meta"]["tf32"] is False and data["meta"]["threads"] == torch.get_num_threads()
    assert len(data["rows"]) == len(mixed_rows)
    for row in data["rows"]:
        for key in ("cell", "mode", "dtype", "batch", "hidden", "input_size", "seq", "layers", "bidirectional",
                    "status", "errors", "tolerance", "torch_ms", "rnnkit_ms", "torch_us_per_step",
                    "rnnkit_us_per_step", "torch_peak_mib", "rnnkit_peak_mib", "speedup", "tags"):
            assert key in row
    assert {r["status"] for r in data["rows"]} == {"ok", "FAILED", "ERROR"}


def test_non_finite_errors_survive_json(tmp_path, meta):
    row = bench.empty_row(tiny())
    row.update(status="FAILED", errors={"output": {"max_abs": math.inf, "max_rel": math.nan}})
    path = str(tmp_path / "x.json")
    bench_report.save_json(path, meta, [row])
    _, [back] = bench_report.load_json(path)
    assert back["errors"]["output"]["max_abs"] == math.inf and math.isnan(back["errors"]["output"]["max_rel"])


def test_table_summary_and_markdown(mixed_rows, meta):
    table = bench_report.format_table(mixed_rows)
    lines = table.splitlines()
    assert len(lines) == 2 + len(mixed_rows)
    assert "speedup" in lines[0] and "FAILED" in table and "ERROR RuntimeError" in table

    summary = "\n".join(bench_report.summary_lines(mixed_rows))
    assert "geometric-mean speedup" in summary and "5 worst configurations" in summary
    for cell in ("LSTM", "GRU"):
        for mode in bench.MODES:
            assert f"{cell:<9} {mode:<10}" in summary
    ok = [r for r in mixed_rows if r["status"] == "ok"]
    lstm_inf = [r["speedup"] for r in ok if (r["cell"], r["mode"]) == ("LSTM", "inference")]
    assert bench_report.geomeans(mixed_rows)[("LSTM", "inference")] == (
        pytest.approx(math.sqrt(lstm_inf[0] * lstm_inf[1])), 2)
    worst = min(ok, key=lambda r: r["speedup"])
    assert bench_report.describe(worst) in summary.split("worst configurations:")[1].splitlines()[1]

    md = bench_report.to_markdown(meta, mixed_rows)
    table_lines = [ln for ln in md.splitlines() if ln.startswith("|")]
    assert len(table_lines) == 2 + len(mixed_rows)
    assert all(ln.count("|") == table_lines[0].count("|") for ln in table_lines)
    assert "speedup" in table_lines[0] and "TF32 off" in md and meta["cpu"] in md
    assert "| FAILED |" in md and "| ERROR |" in md


def test_plot_writes_a_png(tmp_path, mixed_rows, meta):
    pytest.importorskip("matplotlib")
    path = tmp_path / "speedup.png"
    bench_report.plot(str(path), meta, mixed_rows)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_from_json_round_trip(tmp_path, mixed_rows, meta, capsys):
    src, again, md = tmp_path / "run.json", tmp_path / "again.json", tmp_path / "run.md"
    bench_report.save_json(str(src), meta, mixed_rows)
    args = ["--from-json", str(src), "--json", str(again), "--markdown", str(md)]
    if _has_matplotlib():
        args += ["--plot", str(tmp_path / "run.png")]
    assert bench.main(args) == 0
    out = capsys.readouterr().out
    assert bench_report.machine_line(meta) + "\n\n" + bench_report.format_table(mixed_rows) in out
    assert json.loads(again.read_text()) == json.loads(src.read_text())
    assert md.read_text() == bench_report.to_markdown(meta, mixed_rows)
    with pytest.raises(SystemExit, match="not an rnnkit benchmark"):
        (tmp_path / "other.json").write_text('{"rows": []}')
        bench.main(["--from-json", str(tmp_path / "other.json")])


def test_progress_bar():
    import io

    stream = io.StringIO()
    bar = bench_report.Progress(4, stream=stream)
    bar.update(0, "first")
    bar.update(2, "second")
    bar.update(4, "done")
    bar.close()
    lines = stream.getvalue().splitlines()  # not a terminal: one line per update
    assert lines[1].startswith("[##########..........] 2/4") and "left" in lines[1] and lines[1].endswith("second")


def _has_matplotlib():
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


# ---- the real rnnkit modules, end to end -------------------------------------

def _rnnkit_ready():
    try:
        bench.rnnkit_classes()
    except Exception:
        return False
    return True


needs_rnnkit = pytest.mark.skipif(not _rnnkit_ready(), reason="rnnkit.LSTM/GRU/RNN are not available yet")


@needs_rnnkit
@pytest.mark.parametrize("cell", ["LSTM", "GRU", "RNN_TANH", "RNN_RELU"])
def test_rnnkit_modules_pass_the_gate(cell):
    configs = [tiny(cell, m, layers=2, bidirectional=True) for m in bench.MODES]
    rows = bench.run_suite(configs, "cpu", budget=0.01, min_reps=2, max_reps=3, progress=False)
    for row in rows:
        assert row["status"] == "ok", (row["message"], row["errors"])
        assert row["speedup"] > 0


@needs_rnnkit
def test_cli_end_to_end(tmp_path):
    out = tmp_path / "cli.json"
    cmd = [sys.executable, "-m", "rnnkit.bench", "--device", "cpu", "--cell", "rnn_tanh", "--batch", "1",
           "--budget", "0.02", "--json", str(out), "--markdown", str(tmp_path / "cli.md")]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "geometric-mean speedup" in done.stdout and "RNN_TANH" in done.stdout
    assert "[####################] 2/2" in done.stderr  # the progress bar, on stderr only
    meta, rows = bench_report.load_json(str(out))
    assert meta["device"] == "cpu" and meta["suite"] == "quick"
    assert [(r["mode"], r["batch"], r["hidden"]) for r in rows] == [("inference", 1, 256), ("training", 1, 256)]
