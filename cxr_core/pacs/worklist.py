"""A PACS query as worklist items: each chest film of the matching studies, fetched when scored."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

from cxr_core.pacs.client import CHEST_FILM_MODALITIES, PacsClient
from cxr_core.triage.items import SOURCE_PACS, WorklistItem


def pacs_items(
    client: PacsClient,
    *,
    date: str | None = None,
    modalities: Sequence[str] = CHEST_FILM_MODALITIES,
    patient_id: str | None = None,
    limit: int | None = None,
) -> list[WorklistItem]:
    """The CR / DX films of the studies a query finds (newest study first), keyed and aliased by
    their SOP Instance UID so a film scored before is not fetched again."""
    items = []
    for study in client.find_studies(
        date=date, modalities=modalities, patient_id=patient_id, limit=limit
    ):
        for film in client.find_films(study.study_uid, modalities):
            items.append(
                WorklistItem(
                    key=film.sop_uid,
                    name=f"{study.patient_id or '?'} · {study.study_date or '?'} · {film.modality}"
                    f" #{film.instance_number or 1}",
                    read=partial(client.retrieve, film),
                    source=SOURCE_PACS,
                    alias=film.sop_uid,
                    patient_id=study.patient_id,
                    study_date=study.study_date,
                    study_uid=study.study_uid,
                )
            )
    return items
