"""Augmented training for whisper_probe without Whisper: the noisy-copy recipe is deterministic per seed,
keeps the length and hits its SNR; cached copies draw babble only from their own CV fold; K = 0 is the
old selection exactly; and a CV fold never trains on a held-out speaker's copies."""

from __future__ import annotations

import numpy as np
import pytest

from workers.pipeline import augment as aug
from workers.pipeline import whisper_training as wt
from workers.pipeline.data import TrainItem, Utterance, balanced_sample_weights, speaker_folds
from workers.pipeline.whisper_augment import condition_features, copy_features

SR = 16000


def _voice(f0: float, seconds: float = 1.3, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    x = sum(np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 6)) / k for k in range(1, 10))
    return (0.05 * x * (np.sin(2 * np.pi * 2 * t) > -0.3)).astype(np.float32)


OTHERS = [_voice(f, 1.0, seed=k) for k, f in enumerate((95, 130, 180, 210, 250, 300))]


def _snr(x: np.ndarray, y: np.ndarray) -> float:
    x64 = x.astype(np.float64)
    return float(10 * np.log10(np.mean(x64**2) / np.mean((y.astype(np.float64) - x64) ** 2)))


def test_a_noisy_copy_keeps_the_length_and_repeats_with_its_seed() -> None:
    x = _voice(140, 1.37)  # an odd length
    every = aug.NoisyRecipe(p_reverb=0.5, p_noise=0.9, p_channel=0.8, p_level=0.5)
    infos = []
    for seed in range(12):
        a, info = aug.noisy_copy(x, np.random.default_rng(seed), OTHERS, every)
        b, _ = aug.noisy_copy(x, np.random.default_rng(seed), OTHERS, every)
        assert a.shape == x.shape and a.dtype == np.float32 and np.isfinite(a).all()
        assert np.array_equal(a, b)
        infos.append(info)
    copies = [aug.noisy_copy(x, np.random.default_rng(s), OTHERS, every)[0] for s in (0, 1)]
    assert not np.array_equal(*copies)  # the seed matters
    assert len({i.get("noise") for i in infos}) >= 3 and len({i.get("channel") for i in infos}) >= 3  # it is diverse
    assert all(0.0 <= i["snr_db"] <= 25.0 for i in infos if "snr_db" in i)


@pytest.mark.parametrize("kind", ["white", "pink", "brown", "babble"])
def test_a_noisy_copy_hits_its_snr(kind: str) -> None:
    x = _voice(120, 2.0)
    only_noise = aug.NoisyRecipe(p_reverb=0.0, p_noise=1.0, noise_kinds=(kind,), p_channel=0.0, p_level=0.0)
    for seed in range(3):
        y, info = aug.noisy_copy(x, np.random.default_rng(seed), OTHERS, only_noise)
        assert info["noise"] == kind and 0.0 <= info["snr_db"] <= 25.0
        assert _snr(x, y) == pytest.approx(info["snr_db"], abs=0.01)
        if kind == "babble":
            assert 3 <= info["talkers"] <= 8


def test_brown_noise_falls_faster_than_pink() -> None:
    from scipy.signal import welch

    from workers.pipeline.degrade import pink_noise

    rng = np.random.default_rng(0)
    f, p_brown = welch(aug.brown_noise(SR * 4, rng), fs=SR, nperseg=4096)
    _, p_pink = welch(pink_noise(SR * 4, rng), fs=SR, nperseg=4096)

    def drop(p: np.ndarray) -> float:  # dB from the 250-500 Hz octave to the 2-4 kHz one
        return float(10 * np.log10(np.mean(p[(f >= 250) & (f < 500)]) / np.mean(p[(f >= 2000) & (f < 4000)])))

    assert drop(p_brown) == pytest.approx(18.0, abs=2.0)  # 6 dB per octave
    assert drop(p_pink) == pytest.approx(9.0, abs=2.0)


# --- tiny synthetic pool: 12 speakers, 2 clips each, features that carry their speaker -----------------


