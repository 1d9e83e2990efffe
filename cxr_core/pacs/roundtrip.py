"""Score the chest films of PACS studies and store the results back into the same studies.

For each film of a study (CR / DX series): retrieve it (WADO-RS), score it through the input
gate, build its SR, overlay Secondary Capture (when a finding is called) and lung SEG (when the
lung model runs), and store them into the film's study (STOW-RS). Our objects carry UIDs derived
from the film, the model and the calls, so scoring a study twice stores nothing new. One film
that fails (unreadable, refused by the PACS) is reported and the others go on.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from cxr_core.errors import CXRError
from cxr_core.inference.predictor import Predictor
from cxr_core.pacs.client import FilmRef, PacsClient
from cxr_core.reporting.dicom_source import read_source_header
from cxr_core.reporting.export import dicom_objects, write_dicom_objects
from cxr_core.reporting.pdf import build_pdf
from cxr_core.reporting.scoring import film_study_result, score_film
from cxr_core.reporting.study import ReportContext
from cxr_core.utils.atomic import write_atomically

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FilmOutcome:
    """What happened to one film: its gate outcome, its calls and what was stored for it."""

    film: FilmRef
    outcome: str
    reason: str = ""
    called: tuple[str, ...] = ()
    stored: tuple[str, ...] = ()
    error: str = ""


@dataclass(frozen=True)
class RoundTripOptions:
    """What to do with each film's results besides scoring: store back, keep copies on disk."""

    store: bool = True
    dicom_out: str | os.PathLike[str] | None = None
    pdf_out: str | os.PathLike[str] | None = None


def score_and_store_film(
    client: PacsClient,
    predictor: Predictor,
    context: ReportContext,
    film: FilmRef,
    options: RoundTripOptions = RoundTripOptions(),
) -> FilmOutcome:
    """Retrieve, score and (unless ``options.store`` is off) store back one film's results."""
    data = client.retrieve(film)
    scored = score_film(predictor, data, film.sop_uid)
    result = film_study_result(predictor, context, scored)
    source = read_source_header(data, film.sop_uid)
    objects = dicom_objects(result, source)
    if options.dicom_out:
        write_dicom_objects(objects, Path(options.dicom_out) / film.study_uid / film.sop_uid)
    if options.pdf_out:
        path = Path(options.pdf_out) / film.study_uid / f"{film.sop_uid}.pdf"
        write_atomically(path, lambda tmp: tmp.write_bytes(build_pdf(result, source)))
    stored = client.store([d for _, d in objects.items()], film.study_uid) if options.store else []
    return FilmOutcome(
        film=film,
        outcome=result.outcome.outcome,
        reason=result.outcome.reason,
        called=tuple(f.name for f in result.called),
        stored=tuple(stored),
    )


def score_and_store_study(
    client: PacsClient,
    predictor: Predictor,
    context: ReportContext,
    study_uid: str,
    options: RoundTripOptions = RoundTripOptions(),
) -> list[FilmOutcome]:
    """Every chest film of one study through :func:`score_and_store_film`; a failing film gets
    its error in its outcome and the others go on."""
    outcomes = []
    for film in client.find_films(study_uid):
        try:
            outcomes.append(score_and_store_film(client, predictor, context, film, options))
        except CXRError as exc:
            logger.warning("film %s of study %s: %s", film.sop_uid, study_uid, exc)
            outcomes.append(FilmOutcome(film=film, outcome="", error=str(exc)))
    if not outcomes:
        logger.info("study %s holds no CR/DX film to score", study_uid)
    return outcomes
