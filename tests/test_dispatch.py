"""The dispatcher's pure parts: requirements, eligibility, strategies and
reputation, without a server."""

from __future__ import annotations

from typing import Any

import pytest

from avtomatika import ActionFactory
from avtomatika.dispatch import (
    STRATEGIES,
    Reputation,
    Requirements,
    WorkerProfile,
    choose,
    eligible,
)
from avtomatika.errors import BlueprintError

GPU_BOX = WorkerProfile(
    "gpu-box",
    ("render",),
    gpu_model="NVIDIA RTX 4090",
    vram_gb=24,
    models=frozenset({("whisper", "3"), ("llama", "3.1")}),
    labels={"region": "eu", "spot": "true"},
    cost_per_skill={"render": 0.4},
)


@pytest.mark.parametrize(
    ("spec", "max_cost", "fits"),
    [
        ({"gpu_info": {"model": "rtx 40"}}, None, True),
        ({"gpu_info": {"model": "A100"}}, None, False),
        ({"gpu_info": {"vram_gb": 24}}, None, True),
        ({"gpu_info": {"vram_gb": 40}}, None, False),
        ({"installed_models": ["whisper", "llama"]}, None, True),
        ({"installed_models": ["whisper", "sdxl"]}, None, False),
        ({"installed_models": [{"name": "llama", "version": "3.1"}]}, None, True),
        ({"installed_models": [{"name": "llama", "version": "2"}]}, None, False),
        ({"extra_requirements": {"region": "eu", "spot": True}}, None, True),
        ({"extra_requirements": {"region": "us"}}, None, False),
        ({}, 0.4, True),
        ({}, 0.39, False),
    ],
)
def test_each_kind_of_requirement(spec: dict[str, Any], max_cost: float | None, fits: bool) -> None:
    requirements = Requirements.parse(spec, max_cost)
    assert eligible(requirements, GPU_BOX, "render") is fits


def test_a_worker_without_a_price_for_the_skill_is_free() -> None:
    assert eligible(Requirements(max_cost=0.0), GPU_BOX, "other")


def test_a_worker_at_its_declared_concurrency_is_not_eligible() -> None:
    full = WorkerProfile("w", ("x",), max_concurrent=2, active=2)
    assert not eligible(None, full, "x")
    assert eligible(None, WorkerProfile("w", ("x",), max_concurrent=2, active=1), "x")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"resource_requirements": {"gpu": "A100"}}, "unknown key(s) gpu"),
        ({"resource_requirements": {"gpu_info": {"vram_gb": "lots"}}}, "vram_gb must be a number"),
        ({"resource_requirements": {"installed_models": [3]}}, "installed_models items"),
        ({"dispatch_strategy": "fastest"}, "dispatch_strategy must be one of"),
    ],
)
def test_bad_dispatch_options_are_blueprint_errors(options: dict[str, Any], message: str) -> None:
    with pytest.raises(BlueprintError, match="dispatch_task") as raised:
        ActionFactory().dispatch_task("render", params={}, transitions={"success": "d"}, **options)
    assert message in str(raised.value)


def _worker(worker_id: str, **fields: Any) -> WorkerProfile:
    return WorkerProfile(worker_id, ("render",), **fields)


@pytest.mark.parametrize(
    ("strategy", "candidates", "chosen"),
    [
        # default: warm (ran the skill) before cold, then cheapest.
        (
            "default",
            [
                _worker("cold", cost_per_skill={"render": 1}),
                _worker("warm", hot_skills=frozenset({"render"}), cost_per_skill={"render": 5}),
            ],
            "warm",
        ),
        (
            "default",
            [
                _worker("cold-dear", cost_per_skill={"render": 2}),
                _worker("cold-cheap", cost_per_skill={"render": 1}),
            ],
            "cold-cheap",
        ),
        (
            "round_robin",
            [_worker("recent", last_served=9), _worker("earlier", last_served=3)],
            "earlier",
        ),
        ("least_connections", [_worker("busy", active=3), _worker("idle", active=0)], "idle"),
        (
            "cheapest",
            [
                _worker("a", cost_per_skill={"render": 3}),
                _worker("b", cost_per_skill={"render": 1}),
                _worker("c", cost_per_skill={"render": 2}),
            ],
            "b",
        ),
        # 1.0 / 0.9 beats 0.8 / 0.2.
        (
            "best_value",
            [
                _worker("cheap-flaky", cost_per_skill={"render": 0.8}, reputation=0.2),
                _worker("reliable", cost_per_skill={"render": 1.0}, reputation=0.9),
            ],
            "reliable",
        ),
        # Equal (free) prices: the more reliable.
        (
            "best_value",
            [_worker("flaky", reputation=0.3), _worker("solid", reputation=0.8)],
            "solid",
        ),
        # Ties go to the worker that waited longest.
        ("cheapest", [_worker("first"), _worker("second")], "first"),
    ],
)
def test_each_strategy_picks_its_worker(
    strategy: str, candidates: list[WorkerProfile], chosen: str
) -> None:
    assert strategy in STRATEGIES
    assert candidates[choose(strategy, "render", None, candidates)].worker_id == chosen


def test_a_worker_holding_a_required_model_hot_is_warm() -> None:
    requirements = Requirements.parse({"installed_models": ["whisper"]})
    models = frozenset({("whisper", "3")})
    candidates = [
        _worker("cold", models=models),
        _worker(
            "hot", models=models, hot_models=frozenset({"whisper"}), cost_per_skill={"render": 9}
        ),
    ]
    assert candidates[choose("default", "render", requirements, candidates)].worker_id == "hot"


def test_reputation_is_a_smoothed_success_ratio_over_a_sliding_window() -> None:
    reputation = Reputation(window=4)
    assert reputation.of("new") == 0.5
    for outcome in (False, False, True, True, True, True):
        reputation.record("w", outcome)
    # The two failures slid out of the window: 4 of 4 succeeded.
    assert reputation.of("w") == (4 + 1) / (4 + 2)
    reputation.record("w", False)
    assert reputation.of("w") == (3 + 1) / (4 + 2)
