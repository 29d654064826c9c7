"""Give shipped classifiers their default threshold by the stated rule, from their stored validation report.

    python scripts/default_thresholds.py models/checkpoints/accent-native.pt [...] [--min-coverage 0.9] [--dry-run]

Reads each checkpoint's ``metrics["val"]["reliability"]`` (for the whisper probes: the out-of-fold
predictions of the selection cross-validation over train + validation speakers), applies
``workers.pipeline.calibration.default_threshold_from_reliability`` (the highest reliability-bin edge
still answering at least 90 % of those predictions), and saves the checkpoint again with that
``threshold`` in its calibration (weights, spec and metrics unchanged; the file's sha256 changes, and
its sidecar keeps its other keys, e.g. ``default``). Prints the old and new threshold per file. A
model trained from now on gets its threshold by the same rule at training time
(``workers.pipeline.calibration.default_threshold``, on its exact predictions).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    from models.checkpoint import read_checkpoint, save_checkpoint
    from workers.pipeline.calibration import default_threshold_from_reliability

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("checkpoints", nargs="+")
    p.add_argument("--min-coverage", type=float, default=0.9)
    p.add_argument("--dry-run", action="store_true")
    args = p.parse_args(argv)
    for name in args.checkpoints:
        path = Path(name)
        saved = read_checkpoint(path)
        val = saved["metrics"].get("val") or {}
        if not val.get("reliability"):
            print(f"{path.name}: no validation reliability bins; left as it is")
            continue
        chosen = default_threshold_from_reliability(val["reliability"], min_coverage=args.min_coverage)
        chosen["threshold_fitted_on"] = (saved["metrics"].get("val_note") or "the validation report") + \
            f" ({val.get('n')} predictions)"
        before = saved["calibration"].get("threshold")
        print(f"{path.name}: threshold {before} -> {chosen['threshold']} (coverage {chosen['coverage_at_threshold']:.3f}, "
              f"accuracy of the answered {chosen['accuracy_at_threshold']:.3f}, on {val.get('n')} predictions)")
        if args.dry_run:
            continue
        side_path = path.with_suffix(".json")
        extra = {k: v for k, v in json.loads(side_path.read_text()).items()
                 if k not in ("calibration", "format", "hparams", "metrics", "sha256", "size_bytes", "spec", "training_data")}
        calibration = {**saved["calibration"], **chosen, "threshold_before": before}
        save_checkpoint(path, model=saved["model"], spec=saved["spec"], calibration=calibration, hparams=saved["hparams"],
                        metrics=saved["metrics"], training_data=saved["training_data"])
        if extra:
            side = json.loads(side_path.read_text())
            side.update(extra)
            side_path.write_text(json.dumps(side, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
