#!/usr/bin/env python
"""One-step-ahead forecasting of a real series with a stacked GRU or LSTM.

The data ship inside statsmodels (no download): the yearly sunspot numbers
1700-2008 (`--data sunspots`, the default) or the Mauna Loa CO2 record
1958-2001 (`--data co2`, weekly, averaged to months). The series is cut by time
into train / validation / test spans; each sample is a window of the last
`--window` values and its target the value `--horizon` steps after the window.
Normalisation uses the training span only.

The model is a stacked GRU or LSTM (`--cell`, `--layers`) with dropout between
the layers and a linear head on the last step. Training stops early when the
validation loss has not improved for `--patience` epochs and the best weights
are restored. The test span is scored by RMSE against the naive forecast
"the next value equals the last one seen".

    python examples/forecast.py --quick
    python examples/forecast.py --plot examples/figures/forecast_sunspots.png
    python examples/forecast.py --data co2 --cell lstm --plot co2.png
    python examples/forecast.py --compare        # rnnkit and torch.nn, same seed and init
"""
import argparse
import copy
import math
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402

# ---------------------------------------------------------------------------
# data


def load_series(name):
    """(time axis as float years, values float64, label, unit) of a series shipped with statsmodels."""
    try:
        from statsmodels import datasets as sm_datasets
    except ImportError as exc:  # pragma: no cover
        raise SystemExit("forecast.py needs statsmodels for its data: pip install statsmodels") from exc
    if name == "sunspots":
        df = sm_datasets.sunspots.load_pandas().data
        return df["YEAR"].to_numpy(float), df["SUNACTIVITY"].to_numpy(float), "yearly sunspot number", "sunspots"
    if name == "co2":
        s = sm_datasets.co2.load_pandas().data["co2"]
        s = s.resample("MS").mean().interpolate()  # weekly with gaps -> monthly means
        years = s.index.year + (s.index.month - 1) / 12.0
        return np.asarray(years, float), s.to_numpy(float), "monthly mean CO2, Mauna Loa", "ppm"
    raise ValueError(f"--data must be sunspots or co2, got {name!r}")


def split_points(n, val_frac, test_frac):
    """Indices where the validation and the test spans begin (a split by time)."""
    n_test = max(1, int(round(n * test_frac)))
    n_val = max(1, int(round(n * val_frac)))
    return n - n_test - n_val, n - n_test


def make_windows(y, window, horizon):
    """X[k] = y[k : k+window], target index j[k] = k + window + horizon - 1."""
    idx = np.arange(len(y) - window - horizon + 1)
    X = np.stack([y[k : k + window] for k in idx])
    j = idx + window + horizon - 1
    return X, j


class Scaler:
    """Maps the series to the model's units.

    absolute: (y - mean) / std of the training span.
    relative: every window minus its own last value, divided by the std of the
    training span's `horizon`-step changes; the model then predicts the change
    from the last value (good for series with a trend, like CO2)."""

    def __init__(self, y_train, horizon, relative):
        self.relative = relative
        if relative:
            self.mean = 0.0
            self.std = float(np.std(y_train[horizon:] - y_train[:-horizon])) or 1.0
        else:
            self.mean = float(np.mean(y_train))
            self.std = float(np.std(y_train)) or 1.0

    def inputs(self, X):
        ref = X[:, -1:] if self.relative else self.mean
        return (X - ref) / self.std

    def targets(self, X, t):
        ref = X[:, -1] if self.relative else self.mean
        return (t - ref) / self.std

    def invert(self, X, pred):
        ref = X[:, -1] if self.relative else self.mean
        return pred * self.std + ref


