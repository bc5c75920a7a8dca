"""Print the parity table: vla_ros against LeRobot's actions for every fixture in test/fixtures (Markdown).

    python tools/parity/table.py            # in vla_ros's environment; LeRobot is not needed

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


def main() -> None:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    header = ["LeRobot", "policy", "case", "max abs diff", "other positions", "covers"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in smolvla_rows():
        print("| " + " | ".join(row) + " |", flush=True)


if __name__ == "__main__":
    main()
