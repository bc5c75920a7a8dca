"""`vla-ros bench load` and its CPU hog: the busy loops run while asked, and never outlive the benchmark."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from vla_ros.bench.machine import CpuHog, load_warning
from vla_ros.cli.main import main


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().split(")")[-1].split()[0] != "Z"  # a zombie has ended
    except FileNotFoundError:
        return False


def _busy_loops_of(parent: int) -> list[int]:
    """Living child processes of `parent` that run the hog's loop."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii") as f:
                ppid = int(f.read().split(")")[-1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                command = f.read()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if ppid == parent and b"os.getppid() == parent" in command and _alive(int(entry)):
            found.append(int(entry))
    return found


pytestmark = pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc (Linux)")


def test_the_hog_runs_one_busy_loop_per_process_and_stops_them_all():
    with CpuHog(2, max_seconds=60) as hog:
        pids = hog.pids
        assert len(pids) == 2 and sorted(_busy_loops_of(os.getpid())) == sorted(pids)
        time.sleep(0.5)
        for pid in pids:  # busy: the loops accumulate CPU time
            with open(f"/proc/{pid}/stat", encoding="ascii") as f:
                assert int(f.read().split(")")[-1].split()[11]) > 0  # utime (field 14 of stat), clock ticks
    assert not any(_alive(pid) for pid in pids)


def test_the_hog_ends_by_itself_when_its_benchmark_is_killed():
    code = (
        "import sys, time\nfrom vla_ros.bench.machine import CpuHog\nhog = CpuHog(1, max_seconds=120)\n"
        "hog.__enter__()\nprint(hog.pids[0], flush=True)\ntime.sleep(120)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        hog_pid = int(parent.stdout.readline())
        assert _alive(hog_pid)
        os.kill(parent.pid, signal.SIGKILL)  # no chance to clean up
        parent.wait()
        deadline = time.monotonic() + 10
        while _alive(hog_pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(hog_pid)
    finally:
        parent.kill()
        parent.wait()
        parent.stdout.close()


def test_the_hog_ends_by_itself_at_its_deadline():
    with CpuHog(1, max_seconds=1.0) as hog:
        pid = hog.pids[0]
        deadline = time.monotonic() + 10
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(pid)


def test_a_loaded_machine_is_named_with_what_to_do():
    quiet = [40.0] * 50 + [60.0]
    assert load_warning(quiet, load_1min=0.5, cpus=2) is None
    tail = [40.0] * 50 + [900.0, 1200.0]
    warning = load_warning(tail, load_1min=1.0, cpus=2, threads=2)
    assert "p99" in warning and "median 40 ms" in warning and "try --threads 1 (now 2)" in warning
    warning = load_warning(quiet, load_1min=5.3, cpus=2, threads=1)
    assert "load average was 5.3 on 2 cores" in warning and "--threads" not in warning


def test_bench_load_runs_both_arms_and_leaves_no_busy_loop(tmp_path, capsys):
    pytest.importorskip("vla_ros.sim.world", reason="needs MuJoCo (pip install -e '.[sim]')")
    out = tmp_path / "load.json"
    assert (
        main(
            [
                "bench",
                "load",
                "--policy",
                "expert",
                "--robots",
                "so101",
                "--episodes",
                "1",
                "--seed",
                "3",
                "--hog-processes",
                "1",
                "--json",
                str(out),
                "--out",
                str(tmp_path),
                "--no-progress",
            ]
        )
        == 0
    )
    results = json.loads(out.read_text())
    (entry,) = results["robots"]
    assert entry["robot"] == "so101" and results["hog_processes"] == 1
    for arm in ("idle", "loaded"):
        assert entry[arm]["episodes_run"] == 1 and entry[arm]["episodes"][0]["seed"] == 3
        assert entry[arm]["success_rate"] == 1.0  # the scripted expert, with latency near zero either way
        machine = entry[arm]["machine"]
        assert 0.0 <= machine["cpu_busy_fraction"] <= 1.0 and machine["load_average_1min"] >= 0
    assert set(entry["loaded_vs_idle"]) == {
        "latency_p50_ratio",
        "success_drop",
        "latency_within_target",
        "success_within_target",
    }
    assert (tmp_path / "load_touch.png").is_file()
    assert "| so101 | loaded | 1.00 (1 ep) |" in capsys.readouterr().err
    assert _busy_loops_of(os.getpid()) == []


def test_bench_load_refuses_a_robot_the_simulator_does_not_have(capsys):
    assert main(["bench", "load", "--robots", "so101,ur5", "--no-progress"]) == 2
    from vla_ros.sim.robots import SIM_ROBOTS

    assert f"the simulator has no robot 'ur5': it simulates {', '.join(SIM_ROBOTS)}" in capsys.readouterr().err


def _session(pid: int) -> int:
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        return int(f.read().split(")")[-1].split()[3])


def test_the_hog_runs_as_other_programs_or_in_the_benchmarks_session():
    with CpuHog(1, max_seconds=60) as hog:  # default: a session of its own, like another program
        (pid,) = hog.pids
        assert _session(pid) == pid != _session(os.getpid())
    with CpuHog(1, max_seconds=60, own_sessions=False) as hog:
        assert _session(hog.pids[0]) == _session(os.getpid())
