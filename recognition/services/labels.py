"""Label reviews: a reviewer confirms or corrects a recording's label; train jobs read the corrections."""
from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import Q

from recognition.errors import ServiceError
from recognition.models import Batch, BatchMember, LabelReview, Recording
from recognition.services.recordings import FORMULA_PREFIXES


def label_review_create(
    *, recording: Recording, new_label: str, reviewer: AbstractBaseUser, batch: Batch | None = None
) -> LabelReview:
    """Record a review of ``recording``'s label and make ``new_label`` its label: in ``batch``, the
    label that batch gives it (its ``BatchMember`` row, which the batch's reports and train jobs
    read); without a batch (or for a recording that joined before batches kept their own labels),
    the recording's own.

    The same label confirms it; another corrects it. ``original_label`` keeps the label the
    reviewer saw, and earlier reviews stay, so the history of a label is its review rows. A
    ``batch`` must be the recording owner's and hold the recording.
    """
    new_label = (new_label or "").strip()
    if not new_label:
        raise ServiceError("invalid_label", "Choose or type a label.")
    if new_label.startswith(FORMULA_PREFIXES):  # the same check as uploads: labels reach CSV exports
        raise ServiceError("formula_injection", "A label may not start with =, +, -, @ (spreadsheet formula injection).")
    if batch is not None and (batch.owner_id != recording.owner_id or not batch.recordings.filter(pk=recording.pk).exists()):
        raise ServiceError("not_found", "No such recording in this batch.", status_code=404)
    with transaction.atomic():
        locked = Recording.objects.select_for_update().get(pk=recording.pk)
        member = (BatchMember.objects.select_for_update().filter(batch=batch, recording=locked).first()
                  if batch is not None else None)
        seen = member.label if member is not None else locked.label
        review = LabelReview(recording=locked, batch=batch, original_label=seen, new_label=new_label, reviewer=reviewer)
        review.full_clean()
        review.save()
        if member is not None:
            # in a batch, the correction is that batch's label (BatchMember): reports of other batches that hold
            # the same file keep the label they were given
            if member.label != new_label:
                member.label = new_label
                member.save(update_fields=["label"])
        elif locked.label != new_label:
            locked.label = new_label
            locked.full_clean(validate_unique=False)
            locked.save(update_fields=["label"])
            recording.label = new_label
    return review


def label_corrections(*, recordings: list[Recording], batch: Batch | None = None) -> dict[int, str]:
    """``{recording id: label}`` from the newest review of each recording (this batch's or one without a batch).

    A train job applies these over the recordings' labels: the corrected label wins even where
    the label is read from elsewhere (a per-batch label table, a re-imported CSV).
    """
    scope = Q(batch__isnull=True) | Q(batch=batch) if batch is not None else Q(batch__isnull=True)
    rows = LabelReview.objects.filter(scope, recording__in=[r.pk for r in recordings])
    out: dict[int, str] = {}
    for recording_id, label in rows.order_by("created_at", "id").values_list("recording_id", "new_label"):
        out[recording_id] = label  # the newest wins
    return out

