"""A DICOMweb PACS: find chest studies (QIDO-RS), fetch their films (WADO-RS), store results (STOW-RS).

A thin layer over ``dicomweb-client`` that speaks in studies and films and turns every
transport failure into a :class:`PacsError` a PACS administrator can act on (wrong address,
refused credentials, untrusted certificate, a store the server rejected), naming the server by
its redacted URL only. HTTP basic authentication and TLS (a CA bundle, or mutual TLS with a
client certificate) are set on the ``requests`` session, never in URLs or headers that the
client library logs.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import pydicom
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset

from cxr_core.errors import PacsError
from cxr_core.pacs.config import PacsConfig

logger = logging.getLogger(__name__)

CHEST_FILM_MODALITIES = ("CR", "DX")
"""Modalities of the films worth scoring (computed and digital radiography)."""
STUDY_FIELDS = (
    "StudyInstanceUID",
    "StudyDate",
    "PatientID",
    "AccessionNumber",
    "ModalitiesInStudy",
    "StudyDescription",
    "NumberOfStudyRelatedInstances",
)
T = TypeVar("T")


@dataclass(frozen=True)
class StudyInfo:
    """One study as the PACS lists it."""

    study_uid: str
    patient_id: str = ""
    study_date: str = ""
    accession: str = ""
    modalities: tuple[str, ...] = ()
    description: str = ""
    instances: int | None = None


@dataclass(frozen=True)
class FilmRef:
    """Where one film is: study, series and SOP instance UIDs (and its modality)."""

    study_uid: str
    series_uid: str
    sop_uid: str
    modality: str = ""
    instance_number: int | None = None


def _study_info(record: dict) -> StudyInfo:
    ds = Dataset.from_json(record)
    modalities = ds.get("ModalitiesInStudy", [])
    count = ds.get("NumberOfStudyRelatedInstances")
    return StudyInfo(
        study_uid=str(ds.get("StudyInstanceUID", "")),
        patient_id=str(ds.get("PatientID", "") or ""),
        study_date=str(ds.get("StudyDate", "") or ""),
        accession=str(ds.get("AccessionNumber", "") or ""),
        modalities=tuple(
            str(m) for m in ([modalities] if isinstance(modalities, str) else modalities)
        ),
        description=str(ds.get("StudyDescription", "") or ""),
        instances=int(count) if count not in (None, "") else None,
    )


class _Session(requests.Session):
    """A session whose own TLS setting wins over ``REQUESTS_CA_BUNDLE`` / ``CURL_CA_BUNDLE``.

    Plain ``requests`` lets those variables replace ``Session.verify`` on every request, so a
    hospital CA given with --ca-bundle would be silently ignored wherever the system sets them.
    """

    explicit_verify: bool | str | None = None

    def merge_environment_settings(self, url, proxies, stream, verify, cert):  # noqa: D102
        settings = super().merge_environment_settings(url, proxies, stream, verify, cert)
        if self.explicit_verify is not None:
            settings["verify"] = self.explicit_verify
        return settings


def _session(config: PacsConfig) -> requests.Session:
    session = _Session()
    if config.username:
        session.auth = requests.auth.HTTPBasicAuth(config.username, config.password)
    if config.ca_bundle or not config.verify_tls:
        session.verify = session.explicit_verify = config.ca_bundle or False
    if not config.verify_tls and not config.ca_bundle:
        logger.warning(
            "TLS certificate checks are OFF for %s: anyone on the network path could read or "
            "change what is sent; use --ca-bundle with the hospital CA instead",
            config.display_url,
        )
    if config.client_cert:
        session.cert = (
            (config.client_cert, config.client_key) if config.client_key else config.client_cert
        )
    return session


class PacsClient:
    """Query, retrieve and store against one DICOMweb server (see the module docstring)."""

    def __init__(self, config: PacsConfig) -> None:
        self.config = config
        self._client = DICOMwebClient(
            url=config.url.rstrip("/"), session=_session(config), timeout=config.timeout_s
        )
        self._client.set_http_retry_params(retry=True, max_attempts=3)

    def _call(self, action: str, call: Callable[[], T]) -> T:
        """Run one request; any transport failure becomes a PacsError that says what to do."""
        where = self.config.display_url
        try:
            return call()
        except requests.exceptions.SSLError as exc:
            raise PacsError(
                f"{action}: the TLS certificate of {where} could not be verified ({type(exc).__name__}); "
                "give the CA that signed it with --ca-bundle (or ca_bundle in the config file)"
            ) from None
        except requests.exceptions.HTTPError as exc:
            raise PacsError(_http_message(action, where, exc.response, self.config)) from None
        except requests.exceptions.RequestException as exc:
            raise PacsError(
                f"{action}: cannot reach the PACS at {where} ({type(exc).__name__}); check the "
                "address, that the server runs, and the network"
            ) from None

    def check(self) -> None:
        """One cheap query, so wrong addresses and credentials show before any work is done."""
        self._call(
            "connecting", lambda: self._client.search_for_studies(limit=1, fields=["StudyDate"])
        )

    def find_studies(
        self,
        *,
        date: str | None = None,
        modalities: Sequence[str] = CHEST_FILM_MODALITIES,
        patient_id: str | None = None,
        limit: int | None = None,
    ) -> list[StudyInfo]:
        """Studies holding films of ``modalities`` (QIDO-RS), newest first.

        ``date``: one day ``YYYYMMDD`` or a range ``YYYYMMDD-YYYYMMDD`` (either end may be open).
        """
        found: dict[str, StudyInfo] = {}
        for modality in modalities or (None,):
            filters = {"ModalitiesInStudy": modality, "StudyDate": date, "PatientID": patient_id}
            records = self._call(
                "querying studies",
                lambda f=filters: self._client.search_for_studies(
                    fields=list(STUDY_FIELDS),
                    search_filters={k: v for k, v in f.items() if v},
                    limit=limit,
                ),
            )
            for record in records:
                info = _study_info(record)
                found.setdefault(info.study_uid, info)
        studies = sorted(found.values(), key=lambda s: (s.study_date, s.study_uid), reverse=True)
        return studies[:limit] if limit else studies

    def find_films(
        self, study_uid: str, modalities: Iterable[str] | None = CHEST_FILM_MODALITIES
    ) -> list[FilmRef]:
        """The instances of a study in series of ``modalities`` (None: every series).

        By default the chest films only: our own SR / SC / SEG objects are not films.
        """
        wanted = set(modalities) if modalities is not None else None
        films = []
        series = self._call("listing series", lambda: self._client.search_for_series(study_uid))
        for record in series:
            ds = Dataset.from_json(record)
            if wanted is not None and str(ds.get("Modality", "")) not in wanted:
                continue
            instances = self._call(
                "listing instances",
                lambda s=ds: self._client.search_for_instances(study_uid, s.SeriesInstanceUID),
            )
            for item in map(Dataset.from_json, instances):
                films.append(
                    FilmRef(
                        study_uid,
                        str(ds.SeriesInstanceUID),
                        str(item.SOPInstanceUID),
                        str(ds.Modality),
                        int(item.InstanceNumber) if item.get("InstanceNumber") else None,
                    )
                )
        return sorted(films, key=lambda f: (f.series_uid, f.instance_number or 0, f.sop_uid))

    def retrieve(self, film: FilmRef) -> bytes:
        """The film as a DICOM Part 10 file (WADO-RS, in the transfer syntax the PACS stores)."""
        dataset = self._call(
            "retrieving a film",
            lambda: self._client.retrieve_instance(film.study_uid, film.series_uid, film.sop_uid),
        )
        buffer = io.BytesIO()
        pydicom.dcmwrite(buffer, dataset, enforce_file_format=True)
        return buffer.getvalue()

    def store(self, datasets: Sequence[Dataset], study_uid: str | None = None) -> list[str]:
        """Store ``datasets`` (STOW-RS) in ``study_uid``; returns the SOP Instance UIDs stored.

        Raises ``PacsError`` naming each instance the server refused and why.
        """
        if not datasets:
            return []
        answer = self._call(
            "storing results",
            lambda: self._client.store_instances(list(datasets), study_instance_uid=study_uid),
        )
        failed = [
            f"{item.get('ReferencedSOPInstanceUID', '?')} (reason {item.get('FailureReason', '?')})"
            for item in answer.get("FailedSOPSequence", [])
        ]
        if failed:
            raise PacsError(
                f"the PACS at {self.config.display_url} refused to store: {', '.join(failed)}"
            )
        stored = [str(i.ReferencedSOPInstanceUID) for i in answer.get("ReferencedSOPSequence", [])]
        logger.debug("stored %d object(s) in %s", len(stored), self.config.display_url)
        return stored


def _http_message(action: str, where: str, response, config: PacsConfig) -> str:
    status = getattr(response, "status_code", "?")
    if status in (401, 403):
        who = f"user {config.username!r}" if config.username else "no user name"
        return (
            f"{action}: the PACS at {where} refused the credentials ({who}, HTTP {status}); check "
            "the user name and CXR_PACS_PASSWORD or the config file"
        )
    if status == 404:
        return (
            f"{action}: {where} answered 404 (not found); check that the URL is the DICOMweb root "
            "(for Orthanc: http://host:8042/dicom-web) and that the study exists"
        )
    return f"{action}: the PACS at {where} answered HTTP {status}"
