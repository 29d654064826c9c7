"""Class lists of zero-shot spoken-word models and how Whisper spells each class (pure Python: the web
process validates a job's ``classes`` with it without importing torch)."""

from __future__ import annotations

from typing import Any

#: the classes when a request names none (seed 003's spoken-digit tool answered these)
DIGITS: tuple[str, ...] = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
MAX_CLASSES = 64
MAX_CLASS_CHARS = 40


def spellings(word: str) -> tuple[str, ...]:
    """How Whisper may write ``word`` said alone: ``" Word."`` and, for a digit word or digit, its
    other form (``"zero"`` -> ``(" Zero.", " 0.")``, ``"7"`` -> ``(" 7.", " Seven.")``)."""
    w = " ".join(str(word).split())
    if not w:
        raise ValueError("a class name must not be empty")
    out = [" " + w[:1].upper() + w[1:] + "."]
    low = w.lower()
    if low in DIGITS:
        out.append(f" {DIGITS.index(low)}.")
    elif len(low) == 1 and low.isdigit():
        out.append(" " + DIGITS[int(low)].capitalize() + ".")
    return tuple(dict.fromkeys(out))


def check_classes(classes: Any) -> list[str]:
    """``classes`` as a clean list (a list of strings, or one comma-separated string); ``ValueError``
    saying what is wrong: none, one, more than :data:`MAX_CLASSES`, an empty or over-long name, a
    repeat (case-insensitive)."""
    if isinstance(classes, str):
        classes = classes.split(",")
    if not isinstance(classes, (list, tuple)) or not all(isinstance(c, str) for c in classes):
        raise ValueError("'classes' must be a list of words (or one comma-separated string)")
    cleaned = [" ".join(c.split()) for c in classes]
    if any(not c for c in cleaned):
        raise ValueError("'classes' has an empty name")
    if not 2 <= len(cleaned) <= MAX_CLASSES:
        raise ValueError(f"'classes' needs between 2 and {MAX_CLASSES} words; got {len(cleaned)}")
    long = [c for c in cleaned if len(c) > MAX_CLASS_CHARS]
    if long:
        raise ValueError(f"class names are limited to {MAX_CLASS_CHARS} characters: {long[0][:60]!r}")
    lowered = [c.lower() for c in cleaned]
    if len(set(lowered)) != len(lowered):
        raise ValueError("'classes' names a word twice")
    return cleaned
