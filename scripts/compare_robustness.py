"""Paired comparison of two robustness reports on the same clips (``manage.py evaluate_robustness ... --out``).

    python scripts/compare_robustness.py NEW.json OLD.json --conditions pink_10db,babble_10db [--n-boot 2000] [--seed 0]

Prints NEW minus OLD: the mean balanced accuracy over the conditions, with a paired speaker-bootstrap
95 % interval (``workers.pipeline.robustness.paired_condition_difference``), as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from workers.pipeline.robustness import paired_condition_difference  # noqa: E402 - after the path is set


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("new")
    p.add_argument("old")
    p.add_argument("--conditions", default="pink_10db,babble_10db")
    p.add_argument("--n-boot", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    a, b = (json.loads(Path(f).read_text()) for f in (args.new, args.old))
    if a.get("keys") != b.get("keys"):
        p.error("the two reports are not on the same clips")
    out = paired_condition_difference(a, b, [c for c in args.conditions.split(",") if c], speakers=a.get("speakers"),
                                      n_boot=args.n_boot, seed=args.seed)
    out.update(new=a.get("model"), old=b.get("model"))
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
