"""``syncd demo`` and ``make demo`` end to end, as a newcomer runs them.

The demo runs as a subprocess (its own Radicale, SMTP catcher, web side and daemon); the
walkthrough runs as a second subprocess against it, like in a second terminal. The settle
window and poll interval are shortened through ``SYNCD_DEMO_SETTLE`` / ``SYNCD_DEMO_POLL``
and every port is picked free (``SYNCD_DEMO_PORT=0``) so a demo the developer runs on the
default ports is left alone.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
FAST = {"SYNCD_DEMO_SETTLE": "2s", "SYNCD_DEMO_POLL": "1s", "SYNCD_DEMO_PORT": "0"}
STORY = (
    "Before (times in Europe/Berlin):",
    "After (times in Europe/Berlin):",
    "1. Drag",
    "2. Delete",
    "3. Notes   ",
    '"reschedule: ',
    "4. Title   ",
    '"cancel: ',
    "rescheduled (by admin-calendar)",
    "let_customer_choose (by admin-calendar)",
    "chose_new_time (by customer)",
    "[admin-calendar: rescheduled]",
    "[admin-calendar: canceled]",
    "[admin-calendar: let_customer_choose, then customer: chose_new_time]",
    "reason: Your host had to cancel this session.",
    "Every outcome is the expected one",
)


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MAKELEVEL", "MAKEFLAGS")}
    env.update(FAST)
    return env


def _syncd(*args: str) -> list[str]:
    return [sys.executable, "-m", "syncd.app.cli", *args]


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except OSError as err:
        return getattr(err, "code", 0) or 0, str(err)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _wait_ready(root: Path, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> Any:
    """demo.json written and the web side's /readyz answering 200."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the demo exited with {proc.returncode}:\n{log.read_text()}")
        try:
            state = json.loads((root / "demo.json").read_text())
        except (OSError, ValueError):
            state = None
        if state and _get(f"{state['web_url']}/readyz")[0] == 200:
            return state
        time.sleep(0.2)
    pytest.fail(f"the demo was not ready within {timeout:.0f} s:\n{log.read_text()}")


def _start(root: Path, log: Path, *args: str) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            _syncd("demo", *args, "--dir", str(root)),
            stdout=out,
            stderr=subprocess.STDOUT,
            env=_env(),
            cwd=root.parent,
        )


