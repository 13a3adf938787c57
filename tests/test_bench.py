"""`python -m fastmlp.bench` and its parts: kernel cases, gemm floor, interleaved measurement, torch yardstick.

Speed is never asserted: these tests check what is measured and reported, not how fast."""

import json

import numpy as np
import pytest

from fastmlp import MLP, Pixels, bench, get_backend, kernels
from fastmlp.bench import optimizers as bench_optimizers
from fastmlp.runtime.blas_threads import usable_cpus
from fastmlp.testing import assert_backends_equivalent


@pytest.fixture
def no_settle(monkeypatch):
    monkeypatch.setattr(bench.throughput, "SETTLE_SECONDS", 0.0)


def tiny_pixels(n=300, seed=0):
    rng = np.random.default_rng(seed)
    return Pixels(rng.integers(0, 256, (n, 784), dtype=np.uint8)), rng.integers(0, 10, n)


def test_kernel_cases_cover_every_public_kernel_but_the_general_gemm():
    assert set(bench.KERNELS) == set(kernels.__all__) - {"gemm_inplace"}


@pytest.mark.parametrize("batch_size", [1, 33])
@pytest.mark.parametrize("name", bench.KERNELS)
def test_kernel_case_fused_and_numpy_compute_the_same_result(name, batch_size):
    fused = bench.kernel_case(name, batch_size)
    fused.fused()
    expected = bench.kernel_case(name, batch_size).numpy()  # the same operands, untouched
    assert fused.output.shape == expected.shape
    np.testing.assert_allclose(fused.output, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


def test_unknown_kernel_case_is_refused():
    with pytest.raises(ValueError, match="unknown kernel 'gemm_inplace'"):
        bench.kernel_case("gemm_inplace", 32)


def test_gemm_floor_does_the_flops_of_a_training_step(monkeypatch):
    flops = []
    matmul = np.matmul

    def counting_matmul(a, b, out):
        flops.append(2 * a.shape[0] * a.shape[1] * b.shape[1])
        return matmul(a, b, out=out)

    floor = bench.GemmFloor(bench.LAYER_SIZES, 32)
    monkeypatch.setattr(np, "matmul", counting_matmul)
    floor.step(20)
    assert len(flops) == 8  # three forward, three weight gradients, two input gradients
    assert sum(flops) == 20 * bench.flops_per_sample() == 20 * 454_400


def test_measure_training_reports_every_backend_input_and_batch_size(no_settle):
    pixels, y = tiny_pixels()
    backends = {name: get_backend(name) for name in ("numpy", "numba")}
    data = {kind: bench.input_data(pixels, kind) for kind in bench.INPUTS}
    rows = bench.measure_training(backends, data, y, batch_sizes=[16, 64], epochs=4)
    assert [(r["batch_size"], r["backend"], r["input"]) for r in rows] == [
        (b, name, kind) for b in (16, 64) for name in ("numpy", "numba") for kind in bench.INPUTS]
    for r in rows:
        assert len(r["epoch_samples_per_s"]) == 4
        assert r["samples_per_s"] > 0 and r["floor_samples_per_s"] > 0 and r["late_over_early"] > 0
        ratios = np.divide(r["epoch_samples_per_s"], r["floor_epoch_samples_per_s"])[bench.WARMUP_EPOCHS:]
        assert r["vs_floor"] == pytest.approx(np.median(ratios))
        if r["backend"] == "numpy":
            assert r["vs_numpy"] == 1.0


def test_measure_training_trains_and_floors_the_net_it_is_given(no_settle, monkeypatch):
    # `fastmlp bench --hidden 512 256` measures a bigger net: the backends train it and the floor runs its gemms.
    floors, models = [], []
    monkeypatch.setattr(bench.throughput, "GemmFloor",
                        lambda sizes, *args: floors.append(sizes) or bench.GemmFloor(sizes, *args))
    fit = bench.throughput.Trainer.fit
    monkeypatch.setattr(bench.throughput.Trainer, "fit",
                        lambda self, *args, **kw: models.append(self.model.layer_sizes) or fit(self, *args, **kw))
    pixels, y = tiny_pixels(64)
    rows = bench.measure_training({"numba": get_backend("numba")}, {"pixels": pixels}, y, batch_sizes=[16], epochs=4,
                                  layer_sizes=(784, 24, 12, 10))
    assert len(rows) == 1 and rows[0]["samples_per_s"] > 0
    assert floors == [(784, 24, 12, 10)] and set(models) == {(784, 24, 12, 10)}


def test_hidden_sets_the_net_of_the_throughput_run(monkeypatch, capsys):
    seen = []

    def run(args, bar=None):
        seen.append(args.layer_sizes)
        raise RuntimeError("stop after parsing")

    monkeypatch.setattr(bench.throughput, "run", run)
    assert bench.main(["--hidden", "512", "256"]) == 1
    assert bench.main([]) == 1
    assert seen == [(784, 512, 256, 10), (784, 128, 64, 10)]


def test_ratios_compare_epochs_of_the_same_round_so_drift_cancels():
    # The machine slows down 4x in round 3 for both: the per-round ratio stays 2, a ratio of medians would not.
    fast = [1.0, 1.0, 10.0, 40.0, 20.0]
    slow = [1.0, 1.0, 5.0, 20.0, 20.0]
    assert bench.epochwise_ratio(fast, slow) == 2.0
    assert np.median(fast[2:]) / np.median(slow[2:]) == 1.0


def test_measure_training_needs_steady_epochs_to_compare():
    pixels, y = tiny_pixels(20)
    with pytest.raises(ValueError, match="epochs must be >= 4"):
        bench.measure_training({"numpy": get_backend("numpy")}, {"pixels": pixels}, y, epochs=3)


def test_run_child_reports_a_failing_measurement_process():
    with pytest.raises(ChildProcessError, match="no_such_measurement.*AttributeError"):
        bench.run_child("no_such_measurement()")


def test_torch_backend_is_equivalent_to_the_reference():
    pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    model = MLP([20, 16, 8, 5], seed=1)
    X, y = rng.random((40, 20), dtype=np.float32), rng.integers(0, 5, 40)
    assert_backends_equivalent(model, X, y, backends=("numpy", bench.TorchBackend(1)))


@pytest.mark.parametrize("kind", bench.INPUTS)
def test_torch_epoch_trains_the_model_in_place_like_the_reference(kind):
    pytest.importorskip("torch")
    pixels, y = tiny_pixels(96)
    X = bench.input_data(pixels, kind)
    models = [MLP(bench.LAYER_SIZES, seed=2) for _ in range(2)]
    losses = [backend.train_epoch(model, X, y, batch_size=32, lr=0.1, rng=np.random.default_rng(3))
              for backend, model in zip((get_backend("numpy"), bench.TorchBackend(1)), models)]
    assert losses[1] == pytest.approx(losses[0], rel=1e-4)
    for a, b in zip(models[0].weights + models[0].biases, models[1].weights + models[1].biases):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4 * np.abs(a).max())


