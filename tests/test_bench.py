"""The bench contract: interleaved rounds, medians with best and worst, per-round ratios, targets.

No timing is asserted here: the harness runs on trivial cases timed by a fake clock, and the
registered benches are checked for the targets they promise, not run.
"""

from __future__ import annotations

import json
import statistics
import types
from collections.abc import Iterator

import pytest

from tools import bench
from tools.bench_harness import MIN_ROUNDS, Case, Report, Target, interleave, per_second

#: The speed targets every optimisation is measured against: (bench, figure, op, value).
PROMISED = {
    ("put", "put_big_vs_scalable", "<=", 1.0),
    ("put", "put_big_vs_sha256", "<=", 1.15),
    ("put", "put_loop_vs_scalable", ">=", 1.5),
    ("put", "put_dir_vs_scalable", ">=", 3),
    ("put", "put_dir_events_per_put", "<=", 1),
    ("put", "put_dir_events_per_put", ">=", 1),
    ("put", "put_dir_digest_coverage", ">=", 1),
    ("put", "s3_put_vs_boto3", ">=", 0.9),
    ("append", "append_vs_baseline", ">=", 1.5),
    ("append", "append_many_events_per_s", ">=", 300_000),
    ("append", "append_many_vs_baseline", ">=", 4),
    ("cache", "hit_local_vs_diskcache", "<=", 2),
    ("scale", "compact_vs_copy_floor", ">=", 0.8),
    ("scale", "compact_peak_rss_mb", "<=", 1024),
    ("lineage", "ancestors_depth10_ms_at_10m", "<=", 300),
    ("lineage", "audit_events_per_s", ">=", 200_000),
    ("ui", "runs_page_s", "<=", 1.0),
    ("ui", "run_page_s", "<=", 1.0),
    ("ui", "lineage_drawn_nodes", "<=", 300),
    ("ui", "lineage_page_s", "<=", 10.0),
    ("ui", "lineage_open_s", "<=", 3.0),
}


class FakeClock:
    """A clock that cases move forward by known amounts, so timings are exact."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def spend(self, seconds: float) -> None:
        self.now += seconds


def test_every_case_runs_once_a_round_in_alternating_order() -> None:
    """Each round runs every case once; odd rounds run them in reverse; warmup is not recorded."""
    clock = FakeClock()
    calls: list[tuple[str, int]] = []

    def case(name: str, cost: float) -> Case:
        def run(index: int) -> None:
            calls.append((name, index))
            clock.spend(cost)

        return Case(run, before=lambda i: calls.append((f"before-{name}", i)), after=lambda i: clock.spend(100))

    samples = interleave({"a": case("a", 1.0), "b": case("b", 2.0), "c": case("c", 3.0)}, warmup=1, clock=clock)
    assert samples.orders == [["a", "b", "c"] if i % 2 == 0 else ["c", "b", "a"] for i in range(MIN_ROUNDS)]
    assert [c for c in calls if c[1] == -1] == [
        ("before-c", -1),
        ("c", -1),
        ("before-b", -1),
        ("b", -1),
        ("before-a", -1),
        ("a", -1),
    ]
    assert samples["a"] == [1.0] * MIN_ROUNDS  # before/after are not timed
    assert samples["c"] == [3.0] * MIN_ROUNDS


def test_metrics_a_case_reports_are_kept_and_seconds_replace_the_wall_time() -> None:
    """A case timing itself (a child process) reports ``seconds``; other metrics are kept per round."""
    samples = interleave({"child": lambda i: {"seconds": 10.0 + i, "peak_rss_mib": 100.0 * i}})
    assert samples["child"] == [10.0 + i for i in range(MIN_ROUNDS)]
    assert samples["child", "peak_rss_mib"] == [100.0 * i for i in range(MIN_ROUNDS)]
    with pytest.raises(KeyError, match="no samples"):
        samples["other"]


def test_fewer_rounds_than_the_minimum_are_refused() -> None:
    """A figure is never the median of fewer than seven rounds."""
    with pytest.raises(ValueError, match="at least 7"):
        interleave({"a": lambda i: None}, rounds=MIN_ROUNDS - 1)
    with pytest.raises(ValueError, match="at least 7"):
        Report().figure("x", [1.0] * (MIN_ROUNDS - 1), "lower")


def test_a_figure_is_the_median_with_best_and_worst_beside_it() -> None:
    """Times: best is the lowest round; rates: best is the highest."""
    report = Report()
    values = [5.0, 1.0, 9.0, 3.0, 7.0, 2.0, 8.0]
    assert report.figure("t_s", values, "lower") == 5.0
    report.figure("rate_per_s", values, "higher")
    assert report.figures == {
        "t_s": 5.0,
        "t_s.best": 1.0,
        "t_s.worst": 9.0,
        "rate_per_s": 5.0,
        "rate_per_s.best": 9.0,
        "rate_per_s.worst": 1.0,
    }
    with pytest.raises(ValueError, match="twice"):
        report.figure("t_s", values, "lower")


def test_a_ratio_is_the_median_of_per_round_ratios_not_a_ratio_of_medians() -> None:
    """Each round's measured value is divided by the baseline of the same round."""
    measured = [2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 14.0]
    baseline = [1.0, 4.0, 2.0, 8.0, 5.0, 12.0, 7.0]  # ratios 2, 1, 3, 1, 2, 1, 2
    report = Report()
    assert report.ratio("x_vs_base", measured, baseline, "lower") == 2.0
    assert statistics.median(measured) / statistics.median(baseline) != 2.0
    assert (report.figures["x_vs_base.best"], report.figures["x_vs_base.worst"]) == (1.0, 3.0)
    report.difference("overhead", measured, baseline, "lower")
    assert report.figures["overhead"] == 1.0  # differences 1, 0, 4, 0, 5, 0, 7
    with pytest.raises(ValueError, match="rounds"):
        report.ratio("bad", measured, baseline[:-1], "lower")


