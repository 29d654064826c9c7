"""Robustness of an embedding: degraded clips are placed by the nearest clean centroid of other clips
(and a k-NN vote), and their drift is the cosine to their own clean embedding."""

from __future__ import annotations

import numpy as np

from workers.pipeline.embedding_robustness import (
    embedding_robustness_markdown,
    evaluate_embedding_robustness,
    knn_vote,
    nearest_centroid,
)

SR = 16000


def _voice(f0: float, seconds: float = 1.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    x = sum(np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 6)) / k for k in range(1, 10))
    return (0.1 * x).astype(np.float32)


def _embed(batch: list[np.ndarray]) -> np.ndarray:
    """Log energy in 8 bands under 2 kHz: low voices load the first bands, high voices the later ones."""
    out = []
    for x in batch:
        spec = np.abs(np.fft.rfft(x)) ** 2
        f = np.fft.rfftfreq(len(x), 1 / SR)
        edges = np.linspace(50, 2000, 9)
        bands = np.array([spec[(f >= a) & (f < b)].sum() for a, b in zip(edges[:-1], edges[1:], strict=True)])
        e = np.log(bands + 1e-3)
        out.append(e - e.mean())
    return np.stack(out)


def test_centroids_and_neighbours_place_a_query_by_cosine() -> None:
    ref = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [0.2, 0.8]])
    ref_y = ["a", "a", "b", "b", "b"]
    q = np.array([[2.0, 0.1], [0.3, 1.0]])
    assert nearest_centroid(ref, ref_y, q, ["a", "b", "c"]) == ["a", "b"]
    assert knn_vote(ref, ref_y, q, k=3) == ["a", "b"]


def test_degradation_moves_clips_and_costs_centroid_accuracy() -> None:
    """Clean, every clip sits at its class's centroid (cosine to clean 1.0); white noise at 5 dB pulls
    every clip's embedding away from clean (cosine below 1) and toward the flat spectrum."""
    signals = [_voice(f, seed=i) for i, f in enumerate([110, 120, 130, 400, 430, 460])]
    y = ["low"] * 3 + ["high"] * 3
    ref_signals = [_voice(f, seed=10 + i) for i, f in enumerate([100, 115, 125, 140, 390, 420, 450, 480])]
    ref_y = ["low"] * 4 + ["high"] * 4
    report = evaluate_embedding_robustness(_embed, signals, y, _embed(ref_signals), ref_y, ["low", "high"],
                                           conditions=["white_20db", "white_5db"], seed=0, k=3)
    clean, w20, w5 = report["conditions"]
    assert [r["name"] for r in report["conditions"]] == ["clean", "white_20db", "white_5db"]
    assert clean["balanced_accuracy"] == 1.0 and clean["knn_balanced_accuracy"] == 1.0
    assert abs(clean["cosine_to_clean_mean"] - 1.0) < 1e-9 and clean["delta"] == 0.0
    assert w5["cosine_to_clean_mean"] < w20["cosine_to_clean_mean"] < 1.0
    assert w5["cosine_to_clean_p10"] <= w5["cosine_to_clean_mean"]
    assert report["class_counts"] == {"low": 3, "high": 3} and report["reference_class_counts"] == {"low": 4, "high": 4}
    table = "\n".join(embedding_robustness_markdown(report))
    assert "| clean | 1.000 |  | 1.000 | 1.000 |" in table and "white noise, 5 dB SNR" in table and "high recall" in table
