"""How load_image treats crafted bad files and seeded mutants of real radiographs.

Prints, for the crafted set and for the fuzz mutants, how many files were accepted, refused
with the project's error, raised another exception, hung (per-file timeout in a worker
process), were silently padded (accepted although their pixel data is shorter than the
header claims) or accepted corrupt (a mutant accepted with flat bands its original lacks).
The goal is 0 other / 0 hang / 0 padded / 0 corrupt, and every crafted file marked "refuse"
refused. The same seed gives the same mutants, so runs before and after a change compare like
with like. Then the false refusals: every real image of the shared data loaded, and each one
refused counted by dataset with its reason (the goal is 0).

Usage: python benchmarks/bench_reliability.py [--data ../shared/data] [--mutants 1000] [--seed 14]
(set PYTHONPATH to a checkout of another version to measure that version's loader)
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.append(str(REPO))  # appended: a PYTHONPATH naming another cxr_core (an older version) wins

from tests.reliability import crafted  # noqa: E402 (the generator lives with the tests)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--mutants", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument(
        "--timeout", type=float, default=20.0, help="seconds per file before it counts as a hang"
    )
    parser.add_argument(
        "--verbose", action="store_true", help="list every file that is not a clear outcome"
    )
    parser.add_argument(
        "--no-real", action="store_true", help="skip loading every real image (false refusals)"
    )
    args = parser.parse_args()

    sources = crafted.real_sources(args.data)
    if "nih.png" not in sources or "kermany.jpeg" not in sources:
        print(f"real radiographs not found under {args.data}", file=sys.stderr)
        return 2
    print(
        f"loader: cxr_core.data.imaging.load_image from {importlib.util.find_spec('cxr_core').origin}"
    )
    with (
        tempfile.TemporaryDirectory() as tmp,
        crafted.IsolatedLoader(timeout=args.timeout) as loader,
    ):
        cases = crafted.build_crafted_set(Path(tmp) / "crafted", sources)
        results = crafted.run_crafted(loader, cases)
        counts = crafted.tally(outcome for _, outcome, _ in results)
        wrong = [(c, o, d) for c, o, d in results if c.expect == "refuse" and o != "refused"]
        print(
            f"crafted set ({len(cases)} files): "
            + ", ".join(f"{k} {v}" for k, v in counts.items())
            + f"; should refuse but did not: {len(wrong)}"
        )
        for case, outcome, detail in results:
            if (
                args.verbose
                or (case in [w[0] for w in wrong])
                or outcome in ("other", "hang", "padded", "corrupt")
            ):
                print(f"  {outcome:8s} {case.name}: {case.why} -> {detail[:160]}")

        fuzz = crafted.run_fuzz(
            loader, crafted.fuzz_originals(sources), args.mutants, args.seed, Path(tmp) / "fuzz"
        )
        counts = crafted.tally(outcome for _, outcome, _ in fuzz)
        print(
            f"fuzz ({args.mutants} mutants, seed {args.seed}): "
            + ", ".join(f"{k} {v}" for k, v in counts.items())
        )
        for name, outcome, detail in fuzz:
            if outcome in ("other", "hang", "padded", "corrupt"):
                print(f"  {outcome:8s} {name}: {detail[:160]}")
    if not args.no_real:
        _false_refusals(args.data)
    return 0


def _false_refusals(data: Path) -> None:
    """Load every real image of the shared data; any refusal is a false one."""
    from cxr_core.data.imaging import load_image
    from cxr_core.errors import CXRError

    sets = {
        "NIH": data / "nih14" / "images",
        "Kermany": data / "pneumonia",
        "COVID-19": data / "covid19",
        "Montgomery": data / "lungmasks" / "montgomery" / "images",
    }
    for label, folder in sets.items():
        files = sorted(
            p for p in folder.rglob("*") if p.suffix.lower() in (".png", ".jpeg", ".jpg")
        )
        refused = []
        for path in files:
            try:
                load_image(path)
            except CXRError as exc:
                refused.append(str(exc))
        print(f"real {label}: {len(files)} images, {len(refused)} refused (goal 0)")
        for reason in refused[:10]:
            print(f"  {reason[:200]}")


if __name__ == "__main__":
    raise SystemExit(main())
