"""Requests per idle cycle on Microsoft Graph (goal 1.00): the Graph fake, real msal + httpx.

One admin, ``--sessions`` booked sessions mirrored into a "Bookings" calendar, then
``--cycles`` idle cycles; prints Graph requests (token requests excluded) per idle cycle.
Run: ``.venv/bin/python -m bench.graph_idle`` (from the repository root).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import trustme

from tests.gestures.graph_world import GraphWorld, start_fake


def main() -> None:
    """Measure and print the figure."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--sessions", type=int, default=50)
    parser.add_argument("--cycles", type=int, default=20)
    args = parser.parse_args()
    fake, client_id, secret = start_fake(trustme.CA())
    os.environ.update(fake.client_env())
    try:
        with tempfile.TemporaryDirectory() as tmp:
            w = GraphWorld(Path(tmp), fake, client_id, secret)
            for i in range(args.sessions):
                w.book(days=2 + i % 300, name=f"C{i}")
            w.sync()
            w.sync()
            with fake.lock:
                fake.requests.clear()
            for _ in range(args.cycles):
                report = w.sync()
                assert report.error is None and not report.actions, report
            with fake.lock:
                graph = [r for r in fake.requests if r.path.startswith("/v1.0/")]
            w.close()
        print(
            f"requests per idle cycle on Microsoft: {len(graph) / args.cycles:.2f} "
            f"({args.sessions} sessions, {args.cycles} cycles)"
        )
    finally:
        fake.stop()


if __name__ == "__main__":
    main()
