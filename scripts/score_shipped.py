"""Score a shipped checkpoint on accent-mini's test split the way the service serves it.

    .venv/bin/python scripts/score_shipped.py classify models/checkpoints/accent-native.pt
    .venv/bin/python scripts/score_shipped.py embed models/checkpoints/accent-embed-1.1.0.pt

``classify`` (a native / non-native ``whisper_probe``): the test clips (same decode and normalisation as
the trainer) through ``classify_batch`` on the torch encoder and on the CPU's CTranslate2 int8 engine;
balanced accuracy of each (all test, SAA), their decision agreement, and the int8 engine's paired
difference over the two reference baselines retrained on train + validation. ``embed``: the
checkpoint through ``embed_batch``; k-NN accent accuracy, all test and per corpus (what the
accent-embed card lists as a baseline). Prints JSON; ``--out`` also writes it. This reads the test
split: it measures a chosen model, it does not choose one.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DATA = Path(os.environ.get("ACCENTMINI", ROOT.parent / "shared" / "data" / "accent-mini"))
NATIVE_MAP = {"mandarin_l1": "non_native", "native_english": "native", "other_l1": "non_native"}


def classify(checkpoint: str) -> dict:
    from models.checkpoint import load_checkpoint
    from workers.pipeline.data import load_utterances, read_manifest
    from workers.pipeline.evaluation import balanced_accuracy
    from workers.pipeline.inference import classify_batch
    from workers.pipeline.train_config import TrainConfig
    from workers.pipeline.train_report import reference_reports

    manifest = str(DATA / "manifest.csv")
    items = read_manifest(manifest, label_column="accent_group", label_map=NATIVE_MAP)
    labels = ["native", "non_native"]
    test = load_utterances([it for it in items if it.split == "test"], labels)
    loaded = load_checkpoint(checkpoint)
    loaded.model.attach_encoder()
    y = np.array([u.label for u in test])
    saa = np.array([u.corpus == "SAA" for u in test])
    out: dict = {"n": len(test), "n_saa": int(saa.sum())}
    runs = {}
    for engine in ("torch", "ctranslate2"):
        loaded.model.use_engine(engine, compute_type="int8", threads=1)
        runs[engine] = classify_batch(loaded, [u.samples for u in test], vad=False)
        pred = np.array([labels.index(r.predicted_class) for r in runs[engine]])
        out[engine] = {"all_test": float(balanced_accuracy(y, pred, 2)), "saa_test": float(balanced_accuracy(y[saa], pred[saa], 2))}
    a, b = runs["torch"], runs["ctranslate2"]
    out["decision_agreement"] = float(np.mean([x.predicted_class == z.predicted_class for x, z in zip(a, b, strict=True)]))
    dp = [abs(x.probabilities["native"] - z.probabilities["native"]) for x, z in zip(a, b, strict=True)]
    out["abs_dp_mean"], out["abs_dp_max"] = float(np.mean(dp)), float(np.max(dp))
    train = load_utterances([it for it in items if it.split != "test"], labels)
    proba = np.array([[r.probabilities[c] for c in labels] for r in b])
    config = TrainConfig(name="score", family="whisper_probe", manifest=manifest, labels=labels, label_map=NATIVE_MAP)
    refs = reference_reports(train, test, proba, labels, config)
    out["ctranslate2_minus_references"] = {k: {"saa_test": v["paired"]["per_corpus"]["SAA"], "all_test": v["paired"]["all"]}
                                           for k, v in refs.items()}
    return out


def embed(checkpoint: str) -> dict:
    from models.checkpoint import load_checkpoint
    from workers.pipeline.data import load_utterances, read_manifest
    from workers.pipeline.embedding_evaluation import embedding_report
    from workers.pipeline.inference import embed_batch
    from workers.pipeline.whisper_training import _embedding_per_corpus

    items = [it for it in read_manifest(str(DATA / "manifest.csv"), label_column="accent_group") if it.split == "test"]
    labels = sorted({it.label for it in items})
    test = load_utterances(items, labels)
    vectors = embed_batch(load_checkpoint(checkpoint), [u.samples for u in test], vad=False, batch_size=16)
    emb = np.stack([np.asarray(v.vector) for v in vectors])
    y, spk, corpus = [labels[u.label] for u in test], [u.speaker for u in test], [u.corpus for u in test]
    return {"baseline": f"{Path(checkpoint).name} through the service's embed path on the same test clips",
            "test_embedding": embedding_report(emb, y, spk), "test_embedding_per_corpus": _embedding_per_corpus(emb, y, spk, corpus)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", choices=["classify", "embed"])
    ap.add_argument("checkpoint")
    ap.add_argument("--out")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    result = (classify if args.mode == "classify" else embed)(args.checkpoint)
    text = json.dumps(result, indent=1, default=float)
    if args.out:
        Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
