"""The examples train real models: their loss falls, and rnnkit follows torch.nn step for step.

Each example is imported from examples/ and driven through its own functions
(parse_args -> train -> history) with small sizes, so the whole file stays
well under a minute on a 2-core CPU. One subprocess run per example checks the
command line end to end.
"""
import importlib.util
import math
import os
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples")


def _load(name):
    path = os.path.join(EXAMPLES, f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"rnnkit_example_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


char_lm = _load("char_lm")
forecast = _load("forecast")
common = sys.modules["_common"]


def _need_rnnkit(cell="lstm"):
    if not common.rnnkit_available(cell):
        pytest.skip(f"rnnkit.{cell.upper()} is not available in this build")


@pytest.fixture(autouse=True)
def _one_thread():
    """The models here are tiny: one thread is as fast, and far steadier on a busy machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


try:
    import statsmodels.datasets  # noqa: F401

    HAVE_STATSMODELS = True
except ImportError:
    HAVE_STATSMODELS = False
needs_statsmodels = pytest.mark.skipif(not HAVE_STATSMODELS, reason="forecast.py reads its data from statsmodels")

# A small character LM: a few seconds per run.
LM_SMALL = ["--quick", "--quiet", "--corpus-chars", "60000", "--val-chars", "2000", "--hidden", "48",
            "--emb", "16", "--batch", "16", "--seq-len", "32", "--eval-every", "0"]


def lm_args(*extra):
    return char_lm.parse_args(LM_SMALL + list(extra))


# ---------------------------------------------------------------------------
# char_lm


def test_corpus_is_stdlib_source_and_deterministic():
    text, files = char_lm.load_corpus(50_000)
    again, files2 = char_lm.load_corpus(50_000)
    assert text == again and files == files2 and len(text) == 50_000
    assert files == sorted(files) and all(f.endswith(".py") for f in files)
    assert "def " in text and "import " in text
    ids = char_lm.encode(text)
    assert ids.min() >= 0 and ids.max() < len(char_lm.VOCAB)
    assert char_lm.decode(char_lm.encode("def f(x):\n    return x")) == "def f(x):\n    return x"


def test_char_lm_loss_falls():
    _need_rnnkit("lstm")
    args = lm_args("--impl", "rnnkit", "--max-steps", "40", "--layers", "2", "--dropout", "0.1")
    hist = char_lm.train(args)
    loss = hist["loss"]
    assert len(loss) == 40 and all(math.isfinite(v) for v in loss)
    assert loss[0] == pytest.approx(math.log(len(char_lm.VOCAB)), abs=0.15)  # starts near uniform
    assert sum(loss[-10:]) / 10 < loss[0] - 1.0, loss
    step, bpc = hist["val"][-1]
    assert step == 40 and bpc < loss[0] / math.log(2)
    text = char_lm.sample(hist["model"], "def ", 40, temperature=0.8, generator=torch.Generator().manual_seed(0))
    assert text.startswith("def ") and len(text) == 44


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_char_lm_rnnkit_matches_torch(cell):
    """Same seed, same initial weights (state_dict copied), dropout 0: the loss curves agree."""
    _need_rnnkit(cell)
    args = lm_args("--cell", cell, "--layers", "2", "--dropout", "0", "--max-steps", "10")
    data = char_lm.prepare_data(args, torch.device("cpu"))
    common.set_seed(args.seed)
    init = {k: v.clone() for k, v in char_lm.build_model(args, "torch").state_dict().items()}
    ours = char_lm.train(args, init_state=init, data=data, impl="rnnkit")
    ref = char_lm.train(args, init_state=init, data=data, impl="torch")
    assert type(ours["model"].rnn).__module__.startswith("rnnkit")
    assert type(ref["model"].rnn).__module__.startswith("torch")
    torch.testing.assert_close(torch.tensor(ours["loss"]), torch.tensor(ref["loss"]), rtol=1e-5, atol=1e-5)
    for (k, a), (_, b) in zip(ours["model"].state_dict().items(), ref["model"].state_dict().items()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=f"{cell} parameter {k} after 10 steps")


def test_char_lm_lockstep_compare_keeps_runs_independent():
    """--compare steps two trainers in turn; each keeps its own generator state, so with
    dropout on, each run is exactly what it would have been alone."""
    impls = ("rnnkit", "torch") if common.rnnkit_available("lstm") else ("torch", "torch")
    args = lm_args("--layers", "2", "--dropout", "0.3", "--max-steps", "6")
    data = char_lm.prepare_data(args, torch.device("cpu"))
    both = char_lm.train_compare(args, data=data, impls=impls)
    common.set_seed(args.seed)
    init = {k: v.clone() for k, v in char_lm.build_model(args, "torch").state_dict().items()}
    alone = char_lm.train(args, init_state=init, data=data, impl="torch")
    assert both[1]["loss"] == alone["loss"]
    torch.testing.assert_close(torch.tensor(both[0]["loss"]), torch.tensor(alone["loss"]), rtol=1e-5, atol=1e-5)


def test_char_lm_checkpoint_resume_is_exact(tmp_path):
    """Stop at step 6, resume to 12: the same losses as 12 steps in one go; and the
    checkpoint written by one engine resumes under the other."""
    impl_a, impl_b = ("torch", "rnnkit") if common.rnnkit_available("gru") else ("torch", "torch")
    base = ["--cell", "gru", "--optim", "adagrad", "--clip-mode", "value"]
    whole = char_lm.train(lm_args(*base, "--impl", impl_a, "--max-steps", "12"))
    ckpt = str(tmp_path / "lm.pt")
    first = char_lm.train(lm_args(*base, "--impl", impl_a, "--max-steps", "6", "--save", ckpt))
    assert os.path.exists(ckpt) and first["loss"] == whole["loss"][:6]
    # resume reads the model and data settings from the checkpoint, not from these flags
    resumed = char_lm.train(lm_args("--impl", impl_b, "--max-steps", "12", "--resume", ckpt, "--hidden", "999"))
    assert resumed["start_step"] == 6 and len(resumed["loss"]) == 12
    assert resumed["model"].rnn.hidden_size == 48
    torch.testing.assert_close(torch.tensor(resumed["loss"]), torch.tensor(whole["loss"]), rtol=1e-5, atol=1e-5)


def test_char_lm_hidden_state_plot(tmp_path):
    args = lm_args("--impl", "torch", "--max-steps", "2")
    hist = char_lm.train(args)
    warm, piece, context = char_lm.state_text(hist["data"]["val_text"], 70, warm=20, context=300)
    assert len(piece) == 70 and len(warm) == 20 and piece in context
    trace = char_lm.hidden_trace(hist["model"], piece)
    assert trace.shape == (len(piece), 48) and trace.abs().max() <= 1
    # the last layer's trace is the model's output sequence
    out = hist["model"](char_lm.encode(piece).view(-1, 1))[2]
    torch.testing.assert_close(trace, out[:, 0].detach(), rtol=1e-5, atol=1e-6)
    picked = char_lm.pick_units(trace, 32)
    assert len(picked) == 32 and len(set(picked.tolist())) == 32
    path = char_lm.plot_states(hist["model"], piece, str(tmp_path / "states.png"), units=32, warmup=warm,
                               context=context)
    with open(path, "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"


def test_char_lm_command_line(tmp_path):
    _need_rnnkit("lstm")
    png = tmp_path / "states.png"
    loss_png = tmp_path / "loss.png"
    cmd = [sys.executable, os.path.join(EXAMPLES, "char_lm.py"), *LM_SMALL, "--max-steps", "4", "--compare", "--threads", "1",
           "--sample-chars", "30", "--plot-states", str(png), "--plot-loss", str(loss_png)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "rnnkit vs torch.nn" in out.stdout and "bits/char" in out.stdout and "== sample" in out.stdout
    assert png.exists() and loss_png.exists()


# ---------------------------------------------------------------------------
# forecast

FC_SMALL = ["--quick", "--quiet", "--hidden", "24"]


@needs_statsmodels
def test_forecast_split_is_by_time():
    args = forecast.parse_args(FC_SMALL)
    d = forecast.prepare_data(args)
    assert d["train"]["j"].max() < d["val"]["j"].min() <= d["val"]["j"].max() < d["test"]["j"].min()
    # the scaler saw only the training span
    assert d["scaler"].mean == pytest.approx(float(d["y"][: d["val_at"]].mean()))
    assert d["train"]["x"].shape[1:] == (args.window, 1)


@needs_statsmodels
def test_forecast_learns_and_beats_naive():
    _need_rnnkit("gru")
    args = forecast.parse_args(FC_SMALL + ["--impl", "rnnkit", "--epochs", "25", "--patience", "25"])
    hist = forecast.train(args)
    assert hist["train_loss"][-1] < 0.5 * hist["train_loss"][0]
    assert min(hist["val_loss"]) < hist["val_loss"][0]
    m = hist["metrics"]["test"]
    assert math.isfinite(m["rmse"]) and m["rmse"] < m["naive_rmse"]


@needs_statsmodels
@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_forecast_rnnkit_matches_torch(cell):
    _need_rnnkit(cell)
    args = forecast.parse_args(FC_SMALL + ["--cell", cell, "--dropout", "0", "--epochs", "1", "--patience", "1"])
    data = forecast.prepare_data(args)
    common.set_seed(args.seed)
    init = {k: v.clone() for k, v in forecast.build_model(args, "torch").state_dict().items()}
    ours = forecast.train(args, init_state=init, data=data, impl="rnnkit")
    ref = forecast.train(args, init_state=init, data=data, impl="torch")
    assert len(ours["loss"]) >= 10
    torch.testing.assert_close(torch.tensor(ours["loss"][:10]), torch.tensor(ref["loss"][:10]), rtol=1e-5, atol=1e-6)


@needs_statsmodels
def test_forecast_command_line(tmp_path):
    _need_rnnkit("gru")
    png = tmp_path / "forecast.png"
    cmd = [sys.executable, os.path.join(EXAMPLES, "forecast.py"), *FC_SMALL, "--epochs", "3", "--compare", "--threads", "1",
           "--plot", str(png)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "naive last value" in out.stdout and "rnnkit vs torch.nn" in out.stdout
    assert png.exists()