def test_targets_compare_the_median_and_name_known_figures() -> None:
    """``met`` says whether the median satisfies the target; a target on no figure is an error."""
    report = Report()
    report.figure("files_per_s", per_second(100, [1.0, 2.0, 0.5, 1.0, 1.0, 2.0, 0.5]), "higher")
    entries = report.check([Target("files_per_s", ">=", 100), Target("files_per_s", "<=", 50)])
    assert entries == [
        {"figure": "files_per_s", "op": ">=", "value": 100, "met": True},
        {"figure": "files_per_s", "op": "<=", "value": 50, "met": False},
    ]
    with pytest.raises(KeyError, match="did not record"):
        report.check([Target("missing", "<=", 1)])


def test_every_registered_bench_promises_its_targets() -> None:
    """The benches declare every promised target, each on a comparison the report knows."""
    declared = set()
    for name in bench.BENCHES:
        module = bench.bench_module(name)
        assert callable(module.run)
        for t in module.TARGETS:
            assert t.op in ("<=", ">=")
            declared.add((name, t.figure, t.op, t.value))
    assert PROMISED - declared == set()


@pytest.fixture
def trivial_bench(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A bench of two trivial cases registered as ``trivial``."""

    def run(quick: bool, rounds: int) -> Report:
        samples = interleave({"ours": lambda i: None, "theirs": lambda i: None}, rounds=rounds)
        report = Report()
        report.param("items", 10 if quick else 1000)
        report.figure("ours_s", samples["ours"], "lower")
        report.ratio("ours_vs_theirs", [1.0] * rounds, [2.0] * rounds, "lower")
        return report

    module = types.SimpleNamespace(run=run, TARGETS=(Target("ours_vs_theirs", "<=", 1.0),))
    monkeypatch.setitem(bench.BENCHES, "trivial", "unused")
    original = bench.bench_module
    monkeypatch.setattr(bench, "bench_module", lambda name: module if name == "trivial" else original(name))
    yield "trivial"


def test_the_command_prints_one_json_object_of_the_contract(
    trivial_bench: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``bench.py NAME`` prints bench, machine, figures (median, best, worst), targets and params."""
    assert bench.main([trivial_bench, "--quick"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"bench", "machine", "figures", "targets", "params"}
    assert out["bench"] == "trivial"
    assert set(out["figures"]) == {f"{f}{s}" for f in ("ours_s", "ours_vs_theirs") for s in ("", ".best", ".worst")}
    assert out["figures"]["ours_vs_theirs"] == 0.5
    assert out["targets"] == [{"figure": "ours_vs_theirs", "op": "<=", "value": 1.0, "met": True}]
    assert out["params"]["items"] == 10
    assert out["params"]["rounds"] == MIN_ROUNDS
    assert {"cpus", "python", "load_avg"} <= set(out["machine"])
    assert all(isinstance(v, int | float) for v in [*out["figures"].values(), *out["params"].values()])


def test_all_names_every_figure_and_target_after_its_bench(trivial_bench: str) -> None:
    """Merged results keep every figure, target and param, prefixed with the bench name."""
    one = bench.run_bench(trivial_bench, quick=True)
    merged = bench.merge([one, {**one, "bench": "other"}])
    assert merged["bench"] == "all"
    assert {"trivial.ours_s.best", "other.ours_vs_theirs.worst"} <= set(merged["figures"])
    assert [t["figure"] for t in merged["targets"]] == ["trivial.ours_vs_theirs", "other.ours_vs_theirs"]
    assert merged["params"]["other.items"] == 10


def test_the_command_refuses_fewer_rounds(trivial_bench: str, capsys: pytest.CaptureFixture[str]) -> None:
    """``--rounds`` below the minimum is a usage error, not a quieter measurement."""
    with pytest.raises(SystemExit) as exc:
        bench.main([trivial_bench, "--rounds", "3"])
    assert exc.value.code == 2
    assert "at least 7" in capsys.readouterr().err


@pytest.fixture
def sectioned_bench(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, ...]]]:
    """A bench of two sections, ``fast`` and ``slow``, registered as ``sectioned``; yields what each run ran."""
    ran: list[tuple[str, ...]] = []

    def run(quick: bool, rounds: int, sections: tuple[str, ...] = ("fast", "slow")) -> Report:
        ran.append(sections)
        report = Report()
        for name in sections:
            report.ratio(f"{name}_vs_base", [1.0] * rounds, [2.0] * rounds, "lower")
        return report

    module = types.SimpleNamespace(
        run=run,
        SECTIONS=("fast", "slow"),
        TARGETS=(Target("fast_vs_base", "<=", 1.0), Target("slow_vs_base", "<=", 0.1)),
    )
    monkeypatch.setitem(bench.BENCHES, "sectioned", "unused")
    original = bench.bench_module
    monkeypatch.setattr(bench, "bench_module", lambda name: module if name == "sectioned" else original(name))
    yield ran