def prepare_data(args):
    t, y, label, unit = load_series(args.data)
    val_at, test_at = split_points(len(y), args.val_frac, args.test_frac)
    relative = args.relative if args.relative is not None else (args.data == "co2")
    scaler = Scaler(y[:val_at], args.horizon, relative)
    X, j = make_windows(y, args.window, args.horizon)
    parts = {}
    for name, mask in (("train", j < val_at), ("val", (j >= val_at) & (j < test_at)), ("test", j >= test_at)):
        Xs, js = X[mask], j[mask]
        parts[name] = {
            "X_raw": Xs,
            "j": js,
            "x": torch.tensor(scaler.inputs(Xs), dtype=torch.float32).unsqueeze(-1),  # (N, window, 1)
            "y": torch.tensor(scaler.targets(Xs, y[js]), dtype=torch.float32),
        }
    return {"t": t, "y": y, "label": label, "unit": unit, "val_at": val_at, "test_at": test_at,
            "scaler": scaler, "relative": relative, **parts}


# ---------------------------------------------------------------------------
# model


class Forecaster(nn.Module):
    """Stacked GRU/LSTM (batch_first) with dropout between layers, linear head on the last step."""

    def __init__(self, rnn_cls, hidden, layers, dropout):
        super().__init__()
        self.rnn = rnn_cls(1, hidden, num_layers=layers, dropout=dropout if layers > 1 else 0.0, batch_first=True)
        self.head = nn.Linear(hidden, 1)

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.head(out[:, -1]).squeeze(-1)


def build_model(args, impl=None):
    return Forecaster(C.rnn_class(impl or args.impl, args.cell), args.hidden, args.layers, args.dropout)


@torch.no_grad()
def predict(model, x, batch=1024):
    was = model.training
    model.eval()
    out = torch.cat([model(x[i : i + batch]) for i in range(0, len(x), batch)])
    model.train(was)
    return out


def rmse(a, b):
    return float(np.sqrt(np.mean((np.asarray(a) - np.asarray(b)) ** 2)))


class Trainer:
    """One model under training, one epoch at a time (so that two engines can run in lockstep).

    Each trainer keeps its own generators (shuffling, dropout), so interleaving two
    trainers changes nothing in either. `init_state` (a state_dict) replaces the
    fresh init, so two engines can start from identical weights."""

    def __init__(self, args, init_state=None, data=None, impl=None):
        self.args = args
        self.impl = impl = impl or args.impl
        self.device = device = C.resolve_device(args.device)
        self.data = data = data or prepare_data(args)
        C.set_seed(args.seed)
        self.model = build_model(args, impl).to(device)
        if init_state is not None:
            self.model.load_state_dict(init_state)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
        self.xtr, self.ytr = data["train"]["x"].to(device), data["train"]["y"].to(device)
        self.xva, self.yva = data["val"]["x"].to(device), data["val"]["y"].to(device)
        # shuffling and dropout draw from these states: the same for every engine
        torch.manual_seed(args.seed + 1)
        self.rng = C.rng_get(device)
        self.gen = torch.Generator().manual_seed(args.seed + 2)
        self.hist = {"impl": impl, "loss": [], "train_loss": [], "val_loss": [], "epoch_times": [], "step_time": []}
        self.best, self.best_state, self.best_epoch, self.waited, self.epoch_no = math.inf, None, 0, 0, 0
        self.model.train()

    @property
    def done(self):
        return self.epoch_no >= self.args.epochs or self.waited >= self.args.patience

    def epoch(self):
        """One pass over the shuffled training windows, then the validation loss. Returns (train, val)."""
        args, hist, model, device = self.args, self.hist, self.model, self.device
        n = len(self.xtr)
        order = torch.randperm(n, generator=self.gen).to(device)
        C.rng_set(self.rng, device)
        t0 = C.now(device)
        total = 0.0
        for i in range(0, n, args.batch):
            sel = order[i : i + args.batch]
            s0 = C.now(device)
            loss = F.mse_loss(model(self.xtr[sel]), self.ytr[sel])
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            if args.clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
            self.opt.step()
            v = loss.item()
            hist["step_time"].append(C.now(device) - s0)
            hist["loss"].append(v)
            total += v * len(sel)
        hist["epoch_times"].append(C.now(device) - t0)
        self.rng = C.rng_get(device)
        self.epoch_no += 1
        hist["train_loss"].append(total / n)
        val = F.mse_loss(predict(model, self.xva), self.yva).item()
        hist["val_loss"].append(val)
        if val < self.best - 1e-7:
            self.best, self.best_epoch, self.waited = val, self.epoch_no, 0
            self.best_state = copy.deepcopy(model.state_dict())
        else:
            self.waited += 1
        return total / n, val

    def history(self):
        """Restores the best weights (early stopping) and scores them."""
        self.model.load_state_dict(self.best_state)
        h = dict(self.hist, best_epoch=self.best_epoch, stopped_epoch=self.epoch_no, best_val=self.best,
                 model=self.model, data=self.data)
        h["metrics"] = evaluate(self.model, self.data, self.device)
        return h