@pytest.mark.parametrize("args, message", [
    (["--epochs", "3"], "--epochs: must be >= 4"),
    (["--batch-sizes", "0"], "--batch-sizes: must be an integer >= 1"),
    (["--samples", "x"], "--samples: must be an integer, got 'x'"),
    (["--backends", "cuda"], "invalid choice: 'cuda'"),
    (["--inputs", "int8"], "invalid choice: 'int8'"),
    (["--hidden", "0"], "--hidden: must be an integer >= 1"),
    (["--contention", "--hidden", "512"], "--hidden: --contention and --inference measure the CLI's default net"),
])
def test_bad_arguments_exit_2_with_one_line(args, message, capsys):
    with pytest.raises(SystemExit) as exc:
        bench.main(args)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_torch_requested_but_missing_exits_1_with_one_line(monkeypatch, capsys):
    monkeypatch.setattr(bench.throughput, "torch_available", lambda: False)
    monkeypatch.setattr(bench.common, "torch_available", lambda: False)
    assert bench.main(["--backends", "torch"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["python -m fastmlp.bench: error: backend 'torch' needs PyTorch: pip install torch==2.13.0"]


def test_unwritable_json_path_exits_1_before_measuring(tmp_path, capsys):
    assert bench.main(["--json", str(tmp_path / "missing" / "r.json")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_bench_prints_the_table_and_writes_the_json_report(tmp_path, capsys, no_settle):
    path = tmp_path / "report.json"
    code = bench.main(["--samples", "300", "--epochs", "4", "--batch-sizes", "16", "64",
                       "--backends", "numpy", "numba", "--json", str(path)])
    out = capsys.readouterr().out
    assert code == 0
    report = json.loads(path.read_text())
    assert report["config"]["samples"] == 300 and report["config"]["mode"] == "full"
    assert len(report["rows"]) == 2 * 2 * 2
    assert all(r["vs_roofline"] > 0 and r["vs_fma_roofline"] > 0 for r in report["rows"])
    fma = report["fma_roofline"]
    assert fma["core_gflops"] > 0 and fma["all_gflops"] > 0 and fma["flops_per_sample"] == bench.flops_per_sample()
    assert fma["tile"]["name"] == kernels.tiles.TILE.name
    assert f"CPU: {fma['cpu']}" in out and f"SIMD tile {fma['tile']['name']}" in out and "FMA roofline" in out
    assert [(m["backend"], m["input"]) for m in report["peak_rss"]] == [
        (b, k) for b in ("numpy", "numba") for k in bench.INPUTS]
    assert all(m["training_peak_mb"] > 0 and m["loading_peak_mb"] > 0 for m in report["peak_rss"])
    assert report["compile"]["numba_cold_s"] > 0 and report["compile"]["numba_warm_s"] > 0
    assert "MNIST 300 training samples (a subset)" in out
    table = [line.split() for line in out.splitlines() if line.split()[:1] in (["16"], ["64"])]
    assert [(t[0], t[1], t[2]) for t in table] == [(str(r["batch_size"]), r["backend"], r["input"])
                                                   for r in report["rows"]]
    assert "cold cache" in out and "warm cache" in out
    two_cpus = usable_cpus() >= 2  # a container's CPU quota counted, as barrier_meeting counts it
    for r in report["rows"]:  # a meeting of two workers each round, where there are two CPUs to meet on
        assert (len(r["barrier_meeting_ns"]) == 4 and min(r["barrier_meeting_ns"]) > 0) if two_cpus \
            else r["barrier_meeting_ns"] is None
    assert ("two workers' meeting at numba's barrier" in out) == two_cpus
    assert [r["optimizer"] for r in report["optimizers"]] == list(bench_optimizers.OPTIMIZERS)
    assert "one step's cost per optimiser" in out and "adamw wd 0.01" in out


def test_the_header_names_the_cpu_its_vector_width_the_tile_and_the_fma_roofline():
    fma = {"cpu": "Example CPU 9000", "target": "znver3", "vector_width": 8, "chains": 12, "core_gflops": 100.0,
           "cores": 2, "all_gflops": 200.0, "flops_per_sample": 454_400, "samples_per_s": 200e9 / 454_400,
           "tile": {"name": "avx2", "vw": 8, "nv": 2, "mr": 6, "nr": 16}, "tile_source": "tuned on this machine"}
    cpu, roof = bench.report.fma_header(fma)
    assert cpu.startswith("CPU: Example CPU 9000 (Numba compiles for znver3): 8-float vectors; SIMD tile avx2, "
                          "6 rows x 16 columns")
    assert cpu.endswith("tuned on this machine")
    assert "100.0 GFLOP/s on one core, 200.0 on 2 at once" in roof and "= 440,141 samples/s" in roof


def test_the_header_warns_where_the_all_core_fma_peak_did_not_scale_with_the_cores():
    fma = {"cpu": "Example CPU 9000", "target": "znver3", "vector_width": 8, "chains": 12, "core_gflops": 96.6,
           "cores": 2, "all_gflops": 97.3, "flops_per_sample": 454_400, "samples_per_s": 97.3e9 / 454_400,
           "tile": {"name": "avx2", "vw": 8, "nv": 2, "mr": 6, "nr": 16}}
    lines = bench.report.fma_header(fma)
    assert len(lines) == 3
    assert lines[2].startswith("warning: the FMA peak on 2 cores at once read only 1.01x one core's")
    fma["all_gflops"] = 180.0  # 0.93 of 2 x one core's: no warning
    assert len(bench.report.fma_header(fma)) == 2


def test_an_all_core_fma_peak_that_did_not_scale_is_measured_again_and_the_best_kept(monkeypatch):
    readings = {1: [100.0], 2: [101.0, 120.0, 190.0, 150.0]}  # GFLOP/s by threads, in the order measured
    calls = []

    def measure(threads, seconds, repeats):
        calls.append(threads)
        return readings[threads].pop(0)

    monkeypatch.setattr(bench.fma_peak, "measure_fma_peak", measure)
    peak = bench.fma_peak.fma_roofline(454_400, cores=2)
    assert calls == [1, 2, 2, 2]  # 101 and 120 under 0.75 x 2 x 100; 190 over it: no fourth
    assert peak["all_gflops"] == 190.0 and peak["samples_per_s"] == 190e9 / 454_400
    readings[1], readings[2] = [100.0], [101.0] * (1 + bench.fma_peak.ALL_CORES_RETRIES)
    calls.clear()
    assert bench.fma_peak.fma_roofline(454_400, cores=2)["all_gflops"] == 101.0  # reported, and the header warns
    assert calls == [1] + [2] * (1 + bench.fma_peak.ALL_CORES_RETRIES)


def test_optimizer_steps_are_timed_in_interleaved_rounds_against_sgd(monkeypatch):
    clock = _FakeClock()
    clock.sleep = lambda seconds: None
    monkeypatch.setattr(bench_optimizers, "time", clock)  # no real timing: the figures follow from the fake epochs
    costs = {"sgd": 1.0, "momentum": 1.25, "adam": 1.5, "adamw": 1.5}
    epochs = []

    class Timed(type(get_backend("numpy"))):  # one epoch takes `costs` clock units; the first round twice that
        def _train_epoch(self, model, X, y, batch_size, lr, rng, progress=None, **options):
            name = options.get("optimizer") or ("momentum" if options.get("momentum") else "sgd")
            epochs.append(name)
            clock.now += costs[name] * (2 if len(epochs) <= len(bench_optimizers.OPTIMIZERS) else 1)
            return 1.0

    pixels, y = tiny_pixels(128)
    rows = bench_optimizers.measure_optimizer_steps(Timed(), pixels, y, rounds=3, batch_size=64)
    assert epochs == ["sgd", "momentum", "adam", "adamw"] * 3  # interleaved, round by round
    by_name = {r["optimizer"]: r for r in rows}
    assert by_name["sgd"]["vs_sgd"] == 1.0 and by_name["adam"]["vs_sgd"] == pytest.approx(1.5)
    assert by_name["adamw wd 0.01"]["vs_sgd_nesterov"] == pytest.approx(1.2)
    assert by_name["sgd"]["step_us"] == pytest.approx(1.0 / 2 * 1e6)  # 2 steps of 64 per epoch, round 1 left out
    assert by_name["adam"]["round_step_us"] == pytest.approx([1.5e6, 0.75e6, 0.75e6])
    with pytest.raises(ValueError, match="rounds must be >= 2"):
        bench_optimizers.measure_optimizer_steps(Timed(), pixels, y, rounds=1)


class _FakeClock:
    """Stands in for the time module in fastmlp.bench: perf_counter reads a clock the fake backend advances."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self):
        return self.now


class _SlowOnceTrained:
    """A stand-in backend whose epoch takes 4 clock units for a model marked as trained, 1 otherwise."""

    def __init__(self, clock):
        self.clock = clock

    def train_epoch(self, model, X, y, *, batch_size, lr, rng):
        self.clock.now += 4.0 if model.biases[0][0] == 1 else 1.0


def test_late_over_early_compares_the_two_model_states_side_by_side(monkeypatch):
    clock = _FakeClock()
    monkeypatch.setattr(bench.throughput, "time", clock)  # no real timing: the ratio follows from the fake epochs
    early, late = MLP([4, 3, 2], seed=0), MLP([4, 3, 2], seed=0)
    late.biases[0][0] = 1
    pixels, y = tiny_pixels(20)
    assert bench.late_over_early(_SlowOnceTrained(clock), early, late, pixels, y, batch_size=4) == 0.25
    assert bench.late_over_early(_SlowOnceTrained(clock), early, early.copy(), pixels, y, batch_size=4) == 1.0
    assert late.biases[0][0] == 1 and early.biases[0][0] != 1  # trained on copies, the states untouched



def test_the_report_says_how_the_numba_backend_split_each_shape(monkeypatch):
    """The split the chooser kept for a row's shape (net, batch rows, input dtype), none where it kept none."""
    from fastmlp.backends.numba import threads
    from fastmlp.bench.report import split_lines
    from fastmlp.bench.throughput import numba_split

    chooser = threads.SplitChooser()
    sizes, pixels = (784, 128, 64, 10), Pixels(np.zeros((8, 784), np.uint8))
    pixel_key = (sizes, 32, 2, "|u1", 0)
    splits = threads.step_splits(2, 32, sizes)
    for _ in range(1 + len(splits) * threads.SPLIT_TRIALS):  # replicated timed faster on pixels
        split = chooser.next_split(pixel_key, splits)
        chooser.record(pixel_key, split, 1.0 if split.replicated else 2.0, len(splits))
    shared_key = (sizes, 1024, 2, "|u1", 0)
    splits = threads.step_splits(2, 1024, sizes)
    for _ in range(1 + len(splits) * threads.SPLIT_TRIALS):  # one shared input buffer timed faster
        split = chooser.next_split(shared_key, splits)
        chooser.record(shared_key, split, 2.0 if split.private_inputs else 1.0, len(splits))
    monkeypatch.setattr(threads, "SPLITS", chooser)
    assert numba_split(sizes, 32, pixels) == "replicated"
    assert numba_split(sizes, 1024, pixels) == "split, inputs shared"
    assert numba_split(sizes, 32, np.zeros((8, 784), np.float32)) is None  # float32's shape: no choice kept
    assert numba_split(sizes, 64, pixels) is None
    rows = [{"batch_size": 32, "input": "pixels", "split": "replicated"}, {"batch_size": 32, "input": "float32"},
            {"batch_size": 64, "input": "pixels", "split": None}]
    (line,) = split_lines(rows)
    assert line.endswith("SplitChooser): batch 32 pixels replicated")
    assert "inputs shared" in line  # what the label means
    assert split_lines(rows[1:]) == []
    moved = {"batch_size": 32, "input": "pixels", "split": "replicated",
             "round_splits": ["split", "split", "split", "replicated", "split", "replicated"]}
    (line,) = split_lines([moved, {**moved, "batch_size": 64, "round_splits": ["replicated"] * 6}])
    assert line.endswith("batch 32 pixels split (rounds 1-3) then replicated (round 4) then split (round 5) then "
                         "replicated (round 6), batch 64 pixels replicated")


def logged_chooser():
    """A fresh SplitChooser that logs (shape, splits to choose from, whether one was kept by then) each epoch."""
    from fastmlp.backends.numba import threads

    class Logged(threads.SplitChooser):
        def __init__(self):
            super().__init__()
            self.calls = []

        def next_split(self, key, splits):
            self.calls.append((key, len(splits), key in self.chosen_splits()))
            return super().next_split(key, splits)

    return Logged()


def test_the_numba_splits_are_chosen_before_the_measured_epochs(no_settle, monkeypatch):
    """The split chooser's trial epochs (one split, then another) run before the epochs the bench times: every
    timed epoch of the numba backend, and every late/early epoch after them, runs the split kept for its shape."""
    from fastmlp.backends.numba import threads

    chooser = logged_chooser()
    monkeypatch.setattr(threads, "SPLITS", chooser)
    monkeypatch.setattr(bench.throughput, "numba_meeting_ns", lambda: 100.0)  # the cores never move
    pixels, y = tiny_pixels(256)
    data = {kind: bench.input_data(pixels, kind) for kind in bench.INPUTS}
    epochs = 4
    bench.measure_training({"numba": get_backend("numba", threads=2)}, data, y, batch_sizes=[64], epochs=epochs)
    for X in data.values():
        calls = [(choices, kept) for key, choices, kept in chooser.calls
                 if bench.throughput._of_shape(key, bench.LAYER_SIZES, 64, X)]
        assert calls and calls[0][0] > 1  # two workers, two splits or more to choose from: a choice to make
        assert len(calls) <= 1 + 3 * threads.SPLIT_TRIALS + epochs + 2 * bench.common.LATE_EARLY_PAIRS
        assert all(kept for _, kept in calls[-(epochs + 2 * bench.common.LATE_EARLY_PAIRS):])
        assert bench.throughput.numba_split(bench.LAYER_SIZES, 64, X) is not None



def test_the_splits_are_chosen_again_where_the_cores_moved_between_rounds(no_settle, monkeypatch):
    """A round whose barrier meeting is over MOVED_MEETING_FACTOR times (or under 1 / that) the first one after the
    split was kept: the host moved the cores, and the chooser times the splits of the batch size's shapes again
    before that round's epochs, not among them; the rows say which split each round ran."""
    from fastmlp.backends.numba import threads

    chooser = logged_chooser()
    monkeypatch.setattr(threads, "SPLITS", chooser)
    meetings = [50.0, 90.0, 400.0, 250.0, 70.0]  # moved before round 3 (8x round 1's) and round 5 (0.18x round 3's)
    calls = iter(meetings)
    monkeypatch.setattr(bench.throughput, "numba_meeting_ns", lambda: next(calls))
    events = []
    retime = chooser.retime
    monkeypatch.setattr(chooser, "retime", lambda key: (events.append("retime"), retime(key)))
    pixels, y = tiny_pixels(256)
    data = {kind: bench.input_data(pixels, kind) for kind in bench.INPUTS}
    rows = bench.measure_training({"numba": get_backend("numba", threads=2)}, data, y, batch_sizes=[64],
                                  epochs=len(meetings), progress=events.append)
    retimed_before = [1 + sum(e != "retime" for e in events[:i]) for i, e in enumerate(events) if e == "retime"]
    assert retimed_before == [3] * len(data) + [5] * len(data)  # each input's shape, before rounds 3 and 5
    assert not chooser.timing()  # every trial over before the round it was for
    for row in rows:
        assert row["barrier_meeting_ns"] == meetings
        assert len(row["round_splits"]) == len(meetings) and None not in row["round_splits"]
        assert row["split"] == row["round_splits"][-1]
    assert bench.throughput.cores_moved(100.0, 201.0) and bench.throughput.cores_moved(100.0, 49.0)
    assert not bench.throughput.cores_moved(100.0, 200.0) and not bench.throughput.cores_moved(100.0, 50.0)

def test_settling_the_splits_stops_where_a_shape_has_nothing_to_choose(monkeypatch):
    """One worker: one split, nothing timed, so one epoch an input and no more."""
    from fastmlp.backends.numba import threads

    chooser = logged_chooser()
    monkeypatch.setattr(threads, "SPLITS", chooser)
    pixels, y = tiny_pixels(64)
    data = {kind: bench.input_data(pixels, kind) for kind in bench.INPUTS}
    bench.throughput.settle_numba_splits(get_backend("numba", threads=1), data, y, 16, MLP(bench.LAYER_SIZES, seed=0))
    for X in data.values():  # (Trainer.fit's warm-up trains a tiny net of the same depth first: another shape)
        assert [choices for key, choices, _ in chooser.calls
                if bench.throughput._of_shape(key, bench.LAYER_SIZES, 16, X)] == [1]
    assert not chooser.timing()


def test_the_report_says_how_far_the_machine_drifted_by_the_gemm_floor():
    """The gemm floor does the same work every round: its slowest steady epoch over its fastest, at the batch
    size where that is lowest, measures the machine's drift (the warm-up epochs left out)."""
    from fastmlp.bench.report import drift_lines

    floors = {32: [100.0, 10.0, 100.0, 90.0, 95.0], 64: [50.0, 50.0, 40.0, 50.0, 30.0]}
    rows = [{"batch_size": b, "backend": name, "floor_epoch_samples_per_s": floor}
            for b, floor in floors.items() for name in ("numpy", "numba")]
    (line,) = drift_lines(rows)
    assert "as slow as 0.60x their fastest (batch 64)" in line  # 30 / 50; batch 32's 10 was a warm-up epoch
    assert "vs floor and vs numpy" in line
    assert drift_lines([]) == [] and drift_lines([{"batch_size": 32, "floor_epoch_samples_per_s": [1.0, 1.0]}]) == []
