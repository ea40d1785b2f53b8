#!/usr/bin/env python
"""Character-level language model on the Python standard library's own source.

The classic min-char-rnn exercise, grown up a little: an embedding, a stack of
1-3 recurrent layers (LSTM, GRU or Elman RNN) and a linear head, trained with
truncated backpropagation through time (the corpus is cut into `--batch`
parallel streams; each step sees `--seq-len` characters of every stream and
carries the hidden state, detached, into the next step), gradient clipping and
Adam or Adagrad. Validation loss is reported in bits per character; the model
then samples text from a prompt with a temperature.

The corpus is the source of the running interpreter's standard library
(the top-level public *.py files of sysconfig's "stdlib" folder, in sorted order,
cut at --corpus-chars) so the example runs offline on text nobody here wrote.

    python examples/char_lm.py --quick               # well under a minute on a 2-core CPU
    python examples/char_lm.py                       # the full run: LSTM 2x256, 1 epoch of 2.5M chars
    python examples/char_lm.py --cell gru --layers 3 --optim adagrad --clip-mode value
    python examples/char_lm.py --compare             # rnnkit and torch.nn, same seed and init
    python examples/char_lm.py --save lm.pt ; python examples/char_lm.py --resume lm.pt --epochs 2
    python examples/char_lm.py --plot-states states.png   # hidden units over a piece of text

`--impl rnnkit` (the default) uses rnnkit.LSTM/GRU/RNN, `--impl torch` the
torch.nn modules they replace; the two share parameter names, so a checkpoint
written by one resumes under the other.
"""
import argparse
import math
import os
import sys
import sysconfig

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402

# ---------------------------------------------------------------------------
# data

# A fixed alphabet: newline, printable ASCII, and one slot for everything else.
# Fixed (not read off the corpus) so that checkpoints and runs on other Pythons agree.
UNK = "\x00"
VOCAB = ["\n"] + [chr(c) for c in range(32, 127)] + [UNK]
STOI = {ch: i for i, ch in enumerate(VOCAB)}
UNK_ID = STOI[UNK]


def encode(text):
    return torch.tensor([STOI.get(ch, STOI[" "] if ch == "\t" else UNK_ID) for ch in text], dtype=torch.long)


def decode(ids):
    return "".join(VOCAB[int(i)] for i in ids).replace(UNK, "\N{REPLACEMENT CHARACTER}")


def stdlib_files(root=None):
    """The corpus files: top-level public modules of the stdlib, sorted by name."""
    root = root or sysconfig.get_paths()["stdlib"]
    names = sorted(n for n in os.listdir(root) if n.endswith(".py") and not n.startswith("_"))
    return [os.path.join(root, n) for n in names]


def load_corpus(max_chars, root=None):
    """Concatenate stdlib sources in sorted order until `max_chars`. Returns (text, files)."""
    parts, used, total = [], [], 0
    for path in stdlib_files(root):
        with open(path, encoding="utf-8", errors="replace") as fh:
            text = fh.read()
        parts.append(text)
        used.append(os.path.basename(path))
        total += len(text) + 1
        if total >= max_chars:
            break
    text = "\n".join(parts)[:max_chars]
    if len(text) < 10_000:
        raise RuntimeError(f"the stdlib corpus is unexpectedly small ({len(text)} chars)")
    return text, used


def split_corpus(text, val_frac):
    """Train on the head of the corpus, validate on its tail (a split by position)."""
    n_val = max(1, int(len(text) * val_frac))
    return text[:-n_val], text[-n_val:]


def streams(ids, batch):
    """Cut a 1-D id tensor into `batch` contiguous streams: shape (length, batch)."""
    n = ids.numel() // batch
    if n < 2:
        raise ValueError(f"text of {ids.numel()} chars is too short for batch {batch}")
    return ids[: n * batch].view(batch, n).t().contiguous()


