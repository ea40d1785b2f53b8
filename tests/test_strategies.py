"""Every CPU strategy of the planner on the same inputs: each forced in turn,
compared with torch.nn (values and every gradient) and so with each other;
forward and backward, per-sequence lengths (unsorted), reverse, projection.
Also the planner itself: forcing by name and by RNNKIT_STRATEGY, the errors
for a strategy that cannot run a layer, and the record of what ran.

cuda_step_emulated runs the CUDA step kernels' thread bodies block by block
and thread by thread on the CPU: the CUDA kernels' indexing is checked here
where no GPU is."""
import pytest
import torch

import rnnkit
from rnnkit import ops
from reference import MODES, assert_close, layer_weights, torch_layer

STRATEGIES = rnnkit.strategies("cpu")
FUSED = [s for s in STRATEGIES if s.startswith("fused_loop")]

# 80 units: two threads take parts of 48 and 32 units; 8 rows: enough rows
# for the projecting loop's rules; odd T and I.
SIZES = dict(T=5, B=8, I=7, H=80)
LENGTHS = [3, 5, 1, 4, 5, 2, 0, 5]  # unsorted, one row of length 0


def torch_reference(ref, x, h0, c0, lengths, reverse):
    """torch.nn run row by row on each row's own length, forward or reversed
    in time: y (zero past a row's end), h_n and c_n of the rnnkit op."""
    T, B, _ = x.shape
    ys, hs, cs = [], [], []
    for b in range(B):
        n = T if lengths is None else int(lengths[b])
        y_b = x.new_zeros(T, ref.proj_size or ref.hidden_size)
        h_b, c_b = h0[b], (c0[b] if c0 is not None else None)
        if n > 0:
            xs = x[:n, b:b + 1]
            xs = xs.flip(0) if reverse else xs
            state = (h_b[None, None], c_b[None, None]) if c0 is not None else h_b[None, None]
            out, state = ref(xs, state)
            out = out[:, 0].flip(0) if reverse else out[:, 0]
            y_b = torch.cat([out, y_b[n:]])
            h_b, c_b = (state[0][0, 0], state[1][0, 0]) if c0 is not None else (state[0, 0], None)
        ys.append(y_b)
        hs.append(h_b)
        cs.append(c_b)
    return torch.stack(ys, 1), torch.stack(hs), (torch.stack(cs) if c0 is not None else None)


def refusal(strategy, mode, reverse, lengths, training, T=SIZES["T"]):
    """What a strategy must say when forced on a case it cannot run, or None
    where it must run it."""
    if strategy == "single_step" and T != 1:
        return "one step only"
    if strategy == "torch_native":
        if mode != "LSTM":
            return "only torch.nn's LSTM"
        if training:
            return "inference only"
        if lengths:
            return "per-sequence lengths"
    if strategy == "fused_loop_projecting" and reverse and lengths:
        return "reverse with per-sequence lengths"
    return None


def run_case(strategy, mode, *, T, B, I, H, proj=0, reverse=False, lengths=None, bias=True,
             dtype=torch.float32, training=True):
    """Outputs (and, training, gradients) of one layer through rnnkit
    (strategy forced) and through torch.nn, with the same weights and inputs."""
    ref = torch_layer(mode, I, H, bias=bias, proj_size=proj, dtype=dtype)
    P = proj or H
    x = torch.randn(T, B, I, dtype=dtype, requires_grad=True)
    h0 = torch.randn(B, P, dtype=dtype, requires_grad=True)
    c0 = torch.randn(B, H, dtype=dtype, requires_grad=True) if mode == "LSTM" else None
    params = [p for p in layer_weights(ref) if p is not None]
    inputs = [x, h0] + ([c0] if c0 is not None else []) + params
    lengths_t = None if lengths is None else torch.tensor(lengths)

    with rnnkit.strategy(strategy), rnnkit.record_strategies() as ran, \
            torch.set_grad_enabled(training):
        y, hn, cn = ops.rnn_layer(x, h0, c0, *layer_weights(ref), lengths_t, mode, reverse)
        got = [y, hn] + ([cn] if cn is not None else [])
        if training:
            grads_out = [torch.randn_like(o) for o in got]
            got += list(torch.autograd.grad(got, inputs, grads_out))
    assert ran == [strategy] * (2 if training else 1), f"forced {strategy}, ran {ran}"

    with torch.set_grad_enabled(training):
        y_r, hn_r, cn_r = torch_reference(ref, x, h0, c0, lengths_t, reverse)
        want = [y_r, hn_r] + ([cn_r] if cn_r is not None else [])
        if training:
            want += list(torch.autograd.grad(want, inputs, grads_out))
    return got, want