def _pool() -> tuple[list[TrainItem], list[Utterance]]:
    items, utts = [], []
    for s in range(12):
        label = s % 2
        for j in range(2):
            key = f"spk{s}-{j}"
            items.append(TrainItem(key, ("a", "b")[label], f"spk{s}", corpus="SAA" if s < 8 else "X", key=key))
            utts.append(Utterance(_voice(100 + 10 * s, 0.5, seed=j), label, f"spk{s}", items[-1].corpus, key))
    return items, utts


def _features(label: int, speaker: int, rng: np.random.Generator, windows: int = 2) -> np.ndarray:
    """``[windows, 2 states, 2, 4]``: feature 0 of every state names the speaker, feature 1 the label (noisy)."""
    f = rng.normal(size=(windows, 2, 2, 4)).astype(np.float32)
    f[:, :, 0, 0] = speaker
    f[:, :, 0, 1] += 1.5 * label
    return f


def test_k0_is_the_old_selection_exactly() -> None:
    items, utts = _pool()
    rng = np.random.default_rng(0)
    feats = [_features(u.label, int(u.speaker[3:]), rng) for u in utts]
    pool = list(range(len(utts)))
    hp = {**wt.DEFAULTS, "states": [1], "C_grid": [0.1, 1.0], "cv_folds": 3}
    old = wt.select_probe(feats, utts, items, pool, 2, hp, select_corpus="SAA", seed=0)
    copies = {i: [_features(utts[i].label, 99, rng)] for i in pool}
    k0 = wt.select_probe(feats, utts, items, pool, 2, {**hp, "augment_copies": 1, "augment_grid": [0]},
                         select_corpus="SAA", seed=0, copies=copies)
    assert np.array_equal(old["oof_logits"], k0["oof_logits"]) and old["C"] == k0["C"] and k0["augment_copies"] == 0
    # the old design, written out: each fold fits on the clean rows of its training speakers
    X, owner = wt._design(feats, pool, (1,), "mean")
    assert X.shape == (len(pool) * 2, 4)
    y = np.array([utts[i].label for i in owner])
    oof = np.zeros((len(X), 2))
    for held in speaker_folds(items, pool, 3, seed=0):
        test = np.isin(owner, held)
        w = balanced_sample_weights(y[~test], [utts[i].speaker for i in owner[~test]])
        oof[test] = wt._logits(X[test], wt._fit(X[~test], y[~test], w, old["C"], 2, 0))
    assert np.array_equal(oof, old["oof_logits"])


def test_cv_never_trains_on_a_held_out_speakers_copies(monkeypatch) -> None:
    items, utts = _pool()
    rng = np.random.default_rng(1)
    feats = [_features(u.label, int(u.speaker[3:]), rng) for u in utts]
    pool = list(range(len(utts)))
    copies = {i: [_features(utts[i].label, int(utts[i].speaker[3:]), rng, windows=1) for _ in range(2)] for i in pool}
    noisy = {"pink_10db": {i: _features(utts[i].label, int(utts[i].speaker[3:]), rng)
                           for i in pool if utts[i].corpus == "SAA"}}
    seen: list[tuple[set, int]] = []
    real_fit = wt._fit

    def spy(X, y, w, C, n_classes, seed):
        seen.append(({int(v) for v in X[:, 0]}, len(X)))
        return real_fit(X, y, w, C, n_classes, seed)

    monkeypatch.setattr(wt, "_fit", spy)
    hp = {**wt.DEFAULTS, "states": [0], "C_grid": [0.1], "cv_folds": 3, "augment_copies": 2, "augment_grid": [0, 2],
          "select_conditions": ["pink_10db"], "select_min_clean": 0.0}
    out = wt.select_probe(feats, utts, items, pool, 2, hp, select_corpus="SAA", seed=0, copies=copies, noisy=noisy)
    folds = speaker_folds(items, pool, 3, seed=0)
    assert len(seen) == 2 * len(folds)
    for n, (speakers, rows) in enumerate(seen):
        held = {int(utts[i].speaker[3:]) for i in folds[n % len(folds)]}
        train_speakers = {int(utts[i].speaker[3:]) for i in pool} - held
        assert speakers == train_speakers  # no held-out speaker, clean or copy
        clean_rows = 2 * sum(1 for i in pool if int(utts[i].speaker[3:]) in train_speakers)
        assert rows == clean_rows * (1 if n < len(folds) else 2)  # K = 2: two one-window copies per clip
    table = out["table"]
    assert [row["augment_copies"] for row in table] == [0, 2]
    for row in table:
        cond = row["cv_conditions"]["pink_10db"]
        assert cond["n"] == 16 and len(cond["recall"]) == 2
        assert row["cv_selection_score"] == pytest.approx((row["cv_balanced_accuracy"] + cond["balanced_accuracy"]) / 2)
    assert out["meets_clean_floor"]


