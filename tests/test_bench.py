"""Smoke tests of bench/speed.py's pure helpers (no model is timed here)."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def speed():
    """bench/speed.py loaded as ``python bench/speed.py`` runs it, and the modules it is made of."""
    spec = importlib.util.spec_from_file_location("bench_speed", REPO / "bench" / "speed.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)  # puts the checkout on sys.path, so bench.* imports
    from bench import speed_modes, speed_probes, speed_report, speed_runner

    return SimpleNamespace(cli=module, runner=speed_runner, probes=speed_probes, report=speed_report, modes=speed_modes)


def test_split_overrides_separates_bench_knobs(speed):
    config, knobs = speed.runner.split_overrides(
        ["model.encoder=sam2.1_hiera_small", "bench.infer_batch=8", "", "bench.channels_last=off", "bench.compile=true"]
    )
    assert config == ["model.encoder=sam2.1_hiera_small"]
    assert knobs == speed.runner.Knobs(infer_batch=8, channels_last="off", compile=True)


@pytest.mark.parametrize("bad", ["bench.nope=1", "bench.infer_batch=two", "bench.channels_last=sideways", "bench.threads"])
def test_split_overrides_rejects_bad_knobs(speed, bad):
    with pytest.raises(ValueError):
        speed.runner.split_overrides([bad])


def test_parse_compare_arg_keeps_list_values_whole(speed):
    assert speed.runner.parse_compare_arg("model.adapter.placement=block, model.decoder_channels=[64,32,16]") == [
        "model.adapter.placement=block", "model.decoder_channels=[64,32,16]"]
    assert speed.runner.parse_compare_arg("") == []


def test_make_case_validates_config_keys(speed):
    from s2unet.config import ConfigError

    case = speed.runner.make_case("x", ["data.image_size=256"], base=["model.weights=random", "bench.infer_batch=2"])
    assert case.overrides == ("model.weights=random", "data.image_size=256") and case.knobs.infer_batch == 2
    with pytest.raises(ConfigError):
        speed.runner.make_case("x", ["model.adaptor.rank=4"])


def test_statistics_helpers(speed):
    assert speed.probes.median([3.0, 1.0, 2.0]) == 2.0 and speed.probes.median([]) is None
    assert speed.probes.ratio(1.0, 0.0) is None and speed.probes.ratio(None, 1.0) is None and speed.probes.ratio(3.0, 2.0) == 1.5
    assert speed.probes.paired_ratio([2.0, 4.0, 9.0], [1.0, 2.0, 3.0]) == 2.0


def test_floor_ratio(speed):
    # 10 GFLOP per image at 100 GFLOP/s is a 0.1 s floor; 0.25 s per image is 2.5x it.
    assert speed.report.floor_ratio({"flops_per_image": 10e9, "seconds_per_image": 0.25}, 100.0) == pytest.approx(2.5)
    assert speed.report.floor_ratio({"flops_per_image": None, "seconds_per_image": 0.25}, 100.0) is None


def test_machine_rate_is_the_best_probe_of_the_run(speed):
    report = speed.report.Report.__new__(speed.report.Report)
    report.data = {}
    rows = [{"phases": {"train": {"matmul_gflops_during": 150.0}, "infer": {"matmul_gflops_during": 181.0}}},
            {"error": "failed"}, {"phases": {"infer": {"matmul_gflops_during": None}}}]
    assert report.machine_rate(130.0, rows) == 181.0 == report.data["machine_gflops"]
    assert report.machine_rate(190.0, rows, []) == 190.0


def test_markdown_table_and_cells(speed):
    table = speed.report.markdown_table(["a", "b"], [["x", 1.234], ["y", None]])
    assert table.splitlines() == ["| a | b |", "| --- | --- |", "| x | 1.23 |", "| y | - |"]
    assert speed.report.fmt(True) == "yes" and speed.report.pair_cell(1.0, None) == "1.00 / -"
    assert speed.report.fmt_params({"trainable": 1_260_000, "total": 28_100_000}) == "1.26M / 28.1M"


def test_report_files_are_written_whole(speed, tmp_path, monkeypatch):
    import argparse

    report = speed.report.Report("x", argparse.Namespace(malloc="reuse"))
    report.data["machine"] = {"cpu_model": "cpu", "usable_cpus": 2, "cpu_flags": [], "torch": "t", "torch_threads": 2}
    for text in ("first", "second"):
        report.finish(tmp_path / "sub", "r", text)
    assert json.loads((tmp_path / "sub" / "r.json").read_text())["mode"] == "x"
    assert (tmp_path / "sub" / "r.md").read_text().endswith("second\n")
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["r.json", "r.md"]


def test_runner_times_the_trainers_own_step(speed):
    from s2unet.engine.step import TrainStep

    case = speed.runner.make_case("u", ["model.arch=unet", "data.image_size=32", "train.batch_size=2",
                                        "train.accumulate=2", "train.grad_clip=0", "train.weight_decay=0"])
    runner = speed.runner.Runner(case, __import__("torch").device("cpu"))
    assert isinstance(runner.trainer_step, TrainStep) and runner.images("train") == 4
    before = [p.detach().clone() for p in runner.params]
    runner.prepare("train")
    runner.step("train")
    # grad_clip 0 means no clipping (the benchmark's old copy clipped to norm 0: without weight decay
    # nothing moved)
    assert any(not (a == b.detach()).all() for a, b in zip(before, runner.params))


def test_peak_memory_readers(speed):
    assert speed.probes.peak_rss_bytes() > 0 and speed.probes.process_peak_rss_bytes() > 0
