"""The two reference baselines every evaluation report carries.

1. ``mfcc_logreg``: utterance statistics of MFCCs (mean and standard deviation over frames of 20
   MFCCs and their deltas, 80 numbers) -> standardised logistic regression with balanced class
   weights.
2. ``speaker_encoder_logreg``: the pretrained resemblyzer GE2E speaker-encoder utterance
   embedding (256-d, shipped inside the ``resemblyzer`` package) -> the same classifier.

The regularisation strength ``C`` is chosen per baseline by speaker-grouped 5-fold
cross-validation on the training data when training speakers are given (never on the test set),
else :data:`DEFAULT_C`.

A shipped model that does not beat these on the speaker-disjoint SAA test slice has learnt
nothing beyond what a generic voice descriptor gives (see the accent-mini README).

Band-limiting: by default every signal (train and test) is low-passed to 4 kHz by resampling to
8 kHz and back (polyphase FIR, ``scipy.signal.resample_poly``) and the MFCC mel bank stops at
4 kHz, because 484 of the 491 SAA clips were stored at 8 kHz and a model can otherwise learn
bandwidth (corpus) instead of accent.

The resemblyzer preprocessing (``preprocess_wav``) raises quiet recordings to -30 dBFS RMS (it
never lowers loud ones) and cuts silences longer than ~0.2 s found by webrtcvad (mode 3, 30 ms
frames, smoothed over 8 frames); ``embed_utterance`` then averages the embeddings of 1.6 s
partials (1.3 per second) and L2-normalises. When trimming leaves under 0.5 s, the untrimmed,
volume-normalised signal is embedded instead.

Feature extraction is the slow part, so :func:`reference_baselines` takes precomputed features
(``features=``) or a cache folder (``cache_dir=``); :func:`mfcc_stats` and
:func:`speaker_encoder_embeddings` are public for callers that keep their own caches.
"""

from __future__ import annotations

import hashlib
import threading
import warnings
from collections.abc import Callable, Mapping, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from workers.pipeline.evaluation import evaluation_report

__all__ = [
    "BASELINES",
    "bandlimit",
    "fit_logreg",
    "mfcc_stats",
    "predict_proba",
    "select_C",
    "reference_baselines",
    "speaker_encoder_embeddings",
]

#: Candidate inverse regularisation strengths for :func:`select_C`.
C_GRID: tuple[float, ...] = (0.01, 0.03, 0.1, 0.3, 1.0)

#: ``C`` used without cross-validation: fairly strong regularisation for 80-256 features and
#: ~1000 clips.
DEFAULT_C = 0.1

#: Baseline names in report order.
BASELINES: tuple[str, ...] = ("mfcc_logreg", "speaker_encoder_logreg")

_ENCODER: Any = None
_ENCODER_LOCK = threading.Lock()


def bandlimit(samples: np.ndarray, sr: int, cutoff_hz: float | None) -> np.ndarray:
    """Low-pass a signal to ``cutoff_hz`` by resampling to ``2 * cutoff_hz`` and back.

    Parameters
    ----------
    samples : np.ndarray
        Mono float signal ``[time]`` at ``sr``.
    sr : int
        Sample rate (Hz).
    cutoff_hz : float or None
        Band edge; None or ``>= sr / 2`` returns the signal unchanged.

    Returns
    -------
    np.ndarray
        float32 ``[time]``, same length as the input.
    """
    x = np.asarray(samples, dtype=np.float32)
    if cutoff_hz is None or cutoff_hz * 2 >= sr or len(x) == 0:
        return x
    from scipy.signal import resample_poly

    ratio = Fraction(int(round(2 * cutoff_hz)), int(sr)).limit_denominator(1000)
    low = resample_poly(x, ratio.numerator, ratio.denominator)
    y = resample_poly(low, ratio.denominator, ratio.numerator)
    out = np.zeros(len(x), dtype=np.float32)
    out[: min(len(x), len(y))] = y[: len(x)]
    return out


def _rms_normalise(x: np.ndarray, target_dbfs: float = -25.0) -> np.ndarray:
    rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if len(x) else 0.0
    if rms < 1e-8:
        return x
    return (x * (10 ** (target_dbfs / 20) / rms)).astype(np.float32)