def steps_per_pass(stream, seq_len):
    return max(1, (stream.size(0) - 1) // seq_len)


def window(stream, i, seq_len):
    """Inputs and next-character targets of step i of a pass over `stream`."""
    lo = i * seq_len
    hi = min(lo + seq_len, stream.size(0) - 1)
    return stream[lo:hi], stream[lo + 1 : hi + 1]


# ---------------------------------------------------------------------------
# model


class CharLM(nn.Module):
    """Embedding -> stacked RNN (rnnkit or torch.nn) -> linear head. Layout (T, B)."""

    def __init__(self, rnn_cls, cell, vocab_size, emb, hidden, layers, dropout):
        super().__init__()
        self.cell = cell
        self.embed = nn.Embedding(vocab_size, emb)
        extra = {"nonlinearity": "tanh"} if cell == "rnn" else {}
        self.rnn = rnn_cls(emb, hidden, num_layers=layers, dropout=dropout if layers > 1 else 0.0, **extra)
        self.head = nn.Linear(hidden, vocab_size)

    def forward(self, x, state=None):
        out, state = self.rnn(self.embed(x), state)
        return self.head(out), state, out


def detach(state):
    if state is None:
        return None
    if isinstance(state, tuple):
        return tuple(s.detach() for s in state)
    return state.detach()


MODEL_KEYS = ("cell", "layers", "hidden", "emb")
DATA_KEYS = ("corpus_chars", "val_frac", "batch", "seq_len")
TRAIN_KEYS = ("dropout", "optim", "clip", "clip_mode")  # the learning rate lives in the optimizer state


def build_model(args, impl=None):
    impl = impl or args.impl
    cls = C.rnn_class(impl, args.cell)
    return CharLM(cls, args.cell, len(VOCAB), args.emb, args.hidden, args.layers, args.dropout)


def make_optimizer(args, params):
    if args.optim == "adam":
        return torch.optim.Adam(params, lr=args.lr or 2e-3)
    if args.optim == "adagrad":
        return torch.optim.Adagrad(params, lr=args.lr or 0.1)  # min-char-rnn's choice
    raise ValueError(f"--optim must be adam or adagrad, got {args.optim!r}")


def clip(args, params):
    if not args.clip:
        return
    if args.clip_mode == "value":  # min-char-rnn: np.clip(dparam, -5, 5)
        torch.nn.utils.clip_grad_value_(params, args.clip)
    else:
        torch.nn.utils.clip_grad_norm_(params, args.clip)


@torch.no_grad()
def evaluate(model, val_stream, seq_len):
    """Validation loss in bits per character (hidden state carried through the streams)."""
    was_training = model.training
    model.eval()
    state, total, count = None, 0.0, 0
    for i in range(steps_per_pass(val_stream, seq_len)):
        x, y = window(val_stream, i, seq_len)
        logits, state, _ = model(x, state)
        total += F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1), reduction="sum").item()
        count += y.numel()
    model.train(was_training)
    return total / count / math.log(2)


@torch.no_grad()
def sample(model, prompt, n_chars, temperature=0.8, generator=None):
    """Warm the state on `prompt`, then draw `n_chars` characters from softmax(logits / T).

    temperature 0 means greedy (argmax)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    ids = encode(prompt or "\n").to(device).view(-1, 1)
    logits, state, _ = model(ids)
    last = logits[-1, 0]
    out = []
    for _ in range(n_chars):
        if temperature <= 0:
            nxt = int(last.argmax())
        else:
            probs = F.softmax(last.float() / temperature, dim=-1)
            nxt = int(torch.multinomial(probs.cpu(), 1, generator=generator))
        out.append(nxt)
        logits, state, _ = model(torch.tensor([[nxt]], device=device), state)
        last = logits[-1, 0]
    model.train(was_training)
    return (prompt or "") + decode(out)


@torch.no_grad()
def hidden_trace(model, text, layer=-1):
    """Hidden state h_t of one layer after each character of `text`: (len(text), hidden)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    ids = encode(text).to(device)
    state, rows = None, []
    for t in range(ids.numel()):
        _, state, _ = model(ids[t : t + 1].view(1, 1), state)
        h = state[0] if isinstance(state, tuple) else state  # (layers, 1, H)
        rows.append(h[layer, 0].float().cpu())
    model.train(was_training)
    return torch.stack(rows)


# ---------------------------------------------------------------------------
# training