def test_a_clean_floor_rules_out_candidates_below_it() -> None:
    items, utts = _pool()
    rng = np.random.default_rng(2)
    feats = [_features(u.label, int(u.speaker[3:]), rng) for u in utts]
    pool = list(range(len(utts)))
    noisy = {"pink_10db": {i: _features(utts[i].label, 0, rng) for i in pool if utts[i].corpus == "SAA"}}
    hp = {**wt.DEFAULTS, "states": [0], "C_grid": [0.001, 1.0], "cv_folds": 3, "select_conditions": ["pink_10db"]}
    free = wt.select_probe(feats, utts, items, pool, 2, hp, select_corpus="SAA", seed=0, noisy=noisy)
    scores = {row["C"]: row["cv_balanced_accuracy"] for row in free["table"]}
    floor = max(scores.values())
    floored = wt.select_probe(feats, utts, items, pool, 2, {**hp, "select_min_clean": floor}, select_corpus="SAA",
                              seed=0, noisy=noisy)
    assert scores[floored["C"]] >= floor and floored["meets_clean_floor"]
    nobody = wt.select_probe(feats, utts, items, pool, 2, {**hp, "select_min_clean": 1.01}, select_corpus="SAA",
                             seed=0, noisy=noisy)
    assert not nobody["meets_clean_floor"]


def test_cached_copies_draw_babble_from_their_own_fold_and_repeat(monkeypatch) -> None:
    import workers.pipeline.whisper_augment as wa

    items, utts = _pool()
    pool = list(range(len(utts)))
    folds = speaker_folds(items, pool, 3, seed=0)
    fold_of = {i: f for f, held in enumerate(folds) for i in held}
    ident = {id(u.samples): n for n, u in enumerate(utts)}
    donors: dict[int, set] = {}
    real = wa.noisy_copy

    def spy(x, rng, others, recipe):
        donors.setdefault(ident[id(x)], set()).update(ident[id(o)] for o in others)
        return real(x, rng, others, recipe)

    monkeypatch.setattr(wa, "noisy_copy", spy)
    made: list = []

    def encode(lazies):
        made.extend((u.key, u.samples) for u in lazies)
        return [np.full((1, 2, 2, 4), len(made) - len(lazies) + k, np.float32) for k in range(len(lazies))]

    copies = copy_features(utts, folds, 2, 0, encode=encode)
    assert sorted(copies) == pool and all(len(v) == 2 for v in copies.values())
    assert len({key for key, _ in made}) == len(made) == 2 * len(pool)
    for i, others in donors.items():
        assert others and all(fold_of[j] == fold_of[i] and utts[j].speaker != utts[i].speaker for j in others)
    for key, samples in made:
        i = pool[[u.key for u in utts].index(key.split("|")[0])]
        assert samples.shape == utts[i].samples.shape
    again: list = []
    copy_features(utts, folds, 2, 0, encode=lambda lazies: again.extend(u.samples for u in lazies) or
                  [np.zeros((1, 2, 2, 4), np.float32)] * len(lazies))
    assert all(np.array_equal(a, b) for (_, a), b in zip(made, again, strict=True))

    keys: list[str] = []
    noisy = condition_features(utts, folds, ["babble_10db"], 0, keep=lambda i: utts[i].corpus == "SAA",
                               encode=lambda lazies: keys.extend(u.key for u in lazies) or
                               [np.zeros((1, 2, 2, 4), np.float32)] * len(lazies))
    assert sorted(noisy["babble_10db"]) == [i for i in pool if utts[i].corpus == "SAA"]
    assert all("|babble_10db|seed0|" in k for k in keys)
    with pytest.raises(ValueError, match="unknown"):
        condition_features(utts, folds, ["pink_11db"], 0, keep=lambda i: True, encode=lambda lazies: [])
