"""Online participants, the quality controls and exclusion rules, and a small whole online study."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mos.online_study import OnlineStudyConfig, compare, lab_target, main, run_online_study
from mos.qc import ExclusionRules, qc_signals
from mos.simulate import OnlineBehaviour, draw_participants, online_stimuli, spreads_from_dataset


def _signals(**overrides) -> pd.DataFrame:
    row = dict(
        participant="p1",
        trials=50,
        gold_trials=2,
        gold_failures=0,
        attention_trials=2,
        attention_failures=0,
        fast_trials=0,
        agreement=0.8,
        score_std=1.0,
        time_spread=2.5,
        no_input_trials=0,
    )
    row.update(overrides)
    return pd.DataFrame([row])


@pytest.mark.parametrize(
    ("override", "reason"),
    [
        ({"trials": 4}, "fewer than 10 trials"),
        ({"gold_failures": 1}, "gold"),
        ({"attention_failures": 1}, "attention"),
        ({"fast_trials": 20}, "faster than 2 s"),
        ({"agreement": 0.05}, "agreement"),
        ({"score_std": 0.0}, "straight-lining"),
        ({"time_spread": 0.02}, "too regular"),
        ({"no_input_trials": 40}, "without a slider move"),
    ],
)
def test_each_rule_excludes_with_its_reason(override, reason):
    kept = ExclusionRules().apply(_signals())
    assert not kept["excluded"].iloc[0] and kept["reasons"].iloc[0] == ""
    out = ExclusionRules().apply(_signals(**override))
    assert out["excluded"].iloc[0]
    assert reason in out["reasons"].iloc[0]


def test_rules_can_be_switched_off_and_unknown_agreement_never_excludes():
    rules = ExclusionRules(max_gold_failures=None, min_agreement=None)
    assert not rules.apply(_signals(gold_failures=2, agreement=-0.5))["excluded"].iloc[0]
    assert not ExclusionRules().apply(_signals(agreement=np.nan))["excluded"].iloc[0]
    both = ExclusionRules().apply(_signals(gold_failures=1, attention_failures=2))
    assert both["reasons"].iloc[0].count(";") == 1
    assert ExclusionRules().describe()["max_gold_failures"] == 0


def _trials(rng, careless: bool) -> pd.DataFrame:
    truth = np.linspace(0.5, 4.5, 30)
    rows = []
    for person in range(6):
        bad = careless and person == 0
        for img in range(30):
            score = rng.uniform(0, 5) if bad else truth[img] + 0.3 * rng.standard_normal()
            seconds = 0.8 if bad else 3.0 + img % 5  # people vary, a script does not
            rows.append((f"p{person}", img, score, seconds, "", np.nan, np.nan))
        gold = rng.uniform(0, 5) if bad else 4.7
        rows.append((f"p{person}", -1, gold, 5.0, "gold", 3.0, 5.0))
        attention = 3.9 if bad else 1.0
        rows.append((f"p{person}", -1, attention, 5.0, "attention", 0.5, 1.5))
    return pd.DataFrame(
        rows, columns=["participant", "stimulus", "score", "seconds", "check", "low", "high"]
    )


def test_signals_single_out_the_careless_participant():
    rng = np.random.default_rng(0)
    signals = qc_signals(_trials(rng, careless=True)).set_index("participant")
    assert signals.loc["p0", "attention_failures"] == 1
    assert signals.loc["p0", "fast_trials"] == 30
    assert signals.loc["p0", "agreement"] < 0.5 < signals.loc["p1", "agreement"]
    careful = signals.drop(index="p0")
    assert (careful[["gold_failures", "attention_failures", "fast_trials"]] == 0).all().all()
    assert (careful["trials"] == 30).all() and (careful["gold_trials"] == 1).all()
    verdict = ExclusionRules().apply(signals.reset_index())
    assert verdict.loc[verdict["excluded"], "participant"].tolist() == ["p0"]


def test_agreement_needs_five_shared_images():
    frame = pd.DataFrame(
        {
            "participant": ["a"] * 3 + ["b"] * 3 + ["c"] * 3,
            "stimulus": [0, 1, 2] * 3,
            "score": [1.0, 2.0, 3.0] * 3,
            "seconds": 5.0,
            "check": "",
            "low": np.nan,
            "high": np.nan,
        }
    )
    assert qc_signals(frame)["agreement"].isna().all()


def test_participant_kinds_follow_the_shares():
    rng = np.random.default_rng(1)
    people = draw_participants(4000, OnlineBehaviour(careless=0.2, biased=0.1, noisy=0.1), rng)
    shares = people["kind"].value_counts(normalize=True)
    assert abs(shares["careless"] - 0.2) < 0.03 and abs(shares["careful"] - 0.6) < 0.03
    assert (people.loc[people["kind"] == "biased", "bias"].abs() == 1.0).all()
    assert abs((people["leaves_at"] < 1).mean() - 0.15) < 0.03
    with pytest.raises(ValueError):
        OnlineBehaviour(careless=0.6, biased=0.6)


def test_spreads_from_a_sureal_style_file(tmp_path):
    path = tmp_path / "s.csv"
    pd.DataFrame(
        {"viewer": ["a", "b", "a", "b"], "stimulus": ["x", "x", "y", "y"], "score": [1, 5, 3, 3]}
    ).to_csv(path, index=False)
    assert np.allclose(np.sort(spreads_from_dataset(path)), [0.0, np.sqrt(8) / 4 * 5])
    pd.DataFrame({"a": [1]}).to_csv(path, index=False)
    with pytest.raises(ValueError, match="stimulus and score"):
        spreads_from_dataset(path)


def test_a_small_online_study_adaptive_needs_fewer_ratings_and_catches_careless_clickers():
    rng = np.random.default_rng(3)
    truth = online_stimuli(240, rng)
    target = lab_target(truth, seed=3)
    assert 0.2 < target < 0.6
    config = OnlineStudyConfig(sitting=40, target_ci=target, seed=3, max_ratings=60_000)
    table = compare(config, truth, show_progress=False)
    uniform, adaptive = table["uniform"], table["adaptive"]
    assert uniform["reached_target"] and adaptive["reached_target"]
    assert uniform["max_ci"] <= target and adaptive["max_ci"] <= target
    assert adaptive["collected"] < 0.8 * uniform["collected"]
    for column in (uniform, adaptive):
        assert column["careless_caught"] >= 0.9 * column["careless"] > 0
        assert column["careful_excluded"] <= 0.05 * column["careful"]
        assert column["pearson"] > 0.95


def test_the_budget_stops_a_study_that_cannot_reach_its_target():
    truth = online_stimuli(100, np.random.default_rng(4))
    config = OnlineStudyConfig(sitting=20, target_ci=0.01, max_ratings=500, seed=4)
    result = run_online_study(config, truth, show_progress=False)
    assert not result.reached_target
    assert 500 <= result.collected < 520
    assert result.history["collected"].is_monotonic_increasing
    # Every kept rating is a test image of a participant who was not excluded.
    kept_people = set(result.ratings["participant"])
    excluded = set(result.participants.index[result.participants["excluded"]])
    assert not kept_people & excluded


def test_cli_refuses_bad_arguments(capsys):
    with pytest.raises(SystemExit) as raised:
        main(["--stimuli", "3"])
    assert raised.value.code == 2
    with pytest.raises(SystemExit):
        main(["--target", "-1"])