def test_only_runs_the_named_sections_and_checks_their_targets(
    sectioned_bench: list[tuple[str, ...]], capsys: pytest.CaptureFixture[str]
) -> None:
    """``--only fast`` measures that section alone; the targets of the others are not reported."""
    assert bench.main(["sectioned", "--only", "fast"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert sectioned_bench == [("fast",)]
    assert set(out["figures"]) == {"fast_vs_base", "fast_vs_base.best", "fast_vs_base.worst"}
    assert out["targets"] == [{"figure": "fast_vs_base", "op": "<=", "value": 1.0, "met": True}]
    assert bench.main(["sectioned"]) == 0
    assert [t["figure"] for t in json.loads(capsys.readouterr().out)["targets"]] == ["fast_vs_base", "slow_vs_base"]


def test_only_refuses_unknown_sections_and_all(
    sectioned_bench: list[tuple[str, ...]], capsys: pytest.CaptureFixture[str]
) -> None:
    """An unknown section names the bench's sections; ``all`` takes no sections; nothing runs."""
    with pytest.raises(SystemExit) as exc:
        bench.main(["sectioned", "--only", "fast,medium"])
    assert exc.value.code == 2
    assert "no section 'medium'; its sections: fast, slow" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        bench.main(["all", "--only", "fast"])
    assert exc.value.code == 2
    assert sectioned_bench == []


def test_the_put_and_cache_benches_list_their_sections() -> None:
    """Their sections can be run one at a time; running them all is the default."""
    import inspect

    for name, sections in (("put", ("big", "loop", "dir", "s3", "gcs")), ("cache", ("local", "remote", "filetype"))):
        module = bench.bench_module(name)
        assert sections == module.SECTIONS
        assert inspect.signature(module.run).parameters["sections"].default == sections
