"""Print the pi0 / pi0.5 parity table: release x policy x case x max |a_vla_ros - a_LeRobot| (float32).

Runs vla_ros (no LeRobot needed) on every fixture of tools/parity/pi0_fixtures.py under test/fixtures/:

    python tools/parity/pi0_table.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(REPO / "test")]


def main() -> None:
    import pi_lerobot_fixtures as fixtures
    import pytest

    patches = pytest.MonkeyPatch()
    print("| LeRobot (transformers) | policy | case | max abs diff |")
    print("|---|---|---|---|")
    for policy in ("pi0", "pi05"):
        for directory in fixtures.fixture_dirs(policy):
            made_with = fixtures.read_cases(directory)["made_with"]
            fixtures.tiny_sizes(patches, directory)
            for case in fixtures.read_cases(directory)["cases"]:
                with tempfile.TemporaryDirectory() as scratch:
                    difference = fixtures.max_difference(directory, case, Path(scratch))
                release = f"{made_with['lerobot']} ({made_with['transformers']})"
                print(f"| {release} | {policy} | {case} | {difference:.1e} |")
            patches.undo()


if __name__ == "__main__":
    main()
