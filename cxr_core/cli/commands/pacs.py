"""``cxr pacs``: query, retrieve, store, and score chest studies of a DICOMweb PACS in place."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

CONNECTION_HELP = (
    "The server is the DICOMweb root (Orthanc: http://HOST:8042/dicom-web), from --url, the "
    "config file (--config, or CXR_PACS_CONFIG) or CXR_PACS_URL. The password is never a "
    "command-line option: it comes from CXR_PACS_PASSWORD or the config file, and is never "
    "printed or logged."
)


def _connection(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default=None, help="DICOMweb root URL of the PACS")
    parser.add_argument("--config", default=None, help="PACS config file (YAML or JSON)")
    parser.add_argument("--user", default=None, help="user name for HTTP basic authentication")
    parser.add_argument(
        "--ca-bundle", default=None, help="CA certificate(s) that signed the PACS's TLS certificate"
    )
    parser.add_argument("--client-cert", default=None, help="client certificate for mutual TLS")
    parser.add_argument("--client-key", default=None, help="key of the client certificate")
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="do not check the server's TLS certificate (testing only; prefer --ca-bundle)",
    )
    parser.add_argument("--timeout", type=float, default=None, help="seconds per request")


def _filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--date", default=None, help="study date YYYYMMDD or range YYYYMMDD-YYYYMMDD"
    )
    parser.add_argument(
        "--modality",
        action="append",
        default=None,
        help="modality of the films (repeatable; default CR and DX)",
    )
    parser.add_argument("--patient", default=None, help="patient ID")
    parser.add_argument("--limit", type=int, default=None, help="at most this many studies")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "pacs",
        help="query a DICOMweb PACS, score its chest studies, store the results back",
        description="Talk to a DICOMweb PACS (QIDO-RS, WADO-RS, STOW-RS). " + CONNECTION_HELP,
    )
    sub = p.add_subparsers(dest="pacs_command", metavar="ACTION", required=True)
    q = sub.add_parser("query", help="list chest studies", description="List studies (QIDO-RS).")
    _connection(q)
    _filters(q)
    q.set_defaults(handler=run_query)
    r = sub.add_parser("retrieve", help="download a study's films (WADO-RS)")
    _connection(r)
    r.add_argument("--study", required=True, help="Study Instance UID")
    r.add_argument("--out", required=True, help="folder for the DICOM files")
    r.set_defaults(handler=run_retrieve)
    s = sub.add_parser("store", help="upload DICOM files (STOW-RS)")
    _connection(s)
    s.add_argument("files", nargs="+", metavar="FILE", help="DICOM files or folders of them")
    s.set_defaults(handler=run_store)
    c = sub.add_parser(
        "score",
        help="score chest studies and store the SR, overlay and lung SEG back into them",
        description="For each study (--study, or those the filters find): retrieve its CR/DX films, "
        "score them, and store a findings SR, an overlay Secondary Capture (when a finding is "
        "called) and, with --lungs, a lung SEG into the same study. Scoring a study again with the "
        "same model stores nothing new (the objects' UIDs are derived from film, model and calls).",
    )
    _connection(c)
    _filters(c)
    c.add_argument("--study", action="append", default=None, help="Study Instance UID (repeatable)")
    c.add_argument("--checkpoint", required=True, help="model .safetensors file")
    c.add_argument("--lungs", nargs="?", const="bundled", default=None, metavar="CHECKPOINT")
    c.add_argument("--no-store", action="store_true", help="score only; store nothing in the PACS")
    c.add_argument("--dicom-out", default=None, help="also keep the DICOM results in this folder")
    c.add_argument("--pdf-out", default=None, help="also write a PDF report per film here")
    c.add_argument("--device", default="auto", help="auto, cpu or cuda")
    c.set_defaults(handler=run_score)


def _client(args: argparse.Namespace):
    from cxr_core.pacs.client import PacsClient
    from cxr_core.pacs.config import load_pacs_config

    overrides = {
        "ca_bundle": args.ca_bundle,
        "client_cert": args.client_cert,
        "client_key": args.client_key,
        "timeout_s": args.timeout,
        "verify_tls": False if args.insecure else None,
    }
    config = load_pacs_config(
        url=args.url, config_file=args.config, username=args.user, overrides=overrides
    )
    client = PacsClient(config)
    client.check()
    return client


def _studies(client, args: argparse.Namespace) -> list:
    from cxr_core.pacs.client import CHEST_FILM_MODALITIES

    return client.find_studies(
        date=args.date,
        modalities=args.modality or CHEST_FILM_MODALITIES,
        patient_id=args.patient,
        limit=args.limit,
    )


def run_query(args: argparse.Namespace) -> int:
    studies = _studies(_client(args), args)
    print("study_uid\tdate\tpatient_id\taccession\tmodalities\tinstances\tdescription")
    for s in studies:
        print(
            f"{s.study_uid}\t{s.study_date}\t{s.patient_id}\t{s.accession}\t"
            f"{','.join(s.modalities)}\t{'' if s.instances is None else s.instances}\t{s.description}"
        )
    print(f"{len(studies)} studies", file=sys.stderr)
    return 0


def run_retrieve(args: argparse.Namespace) -> int:
    from cxr_core.utils.atomic import write_atomically

    client = _client(args)
    films = client.find_films(args.study, modalities=None)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for film in films:
        data = client.retrieve(film)
        write_atomically(out / f"{film.sop_uid}.dcm", lambda tmp, d=data: tmp.write_bytes(d))
    print(f"retrieved {len(films)} instance(s) of study {args.study} into {out}")
    return 0


def run_store(args: argparse.Namespace) -> int:
    import pydicom
    from pydicom.errors import InvalidDicomError

    client = _client(args)
    paths = [
        p for f in map(Path, args.files) for p in (sorted(f.rglob("*")) if f.is_dir() else [f])
    ]
    datasets = []
    for path in (p for p in paths if p.is_file()):
        try:
            datasets.append(pydicom.dcmread(path))
        except (InvalidDicomError, OSError) as exc:
            print(f"skipped {path}: not a readable DICOM file ({exc})", file=sys.stderr)
    stored = client.store(datasets)
    print(f"stored {len(stored)} of {len(datasets)} instance(s)")
    return 0 if datasets and len(stored) == len(datasets) else 1


def run_score(args: argparse.Namespace) -> int:
    from cxr_core.errors import ConfigError
    from cxr_core.inference.predictor import Predictor
    from cxr_core.pacs.roundtrip import RoundTripOptions, score_and_store_study
    from cxr_core.reporting.study import ReportContext

    if not (args.study or args.date or args.patient or args.limit):
        raise ConfigError(
            "say which studies to score: --study UID, or --date / --patient / --limit "
            "(scoring every chest study of a PACS is never what is meant)"
        )
    client = _client(args)
    lungs = None
    if args.lungs is not None:
        from cxr_core.inference.lungs import DEFAULT_LUNG_CHECKPOINT, LungSegmenter

        path = DEFAULT_LUNG_CHECKPOINT if args.lungs == "bundled" else args.lungs
        lungs = LungSegmenter.from_path(path, device=args.device)
    predictor = Predictor.from_checkpoint(args.checkpoint, device=args.device, lungs=lungs)
    context = ReportContext.of_run(predictor, args.checkpoint, lungs=lungs)
    options = RoundTripOptions(not args.no_store, args.dicom_out, args.pdf_out)
    studies = args.study or [s.study_uid for s in _studies(client, args)]
    print("study_uid\tfilm_uid\toutcome\tcalled\tstored\terror")
    failed = 0
    for study in studies:
        for film in score_and_store_study(client, predictor, context, study, options):
            failed += bool(film.error)
            print(
                f"{study}\t{film.film.sop_uid}\t{film.outcome}\t{';'.join(film.called)}\t"
                f"{len(film.stored)}\t{film.error}"
            )
    return 1 if failed else 0