def _stop(proc: subprocess.Popen[bytes], state: Any, log: Path, pid: int | None = None) -> None:
    """SIGTERM: exit 0 within a few seconds, Radicale gone, demo.json removed."""
    os.kill(pid or proc.pid, signal.SIGTERM)
    try:
        code = proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"the demo did not stop within 15 s:\n{log.read_text()}")
    assert code == 0, log.read_text()
    deadline = time.monotonic() + 5
    while _alive(state["radicale_pid"]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(state["radicale_pid"]), "Radicale outlived the demo"
    assert not (Path(state["dir"]) / "demo.json").exists()
    assert "Stopped. The data stays in" in log.read_text()


def _walkthrough(*cmd: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=150, env=_env(), cwd=cwd, check=False
    )


def _assert_story(run: subprocess.CompletedProcess[str]) -> None:
    assert run.returncode == 0, f"{run.stdout}\n{run.stderr}"
    for piece in STORY:
        assert piece in run.stdout, f"{piece!r} missing from:\n{run.stdout}"
    emails = run.stdout.split("Emails sent", 1)[1]
    for kind, count in (
        ("rescheduled", 1),
        ("canceled", 2),
        ("choose", 1),
        ("confirmed", 1),
        ("customer_chose", 1),  # the coach hears that Carla picked a time
    ):
        lines = [ln for ln in emails.splitlines() if f" {kind} " in ln and "→" in ln]
        assert len(lines) == count, f"{kind}: {lines}\n{run.stdout}"


def test_demo_walkthrough_stop_and_restart(tmp_path: Path) -> None:
    root, log = tmp_path / "demo-data", tmp_path / "demo.log"
    proc = _start(root, log, "--reset")
    try:
        state = _wait_ready(root, proc, log, 60)
        banner = log.read_text()
        for piece in (
            state["calendar_url"],
            f"password {state['password']}",
            "Thunderbird",
            "GNOME Calendar",
            "Evolution",
            "Apple Calendar",
            "DAVx5",
            f"{state['mail_url']}/",
            "demo --walkthrough --dir",
            "`cancel: reason`",
            "`reschedule: message`",
            "seeded",
        ):
            assert piece in banner, f"{piece!r} missing from the banner:\n{banner}"
        assert state["settle_seconds"] == 2 and state["poll_seconds"] == 1

        run = _walkthrough(*_syncd("demo", "--walkthrough", "--dir", str(root)))
        _assert_story(run)
        assert "customers book a few more" not in run.stdout  # the five seeded ones suffice

        # The mail page renders what the SMTP catcher kept: 5 bookings + the 6 of the story.
        status, index = _get(f"{state['mail_url']}/mails.json")
        mails = json.loads(index)
        assert status == 200 and len(mails) == 11, mails
        assert len(list((root / "mail").glob("*.eml"))) == 11
        choose = next(m for m in mails if "choose a new time" in m["subject"])
        status, page = _get(f"{state['mail_url']}/mail/{choose['n']}")
        assert status == 200
        assert "Text part" in page and "/choose/" in page
        assert "<iframe" in page and "iTIP part" in page and "METHOD:REQUEST" in page
        status, cal = _get(f"{state['mail_url']}/calendar")
        assert status == 200 and cal.count("1:1 session") == 3, cal
        _stop(proc, state, log)

        # Again, without --reset: the same data, no second seeding.
        proc = _start(root, log)
        state = _wait_ready(root, proc, log, 60)
        assert "reusing the data in this folder" in log.read_text()
        listed = subprocess.run(
            _syncd("--config", state["config"], "--json", "session", "list"),
            capture_output=True,
            text=True,
            check=True,
        )
        sessions = json.loads(listed.stdout)
        assert len(sessions) == 5
        assert sorted(s["status"] for s in sessions) == ["booked"] * 3 + ["canceled"] * 2
        _stop(proc, state, log)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_walkthrough_without_a_running_demo_exits_4(tmp_path: Path) -> None:
    run = _walkthrough(*_syncd("demo", "--walkthrough", "--dir", str(tmp_path / "none")))
    assert run.returncode == 4, run
    assert "No demo is running" in run.stderr and "make demo" in run.stderr


def test_reset_refuses_a_folder_the_demo_did_not_make(tmp_path: Path) -> None:
    (tmp_path / "thesis.tex").write_text("years of work")
    run = _walkthrough(*_syncd("demo", "--reset", "--dir", str(tmp_path)))
    assert run.returncode == 1, run
    assert "thesis.tex" in run.stderr
    assert (tmp_path / "thesis.tex").read_text() == "years of work"


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_demo_from_the_repository(tmp_path: Path) -> None:
    dry = subprocess.run(
        ["make", "-n", "-B", "demo"], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert "pip install -q -e '.[demo]'" in dry.stdout, dry.stdout
    assert ".venv/bin/syncd demo" in dry.stdout, dry.stdout

    root, log = tmp_path / "demo-data", tmp_path / "make.log"
    state: Any = None
    with log.open("wb") as out:
        make = subprocess.Popen(
            ["make", "demo", f"DEMO_ARGS=--reset --dir {root}"],
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=_env(),
        )
    try:
        state = _wait_ready(root, make, log, 240)  # the first run installs the demo extra
        banner = log.read_text()
        hint = f'make demo DEMO_ARGS="--walkthrough --dir {root}"'
        assert hint in banner, banner
        run = _walkthrough("make", "-s", "demo", f"DEMO_ARGS=--walkthrough --dir {root}", cwd=REPO)
        _assert_story(run)
        _stop(make, state, log, pid=state["pid"])  # the demo exits 0, so does make
    finally:
        if make.poll() is None:
            if state is not None and _alive(state["pid"]):
                os.kill(state["pid"], signal.SIGKILL)
            make.kill()
            make.wait()
