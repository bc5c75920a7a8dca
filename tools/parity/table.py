"""Print the parity table: vla_ros against LeRobot's actions for every fixture in test/fixtures (Markdown).

    python tools/parity/table.py            # in vla_ros's environment; LeRobot is not needed (README table)
    python tools/parity/table.py --full     # docs/policies.md's table

For each SmolVLA case: max |a_vla_ros - a_LeRobot| with the patch positions that release ran, and (column
"other positions") with the other behaviour, which shows what running a checkpoint with the wrong one costs.
For the robot-path case the OpenCV fast path (`image_resize="fast"`) is measured too.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "test"))
sys.path.insert(0, str(REPO))

from parity_fixtures import (  # noqa: E402
    case_meta,
    release,
    run_smolvla_case,
    smolvla_cases,
    trained_patch_positions,
)

OTHER = {"transformers4": "transformers5", "transformers5": "transformers4"}


def smolvla_rows() -> list[list[str]]:
    rows = []
    for case in smolvla_cases():
        ours, theirs = run_smolvla_case(case)
        other, _ = run_smolvla_case(case, patch_positions=OTHER[trained_patch_positions(case)])
        note = case_meta(case)["covers"]
        if case_meta(case)["robot_path"]:
            fast, _ = run_smolvla_case(case, image_resize="fast")
            note += f"; OpenCV fast path: {np.abs(fast - theirs).max():.2g}"
        rows.append([release(case), "smolvla", case.name, f"{np.abs(ours - theirs).max():.1e}",
                     f"{np.abs(other - theirs).max():.2g}", note])
    return rows


def compact(rows: list[list[str]]) -> list[str]:
    """One line per policy and case, one column per release (the README's table)."""
    releases = sorted({row[0] for row in rows})
    cases: dict[tuple[str, str], dict[str, str]] = {}
    for release_name, policy, case, diff, _, _ in rows:
        cases.setdefault((policy, case), {})[release_name] = diff
    lines = ["| policy | case | " + " | ".join(f"LeRobot {r}" for r in releases) + " |",
             "|" + "---|" * (2 + len(releases))]
    for (policy, case), diffs in cases.items():
        lines.append(f"| {policy} | {case} | " + " | ".join(diffs.get(r, "") for r in releases) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="one row per release and case, with the other "
                        "patch positions' error and what each case covers (docs/policies.md)")
    args = parser.parse_args()
    rows = smolvla_rows()
    if not args.full:
        print("\n".join(compact(rows)))
        return
    header = ["LeRobot", "policy", "case", "max abs diff", "other positions", "covers"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
