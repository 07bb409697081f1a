"""lapo_ros.sim.selection.choose: which saved checkpoint the main job and the benchmark evaluate."""
from lapo_ros.sim.episode_stats import wilson_interval
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
