"""A shared review database under load: two server processes, 8 readers, 500 writes each.

Two OS processes stand for two dashboard servers behind a load balancer; each holds one
``ReviewStore`` on the same database (as a dashboard server does) and runs 4 reader threads
(as its browser sessions do). Every reader saves 500 calls through ``ReviewStore.record``
on the same 250 (film, finding) pairs as every other reader, each pair twice (the second save
changes the call and the note), so readers contend for the same rows and each changes their
own verdicts. Afterwards the database must hold, for every reader and pair, exactly the last
call that reader saved (none lost, none overwritten by another reader) and every save in the
history.

Printed: writes/s over the whole run, median and 95th-percentile time of one save, verdicts
lost, overwritten, history rows missing, and "met" / "NOT met" for 0 lost and 0 overwritten.

Usage: python benchmarks/bench_review_db_load.py --db postgresql://user@host:5432/db
       [--servers 2] [--readers 8] [--writes 500] [--json]
       (--db may also be a folder, for the SQLite file in it)
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time

from cxr_core.artifacts.review_store import ReviewStore

CLASSES = ("Atelectasis", "Cardiomegaly", "Effusion", "Edema", "Pneumothorax")
FINDINGS = ("present", "absent", "unsure")


def _pair(i: int, pairs: int) -> tuple[str, str]:
    key = i % pairs
    return f"film{key // len(CLASSES):04d}.png", CLASSES[key % len(CLASSES)]


def reader_writes(store: ReviewStore, session_id: int, reader: str, writes: int) -> list[float]:
    """One reader's saves; returns the seconds each took."""
    pairs = writes // 2
    times = []
    for i in range(writes):
        image, cls = _pair(i, pairs)
        started = time.perf_counter()
        store.record(
            session_id,
            image,
            cls,
            reviewer=reader,
            finding=FINDINGS[i % 3],
            note=f"{reader}:{i}",
            confidence=1 + i % 5,
        )
        times.append(time.perf_counter() - started)
    return times


def serve(db: str, session_id: int, readers: list[str], writes: int) -> None:
    """One server process: one store, a thread per reader; prints the save times as JSON."""
    store = ReviewStore(db)
    times: dict[str, list[float]] = {}
    threads = [
        threading.Thread(
            target=lambda r=r: times.__setitem__(r, reader_writes(store, session_id, r, writes))
        )
        for r in readers
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps([t for r in readers for t in times[r]]))


def check(store: ReviewStore, session_id: int, readers: list[str], writes: int) -> dict:
    """Lost and overwritten verdicts, and missing history rows, against what each reader saved."""
    pairs = writes // 2
    stored = {(v.reviewer, v.image_id, v.class_name): v.note for v in store.verdicts(session_id)}
    lost = overwritten = 0
    for reader in readers:
        for i in range(pairs, writes):  # the second, last save of each pair
            note = stored.get((reader, *_pair(i, pairs)))
            lost += note is None
            overwritten += note is not None and note != f"{reader}:{i}"
    history = len(store.history(session_id))
    return {
        "verdicts": len(stored),
        "lost": lost,
        "overwritten": overwritten,
        "history_missing": len(readers) * writes - history,
    }


def run(db: str, servers: int, n_readers: int, writes: int) -> dict:
    store = ReviewStore(db)
    session = store.create_session(f"load {time.time():.0f}", "bench", "val")
    readers = [f"R{r}" for r in range(n_readers)]
    shares = [readers[s::servers] for s in range(servers)]
    started = time.perf_counter()
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--serve", "--db", db, "--session", str(session.id)]
            + ["--writes", str(writes), "--readers-of-server", ",".join(share)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for share in shares
    ]
    outputs = [p.communicate() for p in procs]
    elapsed = time.perf_counter() - started
    failed = [err for p, (_, err) in zip(procs, outputs) if p.returncode != 0]
    if failed:
        raise SystemExit(f"a server process failed:\n{failed[0][-2000:]}")
    times = sorted(t for out, _ in outputs for t in json.loads(out.strip().splitlines()[-1]))
    result = check(store, session.id, readers, writes)
    result.update(
        servers=servers,
        readers=n_readers,
        writes=len(times),
        seconds=round(elapsed, 2),
        writes_per_s=round(len(times) / elapsed, 1),
        save_ms_median=round(1000 * statistics.median(times), 1),
        save_ms_p95=round(1000 * times[int(0.95 * (len(times) - 1))], 1),
    )
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True, help="PostgreSQL URL, or a folder for SQLite")
    parser.add_argument("--servers", type=int, default=2)
    parser.add_argument("--readers", type=int, default=8)
    parser.add_argument("--writes", type=int, default=500, help="saves per reader (even)")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON line")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--session", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--readers-of-server", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.db, args.session, args.readers_of_server.split(","), args.writes)
        return 0
    result = run(args.db, args.servers, args.readers, args.writes)
    met = result["lost"] == 0 and result["overwritten"] == 0 and result["history_missing"] == 0
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"{result['servers']} servers x {result['readers'] // result['servers']} readers, "
            f"{result['writes']} saves in {result['seconds']} s: {result['writes_per_s']} saves/s, "
            f"one save {result['save_ms_median']} ms median, {result['save_ms_p95']} ms p95"
        )
        print(
            f"verdicts {result['verdicts']}, lost {result['lost']}, overwritten "
            f"{result['overwritten']}, history rows missing {result['history_missing']}: "
            f"{'met' if met else 'NOT met'}"
        )
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
