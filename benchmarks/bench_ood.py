"""Input gate: refusal and out-of-domain detection measured per set, per method, before and after.

Goals (issue #25), each printed with met / NOT met:

* ``nih14`` flags >= 95% of Kermany pediatric films (out of domain or refused); ``pneumonia`` and
  ``pneumonia_type`` flag >= 95% of adult NIH films; each flags <= 5% of its own validation films
  (and of its test films, when the data has a test split);
* 100% of a generated set of noise, blanks, gradients, colour photos, documents and non-chest
  DICOMs (crafted ones and pydicom's own test files) refused, 0 with findings;
* the COVID-19 set's NIH-sourced films (``No_findings/``, ``Pneumonia/``) in domain for ``nih14``
  (<= 10% flagged).

"after" is the gate stamped in the checkpoint (``cxr gate fit``), as the Predictor applies it
without a lung model (``cxr predict``); "before" is the gate it replaced: quality refusals only,
every other image scored with its calls, a warning from the DICOM header or the
penultimate-feature Mahalanobis distance (refitted here the way it was fitted, 64 directions,
0.95 validation quantile). The other methods are fitted here on the same training sample and
thresholded at the shipped domain detector's validation quantile: energy score (Liu et al.
2020), a logistic domain classifier on the penultimate features (the training films against
the gate's reference films of the other population), and the reconstruction error of a 32x32
PCA of the images. Every method gets the same quality and header refusals; they differ on what
reaches the model. Films ``cxr gate fit`` used as references are left out of every set. Also
times the gate on a 2,500 px 16-bit DICOM film.

    python benchmarks/bench_ood.py [--data ../shared/data] [--models nih14 pneumonia] [--per-set 300]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from sklearn.linear_model import LogisticRegression

from cxr_core.data.formats.files import list_image_files
from cxr_core.data.imaging import LoadedImage, load_image
from cxr_core.errors import CXRError, UnsuitableImageError
from cxr_core.inference.domain import LayerGaussian, LayerTap, feature_layers, member_heads
from cxr_core.inference.gate import InputGate, check_quality, header_refusal
from cxr_core.inference.gate_fit import DOMAIN_QUANTILE, reference_images
from cxr_core.inference.outcome import OUT_OF_DOMAIN, REFUSED, SCORED
from cxr_core.inference.predictor import Predictor
from cxr_core.models.checkpoint import read_model_card
from cxr_core.training.data_setup import build_manifest, data_config_of

REPO = Path(__file__).resolve().parents[1]
sys.path.append(str(REPO))  # the hostile-set generator lives with the tests

from tests.ood.hostile import KINDS, build_hostile_set  # noqa: E402

DATASETS = {"nih14": "nih14", "pneumonia": "pneumonia/chest_xray"}
MODEL_DATA = {"nih14": "nih14", "pneumonia": "pneumonia", "pneumonia_type": "pneumonia"}
OTHER = {"nih14": "pneumonia", "pneumonia": "nih14"}
TODAY_QUANTILE = 0.95  # the replaced gate flagged 5% of validation images by design
OLD_HEADER_WARNING = "old header warning"


@dataclass
class Measured:
    """One set through one model: the shipped gate's outcomes and what the baselines need."""

    outcomes: list[str] = field(default_factory=list)  # after, one per readable file
    called: list[bool] = field(default_factory=list)  # after: calls shown
    before_flag: list[bool] = field(default_factory=list)  # before: refused or warned by header
    before_called: list[bool] = field(default_factory=list)  # before: calls shown
    reached: list[bool] = field(default_factory=list)  # passed the quality check: features below
    header_refused: list[bool] = field(default_factory=list)
    layers: list[list[np.ndarray]] = field(default_factory=list)  # per batch, per layer
    logits: list[np.ndarray] = field(default_factory=list)
    small: list[np.ndarray] = field(default_factory=list)  # 32x32 views, for the PCA baseline

    def means(self, index: Sequence[int]) -> np.ndarray:
        """Channel means of the chosen layers (the tap pools mean and std), all batches."""
        parts = [[batch[i][:, : batch[i].shape[1] // 2] for i in index] for batch in self.layers]
        return np.concatenate([np.concatenate(p, axis=1) for p in parts])


# --------------------------------------------------------------------------- sets


def _sample(paths: Sequence[Path], count: int, seed: int) -> list[Path]:
    paths = sorted(paths)
    if len(paths) <= count:
        return paths
    pick = np.random.default_rng(seed).choice(len(paths), size=count, replace=False)
    return [paths[i] for i in sorted(pick)]


def reference_films(gate_section: dict) -> dict[str, list[Path]]:
    """The fit half of each reference folder ``cxr gate fit`` used, by folder (as recorded)."""
    sample = gate_section.get("reference_sample", {})
    out = {}
    for name in gate_section.get("rates", {}).get("references", {}):
        folder = Path(name) if Path(name).is_absolute() else REPO / name
        if folder.is_dir():
            refs = reference_images(
                folder, limit=sample.get("limit", 600), seed=sample.get("seed", 0)
            )
            out[name] = [*refs.fit, *refs.val]
    return out


def _split_paths(model: str, data: Path, split: str) -> list[Path]:
    ckpt = REPO / "checkpoints" / model / "model.safetensors"
    config = data_config_of(
        read_model_card(ckpt),
        checkpoint=ckpt,
        path=str(data / DATASETS[MODEL_DATA[model]]),
        cache_dir=str(Path(tempfile.gettempdir()) / "cxr_bench_ood_cache"),
    )
    frame = build_manifest(config).frame
    return [Path(p) for p in frame.loc[frame["split"] == split, "path"]]


def model_sets(
    model: str, data: Path, args, hostile: list, used: set[str]
) -> dict[str, list[Path]]:
    """The sets one model is measured on, by label (reference films left out)."""
    own = MODEL_DATA[model]
    other = [
        p for p in list_image_files([data / DATASETS[OTHER[own]]]).images if p.name not in used
    ]
    covid = data / "covid19"
    sets = {
        "train (fits the baselines)": _sample(_split_paths(model, data, "train"), args.train, 1),
        "own validation": _sample(_split_paths(model, data, "val"), args.per_set, 2),
        "own test": _sample(_split_paths(model, data, "test"), args.per_set, 3),
        "other population": _sample(other, args.per_set, 4),
        "COVID-19 set: NIH-sourced": _sample(
            [p for sub in ("No_findings", "Pneumonia") for p in (covid / sub).glob("*")],
            args.per_set,
            5,
        ),
        "COVID-19 set: Covid-19/": [
            p for p in sorted((covid / "Covid-19").glob("*")) if p.name not in used
        ],
    }
    for kind in KINDS:
        sets[f"hostile: {kind}"] = [c.path for c in hostile if c.kind == kind]
    return {label: paths for label, paths in sets.items() if paths}


# --------------------------------------------------------------------------- measuring


class _FirstOutput:
    """The model's first output (logits) inside each :meth:`collect` (test-time augmentation
    runs it again on the mirrored batch)."""

    def __init__(self, model) -> None:
        self.value: np.ndarray | None = None
        self.active = False
        model.register_forward_hook(self._hook)

    def _hook(self, module, inputs, output) -> None:
        if self.active and self.value is None:
            self.value = output.detach().float().cpu().numpy()

    def collect(self, forward: Callable[[], object]) -> tuple[object, np.ndarray]:
        self.value, self.active = None, True
        try:
            result = forward()
        finally:
            self.active = False
        return result, self.value


def _calls(probs: np.ndarray, predictor: Predictor) -> np.ndarray:
    if not predictor.label_space.multilabel:
        return np.ones(len(probs), dtype=bool)  # the most probable class is always called
    thresholds = np.array([predictor.thresholds[c] for c in predictor.classes])
    return (probs >= thresholds).any(axis=1)


def _old_header_warned(meta: dict, gate: InputGate) -> bool:
    """What the replaced gate warned about from the header (and scored anyway)."""
    return bool(header_refusal(meta)) or bool(gate.header_warnings(meta))


def measure(predictor: Predictor, paths: Sequence[Path], taps: tuple, batch: int = 16) -> Measured:
    """Each readable file the way the Predictor treats it without a lung model, with the layer
    features, logits and small views of the same forward pass."""
    layer_tap, logits_tap = taps
    out = Measured()
    images = []
    for path in paths:
        try:
            images.append(load_image(path))
        except CXRError:
            continue  # unreadable: the loader's outcome, not the gate's
    passed = []
    for image in images:
        try:
            check_quality(image.pixels, image.name, image.meta)
            passed.append(image)
        except UnsuitableImageError:
            _append(out, REFUSED, False, True, False, False, False)
    for start in range(0, len(passed), batch):
        _measure_batch(predictor, passed[start : start + batch], layer_tap, logits_tap, out)
    return out


def _append(out: Measured, outcome, called, before_flag, before_called, reached, refused) -> None:
    out.outcomes.append(outcome)
    out.called.append(bool(called))
    out.before_flag.append(bool(before_flag))
    out.before_called.append(bool(before_called))
    out.reached.append(bool(reached))
    out.header_refused.append(bool(refused))


def _measure_batch(
    predictor, chunk: list[LoadedImage], layer_tap, logits_tap, out: Measured
) -> None:
    arrays = [predictor.cache_array(LoadedImage(im.pixels, im.name, {})) for im in chunk]
    tensor = predictor.tensor_from_cache_arrays(arrays)
    (probs, layers), logits = logits_tap.collect(
        lambda: layer_tap.run(lambda: predictor.probabilities_of(tensor))
    )
    chest, domain = predictor.gate.feature_scores(layers)
    calls = _calls(probs, predictor)
    for i, image in enumerate(chunk):
        if header_refusal(image.meta):
            outcome = REFUSED
        else:
            outcome = predictor.gate.verdict(
                image.meta,
                chest_score=None if chest is None else float(chest[i]),
                domain_score=None if domain is None else float(domain[i]),
            ).outcome
        warned = _old_header_warned(image.meta, predictor.gate)
        refused = bool(header_refusal(image.meta))
        _append(out, outcome, outcome == SCORED and bool(calls[i]), warned, calls[i], True, refused)
    out.layers.append(layers)
    out.logits.append(logits)
    out.small += [cv2.resize(a, (32, 32), interpolation=cv2.INTER_AREA) for a in arrays]


# --------------------------------------------------------------------------- methods

Scorer = Callable[[Measured], np.ndarray]


def _energy(logits: np.ndarray, multilabel: bool) -> np.ndarray:
    """Negative free energy of the logits (Liu et al. 2020), so that higher means less like the
    training data; a multilabel model's classes are summed as independent binary energies."""
    if multilabel:
        return -np.logaddexp(0.0, logits).sum(axis=1)
    top = logits.max(axis=1, keepdims=True)
    return -(top[:, 0] + np.log(np.exp(logits - top).sum(axis=1)))


def baselines(
    predictor: Predictor, train: Measured, reference: Measured | None
) -> dict[str, Scorer]:
    """The compared methods, each as set -> scores of the films that reached the model."""
    heads = member_heads([n for n, _ in feature_layers(predictor.card, predictor.model)])
    today = LayerGaussian.fit(train.means(heads), 64)
    small = np.stack(train.small).reshape(len(train.small), -1) / 255.0
    mean = small.mean(axis=0)
    basis = np.linalg.svd(small - mean, full_matrices=False)[2][:32].T
    multilabel = predictor.label_space.multilabel

    def recon(m: Measured) -> np.ndarray:
        x = np.stack(m.small).reshape(len(m.small), -1) / 255.0 - mean
        return np.sqrt(((x - x @ basis @ basis.T) ** 2).mean(axis=1))

    methods: dict[str, Scorer] = {
        "energy score (Liu 2020)": lambda m: _energy(np.concatenate(m.logits), multilabel),
        "32x32 PCA reconstruction error": recon,
    }
    if reference is not None and reference.layers:
        x = np.concatenate([train.means(heads), reference.means(heads)])
        y = np.r_[np.zeros(len(train.small)), np.ones(len(reference.small))]
        centre, spread = x.mean(axis=0), x.std(axis=0) + 1e-6
        clf = LogisticRegression(C=0.1, max_iter=3000).fit((x - centre) / spread, y)
        methods["domain classifier (logistic)"] = lambda m: clf.decision_function(
            (m.means(heads) - centre) / spread
        )
    return {"before: penultimate Mahalanobis": lambda m: today.distances(m.means(heads))} | methods


def _flags(m: Measured, scores: np.ndarray, threshold: float) -> np.ndarray:
    """Refused before the model (quality, header) or scored above the method's threshold."""
    reached = np.asarray(m.reached)
    flags = ~reached | np.asarray(m.header_refused)
    flags[reached] |= scores > threshold
    return flags


def _rate(values) -> float:
    values = np.asarray(values, dtype=bool)
    return float(values.mean()) if values.size else float("nan")


# --------------------------------------------------------------------------- the run


def run_model(model: str, data: Path, args, hostile: list) -> dict[str, dict[str, float]]:
    """Per set: the shipped gate's rates, the replaced gate's and each baseline's flag rate."""
    checkpoint = REPO / "checkpoints" / model / "model.safetensors"
    predictor = Predictor.from_checkpoint(checkpoint, device="cpu")
    section = predictor.card.gate or {}
    if section.get("version") != 2:
        raise SystemExit(f"{checkpoint}: the input gate is not fitted (run `cxr gate fit`)")
    references = reference_films(section)
    used = {p.name for paths in references.values() for p in paths}
    layers = [m for _, m in feature_layers(predictor.card, predictor.model)]
    taps = (LayerTap(layers), _FirstOutput(predictor.model))
    sets = model_sets(model, data, args, hostile, used)
    print(
        f"\n{model}: measuring {sum(map(len, sets.values()))} files in {len(sets)} sets", flush=True
    )
    measured = {label: measure(predictor, paths, taps) for label, paths in sets.items()}
    other_refs = [
        p for name, paths in references.items() if OTHER[MODEL_DATA[model]] in name for p in paths
    ]
    reference = measure(predictor, _sample(other_refs, args.train, 6), taps) if other_refs else None
    train = measured.pop("train (fits the baselines)")
    methods = baselines(predictor, train, reference)
    val = measured["own validation"]
    thresholds = {
        name: float(
            np.quantile(
                score(val), TODAY_QUANTILE if name.startswith("before") else DOMAIN_QUANTILE
            )
        )
        for name, score in methods.items()
    }
    table = {}
    for label, m in measured.items():
        row = {
            "n": len(m.outcomes),
            "after: refused": _rate(np.asarray(m.outcomes) == REFUSED),
            "after: out of domain": _rate(np.asarray(m.outcomes) == OUT_OF_DOMAIN),
            "after: with findings": _rate(m.called),
            "before: with findings": _rate(m.before_called),
        }
        scores = {name: score(m) if m.layers else np.zeros(0) for name, score in methods.items()}
        before = _flags(
            m,
            scores["before: penultimate Mahalanobis"],
            thresholds["before: penultimate Mahalanobis"],
        )
        row["before: flagged"] = _rate(before | np.asarray(m.before_flag))
        row["after: flagged"] = _rate(np.asarray(m.outcomes) != SCORED)
        for name, score in scores.items():
            if not name.startswith("before"):
                row[name] = _rate(_flags(m, score, thresholds[name]))
        table[label] = row
    return table


# --------------------------------------------------------------------------- report

COLUMNS = (
    ("n", "n", "{:>5.0f}"),
    ("before: flagged", "before flag", "{:>11.0%}"),
    ("before: with findings", "before find", "{:>11.0%}"),
    ("after: flagged", "after flag", "{:>10.0%}"),
    ("after: refused", "refused", "{:>8.0%}"),
    ("after: out of domain", "out dom", "{:>8.0%}"),
    ("after: with findings", "after find", "{:>10.0%}"),
    ("energy score (Liu 2020)", "energy", "{:>8.0%}"),
    ("domain classifier (logistic)", "dom clf", "{:>8.0%}"),
    ("32x32 PCA reconstruction error", "PCA rec", "{:>8.0%}"),
)


def print_table(model: str, table: dict[str, dict[str, float]]) -> None:
    """Flag rates per set: before (the replaced gate), after (refused / out of domain), baselines."""
    head = f"  {'set':<28}" + "".join(
        f" {title:>{len(fmt.format(0)) - 1}}" for _, title, fmt in COLUMNS
    )
    print(head)
    for label, row in table.items():
        cells = "".join(
            " "
            + (
                fmt.format(row[key])
                if key in row and np.isfinite(row[key])
                else " " * (len(fmt.format(0)) - 1) + "-"
            )
            for key, _, fmt in COLUMNS
        )
        print(f"  {label:<28}{cells}")


def _goal(text: str, ok: bool) -> tuple[str, bool]:
    print(f"  {'met    ' if ok else 'NOT met'}  {text}")
    return text, ok


def goals(model: str, table: dict[str, dict[str, float]]) -> list[tuple[str, bool]]:
    """The issue's goals for one model, printed with met / NOT met."""
    out = []
    other = table.get("other population")
    if other is not None:
        population = "Kermany pediatric" if MODEL_DATA[model] == "nih14" else "adult NIH"
        out.append(
            _goal(
                f"{model} flags {other['after: flagged']:.1%} of {population} films (>= 95%)",
                other["after: flagged"] >= 0.95,
            )
        )
    for split in ("own validation", "own test"):
        if split in table:
            rate = table[split]["after: flagged"]
            out.append(
                _goal(f"{model} flags {rate:.1%} of its {split[4:]} films (<= 5%)", rate <= 0.05)
            )
    hostile = [row for label, row in table.items() if label.startswith("hostile")]
    n = sum(row["n"] for row in hostile)
    refused = sum(row["after: refused"] * row["n"] for row in hostile)
    found = sum(row["after: with findings"] * row["n"] for row in hostile)
    out.append(
        _goal(
            f"{model} refuses {refused:.0f} of {n} generated non-chest files, {found:.0f} with findings (all, 0)",
            refused == n and found == 0,
        )
    )
    covid = table.get("COVID-19 set: NIH-sourced")
    if covid is not None and MODEL_DATA[model] == "nih14":
        rate = covid["after: flagged"]
        out.append(
            _goal(
                f"{model} flags {rate:.1%} of the COVID-19 set's NIH-sourced films (<= 10%)",
                rate <= 0.10,
            )
        )
    return out


def card_summary(model: str) -> None:
    """What the checkpoint's card records: detector, thresholds, measured rates."""
    gate = read_model_card(REPO / "checkpoints" / model / "model.safetensors").gate
    rates = gate["rates"]
    print(
        f"  card: {gate['detector']}; domain threshold {gate['domain']['threshold']:.2f} "
        f"({gate['domain']['rule']}), chest threshold {gate['chest']['threshold']:.2f} ({gate['chest']['rule']}); "
        f"validation at fit: {rates['validation']['out_of_domain']:.1%} out of domain, "
        f"{rates['validation']['refused']:.1%} refused"
    )
    for name, r in rates["references"].items():
        print(
            f"        reference {name}: {r['out_of_domain']:.1%} out of domain, "
            f"{r['refused']:.1%} refused (n={r['images']})"
        )


# --------------------------------------------------------------------------- timing


def gate_cost(model: str, data: Path, runs: int) -> None:
    """ms per image on a 2,500 px 16-bit DICOM film: decode, the gate's early checks, and the
    scoring with and without the gate's detectors, timed round-robin in one process."""
    from tests.reliability.crafted import dicom_dataset

    source = next(iter(sorted((data / "nih14" / "images").glob("*.png"))))
    film = cv2.resize(load_image(source).pixels, (2500, 2500), interpolation=cv2.INTER_CUBIC)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "film.dcm"
        dicom_dataset((np.clip(film, 0, 1) * 4095).astype(np.uint16), Modality="DX").save_as(
            path, enforce_file_format=True
        )
        gated = Predictor.from_checkpoint(
            REPO / "checkpoints" / model / "model.safetensors", device="cpu"
        )
        plain = Predictor(
            gated.model,
            label_space=gated.label_space,
            preprocess=gated.preprocess,
            target_layer=lambda m: m,
            card=gated.card,
            device="cpu",
            lung_masker=gated.lung_masker,
        )
        image = load_image(path)
        timings: dict[str, list[float]] = {
            "decode": [],
            "early checks": [],
            "scored, no gate": [],
            "scored with the gate": [],
        }
        steps = {
            "decode": lambda: load_image(path),
            "early checks": lambda: gated.gate.refuse_early(image.pixels, image.name, image.meta),
            "scored, no gate": lambda: plain.assess([image]),
            "scored with the gate": lambda: gated.assess([image]),
        }
        for _ in range(runs):
            for name, step in steps.items():
                start = time.perf_counter()
                step()
                timings[name].append((time.perf_counter() - start) * 1000)
    medians = {name: statistics.median(values) for name, values in timings.items()}
    extra = medians["scored with the gate"] - medians["scored, no gate"]
    print(
        f"\n{model}: ms per image on a 2,500 px 16-bit DICOM (median of {runs}): "
        + ", ".join(f"{k} {v:.0f}" for k, v in medians.items())
    )
    print(
        f"  the gate adds {extra:.0f} ms ({extra / medians['scored, no gate']:+.0%}) to scoring, "
        f"{medians['early checks']:.0f} ms of early checks"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--models", nargs="+", default=list(MODEL_DATA), choices=list(MODEL_DATA))
    parser.add_argument("--per-set", type=int, default=300, help="films sampled per set (seeded)")
    parser.add_argument(
        "--train", type=int, default=500, help="training films the baselines are fitted on"
    )
    parser.add_argument("--per-kind", type=int, default=12, help="generated files per hostile kind")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated hostile set")
    parser.add_argument("--timing-runs", type=int, default=5)
    args = parser.parse_args(argv)
    if not (args.data / "nih14").is_dir():
        print(f"the shared data is not at {args.data}", file=sys.stderr)
        return 2
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        hostile = build_hostile_set(Path(tmp) / "hostile", per_kind=args.per_kind, seed=args.seed)
        for model in args.models:
            table = run_model(model, args.data, args, hostile)
            print_table(model, table)
            card_summary(model)
            results += goals(model, table)
    for model in args.models[:1]:
        gate_cost(model, args.data, args.timing_runs)
    print(f"\n{sum(ok for _, ok in results)} of {len(results)} goals met")
    return 0 if all(ok for _, ok in results) else 1


if __name__ == "__main__":
    sys.exit(main())