def assert_all_close(got, want, dtype, what):
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        assert_close(g, w, dtype, f"{what}: tensor {i}")


@pytest.mark.parametrize("training", [True, False], ids=["training", "inference"])
@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["full", "lengths"])
def test_every_strategy_matches_torch(strategy, mode, reverse, lengths, training):
    why_not = refusal(strategy, mode, reverse, lengths, training)
    if why_not:
        with pytest.raises(ValueError, match=why_not):
            run_case(strategy, mode, reverse=reverse, lengths=lengths, training=training, **SIZES)
        return
    got, want = run_case(strategy, mode, reverse=reverse, lengths=lengths, training=training, **SIZES)
    assert_all_close(got, want, torch.float32, f"{strategy} {mode}")


@pytest.mark.parametrize("strategy", ["step_loop", "cuda_step_emulated"])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("lengths", [None, [2, 3, 1]], ids=["full", "lengths"])
def test_projection_matches_torch(strategy, reverse, lengths):
    got, want = run_case(strategy, "LSTM", T=3, B=3, I=4, H=17, proj=5, reverse=reverse,
                         lengths=lengths, dtype=torch.float64)
    assert_all_close(got, want, torch.float64, f"{strategy} projected LSTM")


@pytest.mark.parametrize("reverse", [False, True])
def test_torch_native_projection_inference(reverse):
    got, want = run_case("torch_native", "LSTM", T=3, B=3, I=4, H=17, proj=5, reverse=reverse,
                         dtype=torch.float64, training=False)
    assert_all_close(got, want, torch.float64, "torch_native projected LSTM")


@pytest.mark.parametrize("training", [True, False], ids=["training", "inference"])
@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("B", [3, 21])
def test_one_step_on_every_strategy(strategy, mode, dtype, training, B):
    """A sequence of one step (cells, decoding): single_step's case, and every
    other strategy's too; a row of length 0 keeps its state. 3 rows take
    single_step's dot products, 21 its broadcasts (16 rows at a time and 5)."""
    lengths = None if strategy == "torch_native" else ([1, 0] * B)[:B]
    why_not = refusal(strategy, mode, False, lengths, training, T=1)
    if why_not or (dtype == torch.float64 and strategy.startswith("fused_loop")):
        return  # refusals are checked above; the fused loops are float32 only
    got, want = run_case(strategy, mode, T=1, B=B, I=5, H=17, lengths=lengths, dtype=dtype,
                         training=training)
    assert_all_close(got, want, dtype, f"{strategy} {mode} one step")


@pytest.mark.parametrize("strategy", ["step_loop", "cuda_step_emulated"])
@pytest.mark.parametrize("mode", MODES)
def test_float64_and_no_bias(strategy, mode):
    got, want = run_case(strategy, mode, T=4, B=3, I=5, H=17, bias=False, lengths=[4, 1, 3],
                         dtype=torch.float64)
    assert_all_close(got, want, torch.float64, f"{strategy} {mode} float64 without bias")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("mode", MODES)
