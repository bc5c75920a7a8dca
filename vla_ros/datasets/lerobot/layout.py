"""The on-disk layout of a LeRobot v3.0 dataset: paths, feature names, metadata tables, the dataset error."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vla_ros.core.errors import MissingDependencyError, VlaRosError

CODEBASE_VERSION = "v3.0"


CHUNKS_SIZE = 1000  # files per chunk folder


DATA_FILES_SIZE_IN_MB = 100  # LeRobot's limits for packing episodes into one file; recorded in info.json


VIDEO_FILES_SIZE_IN_MB = 200


INFO_PATH = "meta/info.json"


STATS_PATH = "meta/stats.json"


TASKS_PATH = "meta/tasks.parquet"


EPISODES_DIR = "meta/episodes"


CHUNK_FILE_PATTERN = "chunk-{chunk_index:03d}/file-{file_index:03d}"


EPISODES_PATH = EPISODES_DIR + "/" + CHUNK_FILE_PATTERN + ".parquet"


DATA_PATH = "data/" + CHUNK_FILE_PATTERN + ".parquet"


VIDEO_PATH = "videos/{video_key}/" + CHUNK_FILE_PATTERN + ".mp4"


STATE = "observation.state"


ACTION = "action"


IMAGES_PREFIX = "observation.images."


INDEX_FEATURES: dict[str, dict[str, Any]] = {  # LeRobot's DEFAULT_FEATURES, in its order
    "timestamp": {"dtype": "float32", "shape": [1], "names": None},
    "frame_index": {"dtype": "int64", "shape": [1], "names": None},
    "episode_index": {"dtype": "int64", "shape": [1], "names": None},
    "index": {"dtype": "int64", "shape": [1], "names": None},
    "task_index": {"dtype": "int64", "shape": [1], "names": None},
}


TIMESTAMP_TOLERANCE_S = 1e-4  # LeRobotDataset's default tolerance_s when it looks frames up in a video


class DatasetError(VlaRosError):
    """A dataset cannot be written, read or used as it is. `problems` lists every problem found."""

    def __init__(self, message: str, problems: Sequence[str] = ()):
        self.problems = list(problems) or [message]
        super().__init__(message)


def _pyarrow():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise MissingDependencyError("pyarrow", "datasets", "Reading and writing LeRobot datasets") from exc
    return pa, pq


def _chunk_file_of(path: Path) -> tuple[int, int] | None:
    match = re.fullmatch(r"chunk-(\d+)/file-(\d+)\.\w+", f"{path.parent.name}/{path.name}")
    return (int(match.group(1)), int(match.group(2))) if match else None


def _next_file(chunk_file: tuple[int, int], chunks_size: int) -> tuple[int, int]:
    """The (chunk, file) index after `chunk_file`, as LeRobot counts them."""
    chunk, file = chunk_file
    return (chunk + 1, 0) if file == chunks_size - 1 else (chunk, file + 1)


def _camera_key(camera: str) -> str:
    return camera if camera.startswith(IMAGES_PREFIX) else IMAGES_PREFIX + camera


def _hf_feature(ft: dict[str, Any]) -> dict[str, Any]:
    """The `datasets` library's description of a column (kept in the parquet schema, as LeRobot's files do)."""
    if ft["dtype"] == "image":
        return {"_type": "Image"}
    if list(ft["shape"]) == [1]:
        return {"dtype": ft["dtype"], "_type": "Value"}
    return {"feature": {"dtype": ft["dtype"], "_type": "Value"}, "length": int(ft["shape"][0]), "_type": "List"}


def _frames_table(features: dict[str, dict[str, Any]], columns: dict[str, Any]):
    """An episode's rows for data/*.parquet: the non-video features, in the features' order."""
    pa, _ = _pyarrow()
    arrays, fields, hf_features = [], [], {}
    for key, ft in features.items():
        if ft["dtype"] == "video":
            continue
        values = columns[key]
        if ft["dtype"] == "image":
            array = pa.array(
                [{"bytes": png, "path": f"frame-{i:06d}.png"} for i, png in enumerate(values)],
                type=pa.struct([("bytes", pa.binary()), ("path", pa.string())]),
            )
        elif list(ft["shape"]) == [1]:  # LeRobot stores shape (1,) as a scalar column, even for a 1-joint state
            array = pa.array(np.asarray(values, dtype=ft["dtype"]).reshape(-1))
        else:
            width = int(ft["shape"][0])
            flat = pa.array(np.ascontiguousarray(values, dtype=ft["dtype"]).reshape(-1))
            array = pa.FixedSizeListArray.from_arrays(flat, type=pa.list_(pa.field("element", flat.type), width))
        arrays.append(array)
        fields.append(pa.field(key, array.type))
        hf_features[key] = _hf_feature(ft)
    metadata = {b"huggingface": json.dumps({"info": {"features": hf_features}}).encode()}
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields, metadata=metadata))


def _tasks_table(tasks: Sequence[str]):
    """meta/tasks.parquet as pandas writes a frame indexed by task (what LeRobot reads with pd.read_parquet)."""
    pa, _ = _pyarrow()
    pandas_metadata = {
        "index_columns": ["task"],
        "column_indexes": [
            {
                "name": None,
                "field_name": None,
                "pandas_type": "unicode",
                "numpy_type": "object",
                "metadata": {"encoding": "UTF-8"},
            }
        ],
        "columns": [
            {
                "name": "task_index",
                "field_name": "task_index",
                "pandas_type": "int64",
                "numpy_type": "int64",
                "metadata": None,
            },
            {"name": "task", "field_name": "task", "pandas_type": "unicode", "numpy_type": "object", "metadata": None},
        ],
        "attributes": {},
        "creator": {"library": "pyarrow", "version": pa.__version__},
        "pandas_version": "2.2.0",
    }
    schema = pa.schema(
        [("task_index", pa.int64()), ("task", pa.string())], metadata={b"pandas": json.dumps(pandas_metadata).encode()}
    )
    return pa.Table.from_arrays(
        [pa.array(range(len(tasks)), pa.int64()), pa.array(list(tasks), pa.string())], schema=schema
    )


def _read_tasks(root: Path) -> list[str]:
    """Task strings by task_index, whatever the index column is called (task, __index_level_0__)."""
    _, pq = _pyarrow()
    table = pq.read_table(root / TASKS_PATH)
    names = table.column_names
    index_columns = json.loads((table.schema.metadata or {}).get(b"pandas", b"{}")).get("index_columns", [])
    candidates = [c for c in index_columns if isinstance(c, str)] + ["task", "__index_level_0__"]
    column = next((c for c in candidates if c in names and c != "task_index"), None)
    if column is None or "task_index" not in names:
        raise DatasetError(f"{root / TASKS_PATH}: expected columns task and task_index, found {names}")
    tasks: dict[int, str] = dict(
        zip(table.column("task_index").to_pylist(), table.column(column).to_pylist(), strict=True)
    )
    return [tasks[i] for i in sorted(tasks)]


def _episode_files(root: Path) -> list[Path]:
    return sorted((root / EPISODES_DIR).glob("chunk-*/file-*.parquet"))


def _read_episode_rows(root: Path, *, with_stats: bool) -> list[dict[str, Any]]:
    """All rows of meta/episodes, sorted by episode_index; `_file` says which file each row came from."""
    _, pq = _pyarrow()
    rows = []
    for path in _episode_files(root):
        names = pq.read_schema(path).names
        columns = names if with_stats else [n for n in names if not n.startswith("stats/")]
        for row in pq.read_table(path, columns=columns).to_pylist():
            row["_file"] = path
            rows.append(row)
    rows.sort(key=lambda row: row["episode_index"])
    return rows


def _episode_rows_table(rows: Sequence[dict[str, Any]]):
    pa, _ = _pyarrow()
    return pa.Table.from_pylist([{k: v for k, v in row.items() if k != "_file"} for row in rows])