def train(args, init_state=None, data=None, impl=None, label=None):
    """Train with early stopping; return the history.

    history: impl, loss (per-step training MSE in scaled units), train_loss / val_loss
    (per epoch), epoch_times, step_time, best_epoch, stopped_epoch, best_val,
    model (best weights), data, metrics (RMSE of model and naive forecast, val and test).
    """
    tr = Trainer(args, init_state=init_state, data=data, impl=impl)
    bar = C.progress(total=args.epochs, disable=args.quiet, desc=label or f"{tr.impl} {args.cell}", unit="epoch",
                     leave=False)
    while not tr.done:
        t, v = tr.epoch()
        bar.update(1)
        bar.set_postfix(train=f"{t:.4f}", val=f"{v:.4f}", best=f"{tr.best:.4f}@{tr.best_epoch}")
    bar.close()
    return tr.history()


def train_compare(args, data=None, impls=("rnnkit", "torch")):
    """Both engines from the same seed and initial weights, one epoch of each in turn,
    so that a busy machine slows both alike."""
    data = data or prepare_data(args)
    C.set_seed(args.seed)
    init = {k: v.clone() for k, v in build_model(args, "torch").state_dict().items()}  # one init for both
    trainers = [Trainer(args, init_state=init, data=data, impl=impl) for impl in impls]
    bar = C.progress(total=args.epochs, disable=args.quiet, desc=f"{' vs '.join(impls)} {args.cell}", unit="epoch",
                     leave=False)
    while not all(t.done for t in trainers):
        vals = [(t.impl, t.epoch()[1]) for t in trainers if not t.done]
        bar.update(1)
        bar.set_postfix({impl: f"{v:.4f}" for impl, v in vals})
    bar.close()
    return [t.history() for t in trainers]


def evaluate(model, data, device):
    """RMSE in the series' own units, model and naive last-value forecast, on val and test."""
    out = {}
    y = data["y"]
    for split in ("val", "test"):
        part = data[split]
        pred = data["scaler"].invert(part["X_raw"], predict(model, part["x"].to(device)).cpu().double().numpy())
        truth = y[part["j"]]
        naive = part["X_raw"][:, -1]
        out[split] = {"rmse": rmse(pred, truth), "naive_rmse": rmse(naive, truth),
                      "mae": float(np.mean(np.abs(pred - truth))), "pred": pred, "truth": truth, "naive": naive,
                      "t": data["t"][part["j"]]}
    return out


# ---------------------------------------------------------------------------
# reporting


