"""The fault-injection suite's runner (bench.chaos), on one cheap real scenario; the whole
suite is `make chaos`, outside `make test`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.chaos import SCENARIOS, lab_on, markdown_table, run_scenarios, write_report


@pytest.mark.integration
def test_runner_runs_the_huge_body_scenario_against_a_real_api_and_reports_it(
        kafka_bootstrap_servers: str, redis_url: str, tmp_path: Path) -> None:
    results = run_scenarios(["huge_body"],
                            lambda: lab_on(kafka_bootstrap_servers, redis_url, tmp_path))
    out = tmp_path / "reports" / "chaos.json"
    write_report(results, out)

    [entry] = json.loads(out.read_text())["scenarios"]
    assert entry["name"] == "huge_body"
    assert entry["injected"] == SCENARIOS["huge_body"][0]
    assert entry["error"] is None, entry
    assert entry["outcome"]["declared"]["status"] == 413, entry
    assert entry["outcome"]["chunked"]["status"] == 413, entry
    # 500 MB offered: the API answered long before taking it
    assert entry["outcome"]["declared"]["mb_sent"] < 64
    assert entry["passed"] is True, entry
    assert "| huge_body | PASS |" in markdown_table(results)


def test_a_scenario_that_raises_or_fails_is_reported_and_the_suite_goes_on(
        tmp_path: Path) -> None:
    opened: list[str] = []

    def lab():
        opened.append("lab")
        return lab_on("127.0.0.1:1", "redis://127.0.0.1:1/0", tmp_path)

    def broken(_lab):
        raise RuntimeError("the broker never answered")

    scenarios = {"broken": ("nothing", broken),
                 "failing": ("nothing", lambda _lab: ({"lost": 3}, False)),
                 "fine": ("nothing", lambda _lab: ({"lost": 0}, True))}
    results = run_scenarios(["broken", "failing", "fine"], lab, scenarios)

    assert [(r.name, r.passed) for r in results] == [
        ("broken", False), ("failing", False), ("fine", True)]
    assert results[0].error == "RuntimeError: the broker never answered"
    assert results[1].outcome == {"lost": 3} and results[1].error is None
    assert len(opened) == 3  # each scenario in a lab of its own
    table = markdown_table(results)
    assert "| broken | FAIL |" in table and "the broker never answered" in table


def test_memory_levels_off_when_the_last_third_grows_little_and_not_when_it_grows_on() -> None:
    from bench.chaos import level_off

    mb = 1 << 20
    linear = [100 * mb + n * 2 * mb for n in range(30)]  # unbounded: +2 MB per sample
    plateau = [100 * mb + min(n, 10) * 6 * mb for n in range(30)]  # bound reached at a third
    assert level_off(linear)["levels_off"] is False
    assert level_off(linear)["last_third_growth_mb"] > 0.25 * level_off(linear)["total_growth_mb"]
    assert level_off(plateau)["levels_off"] is True
    assert level_off(plateau)["total_growth_mb"] == 54.0  # from the median of the first 3
    # a few MB of allocator noise around a small total is not growth
    noisy = [50 * mb + (n % 3) * 2 * mb for n in range(30)]
    assert level_off(noisy)["levels_off"] is True
    assert level_off(linear[:5])["levels_off"] is False  # too few samples to say
