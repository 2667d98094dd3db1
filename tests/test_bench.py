"""Smoke tests of bench/speed.py's pure helpers (no model is built or timed here)."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def speed():
    spec = importlib.util.spec_from_file_location("bench_speed", REPO / "bench" / "speed.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


def test_split_overrides_separates_bench_knobs(speed):
    config, knobs = speed.split_overrides(
        ["model.encoder=sam2.1_hiera_small", "bench.infer_batch=8", "", "bench.channels_last=off", "bench.compile=true"]
    )
    assert config == ["model.encoder=sam2.1_hiera_small"]
    assert knobs == speed.Knobs(infer_batch=8, channels_last="off", compile=True)


@pytest.mark.parametrize("bad", ["bench.nope=1", "bench.infer_batch=two", "bench.channels_last=sideways", "bench.threads"])
def test_split_overrides_rejects_bad_knobs(speed, bad):
    with pytest.raises(ValueError):
        speed.split_overrides([bad])


def test_parse_compare_arg_keeps_list_values_whole(speed):
    assert speed.parse_compare_arg("model.adapter.placement=block, model.decoder_channels=[64,32,16]") == [
        "model.adapter.placement=block", "model.decoder_channels=[64,32,16]"]
    assert speed.parse_compare_arg("") == []


def test_make_case_validates_config_keys(speed):
    from s2unet.config import ConfigError

    case = speed.make_case("x", ["data.image_size=256"], base=["model.weights=random", "bench.infer_batch=2"])
    assert case.overrides == ("model.weights=random", "data.image_size=256") and case.knobs.infer_batch == 2
    with pytest.raises(ConfigError):
        speed.make_case("x", ["model.adaptor.rank=4"])


def test_statistics_helpers(speed):
    assert speed.median([3.0, 1.0, 2.0]) == 2.0 and speed.median([]) is None
    assert speed.ratio(1.0, 0.0) is None and speed.ratio(None, 1.0) is None and speed.ratio(3.0, 2.0) == 1.5
    assert speed.paired_ratio([2.0, 4.0, 9.0], [1.0, 2.0, 3.0]) == 2.0


def test_floor_ratio(speed):
    # 10 GFLOP per image at 100 GFLOP/s is a 0.1 s floor; 0.25 s per image is 2.5x it.
    assert speed.floor_ratio({"flops_per_image": 10e9, "seconds_per_image": 0.25}, 100.0) == pytest.approx(2.5)
    assert speed.floor_ratio({"flops_per_image": None, "seconds_per_image": 0.25}, 100.0) is None


def test_machine_rate_is_the_best_probe_of_the_run(speed):
    report = speed.Report.__new__(speed.Report)
    report.data = {}
    rows = [{"phases": {"train": {"matmul_gflops_during": 150.0}, "infer": {"matmul_gflops_during": 181.0}}},
            {"error": "failed"}, {"phases": {"infer": {"matmul_gflops_during": None}}}]
    assert report.machine_rate(130.0, rows) == 181.0 == report.data["machine_gflops"]
    assert report.machine_rate(190.0, rows, []) == 190.0


def test_markdown_table_and_cells(speed):
    table = speed.markdown_table(["a", "b"], [["x", 1.234], ["y", None]])
    assert table.splitlines() == ["| a | b |", "| --- | --- |", "| x | 1.23 |", "| y | - |"]
    assert speed.fmt(True) == "yes" and speed.pair_cell(1.0, None) == "1.00 / -"
    assert speed.fmt_params({"trainable": 1_260_000, "total": 28_100_000}) == "1.26M / 28.1M"


def test_atomic_write_replaces_whole_file(speed, tmp_path):
    target = tmp_path / "sub" / "r.json"
    speed.atomic_write(target, json.dumps({"a": 1}))
    speed.atomic_write(target, json.dumps({"b": 2}))
    assert json.loads(target.read_text()) == {"b": 2}
    assert [p.name for p in target.parent.iterdir()] == ["r.json"]


def test_peak_memory_readers(speed):
    assert speed.peak_rss_bytes() > 0 and speed.process_peak_rss_bytes() > 0
