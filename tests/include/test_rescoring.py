"""Which traces each judge still has to judge, given the scores already on them."""

from __future__ import annotations

import pytest

from include.langfuse_eval.rescoring import JudgingPlan, plan_judging

VERSION = "2026.12.1"
EVALUATORS = ["tone", "joyfulness"]


@pytest.mark.parametrize(
    ("existing", "force", "pending_tone", "pending_joy"),
    [
        pytest.param({}, False, ["a", "b"], ["a", "b"], id="nothing-scored"),
        pytest.param(
            {"a": {"tone": VERSION, "joyfulness": VERSION}},
            False,
            ["b"],
            ["b"],
            id="same-version-skipped",
        ),
        pytest.param({"a": {"tone": VERSION}}, False, ["b"], ["a", "b"], id="one-name-scored"),
        pytest.param(
            {"a": {"tone": "2026.11.9", "joyfulness": VERSION}},
            False,
            ["a", "b"],
            ["b"],
            id="older-version-rejudged",
        ),
        pytest.param(
            {"a": {"tone": None, "joyfulness": None}},
            False,
            ["a", "b"],
            ["a", "b"],
            id="unversioned-rejudged",
        ),
        pytest.param(
            {"a": {"tone": VERSION, "joyfulness": VERSION}},
            True,
            ["a", "b"],
            ["a", "b"],
            id="force-rejudges",
        ),
    ],
)
def test_plan_judging_cases(existing, force, pending_tone, pending_joy):
    plan = plan_judging(
        ["a", "b"], evaluators=EVALUATORS, existing=existing, evaluator_version=VERSION, force=force
    )
    assert plan.pending["tone"] == pending_tone
    assert plan.pending["joyfulness"] == pending_joy
    for name in EVALUATORS:
        assert sorted(plan.pending[name] + plan.already_scored[name]) == ["a", "b"]


def test_only_selected_evaluators_planned():
    plan = plan_judging(
        ["a"], evaluators=["tone"], existing={}, evaluator_version=VERSION, force=False
    )
    assert list(plan.pending) == ["tone"]


def test_judging_plan_round_trip():
    plan = JudgingPlan(pending={"tone": ["a"]}, already_scored={"tone": ["b"]})
    assert JudgingPlan.from_dict(plan.to_dict()) == plan
