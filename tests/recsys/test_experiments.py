"""Experiment configs, sticky assignment and the report's statistics."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from recsys.experiments import (
    Experiment,
    ExperimentError,
    pinned_versions,
    report,
    resolve_versions,
    two_proportion_z,
    wilson_interval,
)


def config(**over: object) -> dict[str, object]:
    return {"name": "exp1", "variants": [{"name": "model", "kind": "model", "share": 0.5},
                                         {"name": "pop", "kind": "popularity", "share": 0.5}],
            **over}


def test_bad_configs_are_refused_with_the_reason() -> None:
    bad_shares = config(variants=[{"name": "a", "kind": "model", "share": 0.5},
                                  {"name": "b", "kind": "popularity", "share": 0.4}])
    with pytest.raises(ValidationError, match="sum to 1; they sum to 0.9"):
        Experiment.model_validate(bad_shares)
    with pytest.raises(ValidationError, match="kind"):
        Experiment.model_validate(config(variants=[
            {"name": "a", "kind": "magic", "share": 0.5},
            {"name": "b", "kind": "model", "share": 0.5}]))
    with pytest.raises(ValidationError, match=r"needs a weight in \[0, 1\]"):
        Experiment.model_validate(config(variants=[
            {"name": "a", "kind": "hybrid_weight", "value": "heavy", "share": 0.5},
            {"name": "b", "kind": "model", "share": 0.5}]))
    with pytest.raises(ValidationError, match="unique"):
        Experiment.model_validate(config(variants=[
            {"name": "a", "kind": "model", "share": 0.5},
            {"name": "a", "kind": "popularity", "share": 0.5}]))
    exp = Experiment.model_validate(config(variants=[
        {"name": "a", "kind": "model_version", "value": "v9", "share": 0.5},
        {"name": "b", "kind": "model", "share": 0.5}]))
    with pytest.raises(ExperimentError, match="unknown model version 'v9'"):
        resolve_versions(exp, {"v1": {}}, "v1", [])
    assert resolve_versions(exp, {"v1": {}, "v9": {}}, "v1", []).variants[0].version == "v9"


def test_model_kind_resolves_to_the_newest_retained_version_of_that_kind() -> None:
    exp = Experiment.model_validate(config(variants=[
        {"name": "a", "kind": "model_kind", "value": "item_item", "share": 0.5},
        {"name": "b", "kind": "hybrid_weight", "value": "0.25", "share": 0.5}]))
    assert exp.variants[1].blend == 0.25  # the CLI's text weight, as a number
    hybrid = {"model_kind": "als", "factors": 8, "content": {"fitted": True}}
    manifests = {"v3": hybrid, "v2": {"model_kind": "item_item"},
                 "v1": {"model_kind": "item_item"}, "v0": {"model_kind": "neural"}}
    resolved = resolve_versions(exp, manifests, "v3", ["v2", "v1", "v0"])
    assert [v.version for v in resolved.variants] == ["v2", None]
    assert pinned_versions([resolved.model_dump_json(), b"{broken"]) == {"v2"}
    with pytest.raises(ExperimentError, match="no retained model version of kind 'item_item'"):
        resolve_versions(exp, {"v3": hybrid}, "v3", [])
    with pytest.raises(ExperimentError, match="needs a served version with a content model"):
        resolve_versions(exp, {**manifests, "v3": {"model_kind": "als", "factors": 8}}, "v3",
                         ["v2"])


def test_assignment_is_sticky_and_follows_the_shares() -> None:
    exp = Experiment.model_validate(config(variants=[
        {"name": "a", "kind": "model", "share": 0.2},
        {"name": "b", "kind": "popularity", "share": 0.8}]))
    users = [f"user-{i}" for i in range(20_000)]
    first = [exp.assign(u).name for u in users]
    assert first == [exp.assign(u).name for u in users]
    share_a = first.count("a") / len(users)
    assert 0.19 < share_a < 0.21
    # Another experiment splits the same users independently.
    other = Experiment.model_validate({**exp.model_dump(), "name": "exp2"})
    same = sum(x == other.assign(u).name for x, u in zip(first, users, strict=True))
    assert same / len(users) < 0.75  # independent: 0.2² + 0.8² = 0.68


def test_wilson_and_z_test_match_textbook_values() -> None:
    low, high = wilson_interval(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-4) and high == pytest.approx(0.9433, abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    z, p = two_proportion_z(50, 100, 30, 100)
    assert z == pytest.approx(2.8868, abs=1e-4) and p == pytest.approx(0.003892, abs=1e-5)


def test_report_says_when_there_is_not_enough_data() -> None:
    small = report("e", {"model": {"impressions": 20, "click": 5},
                         "pop": {"impressions": 20, "click": 1}})
    assert small["enough_data"] is False
    big = report("e", {"model": {"impressions": 1000, "click": 120, "purchase": 10},
                       "pop": {"impressions": 1000, "click": 60}})
    assert big["enough_data"] is True
    assert big["p_value"] is not None and big["p_value"] < 0.001
    model = big["variants"][0]  # type: ignore[index]
    assert model["ctr"] == pytest.approx(0.12) and model["conversion"] == pytest.approx(0.01)
