"""`python -m fastmlp.bench --inference`: one run measures predict_proba and ONNX Runtime at each batch size
(never checking their speed), and the section is one line when onnxruntime is missing."""

import builtins

import numpy as np

from fastmlp import bench
from fastmlp.bench import inference


def test_one_run_gives_both_sides_and_their_ratio_at_every_batch(monkeypatch):
    monkeypatch.setattr(inference, "QUICK_CALLS", {1: 3, 64: 2, 10_000: 1})
    images = np.random.default_rng(0).random((100, 784), dtype=np.float32)
    result = inference.run(quick=True, images=images)
    assert [row["batch"] for row in result["rows"]] == [1, 64, 10_000]
    for row in result["rows"]:
        assert row["fastmlp_s"] > 0 and row["onnxruntime_s"] > 0
        assert len(row["round_ratios"]) == inference.QUICK_ROUNDS
        assert row["speed_ratio"] == np.median(row["round_ratios"]) > 0
    assert result["config"]["max_abs_difference"] <= 1e-5
    table = inference.format_inference(result)
    assert "fastmlp's speed relative to ONNX Runtime" in table and "10,000" in table


def test_median_times_times_each_side_in_blocks_that_alternate_in_rotating_order():
    order = []
    medians = inference.median_times({"a": lambda: order.append("a"), "b": lambda: order.append("b")}, repeats=8,
                                     rounds=4, pause=0, warmup_seconds=0)
    block = inference.WARMUP_CALLS + 2  # untimed warm-up calls, then 8 // 4 timed ones
    assert order == ["a"] * block + ["b"] * block + ["b"] * block + ["a"] * block + ["a"] * block + ["b"] * block \
        + ["b"] * block + ["a"] * block
    assert set(medians) == {"a", "b"}


def test_the_section_is_one_line_without_onnxruntime(monkeypatch, capsys):
    real_import = builtins.__import__

    def without_onnxruntime(name, *args, **kwargs):
        if name == "onnxruntime":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without_onnxruntime)
    assert bench.main(["--inference", "--quick"]) == 0
    assert capsys.readouterr().out == ("inference benchmark skipped: onnxruntime not installed "
                                       "(pip install onnx onnxruntime)\n")


def test_a_rounds_ratio_compares_the_two_blocks_of_that_round():
    times = {"onnxruntime": [[2.0, 4.0, 3.0], [1.0]], "fastmlp": [[1.0, 1.5, 0.5], [2.0]]}
    assert inference.round_ratios(times, "onnxruntime", "fastmlp") == [3.0, 0.5]