def summarize(args, hist):
    d = hist["data"]
    m = hist["metrics"]
    te, va = m["test"], m["val"]
    ep = hist["epoch_times"][1:] or hist["epoch_times"]
    t = d["t"]
    monthly = len(t) > 1 and (t[1] - t[0]) < 0.5

    def when(v):
        return f"{int(v)}-{int(round((v % 1) * 12)) + 1:02d}" if monthly else f"{int(round(v))}"

    def span(a, b):
        return f"{when(t[a])}..{when(t[b - 1])}"

    gain = 100 * (1 - te["rmse"] / te["naive_rmse"])
    return "\n".join([
        f"== forecast: {hist['impl']} {args.cell.upper()} {args.layers}x{args.hidden} (dropout {args.dropout}), "
        f"{C.env_line(C.resolve_device(args.device))} ==",
        f"data     {d['label']}: {len(d['y'])} points {span(0, len(t))}; train {span(0, d['val_at'])}, "
        f"val {span(d['val_at'], d['test_at'])}, test {span(d['test_at'], len(t))}; window {args.window}, "
        f"horizon {args.horizon}, {'relative' if d['relative'] else 'absolute'} inputs",
        f"samples  train {len(d['train']['j'])}, val {len(d['val']['j'])}, test {len(d['test']['j'])}",
        f"training {hist['stopped_epoch']} epochs (best {hist['best_epoch']}, patience {args.patience}); "
        f"loss {hist['train_loss'][0]:.4f} -> {hist['train_loss'][hist['best_epoch'] - 1]:.4f} train, "
        f"best val {hist['best_val']:.4f} (scaled MSE)",
        f"val      RMSE {va['rmse']:.3f} {d['unit']}  (naive last value {va['naive_rmse']:.3f})",
        f"test     RMSE {te['rmse']:.3f} {d['unit']}  (naive last value {te['naive_rmse']:.3f}): "
        f"{abs(gain):.1f}% {'better' if gain >= 0 else 'worse'} than naive; MAE {te['mae']:.3f}",
        f"time     {1000 * sum(ep) / len(ep):.1f} ms/epoch ({len(d['train']['j'])} windows, batch {args.batch})",
    ])


def compare_table(hists, first=10):
    rows = []
    for h in hists:
        ep = h["epoch_times"][1:] or h["epoch_times"]
        m = h["metrics"]["test"]
        rows.append([h["impl"], h["stopped_epoch"], h["best_epoch"], f"{h['best_val']:.5f}", f"{m['rmse']:.3f}",
                     f"{m['naive_rmse']:.3f}", f"{1000 * sum(ep) / len(ep):.1f}"])
    out = C.format_table(["impl", "epochs", "best", "val MSE", "test RMSE", "naive RMSE", "ms/epoch"], rows)
    if len(hists) == 2:
        a, b = hists
        k = min(first, len(a["loss"]), len(b["loss"]))
        d = max(abs(x - y) for x, y in zip(a["loss"][:k], b["loss"][:k]))
        kk = min(len(a["loss"]), len(b["loss"]))
        d_all = max(abs(x - y) for x, y in zip(a["loss"][:kk], b["loss"][:kk]))
        ea = a["epoch_times"][1:] or a["epoch_times"]
        eb = b["epoch_times"][1:] or b["epoch_times"]
        r = (sum(ea) / len(ea)) / (sum(eb) / len(eb))
        out += (f"\nmax |loss difference|: {d:.2e} over the first {k} steps, {d_all:.2e} over all {kk}"
                f"\n{a['impl']} / {b['impl']} time per epoch: {r:.2f}x "
                f"({'faster' if r < 1 else 'slower'} by {abs(1 - r) * 100:.0f}%)")
    return out