def prepare_data(args, device):
    text, files = load_corpus(args.corpus_chars)
    train_text, val_text = split_corpus(text, args.val_frac)
    train_stream = streams(encode(train_text), args.batch).to(device)
    val_ids = encode(val_text[: args.val_chars] if args.val_chars else val_text)
    val_stream = streams(val_ids, min(args.batch, max(1, val_ids.numel() // (args.seq_len + 1)))).to(device)
    return {
        "files": files,
        "train_chars": len(train_text),
        "val_chars": val_ids.numel(),
        "val_text": val_text,
        "train": train_stream,
        "val": val_stream,
    }


class Trainer:
    """One model under training, one step at a time (so that two engines can run in lockstep).

    Each trainer keeps its own random-generator state (dropout draws from it), so
    interleaving two trainers changes nothing in either. `init_state` (a state_dict)
    replaces the model's fresh init, so two engines can start from identical weights.
    """

    def __init__(self, args, init_state=None, data=None, impl=None, save=None):
        self.args = args
        self.impl = impl = impl or args.impl
        self.device = device = C.resolve_device(args.device)
        self.save = save
        ckpt = None
        if args.resume:
            ckpt = torch.load(args.resume, map_location="cpu", weights_only=False)
            for key in MODEL_KEYS + DATA_KEYS + TRAIN_KEYS:
                setattr(args, key, ckpt["config"][key])
        self.data = data = data or prepare_data(args, device)

        C.set_seed(args.seed)
        self.model = model = build_model(args, impl).to(device)
        if init_state is not None:
            model.load_state_dict(init_state)
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.opt = make_optimizer(args, self.params)
        self.spe = spe = steps_per_pass(data["train"], args.seq_len)
        self.total = args.epochs * spe
        if args.max_steps:
            self.total = min(self.total, args.max_steps)

        self.hist = {"impl": impl, "loss": [], "val": [], "step_time": [], "steps_per_epoch": spe,
                     "epoch_times": [], "start_step": 0}
        self.state = None
        # training draws (dropout) start from this generator state: the same for every engine
        torch.manual_seed(args.seed + 1)
        self.rng = C.rng_get(device)
        if ckpt is not None:
            model.load_state_dict(ckpt["model"])
            self.opt.load_state_dict(ckpt["optim"])
            self.hist["loss"] = list(ckpt["history"]["loss"])
            self.hist["val"] = [tuple(v) for v in ckpt["history"]["val"]]
            self.hist["start_step"] = ckpt["step"]
            state = ckpt["state"]
            if state is not None:
                state = tuple(s.to(device) for s in state) if isinstance(state, tuple) else state.to(device)
            self.state = state
            self.rng = ckpt["rng"]
        self.step_no = self.hist["start_step"]
        self.epoch_time, self.epoch_steps = 0.0, 0
        model.train()

    @property
    def done(self):
        return self.step_no >= self.total

    def step(self):
        """One truncated-BPTT step; validates (and checkpoints) when due. Returns the loss."""
        args, hist, model, device = self.args, self.hist, self.model, self.device
        i = self.step_no % self.spe
        if i == 0:
            self.state = None  # each pass over the streams starts from zeros
        x, y = window(self.data["train"], i, args.seq_len)
        C.rng_set(self.rng, device)
        t0 = C.now(device)
        logits, state, _ = model(x, self.state)
        self.state = detach(state)
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        clip(args, self.params)
        self.opt.step()
        value = loss.item()  # host sync: the step is over
        dt = C.now(device) - t0
        self.rng = C.rng_get(device)
        if not math.isfinite(value):
            raise FloatingPointError(f"training loss became {value} at step {self.step_no}")
        hist["loss"].append(value)
        hist["step_time"].append(dt)
        self.epoch_time += dt
        self.epoch_steps += 1
        self.step_no = done = self.step_no + 1
        if done % self.spe == 0:
            if self.epoch_steps == self.spe:
                hist["epoch_times"].append(self.epoch_time)
            self.epoch_time, self.epoch_steps = 0.0, 0
        if (args.eval_every and done % args.eval_every == 0) or done == self.total or done % self.spe == 0:
            if not hist["val"] or hist["val"][-1][0] != done:
                hist["val"].append((done, evaluate(model, self.data["val"], args.seq_len)))
                if self.save:
                    save_checkpoint(self.save, args, model, self.opt, done, self.state, hist, self.rng)
        return value

    def history(self):
        return {**self.hist, "model": self.model, "data": self.data, "end_step": self.total}


def train(args, init_state=None, data=None, impl=None, label=None):
    """Train one model; return its history.

    history: impl, loss (per-step training loss, nats/char), val (list of (step, bpc)),
    step_time (seconds per step), steps_per_epoch, epoch_times (complete epochs run here),
    start_step, end_step, model, data.
    """
    tr = Trainer(args, init_state=init_state, data=data, impl=impl, save=args.save)
    bar = C.progress(total=tr.total, initial=tr.step_no, disable=args.quiet, desc=label or f"{tr.impl} {args.cell}",
                     unit="step", leave=False)
    while not tr.done:
        value = tr.step()
        bar.update(1)
        bar.set_postfix(loss=f"{value:.3f}", val_bpc=f"{tr.hist['val'][-1][1]:.3f}" if tr.hist["val"] else "-")
    bar.close()
    return tr.history()


def train_compare(args, data=None, impls=("rnnkit", "torch")):
    """Both engines from the same seed and the same initial weights, stepped in lockstep
    (one step of each in turn), so that a busy machine slows both alike."""
    device = C.resolve_device(args.device)
    data = data or prepare_data(args, device)
    C.set_seed(args.seed)
    init = {k: v.clone() for k, v in build_model(args, "torch").state_dict().items()}  # one init for both
    trainers = [Trainer(args, init_state=init, data=data, impl=impl, save=args.save if n == 0 else None)
                for n, impl in enumerate(impls)]
    bar = C.progress(total=trainers[0].total, disable=args.quiet, desc=f"{' vs '.join(impls)} {args.cell}",
                     unit="step", leave=False)
    while not all(t.done for t in trainers):
        values = [t.step() for t in trainers if not t.done]
        bar.update(1)
        bar.set_postfix({t.impl: f"{v:.3f}" for t, v in zip(trainers, values)})
    bar.close()
    return [t.history() for t in trainers]


def save_checkpoint(path, args, model, opt, step, state, hist, rng):
    C.ensure_parent(path)
    cfg = {k: getattr(args, k) for k in MODEL_KEYS + DATA_KEYS + TRAIN_KEYS}
    state = detach(state)
    torch.save({
        "config": cfg,
        "vocab": VOCAB,
        "model": model.state_dict(),
        "optim": opt.state_dict(),
        "step": step,
        "state": None if state is None else (tuple(s.cpu() for s in state) if isinstance(state, tuple) else state.cpu()),
        "rng": rng,
        "history": {"loss": hist["loss"], "val": hist["val"]},
        "impl": hist["impl"],
    }, path)


# ---------------------------------------------------------------------------
# reporting


def timing(hist):
    """(ms per step, s per epoch, whether the epoch time was measured or extrapolated)."""
    times = hist["step_time"][1:] or hist["step_time"]  # the first step warms caches up
    ms = 1000 * sum(times) / max(1, len(times))
    if hist["epoch_times"]:
        return ms, sum(hist["epoch_times"]) / len(hist["epoch_times"]), True
    return ms, ms * hist["steps_per_epoch"] / 1000, False


def summarize(args, hist):
    data = hist["data"]
    ms, sep, measured = timing(hist)
    losses = hist["loss"]
    tail = losses[-20:]
    last = sum(tail) / len(tail)
    val_last = hist["val"][-1][1] if hist["val"] else float("nan")
    best = min(hist["val"], key=lambda v: v[1]) if hist["val"] else (0, float("nan"))
    n = hist["end_step"] - hist["start_step"]
    lines = [
        f"== char_lm: {hist['impl']} {args.cell.upper()} {args.layers}x{args.hidden} "
        f"(emb {args.emb}, dropout {args.dropout}), {args.optim}, {C.env_line(C.resolve_device(args.device))} ==",
        f"corpus   {data['train_chars'] + len(data['val_text']):,} chars from {len(data['files'])} stdlib files "
        f"({data['files'][0]} .. {data['files'][-1]}); train {data['train_chars']:,}, val {data['val_chars']:,}; vocab {len(VOCAB)}",
        f"steps    {n} this run ({hist['start_step']} -> {hist['end_step']}), "
        f"{hist['end_step'] / hist['steps_per_epoch']:.2f} epochs of {hist['steps_per_epoch']} steps "
        f"(batch {args.batch} x {args.seq_len} chars)",
        f"train    {losses[0]:.3f} -> {last:.3f} nats/char (mean of last {len(tail)} steps) = {last / math.log(2):.3f} bits/char",
        f"val      {val_last:.3f} bits/char (best {best[1]:.3f} at step {best[0]})",
        f"time     {ms:.1f} ms/step, {sep:.1f} s/epoch{'' if measured else ' (extrapolated from ms/step)'}",
    ]
    return "\n".join(lines)


def compare_table(hists, first=10):
    rows = []
    base = None
    for h in hists:
        ms, sep, measured = timing(h)
        base = base or ms
        rows.append([h["impl"], f"{h['loss'][0]:.4f}", f"{sum(h['loss'][-20:]) / len(h['loss'][-20:]):.4f}",
                     f"{h['val'][-1][1]:.4f}", f"{ms:.1f}", f"{sep:.1f}{'' if measured else '*'}"])
    out = C.format_table(["impl", "loss@1", "loss(last20)", "val bpc", "ms/step", "s/epoch"], rows)
    if len(hists) == 2:
        a, b = hists
        k = min(first, len(a["loss"]), len(b["loss"]))
        d_first = max(abs(x - y) for x, y in zip(a["loss"][:k], b["loss"][:k]))
        d_all = max(abs(x - y) for x, y in zip(a["loss"], b["loss"]))
        ta, tb = timing(a)[0], timing(b)[0]
        out += (f"\nmax |loss difference|: {d_first:.2e} over the first {k} steps, {d_all:.2e} over all "
                f"{min(len(a['loss']), len(b['loss']))}\n{a['impl']} / {b['impl']} time per step: {ta / tb:.2f}x "
                f"({'faster' if ta < tb else 'slower'} by {abs(1 - ta / tb) * 100:.0f}%)")
    if any(not timing(h)[2] for h in hists):
        out += "\n* extrapolated from ms/step (no complete epoch in this run)"
    return out


def pick_units(trace, k, select="slow"):
    """Indices (sorted) of the k units to show, from a (T, H) trace.

    active: the k units with the largest variance.
    slow: among the more active half of the units, the k whose value changes least
    from one character to the next relative to their variance -- the units that hold
    something over a stretch of text (inside a string, a bracket, an indented block)."""
    var = trace.var(0)
    k = min(k, trace.size(1))
    if select == "active":
        return torch.sort(torch.topk(var, k).indices).values
    step = (trace[1:] - trace[:-1]).pow(2).mean(0)
    score = var / (step + 1e-6)
    score[var < var.median()] = -1.0
    return torch.sort(torch.topk(score, k).indices).values


def plot_states(model, text, path, units=32, layer=-1, width=64, select="slow", warmup="", context=None):
    """Heatmap of `units` hidden units (rows) over the characters of `text` (columns).

    The model first reads `warmup` (the text just before), so the state is not a cold
    start; the units are chosen by `pick_units` over `context` (default: the text)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    trace = hidden_trace(model, warmup + text, layer)[len(warmup):]  # (T, H)
    H = trace.size(1)
    picked = pick_units(hidden_trace(model, context, layer) if context else trace, units, select)
    k = len(picked)
    vals = trace[:, picked].t().numpy()  # (k, T)
    lim = max(1.0, float(abs(vals).max())) if model.cell == "rnn" else 1.0
    rows = [(s, min(s + width, len(text))) for s in range(0, len(text), width)]
    fig, axes = plt.subplots(len(rows), 1, figsize=(0.2 * width + 1.8, (0.12 * k + 0.8) * len(rows) + 0.5),
                             squeeze=False, layout="constrained")
    shown = {"\n": "\u21b5", " ": "\u00b7", "\t": "\u2192"}
    for ax, (lo, hi) in zip(axes[:, 0], rows):
        im = ax.imshow(vals[:, lo:hi], aspect="auto", cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
        ax.set_xticks(range(hi - lo))
        ax.set_xticklabels([shown.get(c, c) for c in text[lo:hi]], fontsize=9, family="monospace")
        ax.tick_params(axis="x", length=0, pad=2)
        ax.set_yticks(range(0, k, 4))
        ax.set_yticklabels([str(int(u)) for u in picked[::4]], fontsize=7)
        ax.set_ylabel("hidden unit", fontsize=8)
        ax.set_xlim(-0.5, width - 0.5)
    n_layer = layer if layer >= 0 else model.rnn.num_layers + layer
    how = "most active" if select == "active" else "slowest-changing"
    where = f"over the {len(context):,} characters around it" if context else "here"
    fig.suptitle(f"{model.cell.upper()} hidden state h_t (layer {n_layer + 1} of {model.rnn.num_layers}) over "
                 f"{len(text)} characters of validation text (\u00b7 space, \u21b5 newline)\n"
                 f"rows: {k} of the {H} units, the {how} {where}", fontsize=10)
    fig.colorbar(im, ax=axes[:, 0].tolist(), fraction=0.015, pad=0.01, label="h")
    C.ensure_parent(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_losses(hists, path, title=""):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2 if len(hists) == 2 else 1, figsize=(12 if len(hists) == 2 else 7, 4.2), squeeze=False)
    ax = axes[0, 0]
    colors = {"rnnkit": "tab:blue", "torch": "tab:orange"}
    for h in hists:
        bits = [v / math.log(2) for v in h["loss"]]
        dashed = "--" if h["impl"] == "torch" and len(hists) > 1 else "-"
        ax.plot(range(1, len(bits) + 1), bits, lw=0.8, alpha=0.6, color=colors.get(h["impl"]), ls=dashed,
                label=f"{h['impl']} train")
        if h["val"]:
            s, v = zip(*h["val"])
            ax.plot(s, v, "o", ls=dashed, ms=4, color=colors.get(h["impl"]), label=f"{h['impl']} validation")
    ax.set_xlabel("training step")
    ax.set_ylabel("bits per character")
    ax.set_title(title or ("character LM loss (the two engines' curves overlap)" if len(hists) > 1
                           else "character LM loss"))
    ax.grid(alpha=0.3)
    ax.legend()
    if len(hists) == 2:
        a, b = hists
        k = min(len(a["loss"]), len(b["loss"]))
        diff = [abs(x - y) for x, y in zip(a["loss"][:k], b["loss"][:k])]
        ax2 = axes[0, 1]
        ax2.semilogy(range(1, k + 1), [max(d, 1e-9) for d in diff], lw=0.8, color="tab:green")
        ax2.set_xlabel("training step")
        ax2.set_ylabel(f"|loss {a['impl']} - loss {b['impl']}| (nats)")
        ax2.set_title("same seed, same initial weights (equal losses drawn at 1e-9)")
        ax2.grid(alpha=0.3, which="both")
    fig.tight_layout()
    C.ensure_parent(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def state_text(val_text, n=128, warm=300, context=4000):
    """Pieces of validation text for the hidden-state picture: (warmup, text, context).

    `text` starts at a `def` line a third of the way in; `warmup` is what precedes it,
    `context` a longer stretch around it over which the units are chosen."""
    at = val_text.find("\n    def ", len(val_text) // 3)
    if at < 0:
        at = val_text.find("\n", len(val_text) // 3)
    at = max(0, at + 1)
    lo = max(0, at - context // 2)
    return val_text[max(0, at - warm) : at], val_text[at : at + n], val_text[lo : lo + context]


# ---------------------------------------------------------------------------
# command line

QUICK = dict(cell="lstm", layers=1, hidden=128, emb=32, dropout=0.0, batch=32, seq_len=50, epochs=1,
             max_steps=0, corpus_chars=300_000, val_frac=0.05, val_chars=8_000, eval_every=60,
             sample_chars=200)
FULL = dict(cell="lstm", layers=2, hidden=256, emb=64, dropout=0.1, batch=32, seq_len=100, epochs=1,
            max_steps=0, corpus_chars=2_500_000, val_frac=0.05, val_chars=40_000, eval_every=200,
            sample_chars=600)


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--impl", choices=C.IMPLS, default="rnnkit", help="the recurrent engine (default rnnkit)")
    p.add_argument("--compare", action="store_true",
                   help="train with rnnkit and with torch.nn from the same seed and initial weights")
    p.add_argument("--cell", choices=C.CELLS, default=None, help="lstm (default), gru or rnn (tanh)")
    p.add_argument("--layers", type=int, choices=(1, 2, 3), default=None)
    p.add_argument("--hidden", type=int, default=None)
    p.add_argument("--emb", type=int, default=None, help="embedding size")
    p.add_argument("--dropout", type=float, default=None, help="dropout between recurrent layers")
    p.add_argument("--batch", type=int, default=None, help="parallel streams")
    p.add_argument("--seq-len", type=int, default=None, help="BPTT truncation length")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many steps in all (0: no cap)")
    p.add_argument("--optim", choices=("adam", "adagrad"), default="adam")
    p.add_argument("--lr", type=float, default=None, help="default 2e-3 for adam, 0.1 for adagrad")
    p.add_argument("--clip", type=float, default=5.0, help="gradient clipping threshold (0: off)")
    p.add_argument("--clip-mode", choices=("norm", "value"), default="norm",
                   help="clip the global norm, or each element to [-clip, clip] as min-char-rnn does")
    p.add_argument("--corpus-chars", type=int, default=None, help="characters of stdlib source to use")
    p.add_argument("--val-frac", type=float, default=None)
    p.add_argument("--val-chars", type=int, default=None, help="validate on at most this many characters")
    p.add_argument("--eval-every", type=int, default=None)
    p.add_argument("--prompt", default="def ")
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--sample-chars", type=int, default=None)
    p.add_argument("--save", metavar="PATH", help="write a checkpoint here (at every validation)")
    p.add_argument("--resume", metavar="PATH", help="continue training from a checkpoint")
    p.add_argument("--plot-states", metavar="PATH", help="PNG: heatmap of hidden units over a piece of text")
    p.add_argument("--state-units", type=int, default=32, help="hidden units in the heatmap")
    p.add_argument("--state-select", choices=("slow", "active"), default="slow",
                   help="show the slowest-changing units (default) or the most active ones")
    p.add_argument("--plot-loss", metavar="PATH", help="PNG: loss curves (both engines with --compare)")
    return C.add_run_args(p)


def parse_args(argv=None):
    return C.parse_with_presets(build_parser(), argv, QUICK, FULL)


def main(argv=None):
    args = parse_args(argv)
    C.resolve_device(args.device)  # fail early on a --device that is not there
    gen = torch.Generator().manual_seed(args.seed)
    if args.compare:
        if args.resume:
            raise SystemExit("--compare starts both engines from scratch; it does not take --resume")
        hists = train_compare(args)
        for h in hists:
            print(summarize(args, h))
            print()
        print("== rnnkit vs torch.nn (same seed, same initial weights, stepped in lockstep) ==")
        print(compare_table(hists))
        main_hist = hists[0]
    else:
        hists = [train(args)]
        main_hist = hists[0]
        print(summarize(args, main_hist))
    model = main_hist["model"]
    text = sample(model, args.prompt, args.sample_chars, args.temperature, generator=gen)
    print(f"\n== sample ({main_hist['impl']}, temperature {args.temperature}, prompt {args.prompt!r}) ==")
    print(text)
    print("== end of sample ==")
    if args.plot_states:
        warm, piece, context = state_text(main_hist["data"]["val_text"])
        print("hidden-state heatmap:", plot_states(model, piece, args.plot_states, units=args.state_units,
                                                   select=args.state_select, warmup=warm, context=context))
    if args.plot_loss:
        print("loss curves:", plot_losses(hists, args.plot_loss))
    if args.save:
        print("checkpoint:", args.save)
    return hists


if __name__ == "__main__":
    main()