def mfcc_stats(
    signals: Sequence[np.ndarray],
    sr: int = 16000,
    *,
    n_mfcc: int = 20,
    bandlimit_hz: float | None = 4000,
) -> np.ndarray:
    """Utterance MFCC statistics.

    Each signal is band-limited (optional) and RMS-normalised to -25 dBFS (so c0 does not encode
    the recording level); MFCCs come from a 40-band mel bank (25 ms / 10 ms frames, up to
    ``bandlimit_hz``), deltas over 9 frames.

    Parameters
    ----------
    signals : sequence of np.ndarray
        Mono float signals ``[time]`` at ``sr``.
    sr : int
        Sample rate (Hz).
    n_mfcc : int
        Cepstral coefficients (20).
    bandlimit_hz : float or None
        Low-pass edge applied first and the mel bank's ``fmax``; None for full band.

    Returns
    -------
    np.ndarray
        float32, shape ``[n, 4 * n_mfcc]``: mean MFCC, std MFCC, mean delta, std delta.
    """
    import librosa

    fmax = float(bandlimit_hz) if bandlimit_hz is not None and bandlimit_hz * 2 < sr else sr / 2
    n_fft, hop, win = int(0.032 * sr), int(0.010 * sr), int(0.025 * sr)
    out = np.zeros((len(signals), 4 * n_mfcc), dtype=np.float32)
    for i, s in enumerate(signals):
        x = _rms_normalise(bandlimit(s, sr, bandlimit_hz))
        if len(x) < n_fft + 9 * hop:  # need >= 9 frames for the deltas
            x = np.pad(x, (0, n_fft + 9 * hop - len(x)))
        m = librosa.feature.mfcc(
            y=x, sr=sr, n_mfcc=n_mfcc, n_fft=n_fft, hop_length=hop, win_length=win, n_mels=40, fmax=fmax
        )  # [n_mfcc, frames]
        d = librosa.feature.delta(m)
        out[i] = np.concatenate([m.mean(1), m.std(1), d.mean(1), d.std(1)])
    return out


def _encoder() -> Any:
    """The resemblyzer VoiceEncoder on CPU, loaded once per process."""
    global _ENCODER
    with _ENCODER_LOCK:
        if _ENCODER is None:
            with warnings.catch_warnings():  # resemblyzer imports scipy.ndimage.morphology (deprecated)
                warnings.simplefilter("ignore", DeprecationWarning)
                from resemblyzer import VoiceEncoder

            _ENCODER = VoiceEncoder("cpu", verbose=False)
        return _ENCODER


def speaker_encoder_embeddings(
    signals: Sequence[np.ndarray],
    sr: int = 16000,
    *,
    bandlimit_hz: float | None = 4000,
    min_trimmed_s: float = 0.5,
) -> np.ndarray:
    """resemblyzer GE2E utterance embeddings.

    Parameters
    ----------
    signals : sequence of np.ndarray
        Mono float signals ``[time]`` at ``sr`` (resampled to 16 kHz by ``preprocess_wav``).
    sr : int
        Sample rate (Hz).
    bandlimit_hz : float or None
        Low-pass edge applied before preprocessing; None for full band.
    min_trimmed_s : float
        If silence trimming leaves less than this, the untrimmed signal is embedded.

    Returns
    -------
    np.ndarray
        float32, shape ``[n, 256]``, rows L2-normalised.
    """
    import torch

    encoder = _encoder()  # first, so its import runs with the deprecation filter
    from resemblyzer import preprocess_wav
    from resemblyzer.audio import normalize_volume
    from resemblyzer.hparams import audio_norm_target_dBFS, sampling_rate

    out = np.zeros((len(signals), 256), dtype=np.float32)
    with torch.inference_mode():
        for i, s in enumerate(signals):
            x = bandlimit(s, sr, bandlimit_hz).astype(np.float64)
            if len(x) == 0 or not np.any(x):
                continue  # all-zero embedding for an empty or silent signal
            wav = preprocess_wav(x, source_sr=sr)
            if len(wav) < min_trimmed_s * sampling_rate:
                import librosa

                full = librosa.resample(x, orig_sr=sr, target_sr=sampling_rate) if sr != sampling_rate else x
                wav = normalize_volume(full, audio_norm_target_dBFS, increase_only=True)
            out[i] = encoder.embed_utterance(wav.astype(np.float32))
    return out