def plot(hist, path, args):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d, m = hist["data"], hist["metrics"]
    t, y = d["t"], d["y"]
    te = m["test"]
    fig, (ax0, ax1) = plt.subplots(2, 1, figsize=(11, 7.5), gridspec_kw={"height_ratios": [1, 1.3]})
    ax0.plot(t, y, color="0.25", lw=0.9)
    lo, hi = t[0], t[-1]
    edge = np.concatenate([[lo], (t[1:] + t[:-1]) / 2, [hi]])  # boundaries half-way between samples
    for a, b, c, name in ((0, d["val_at"], "tab:blue", "train"), (d["val_at"], d["test_at"], "tab:orange", "validation"),
                          (d["test_at"], len(t), "tab:green", "test")):
        ax0.axvspan(edge[a], edge[b], color=c, alpha=0.12, lw=0, label=name)
    ax0.set_xlim(lo, hi)
    ax0.set_title(f"{d['label']}: the whole series and its split by time")
    ax0.set_ylabel(d["unit"])
    ax0.legend(loc="upper left", ncol=3, fontsize=9)
    ax0.grid(alpha=0.3)

    ax1.plot(te["t"], te["truth"], "o-", color="black", ms=3.5, lw=1.2, label="truth")
    ax1.plot(te["t"], te["pred"], "s-", color="tab:red", ms=3.5, lw=1.2,
             label=f"{hist['impl']} {args.cell.upper()} forecast, RMSE {te['rmse']:.2f}")
    ax1.plot(te["t"], te["naive"], "--", color="tab:gray", lw=1.0,
             label=f"naive (last value), RMSE {te['naive_rmse']:.2f}")
    ax1.set_title(f"test span, {args.horizon}-step-ahead forecast from the previous {args.window} values")
    ax1.set_xlabel("year")
    ax1.set_ylabel(d["unit"])
    ax1.legend(fontsize=9)
    ax1.grid(alpha=0.3)
    fig.tight_layout()
    C.ensure_parent(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_losses(hists, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    colors = {"rnnkit": "tab:blue", "torch": "tab:orange"}
    for h in hists:
        e = range(1, len(h["train_loss"]) + 1)
        ax.semilogy(e, h["train_loss"], color=colors.get(h["impl"]), lw=1, alpha=0.6,
                    ls="--" if h["impl"] == "torch" else "-", label=f"{h['impl']} train")
        ax.semilogy(e, h["val_loss"], color=colors.get(h["impl"]), lw=1.6, ls="--" if h["impl"] == "torch" else "-",
                    label=f"{h['impl']} validation")
        ax.axvline(h["best_epoch"], color=colors.get(h["impl"]), ls=":", lw=1)
    ax.set_xlabel("epoch")
    ax.set_ylabel("MSE (scaled units)")
    ax.set_title("forecast training (dotted: best epoch, weights restored)")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    C.ensure_parent(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------
# command line

QUICK = dict(cell="gru", layers=2, hidden=32, dropout=0.1, window=24, epochs=40, patience=10, batch=16, lr=3e-3)
FULL = dict(cell="gru", layers=2, hidden=64, dropout=0.2, window=24, epochs=400, patience=40, batch=16, lr=2e-3)


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", choices=("sunspots", "co2"), default="sunspots")
    p.add_argument("--impl", choices=C.IMPLS, default="rnnkit", help="the recurrent engine (default rnnkit)")
    p.add_argument("--compare", action="store_true",
                   help="train with rnnkit and with torch.nn from the same seed and initial weights")
    p.add_argument("--cell", choices=("gru", "lstm", "rnn"), default=None, help="gru (default), lstm or rnn")
    p.add_argument("--layers", type=int, default=None)
    p.add_argument("--hidden", type=int, default=None)
    p.add_argument("--dropout", type=float, default=None, help="dropout between recurrent layers")
    p.add_argument("--window", type=int, default=None, help="input window length")
    p.add_argument("--horizon", type=int, default=1, help="forecast this many steps after the window")
    p.add_argument("--relative", action=argparse.BooleanOptionalAction, default=None,
                   help="window-relative inputs, predict the change (default: on for co2, off for sunspots)")
    p.add_argument("--val-frac", type=float, default=0.15)
    p.add_argument("--test-frac", type=float, default=0.15)
    p.add_argument("--epochs", type=int, default=None, help="at most this many epochs")
    p.add_argument("--patience", type=int, default=None, help="early stopping patience (epochs)")
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--clip", type=float, default=1.0, help="gradient norm clipping (0: off)")
    p.add_argument("--plot", metavar="PATH", help="PNG: forecast against truth on the test span")
    p.add_argument("--plot-loss", metavar="PATH", help="PNG: train/validation loss per epoch")
    return C.add_run_args(p)


def parse_args(argv=None):
    return C.parse_with_presets(build_parser(), argv, QUICK, FULL)


def main(argv=None):
    args = parse_args(argv)
    data = prepare_data(args)
    if args.compare:
        hists = train_compare(args, data=data)
        for h in hists:
            print(summarize(args, h))
            print()
        print("== rnnkit vs torch.nn (same seed, same initial weights, epochs in lockstep) ==")
        print(compare_table(hists))
    else:
        hists = [train(args, data=data)]
        print(summarize(args, hists[0]))
    if args.plot:
        print("forecast plot:", plot(hists[0], args.plot, args))
    if args.plot_loss:
        print("loss plot:", plot_losses(hists, args.plot_loss))
    return hists


if __name__ == "__main__":
    main()
