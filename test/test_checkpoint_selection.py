"""lapo_ros.sim.selection: which saved checkpoint the main job and the benchmark evaluate, and which
validation rollouts a rerun does not repeat."""
import json
from dataclasses import replace
from pathlib import Path

import pytest

from lapo_ros.sim import selection
from lapo_ros.sim.episode_stats import EpisodeResult, wilson_interval
from lapo_ros.sim.evaluate import SimEvalConfig
from lapo_ros.sim.selection import choose


def rows(successes: dict[int, int], episodes: int = 20) -> list[dict]:
    return [{"step": step, "success_rate": k / episodes, "success_ci95": wilson_interval(k, episodes)}
            for step, k in successes.items()]


def test_within_the_noise_the_most_trained_checkpoint_is_chosen() -> None:
    # The measured case: 17/20 at 4,000 steps is no evidence against 15/20 at 8,000.
    assert choose(rows({2000: 3, 4000: 17, 6000: 16, 8000: 15}))["step"] == 8000


def test_a_later_checkpoint_clearly_worse_than_the_best_is_passed_over() -> None:
    chosen = choose(rows({2000: 3, 4000: 17, 6000: 16, 8000: 5}))
    assert chosen["step"] == 6000  # the latest inside 17/20's interval, not the best itself
    assert choose(rows({2000: 18, 4000: 4, 6000: 6, 8000: 5}))["step"] == 2000


def test_with_no_success_anywhere_the_last_checkpoint_is_chosen() -> None:
    assert choose(rows({1000: 0, 2000: 0}))["step"] == 2000


def fake_run(tmp_path: Path, steps: list[int]) -> Path:
    """A run folder with saved checkpoints (content = their step) and a one-line progress.csv."""
    for step in steps:
        (tmp_path / f"model_{step}.pth").write_bytes(str(step).encode())
    (tmp_path / "progress.csv").write_text("step,critic_loss\n1,0.5\n")
    return tmp_path


class CountingEvaluator:
    """Stands in for the sim rollouts (what is tested here is which checkpoints get rolled out):
    checkpoint model_<step>.pth succeeds on the first step/1000 seeds; `interrupt_at` raises Ctrl-C."""

    def __init__(self, interrupt_at: str | None = None) -> None:
        self.calls: list[str] = []
        self.interrupt_at = interrupt_at

    def __call__(self, path: Path, seeds: list[int], cfg: SimEvalConfig, workers: int) -> list[EpisodeResult]:
        if path.name == self.interrupt_at:
            raise KeyboardInterrupt
        self.calls.append(path.name)
        k = int(path.read_bytes()) // 1000
        return [EpisodeResult(seed=s, success=i < k, episode_return=4.0 * (i < k), reward_sum=0.0, reward_ticks=1,
                              sim_duration=1.0, commands=1, max_joint_change=0.0) for i, s in enumerate(seeds)]


def test_validation_already_done_is_reused_and_redone_when_anything_it_depends_on_changed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = fake_run(tmp_path, [1000, 2000, 3000])
    cfg = SimEvalConfig.from_config_files()
    seeds = list(range(3001, 3005))
    # Cut short while validating the third checkpoint: the first two are on disk.
    monkeypatch.setattr(selection, "evaluate", CountingEvaluator(interrupt_at="model_3000.pth"))
    with pytest.raises(KeyboardInterrupt):
        selection.select_checkpoint(run, "bc", seeds, cfg, workers=1)
    resumed = CountingEvaluator()
    monkeypatch.setattr(selection, "evaluate", resumed)
    assert selection.select_checkpoint(run, "bc", seeds, cfg, workers=1).name == "model_3000.pth"
    assert resumed.calls == ["model_3000.pth"]
    rerun = CountingEvaluator()
    monkeypatch.setattr(selection, "evaluate", rerun)
    assert selection.select_checkpoint(run, "bc", seeds, cfg, workers=1).name == "model_3000.pth"
    assert rerun.calls == []
    record = json.loads((run / selection.ROLLOUTS_FILE).read_text())
    assert [r["success_rate"] for r in record["checkpoints"]] == [0.25, 0.5, 0.75]
    # A retrained checkpoint, other seeds or other evaluator settings: validated again.
    (run / "model_2000.pth").write_bytes(b"1000")
    changed = CountingEvaluator()
    monkeypatch.setattr(selection, "evaluate", changed)
    selection.select_checkpoint(run, "bc", seeds, cfg, workers=1)
    assert changed.calls == ["model_2000.pth"]
    for other_seeds, other_cfg in ((seeds[:3], cfg), (seeds, replace(cfg, time_limit=cfg.time_limit + 1))):
        again = CountingEvaluator()
        monkeypatch.setattr(selection, "evaluate", again)
        selection.select_checkpoint(run, "bc", other_seeds, other_cfg, workers=1)
        assert again.calls == ["model_1000.pth", "model_2000.pth", "model_3000.pth"]