def test_half_types_emulated_cuda_matches_step_loop(dtype, mode):
    """The CUDA step kernels (emulated) and the CPU step loop on half types:
    the same cell math, stored in the same type at the same points."""
    torch.manual_seed(0)
    ref = torch_layer(mode, 6, 33, dtype=dtype)
    x = torch.randn(4, 3, 6, dtype=dtype)
    h0 = torch.randn(3, 33, dtype=dtype)
    c0 = torch.randn(3, 33, dtype=dtype) if mode == "LSTM" else None
    results = {}
    for strategy in ("step_loop", "cuda_step_emulated"):
        with rnnkit.strategy(strategy), torch.no_grad():
            results[strategy] = ops.rnn_layer(x, h0, c0, *layer_weights(ref), None, mode, False)
    for a, b in zip(results["step_loop"], results["cuda_step_emulated"]):
        if a is not None:
            torch.testing.assert_close(a.float(), b.float(), atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize("strategy", FUSED)
def test_fused_loops_refuse_what_they_cannot_run(strategy):
    """Forced on a layer they cannot run, the fused loops say why."""
    for kwargs, reason in [(dict(dtype=torch.float64), "float32 only"),
                           (dict(proj=3), "projection")]:
        with pytest.raises(ValueError, match=reason):
            run_case(strategy, "LSTM", T=2, B=2, I=3, H=5, **kwargs)


def test_unknown_strategy_names_the_choices():
    with pytest.raises(ValueError, match="unknown strategy 'nope'.*step_loop"):
        run_case("nope", "GRU", T=2, B=2, I=3, H=5)


def test_environment_variable_forces_and_python_overrides_it(monkeypatch):
    monkeypatch.setenv("RNNKIT_STRATEGY", "step_loop")
    x = torch.randn(3, 2, 4)
    lstm = rnnkit.LSTM(4, 16)
    with rnnkit.record_strategies() as ran:
        lstm(x)
    assert ran == ["step_loop"]
    with rnnkit.strategy("fused_loop"), rnnkit.record_strategies() as ran:
        lstm(x)
    assert ran == ["fused_loop"]
    monkeypatch.setenv("RNNKIT_STRATEGY", "no_such_strategy")
    with pytest.raises(ValueError, match="RNNKIT_STRATEGY"):
        lstm(x)


def test_forcing_is_restored_after_the_block():
    with rnnkit.strategy("step_loop"):
        with rnnkit.strategy("fused_loop"):
            assert rnnkit._C._forced_strategy() == "fused_loop"
        assert rnnkit._C._forced_strategy() == "step_loop"
    assert rnnkit._C._forced_strategy() is None
    with pytest.raises(TypeError):
        with rnnkit.strategy(3):
            pass


def test_planner_defaults():
    """What the planner picks without being told, where it does not depend
    on the machine: float64 and projections run the step loop; a float32 LSTM
    runs a fused loop; every layer of a module is recorded, forward then backward."""
    cases = [(rnnkit.LSTM(3, 8, dtype=torch.float64), torch.float64, "step_loop"),
             (rnnkit.LSTM(3, 8, proj_size=2), torch.float32, "step_loop")]
    for module, dtype, expected in cases:
        with rnnkit.record_strategies() as ran:
            module(torch.randn(2, 1, 3, dtype=dtype))
        assert ran == [expected]
    gru = rnnkit.GRU(3, 8, num_layers=2, bidirectional=True)
    x = torch.randn(4, 2, 3, requires_grad=True)
    with rnnkit.record_strategies() as ran:
        gru(x)[0].sum().backward()
    assert len(ran) == 8 and set(ran) <= set(STRATEGIES) - {"cuda_step_emulated"}, ran


# ---- the planner's measurements --------------------------------------------------

@pytest.fixture
def fresh_measurements(monkeypatch):
    monkeypatch.delenv("RNNKIT_AUTOTUNE", raising=False)
    monkeypatch.delenv("RNNKIT_STRATEGY", raising=False)
    rnnkit._C._forget_measurements()
    yield
    rnnkit._C._forget_measurements()


def measured_times(line):
    """{strategy: seconds}, the rules' choice and the choice of one line of
    _measurements()."""
    times, choice = line.split(":", 1)[1].split(" -> ")
    times, rules = times.split(" (rules: ")
    parsed = {}
    for item in times.split():
        name, value = item.split("=")
        parsed[name] = float(value[:-2]) * 1e-6 if value.endswith("us") else None
    return parsed, rules.rstrip(")"), choice


def test_the_planner_measures_once_and_takes_the_fastest(fresh_measurements):
    lstm = rnnkit.LSTM(24, 40)
    x = torch.randn(6, 9, 24, requires_grad=True)
    with rnnkit.record_strategies() as ran:
        lstm(x)[0].sum().backward()
    lines = rnnkit._C._measurements()
    assert len(lines) == 2, lines  # forward and backward of this shape
    for line, pass_ in zip(sorted(lines), ["backward", "forward"]):
        assert pass_ in line
        times, rules, choice = measured_times(line)
        # Every strategy that can run the pass was timed (the emulated CUDA
        # kernels and torch_native, which cannot run a training pass, were not).
        assert set(times) == {"fused_loop_projecting", "fused_loop", "step_loop"}, line
        # The fastest, unless the rules' choice is within the margin of it.
        fastest = min(times, key=lambda n: times[n])
        if times[fastest] < 0.95 * times[rules]:
            assert choice == fastest, line
        else:
            assert choice == rules, line
        assert choice in ran
    # Met again: remembered, not measured again; another shape is measured.
    lstm(x)[0].sum().backward()
    assert len(rnnkit._C._measurements()) == 2
    with torch.no_grad():
        lstm(torch.randn(6, 3, 24))
    inference = [line for line in rnnkit._C._measurements() if "B=3" in line]
    assert len(inference) == 1 and "torch_native=" in inference[0], inference


def test_long_sequences_are_planned_by_length(fresh_measurements):
    """Beyond the trials' 32 steps, one choice serves each power-of-two span of
    lengths (the trials are extrapolated to it), and is measured once per span."""
    gru = rnnkit.GRU(8, 16)
    with torch.no_grad():
        for T in (40, 64, 33, 65, 12):
            gru(torch.randn(T, 2, 8))
    lengths = sorted(line.split(" T=")[1].split()[0] for line in rnnkit._C._measurements())
    assert lengths == ["12", "128", "64"], rnnkit._C._measurements()


def test_measuring_can_be_turned_off(fresh_measurements, monkeypatch):
    monkeypatch.setenv("RNNKIT_AUTOTUNE", "0")
    with rnnkit.record_strategies() as ran:
        rnnkit.GRU(5, 16)(torch.randn(4, 2, 5))
    assert rnnkit._C._measurements() == []
    assert ran == ["fused_loop"]  # the rules' choice: too few rows to project in the loop


def test_bad_knobs_are_named_at_once(fresh_measurements, monkeypatch):
    with pytest.raises(ValueError, match="unknown strategy 'bogus'.*step_loop"):
        with rnnkit.strategy("bogus"):
            pass
    assert rnnkit._C._forced_strategy() is None
    monkeypatch.setenv("RNNKIT_AUTOTUNE", "banana")
    with pytest.raises(ValueError, match="RNNKIT_AUTOTUNE must be 0 or 1.*banana"):
        rnnkit.GRU(5, 16)(torch.randn(4, 2, 5))


def test_forcing_skips_measuring(fresh_measurements):
    with rnnkit.strategy("step_loop"):
        rnnkit.RNN(5, 16)(torch.randn(4, 2, 5))
    assert rnnkit._C._measurements() == []


def test_lstm_avx512_units_match_the_generic_units():
    """The AVX-512 LSTM row is a special case of cell_units.h's forward_unit:
    same results to the float rounding of its exp and reciprocal."""
    for n in (1, 15, 16, 17, 80):
        err = rnnkit._C._lstm_avx512_max_error(n, 7 + n)
        if err < 0:
            pytest.skip("this CPU has no AVX-512")
        assert err <= 2e-6, f"{n} units: max difference {err}"


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_non_finite_values_propagate_as_in_torch(strategy):
    """inf in h0 meets sigmoid(-inf) = 0 in a gate: 0 * inf is NaN in torch,
    and must be here, on every strategy (GRU h0 = [inf, 0, 0] gives
    [nan, 1, nan] in torch.nn)."""
    torch.manual_seed(1)
    for mode in MODES:
        if refusal(strategy, mode, False, None, training=False):
            continue
        ref = torch_layer(mode, 2, 3, dtype=torch.float32)
        with torch.no_grad():
            ref.weight_hh_l0.copy_(torch.linspace(-2, 2, ref.weight_hh_l0.numel()).view_as(ref.weight_hh_l0))
        x = torch.randn(2, 1, 2)
        x[1, 0, 0] = float("-inf")
        h0 = torch.tensor([[float("inf"), 0.0, 0.0]])
        c0 = torch.tensor([[0.0, float("-inf"), 1.0]]) if mode == "LSTM" else None
        with torch.no_grad():
            y_ref, _ = ref(x, (h0[None], c0[None]) if c0 is not None else h0[None])
            with rnnkit.strategy(strategy):
                y, _, _ = ops.rnn_layer(x, h0, c0, *layer_weights(ref), None, mode, False)
        assert torch.equal(y.isnan(), y_ref.isnan()), f"{mode}: {y} vs torch.nn {y_ref}"
        assert torch.equal(y.isinf(), y_ref.isinf()), f"{mode}: {y} vs torch.nn {y_ref}"
        finite = y_ref.isfinite()
        assert_close(y[finite], y_ref[finite], torch.float32, f"{mode} finite outputs")


@pytest.mark.parametrize("change", ["in_place", "through_data", "new_tensor"])
def test_kept_transposed_weights_follow_changes(change):
    """single_step keeps weights transposed between calls (16 rows: brgemm's
    case); after any change of the weights, the next call uses the new ones:
    an in-place update (version bump), a write through .data (no bump, as in
    RL code's soft target updates) or a new tensor."""
    torch.manual_seed(3)
    cell, ref = rnnkit.LSTMCell(24, 40), torch.nn.LSTMCell(24, 40)
    ref.load_state_dict(cell.state_dict())
    x, hx = torch.randn(16, 24), (torch.randn(16, 40), torch.randn(16, 40))
    with torch.no_grad():
        for _ in range(2):  # the second call takes the kept transposes
            torch.testing.assert_close(cell(x, hx), ref(x, hx))
        if change == "in_place":
            cell.weight_hh.mul_(0.5)
        elif change == "through_data":
            cell.weight_hh.data.mul_(0.5)
        else:
            cell.weight_hh = torch.nn.Parameter(cell.weight_hh * 0.5)
        ref.weight_hh.mul_(0.5)
        with rnnkit.record_strategies() as ran:
            torch.testing.assert_close(cell(x, hx), ref(x, hx))
    assert ran == ["single_step"]


def test_python_threads_planning_and_running_at_once(fresh_measurements):
    """Python threads that meet new shapes at the same time (each timing its
    candidates while the others run layers) all get torch.nn's numbers and
    gradients, and the planner measures each shape's passes."""
    import concurrent.futures

    f32 = torch.float32
    shapes = [("LSTM", 40, 8, 16, 48), ("GRU", 6, 3, 5, 80), ("RNN_TANH", 1, 4, 7, 9),
              ("LSTM", 33, 2, 12, 20), ("RNN_RELU", 20, 16, 8, 40), ("GRU", 64, 1, 4, 24)]
    cases = []
    for i, (mode, T, B, I, H) in enumerate(shapes):
        torch.manual_seed(900 + i)
        ref = torch_layer(mode, I, H, dtype=f32)
        mine = rnnkit.convert(torch_layer(mode, I, H, dtype=f32))
        mine.load_state_dict(ref.state_dict())
        x = torch.randn(T, B, I)
        x_ref = x.clone().requires_grad_()
        ref(x_ref)[0].square().sum().backward()
        cases.append((mine, x, ref, x_ref))

    def run(case):
        mine, x, ref, x_ref = case
        x = x.clone().requires_grad_()
        mine.zero_grad()
        mine(x)[0].square().sum().backward()
        assert_close(x.grad, x_ref.grad, f32, "dx")
        for (name, p), p_ref in zip(mine.named_parameters(), ref.parameters()):
            assert_close(p.grad, p_ref.grad, f32, name)
        return True

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        # Each module runs in one thread at a time (its .grad is its own).
        for _ in range(3):
            assert all(pool.map(run, cases))
    lines = rnnkit._C._measurements()
    for mode, T, B, I, H in shapes[:2] + shapes[3:]:  # T = 1 runs single_step, unmeasured
        for pass_ in ("forward", "backward"):
            assert any(f"{mode} {pass_} " in line and f" B={B} I={I} H={H} " in line for line in lines), \
                (mode, pass_, lines)