def fit_logreg(x: np.ndarray, y: Sequence[str], *, C: float = 1.0, seed: int = 0) -> Any:
    """Standardised logistic regression with balanced class weights.

    Parameters
    ----------
    x : np.ndarray
        Features ``[n, d]``.
    y : sequence of str
        Labels ``[n]``.

    Returns
    -------
    sklearn.pipeline.Pipeline
        Fitted ``StandardScaler -> LogisticRegression``.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(
        StandardScaler(),
        LogisticRegression(C=C, class_weight="balanced", max_iter=5000, random_state=seed),
    )
    clf.fit(np.asarray(x, dtype=np.float64), list(y))
    return clf


def select_C(
    x: np.ndarray,
    y: Sequence[str],
    groups: Sequence[Any],
    *,
    grid: Sequence[float] = C_GRID,
    n_splits: int = 5,
    seed: int = 0,
) -> tuple[float, dict[str, float]]:
    """Regularisation strength by speaker-grouped cross-validation on the training data.

    Parameters
    ----------
    x : np.ndarray
        Features ``[n, d]``.
    y : sequence of str
        Labels ``[n]``.
    groups : sequence
        Speaker per item ``[n]``; no speaker is in a training and a validation fold at once.
    grid : sequence of float
        Candidate ``C`` values.

    Returns
    -------
    (C, scores)
        The ``C`` with the best mean balanced accuracy (ties: the smaller ``C``) and
        ``{str(C): mean balanced accuracy}``.
    """
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.model_selection import GroupKFold

    x = np.asarray(x, dtype=np.float64)
    y_arr = np.asarray(list(y))
    g_arr = np.asarray([str(g) for g in groups])
    k = min(n_splits, len(set(g_arr.tolist())))
    scores: dict[str, float] = {}
    for C in grid:
        folds = []
        for tr, va in GroupKFold(n_splits=k).split(x, y_arr, g_arr):
            if len(set(y_arr[tr].tolist())) < 2:
                continue
            clf = fit_logreg(x[tr], y_arr[tr], C=C, seed=seed)
            folds.append(balanced_accuracy_score(y_arr[va], clf.predict(x[va])))
        scores[str(C)] = float(np.mean(folds)) if folds else float("nan")
    best = max(grid, key=lambda c: (np.nan_to_num(scores[str(c)], nan=-1.0), -c))
    return float(best), scores


def predict_proba(clf: Any, x: np.ndarray, labels: Sequence[str]) -> np.ndarray:
    """Class probabilities ``[n, len(labels)]`` in ``labels`` order (0 for classes unseen in training)."""
    p = clf.predict_proba(np.asarray(x, dtype=np.float64))
    out = np.zeros((len(x), len(labels)))
    classes = list(clf.classes_)
    for j, label in enumerate(labels):
        if label in classes:
            out[:, j] = p[:, classes.index(label)]
    return out


_EXTRACTORS: dict[str, Callable[..., np.ndarray]] = {
    "mfcc_logreg": mfcc_stats,
    "speaker_encoder_logreg": speaker_encoder_embeddings,
}
_DESCRIPTIONS = {
    "mfcc_logreg": "mean+std of 20 MFCCs and deltas (80-d) -> StandardScaler -> LogisticRegression(balanced)",
    "speaker_encoder_logreg": "resemblyzer GE2E utterance embedding (256-d) -> StandardScaler -> LogisticRegression(balanced)",
}


def _signals_digest(signals: Sequence[np.ndarray], sr: int, bandlimit_hz: float | None, name: str) -> str:
    h = hashlib.sha1(f"{name}|{sr}|{bandlimit_hz}|{len(signals)}".encode())
    for s in signals:
        a = np.ascontiguousarray(s, dtype=np.float32)
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:20]


def _features_for(
    name: str,
    signals: Sequence[np.ndarray] | None,
    sr: int,
    bandlimit_hz: float | None,
    cache_dir: Path | None,
) -> np.ndarray:
    if signals is None:
        raise ValueError(f"no signals and no precomputed features for {name}")
    path = None
    if cache_dir is not None:
        path = cache_dir / f"{name}-{_signals_digest(signals, sr, bandlimit_hz, name)}.npy"
        if path.exists():
            return np.load(path)
    feats = _EXTRACTORS[name](signals, sr, bandlimit_hz=bandlimit_hz)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, feats)
        tmp.replace(path)
    return feats


def reference_baselines(
    train_signals: Sequence[np.ndarray] | None,
    train_labels: Sequence[str],
    test_signals: Sequence[np.ndarray] | None,
    test_labels: Sequence[str],
    labels: Sequence[str],
    *,
    test_speakers: Sequence[Any] | None,
    test_corpora: Sequence[str] | None,
    bandlimit_hz: float | None = 4000,
    sample_rate: int = 16000,
    features: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
    cache_dir: str | Path | None = None,
    baselines: Sequence[str] = BASELINES,
    train_speakers: Sequence[Any] | None = None,
    C: float | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    keep_proba: bool = False,
) -> dict[str, dict[str, Any]]:
    """Train both reference baselines on the train signals and evaluate them on the test signals.

    Parameters
    ----------
    train_signals, test_signals : sequence of np.ndarray or None
        Mono float signals ``[time]`` at ``sample_rate``; may be None for a baseline whose
        features are given in ``features``.
    train_labels, test_labels : sequence of str
        Labels, one per signal.
    labels : sequence of str
        Class order of the reports (binary reports score ``labels[1]`` as positive).
    test_speakers, test_corpora : sequence or None
        Passed to :func:`~workers.pipeline.evaluation.evaluation_report` (speaker bootstrap,
        per-corpus breakdown).
    bandlimit_hz : float or None
        Low-pass edge for every signal (4000 by default; None for full band).
    features : mapping, optional
        Cache hook: ``{baseline_name: (train_features [n_train, d], test_features [n_test, d])}``
        precomputed by the caller (e.g. the training code); those baselines skip extraction.
    cache_dir : str or Path, optional
        Folder for ``.npy`` feature caches keyed by baseline, band limit and a hash of the
        signals' samples.
    baselines : sequence of str
        Which baselines to run (default both, see :data:`BASELINES`).
    train_speakers : sequence, optional
        Speaker per training item; with ``C=None`` the regularisation strength is chosen by
        speaker-grouped 5-fold cross-validation on the training data (:func:`select_C`).
    C : float, optional
        Inverse regularisation strength of the logistic regression; None means cross-validated
        when ``train_speakers`` is given, else 0.1.
    n_boot, seed
        Bootstrap settings of the reports.
    keep_proba : bool
        Also return each test item's class probabilities (``"test_proba"``, ``[n_test, C]`` as
        lists), e.g. for a paired comparison with a model on the same items.

    Returns
    -------
    dict
        ``{baseline_name: evaluation_report(...)}`` each with an added ``"baseline"`` entry:
        ``{"description", "n_train", "n_features", "bandlimit_hz", "C", "C_cv_scores"}``.
    """
    labels = [str(label) for label in labels]
    cache = Path(cache_dir) if cache_dir is not None else None
    out: dict[str, dict[str, Any]] = {}
    for name in baselines:
        if name not in _EXTRACTORS:
            raise ValueError(f"unknown baseline {name!r}; expected one of {BASELINES}")
        if features is not None and name in features:
            x_train, x_test = (np.asarray(a, dtype=np.float32) for a in features[name])
        else:
            x_train = _features_for(name, train_signals, sample_rate, bandlimit_hz, cache)
            x_test = _features_for(name, test_signals, sample_rate, bandlimit_hz, cache)
        if len(x_train) != len(train_labels) or len(x_test) != len(test_labels):
            raise ValueError(f"{name}: features and labels differ in length")
        cv_scores = None
        if C is not None:
            c_used = float(C)
        elif train_speakers is not None:
            c_used, cv_scores = select_C(x_train, train_labels, train_speakers, seed=seed)
        else:
            c_used = DEFAULT_C
        clf = fit_logreg(x_train, train_labels, C=c_used, seed=seed)
        proba = predict_proba(clf, x_test, labels)
        report = evaluation_report(list(test_labels), proba, labels, speakers=test_speakers, corpora=test_corpora, n_boot=n_boot, seed=seed)
        report["baseline"] = {
            "description": _DESCRIPTIONS[name],
            "n_train": int(len(x_train)),
            "n_features": int(x_train.shape[1]),
            "bandlimit_hz": bandlimit_hz,
            "C": c_used,
            "C_cv_scores": cv_scores,
        }
        if keep_proba:
            report["test_proba"] = np.asarray(proba, dtype=np.float64).tolist()
        out[name] = report
    return out
