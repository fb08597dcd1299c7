"""The shell runner's start is crash-safe: whatever point of ``start`` a daemon was killed at, the job's
folder tells a restarted daemon "never started" (start it now), "running" (re-attach) or "exited with
code N", and no script ever runs twice.

Each test leaves a job folder exactly as a daemon killed at one point of a start leaves it (real
wrapper processes, real files), then asks a fresh runner, as a restarted daemon would.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

from helpers import poll_until, shell_job

from daemon.contracts import JobSpec, JobStatus, RunnerStatus
from plugins.shell import ShellRunner


def _spec(uid: str, script: str) -> JobSpec:
    return JobSpec(uid=uid, entity=shell_job(script), env={"DM_JOB_UID": uid})


def _runner(state: Path) -> ShellRunner:
    return ShellRunner(state, dict(os.environ), stop_grace=0.5)


async def _settled(runner: ShellRunner, spec: JobSpec, folder: Path) -> RunnerStatus:
    async def check() -> RunnerStatus | None:
        seen = await runner.poll(spec, {"dir": str(folder)})
        return seen if seen.status.is_terminal else None

    return await poll_until(check, what="the job to end")


def _ledger(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


async def test_a_job_killed_before_its_spawn_is_started_by_the_next_daemon(tmp_path: Path) -> None:
    """Killed after the folder and script were written, before the wrapper was spawned."""
    ledger = tmp_path / "ledger"
    spec = _spec("never-spawned", f'echo "$DM_JOB_UID" >> {ledger}')
    folder = tmp_path / "state" / spec.uid
    folder.mkdir(parents=True)
    (folder / "script.sh").write_text(f'echo "$DM_JOB_UID" >> {ledger}')

    runner = _runner(tmp_path / "state")
    seen = await runner.poll(spec, {"dir": str(folder)})
    assert seen.status is JobStatus.RUNNING, seen
    final = await _settled(runner, spec, folder)
    assert final.status is JobStatus.COMPLETED, final
    assert _ledger(ledger) == [spec.uid]


async def test_a_repeated_start_after_a_kill_between_spawn_and_handle_re_attaches(tmp_path: Path) -> None:
    """Killed after the spawn, before the handle was saved: the repeated start must not run it again."""
    ledger = tmp_path / "ledger"
    gate = tmp_path / "gate"
    script = f'echo "$DM_JOB_UID" >> {ledger}; while [ ! -e {gate} ]; do sleep 0.02; done'
    spec = _spec("spawned-unsaved", script)
    first = _runner(tmp_path / "state")
    started = await first.start(spec)
    assert started.status.status is JobStatus.RUNNING
    await poll_until(lambda: _has_lines(ledger, 1), what="the script to begin")

    restarted = _runner(tmp_path / "state")  # the new daemon knows nothing of the first one's process
    again = await restarted.start(spec)
    assert again.status.status is JobStatus.RUNNING, again
    assert (await restarted.poll(spec, again.handle)).status is JobStatus.RUNNING
    gate.touch()
    final = await _settled(restarted, spec, Path(again.handle["dir"]))
    assert final.status is JobStatus.COMPLETED, final
    assert _ledger(ledger) == [spec.uid], "the script ran once"


async def test_racing_wrappers_run_the_script_once(tmp_path: Path) -> None:
    """Two daemons' starts at once (the old one's wrapper not yet at its lock): one run, never two."""
    ledger = tmp_path / "ledger"
    spec = _spec("raced", f'echo "$DM_JOB_UID" >> {ledger}; sleep 0.2')
    runners = [_runner(tmp_path / "state") for _ in range(4)]
    starts = await asyncio.gather(*(r.start(spec) for r in runners))
    folder = Path(starts[0].handle["dir"])
    for runner in runners:  # each finds the job never started and spawns a wrapper of its own
        await runner.poll(spec, {"dir": str(folder)})
    final = await _settled(runners[0], spec, folder)
    assert final.status is JobStatus.COMPLETED
    await asyncio.gather(*(r.close() for r in runners))
    assert _ledger(ledger) == [spec.uid]


async def test_a_job_that_exited_while_the_daemon_was_down_is_settled_by_its_code(tmp_path: Path) -> None:
    spec = _spec("exited", "echo broken; exit 3")
    first = _runner(tmp_path / "state")
    started = await first.start(spec)
    folder = Path(started.handle["dir"])
    await poll_until(lambda: _exists(folder / "exit_code"), what="the script to exit")

    seen = await _runner(tmp_path / "state").poll(spec, started.handle)
    assert seen.status is JobStatus.FAILED and "exit code 3" in (seen.message or ""), seen
    assert seen.logs == ("broken",)


async def test_a_wrapper_killed_from_outside_fails_the_job(tmp_path: Path) -> None:
    """Really killed (not a daemon crash): the job failed, and is not started a second time."""
    ledger = tmp_path / "ledger"
    spec = _spec("killed", f'echo "$DM_JOB_UID" >> {ledger}; sleep 30')
    runner = _runner(tmp_path / "state")
    started = await runner.start(spec)
    folder = Path(started.handle["dir"])
    await poll_until(lambda: _has_lines(ledger, 1), what="the script to begin")
    os.killpg(int((folder / "pid").read_text()), signal.SIGKILL)

    final = await _settled(_runner(tmp_path / "state"), spec, folder)
    assert final.status is JobStatus.FAILED and "without an exit code" in (final.message or ""), final
    assert _ledger(ledger) == [spec.uid]


async def test_a_stop_before_the_wrapper_began_means_it_never_runs(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    spec = _spec("stopped-early", f'echo "$DM_JOB_UID" >> {ledger}')
    folder = tmp_path / "state" / spec.uid
    folder.mkdir(parents=True)
    (folder / "script.sh").write_text(f'echo "$DM_JOB_UID" >> {ledger}')
    runner = _runner(tmp_path / "state")
    await runner.stop(spec, {"dir": str(folder)})
    seen = await runner.poll(spec, {"dir": str(folder)})
    assert seen.status is JobStatus.REMOVED, seen
    assert _ledger(ledger) == []


async def _has_lines(path: Path, n: int) -> bool | None:
    return True if len(_ledger(path)) >= n else None


async def _exists(path: Path) -> bool | None:
    return True if path.exists() else None
