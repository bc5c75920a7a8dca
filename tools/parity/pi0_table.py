"""Print the pi0 / pi0.5 parity table: max |a_vla_ros - a_LeRobot| (float32) per release, policy and case.

Runs vla_ros (no LeRobot needed) on every fixture of tools/parity/pi0_fixtures.py under test/fixtures/:

    python tools/parity/pi0_table.py            # one line per policy and case, a column per release (README)
    python tools/parity/pi0_table.py --full     # one line per release, policy and case, with transformers

`pi_rows()` gives the rows in the layout of tools/parity/table.py, so one table can hold every policy.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(REPO / "test"), str(Path(__file__).resolve().parent)]


def pi_rows() -> list[list[str]]:
    """[release, policy, case, max abs diff, "", made with] for every pi0/pi0.5 fixture case."""
    import pi_lerobot_fixtures as fixtures
    import pytest

    # The 0.5.0 fixtures carry no release marker: the loader's warning about it would repeat on every case.
    logging.getLogger("vla_ros.policies.pi05.config").setLevel(logging.ERROR)
    rows = []
    patches = pytest.MonkeyPatch()
    for policy in ("pi0", "pi05"):
        for directory in fixtures.fixture_dirs(policy):
            made_with = fixtures.read_cases(directory)["made_with"]
            fixtures.tiny_sizes(patches, directory)
            try:
                for case in fixtures.read_cases(directory)["cases"]:
                    with tempfile.TemporaryDirectory() as scratch:
                        difference = fixtures.max_difference(directory, case, Path(scratch))
                    rows.append(
                        [
                            made_with["lerobot"],
                            policy,
                            case,
                            f"{difference:.1e}",
                            "",
                            f"transformers {made_with['transformers']}",
                        ]
                    )
            finally:
                patches.undo()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="one line per release, policy and case")
    args = parser.parse_args()
    rows = pi_rows()
    if not args.full:
        from table import compact

        print("\n".join(compact(rows)))
        return
    print("| LeRobot | policy | case | max abs diff | made with |")
    print("|---|---|---|---|---|")
    for release, policy, case, difference, _, made_with in rows:
        print(f"| {release} | {policy} | {case} | {difference} | {made_with} |")


if __name__ == "__main__":
    main()
