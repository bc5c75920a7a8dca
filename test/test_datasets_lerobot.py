"""LeRobot v3.0 datasets: recording, reading back, crash safety, resuming and validation.

Every test writes real files under tmp_path and encodes and decodes real mp4 files with ffmpeg. Frames carry
values distinct per episode and per frame, so that order and indexing errors show; images are flat colours or
gentle gradients, which lossy video keeps within a few levels.
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pyarrow", reason="LeRobot datasets need the 'datasets' extra (pyarrow)")
pytest.importorskip("imageio_ffmpeg", reason="LeRobot dataset videos need the 'datasets' extra (imageio-ffmpeg)")

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from vla_ros.core.errors import VlaRosError  # noqa: E402
from vla_ros.datasets import (  # noqa: E402
    DatasetError,
    LeRobotDatasetWriter,
    read_dataset,
    validate_dataset,
)
from vla_ros.datasets import lerobot as lerobot_module  # noqa: E402
from vla_ros.datasets.lerobot import durable as lerobot_files  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
FPS = 10
JOINTS = ["shoulder", "elbow", "wrist"]
CAMERAS = {"front": (48, 64), "wrist": (32, 32)}
EPISODES = [("pick up the cube", 12), ("place the cube", 7), ("pick up the cube", 9)]  # task reused: one task_index
MAX_CODEC_ERROR = 3.0  # mean absolute error, in levels, that lossy video may add


def state_for(episode: int, frame: int) -> np.ndarray:
    return np.array([100 * episode + frame, 0.5 + frame, -episode - 0.25 * frame], dtype=np.float32)


def action_for(episode: int, frame: int) -> np.ndarray:
    return np.array([-100 * episode - frame, 2.0 * frame, 10 + episode], dtype=np.float32)


def images_for(episode: int, frame: int) -> dict[str, np.ndarray]:
    front = np.empty((*CAMERAS["front"], 3), dtype=np.uint8)
    front[:] = np.array([30 + 40 * episode + 9 * frame, 100 + 5 * frame, 200 - 6 * frame]) % 256  # flat colour
    ramp = 20 + 2 * np.arange(CAMERAS["wrist"][1]) + 6 * frame + 15 * episode  # gentle horizontal gradient
    wrist = np.empty((*CAMERAS["wrist"], 3), dtype=np.uint8)
    wrist[:] = (ramp[:, None] + [0, 20, 40])[None] % 256  # mostly brightness: yuv420p keeps colour at half resolution
    return {"front": front, "wrist": wrist}


def make_writer(root: Path, **overrides) -> LeRobotDatasetWriter:
    arguments = dict(fps=FPS, robot_type="test_arm", state_names=JOINTS, action_names=JOINTS, cameras=CAMERAS)
    arguments.update(overrides)
    return LeRobotDatasetWriter(root, **arguments)


def record(writer: LeRobotDatasetWriter, episode: int, task: str, length: int) -> int:
    writer.start_episode(task)
    for frame in range(length):
        writer.add_frame(state_for(episode, frame), action_for(episode, frame), images_for(episode, frame))
    return writer.save_episode()


def write_dataset(root: Path, episodes=EPISODES, **overrides) -> Path:
    with make_writer(root, **overrides) as writer:
        for episode, (task, length) in enumerate(episodes):
            assert record(writer, episode, task, length) == episode
    return root


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """The three-episode video dataset, written once; tests that alter it work on a copy."""
    return write_dataset(tmp_path_factory.mktemp("lerobot") / "demo")


@pytest.fixture
def dataset_copy(dataset, tmp_path) -> Path:
    return Path(shutil.copytree(dataset, tmp_path / "copy"))


def assert_episodes_read_back(root: Path, episodes=EPISODES, *, exact_images: bool = False) -> None:
    reader = read_dataset(root)
    assert reader.num_episodes == len(episodes)
    assert reader.num_frames == sum(length for _, length in episodes)
    assert reader.tasks == list(dict.fromkeys(task for task, _ in episodes))
    for index, (task, length) in enumerate(episodes):
        episode = reader.episode(index)
        assert episode.task == task and reader.episodes[index].task == task
        assert len(episode) == length
        np.testing.assert_array_equal(episode.state, [state_for(index, f) for f in range(length)])
        np.testing.assert_array_equal(episode.action, [action_for(index, f) for f in range(length)])
        np.testing.assert_array_equal(episode.timestamp, np.arange(length, dtype=np.float32) / np.float32(FPS))
        np.testing.assert_array_equal(episode.frame_index, np.arange(length))
        np.testing.assert_array_equal(episode.task_index, reader.tasks.index(task))
        for camera in CAMERAS:
            frames = reader.episode_frames(index, camera)
            assert frames.shape == (length, *CAMERAS[camera], 3) and frames.dtype == np.uint8
            for f in range(length):
                expected = images_for(index, f)[camera]
                if exact_images:
                    np.testing.assert_array_equal(frames[f], expected)
                else:
                    error = np.abs(frames[f].astype(float) - expected).mean()
                    assert error < MAX_CODEC_ERROR, f"episode {index} {camera} frame {f}: error {error:.2f}"


# --------------------------------------------------------------------------------------------------------------
# Round trip and layout


def test_episodes_read_back_exactly_and_images_within_codec_error(dataset):
    assert_episodes_read_back(dataset)


def test_frames_by_global_index_match_their_episode(dataset):
    reader = read_dataset(dataset)
    expected = {0: (0, 0), 11: (0, 11), 12: (1, 0), 18: (1, 6), 19: (2, 0), 27: (2, 8)}  # episode boundaries
    for index, (episode, frame) in expected.items():
        item = reader[index]
        assert (item["index"], item["episode_index"], item["frame_index"]) == (index, episode, frame)
        assert item["task"] == EPISODES[episode][0]
        assert item["timestamp"] == np.float32(frame / FPS)
        np.testing.assert_array_equal(item["observation.state"], state_for(episode, frame))
        np.testing.assert_array_equal(item["action"], action_for(episode, frame))
        for camera in CAMERAS:
            error = np.abs(item[f"observation.images.{camera}"].astype(float) - images_for(episode, frame)[camera])
            assert error.mean() < MAX_CODEC_ERROR
    with pytest.raises(IndexError):
        reader[reader.num_frames]


def test_episode_frames_can_be_resized(dataset):
    frames = read_dataset(dataset).episode_frames(1, "observation.images.front", size=(24, 32))
    assert frames.shape == (7, 24, 32, 3)
    expected = images_for(1, 3)["front"][0, 0]  # flat colour: resizing keeps it
    assert np.abs(frames[3].astype(float) - expected).mean() < MAX_CODEC_ERROR


def test_info_json_follows_lerobot_v3(dataset):
    info = json.loads((dataset / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0"
    assert info["robot_type"] == "test_arm" and info["fps"] == FPS
    assert (info["total_episodes"], info["total_frames"], info["total_tasks"]) == (3, 28, 2)
    assert info["chunks_size"] == 1000
    assert info["data_files_size_in_mb"] == 100 and info["video_files_size_in_mb"] == 200
    assert info["splits"] == {"train": "0:3"}
    assert info["data_path"] == "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
    assert info["video_path"] == "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
    features = info["features"]
    assert list(features) == ["action", "observation.state", "observation.images.front", "observation.images.wrist",
                              "timestamp", "frame_index", "episode_index", "index", "task_index"]
    for key in ("action", "observation.state"):
        assert features[key] == {"dtype": "float32", "shape": [3], "names": JOINTS}
    for key in ("timestamp", "frame_index", "episode_index", "index", "task_index"):
        assert features[key] == {"dtype": "float32" if key == "timestamp" else "int64", "shape": [1], "names": None}
    front = features["observation.images.front"]
    assert front["dtype"] == "video" and front["shape"] == [48, 64, 3]
    assert front["names"] == ["height", "width", "channels"]
    assert front["info"]["video.codec"] in ("av1", "h264")
    assert front["info"] | {"video.codec": None} == {
        "video.height": 48, "video.width": 64, "video.codec": None, "video.pix_fmt": "yuv420p",
        "video.is_depth_map": False, "video.fps": FPS, "video.channels": 3, "has_audio": False,
    }


def test_files_and_columns_follow_lerobot_v3(dataset):
    for episode in range(3):
        assert (dataset / f"data/chunk-000/file-{episode:03d}.parquet").is_file()
        for camera in CAMERAS:
            assert (dataset / f"videos/observation.images.{camera}/chunk-000/file-{episode:03d}.mp4").is_file()
    assert not (dataset / ".vla_ros_tmp").exists()  # close() removes the recorder's scratch folder

    data = pq.read_table(dataset / "data/chunk-000/file-001.parquet")
    assert data.schema.names == ["action", "observation.state", "timestamp", "frame_index", "episode_index", "index",
                                 "task_index"]
    assert data.schema.field("action").type == pa.list_(pa.field("element", pa.float32()), 3)
    assert data.schema.field("timestamp").type == pa.float32()
    assert data.column("index").to_pylist() == list(range(12, 19))
    assert data.column("task_index").to_pylist() == [1] * 7
    assert b"huggingface" in data.schema.metadata

    tasks = pq.read_table(dataset / "meta/tasks.parquet")
    assert tasks.to_pylist() == [{"task_index": 0, "task": "pick up the cube"},
                                 {"task_index": 1, "task": "place the cube"}]
    assert json.loads(tasks.schema.metadata[b"pandas"])["index_columns"] == ["task"]  # LeRobot reads it with pandas

    episodes = pq.read_table(dataset / "meta/episodes/chunk-000/file-000.parquet")
    rows = episodes.to_pylist()
    assert [row["episode_index"] for row in rows] == [0, 1, 2]
    assert [row["tasks"] for row in rows] == [[task] for task, _ in EPISODES]
    assert [(row["dataset_from_index"], row["dataset_to_index"], row["length"]) for row in rows] == [
        (0, 12, 12), (12, 19, 7), (19, 28, 9)]
    assert [(row["data/chunk_index"], row["data/file_index"]) for row in rows] == [(0, 0), (0, 1), (0, 2)]
    for row in rows:
        assert (row["meta/episodes/chunk_index"], row["meta/episodes/file_index"]) == (0, 0)
        for camera in CAMERAS:
            key = f"videos/observation.images.{camera}"
            assert (row[f"{key}/chunk_index"], row[f"{key}/file_index"]) == (0, row["episode_index"])
            assert row[f"{key}/from_timestamp"] == 0.0 and row[f"{key}/to_timestamp"] == row["length"] / FPS
    assert episodes.schema.field("tasks").type == pa.list_(pa.string())
    assert episodes.schema.field("videos/observation.images.front/from_timestamp").type == pa.float64()
    stat_columns = {name for name in episodes.schema.names if name.startswith("stats/")}
    assert len(stat_columns) == 9 * 10  # 9 features x (min, max, mean, std, count, 5 quantiles)
    assert episodes.schema.field("stats/frame_index/min").type == pa.list_(pa.int64())  # keeps the feature dtype
    assert episodes.schema.field("stats/observation.images.front/mean").type == pa.list_(pa.list_(pa.list_(
        pa.float64())))


# --------------------------------------------------------------------------------------------------------------
# Statistics


def all_values(function, episodes=EPISODES) -> np.ndarray:
    return np.concatenate([[function(e, f) for f in range(n)] for e, (_, n) in enumerate(episodes)]).astype(float)


def test_stats_json_matches_numpy_over_all_frames(dataset):
    stats = json.loads((dataset / "meta/stats.json").read_text())
    for key, function in (("observation.state", state_for), ("action", action_for)):
        values = all_values(function)
        np.testing.assert_allclose(stats[key]["min"], values.min(axis=0))
        np.testing.assert_allclose(stats[key]["max"], values.max(axis=0))
        np.testing.assert_allclose(stats[key]["mean"], values.mean(axis=0), rtol=1e-9)
        np.testing.assert_allclose(stats[key]["std"], values.std(axis=0), rtol=1e-9)
        assert stats[key]["count"] == [28]
    timestamps = np.concatenate([np.arange(n, dtype=np.float32) / np.float32(FPS) for _, n in EPISODES])
    np.testing.assert_allclose(stats["timestamp"]["mean"], [timestamps.astype(float).mean()], rtol=1e-9)
    assert stats["index"]["min"] == [0] and stats["index"]["max"] == [27]
    assert stats["task_index"]["mean"] == pytest.approx([(12 * 0 + 7 * 1 + 9 * 0) / 28])
    for camera in CAMERAS:
        pixels = np.concatenate([
            np.stack([images_for(e, f)[camera] for f in range(n)]).reshape(-1, 3) for e, (_, n) in enumerate(EPISODES)
        ]).astype(float) / 255
        camera_stats = stats[f"observation.images.{camera}"]
        for name, expected in (("min", pixels.min(0)), ("max", pixels.max(0)), ("mean", pixels.mean(0)),
                               ("std", pixels.std(0))):
            assert np.shape(camera_stats[name]) == (3, 1, 1)
            np.testing.assert_allclose(np.ravel(camera_stats[name]), expected, rtol=1e-9, atol=1e-12)
        assert camera_stats["count"] == [28]  # frames


def test_episode_stats_are_exact_and_quantiles_aggregate_by_count(dataset):
    rows = pq.read_table(dataset / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    stats = json.loads((dataset / "meta/stats.json").read_text())
    for episode, (_, length) in enumerate(EPISODES):
        states = np.array([state_for(episode, f) for f in range(length)], dtype=float)
        row = rows[episode]
        for name, q in lerobot_module.QUANTILES.items():
            np.testing.assert_allclose(row[f"stats/observation.state/{name}"], np.quantile(states, q, axis=0))
        pixels = np.stack([images_for(episode, f)["wrist"] for f in range(length)]).reshape(-1, 3).astype(float)
        for name, q in lerobot_module.QUANTILES.items():
            np.testing.assert_allclose(np.ravel(row[f"stats/observation.images.wrist/{name}"]),
                                       np.quantile(pixels, q, axis=0) / 255, atol=1e-12)
        assert row["stats/observation.state/count"] == [length]
    lengths = np.array([n for _, n in EPISODES], dtype=float)
    for name in lerobot_module.QUANTILES:
        per_episode = np.array([row[f"stats/action/{name}"] for row in rows])
        np.testing.assert_allclose(stats["action"][name], (per_episode * lengths[:, None]).sum(0) / lengths.sum())


# --------------------------------------------------------------------------------------------------------------
# Discarding, resuming, crashes


def test_discard_drops_the_episode_in_progress(tmp_path):
    root = tmp_path / "demo"
    with make_writer(root) as writer:
        writer.start_episode("a bad attempt")
        for frame in range(5):
            writer.add_frame(state_for(9, frame), action_for(9, frame), images_for(9, frame))
        assert writer.frames_in_episode == 5
        writer.discard_episode()
        writer.discard_episode()  # nothing in progress: no-op
        assert not writer.episode_in_progress
        assert [p.name for p in (root / ".vla_ros_tmp").iterdir()] == ["lock"]  # the partial videos are gone
        assert record(writer, 0, *EPISODES[0]) == 0
    assert_episodes_read_back(root, EPISODES[:1])
    assert read_dataset(root).tasks == ["pick up the cube"]  # the discarded episode's task was never stored


def test_reopening_appends_episodes(tmp_path):
    root = write_dataset(tmp_path / "demo", EPISODES[:2])
    with make_writer(root) as writer:
        assert (writer.num_episodes, writer.num_frames) == (2, 19)
        assert record(writer, 2, *EPISODES[2]) == 2
    assert_episodes_read_back(root)
    validate_dataset(root, joint_names=JOINTS, camera_keys=list(CAMERAS))
    # the second session writes its episode rows to a new file, as LeRobot does when it resumes
    assert (root / "meta/episodes/chunk-000/file-001.parquet").is_file()
    stats = json.loads((root / "meta/stats.json").read_text())
    np.testing.assert_allclose(stats["observation.state"]["std"], all_values(state_for).std(axis=0), rtol=1e-9)


@pytest.mark.parametrize(("change", "message"), [
    ({"fps": 15}, "fps: dataset 10, recorder 15"),
    ({"robot_type": "other_arm"}, "robot_type: dataset 'test_arm', recorder 'other_arm'"),
    ({"state_names": ["shoulder", "elbow", "wrist_roll"]}, "observation.state names"),
    ({"cameras": {"front": (48, 64)}}, "the dataset has a feature observation.images.wrist this recorder does not"),
    ({"cameras": {**CAMERAS, "front": (96, 128)}}, "observation.images.front shape: dataset [48, 64, 3]"),
    ({"video": False}, "observation.images.front dtype: dataset video, recorder image"),
])
def test_reopening_with_other_settings_is_refused(dataset_copy, change, message):
    with pytest.raises(DatasetError, match="cannot append") as error:
        make_writer(dataset_copy, **change)
    assert message in str(error.value)


def test_a_dropped_writer_loses_only_the_episode_in_progress(tmp_path):
    root = write_dataset(tmp_path / "demo", EPISODES[:2])
    writer = make_writer(root)
    writer.start_episode("interrupted")
    for frame in range(4):
        writer.add_frame(state_for(7, frame), action_for(7, frame), images_for(7, frame))
    del writer  # as if the recorder died: no save_episode(), no close()
    gc.collect()
    validate_dataset(root, joint_names=JOINTS, camera_keys=list(CAMERAS))
    assert_episodes_read_back(root, EPISODES[:2])
    with make_writer(root) as writer:
        assert record(writer, 2, *EPISODES[2]) == 2
    assert_episodes_read_back(root)


def test_a_killed_recorder_process_loses_only_the_episode_in_progress(tmp_path):
    root = write_dataset(tmp_path / "demo", EPISODES[:2])
    script = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {str(REPO / "test")!r})
        import test_datasets_lerobot as t
        writer = t.make_writer(t.Path({str(root)!r}))
        writer.start_episode("interrupted")
        for frame in range(6):
            writer.add_frame(t.state_for(7, frame), t.action_for(7, frame), t.images_for(7, frame))
        os._exit(1)  # no cleanup at all, as on SIGKILL
    """)
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-c", script], env=environment, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 1, result.stderr
    validate_dataset(root, joint_names=JOINTS, camera_keys=list(CAMERAS))
    assert_episodes_read_back(root, EPISODES[:2])
    with make_writer(root) as writer:  # the lock died with the process
        assert record(writer, 2, *EPISODES[2]) == 2
    assert_episodes_read_back(root)


@pytest.mark.parametrize("failing_file", ["file-002.parquet", "tasks.parquet", "episodes", "stats.json",
                                          "info.json"])
def test_a_save_interrupted_at_any_file_leaves_the_saved_episodes(tmp_path, monkeypatch, failing_file):
    episodes = [EPISODES[0], EPISODES[1], ("a third task", 5)]  # a new task: tasks.parquet is written too
    root = write_dataset(tmp_path / "demo", episodes[:2])
    writer = make_writer(root)
    real_write = lerobot_files._write_atomically

    def crash_at(path, write):
        if failing_file in str(path):
            raise OSError(f"simulated crash while writing {path}")
        real_write(path, write)

    monkeypatch.setattr(lerobot_files, "_write_atomically", crash_at)
    with pytest.raises(OSError, match="simulated crash"):
        record(writer, 2, *episodes[2])
    monkeypatch.undo()
    del writer
    gc.collect()

    validate_dataset(root, joint_names=JOINTS, camera_keys=list(CAMERAS))  # the two saved episodes, as before
    assert_episodes_read_back(root, episodes[:2])
    with make_writer(root) as writer:  # re-opening removes the leftovers, then appends
        assert writer.num_episodes == 2
        assert record(writer, 2, *episodes[2]) == 2
    assert_episodes_read_back(root, episodes)
    validate_dataset(root)
    stats = json.loads((root / "meta/stats.json").read_text())
    assert stats["action"]["count"] == [24]
    np.testing.assert_allclose(stats["action"]["mean"], all_values(action_for, episodes).mean(axis=0), rtol=1e-9)


def test_a_second_writer_on_the_same_dataset_is_refused(tmp_path):
    with make_writer(tmp_path / "demo"), pytest.raises(DatasetError, match="another recorder"):
        make_writer(tmp_path / "demo")


# --------------------------------------------------------------------------------------------------------------
# Frames the writer refuses


def test_add_frame_rejects_what_the_dataset_cannot_hold(tmp_path):
    with make_writer(tmp_path / "demo") as writer:
        with pytest.raises(DatasetError, match="before start_episode"):
            writer.add_frame(state_for(0, 0), action_for(0, 0), images_for(0, 0))
        with pytest.raises(DatasetError, match="without an episode"):
            writer.save_episode()
        writer.start_episode("task")
        with pytest.raises(DatasetError, match="already being recorded"):
            writer.start_episode("task")
        with pytest.raises(DatasetError, match="has no frames"):
            writer.save_episode()
        images = images_for(0, 0)
        with pytest.raises(DatasetError, match=r"state has shape \(2,\), the dataset's state has 3 values"):
            writer.add_frame(np.zeros(2), action_for(0, 0), images)
        with pytest.raises(DatasetError, match="non-finite"):
            writer.add_frame(state_for(0, 0), np.array([0, np.nan, 0]), images)
        with pytest.raises(DatasetError, match=r"images for cameras \['front'\], the dataset has \['front', 'wrist'\]"):
            writer.add_frame(state_for(0, 0), action_for(0, 0), {"front": images["front"]})
        with pytest.raises(DatasetError, match=r"camera 'wrist': image is float64 \(32, 32, 3\), expected uint8"):
            writer.add_frame(state_for(0, 0), action_for(0, 0), {**images, "wrist": images["wrist"] / 255.0})
        with pytest.raises(DatasetError, match="expected uint8 \\(48, 64, 3\\)"):
            writer.add_frame(state_for(0, 0), action_for(0, 0), {**images, "front": images["front"][:40]})
        writer.add_frame(state_for(0, 0), action_for(0, 0), images, timestamp=0.0)
        writer.add_frame(state_for(0, 1), action_for(0, 1), images_for(0, 1), timestamp=0.1)  # k / fps: accepted
        with pytest.raises(DatasetError, match="video frame 2 is shown at 0.200000 s"):
            writer.add_frame(state_for(0, 2), action_for(0, 2), images_for(0, 2), timestamp=0.23)
        with pytest.raises(DatasetError, match="is not after the previous frame"):
            writer.add_frame(state_for(0, 2), action_for(0, 2), images_for(0, 2), timestamp=0.1)
        assert writer.frames_in_episode == 2  # refused frames left nothing behind
        assert writer.save_episode() == 0
    assert read_dataset(tmp_path / "demo").episode(0).timestamp.tolist() == pytest.approx([0.0, 0.1])


def test_constructor_rejects_bad_settings(tmp_path):
    with pytest.raises(DatasetError, match="fps must be a positive integer"):
        make_writer(tmp_path / "a", fps=7.5)
    with pytest.raises(DatasetError, match="duplicates"):
        make_writer(tmp_path / "b", state_names=["a", "a"])
    with pytest.raises(DatasetError, match="short name"):
        make_writer(tmp_path / "c", cameras={"observation.images.front": (48, 64)})
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "notes.txt").write_text("not a dataset")
    with pytest.raises(DatasetError, match="is not empty and has no meta/info.json"):
        make_writer(tmp_path / "d")


def test_a_single_joint_is_a_scalar_column_as_in_lerobot(tmp_path):
    root = tmp_path / "gripper"
    with LeRobotDatasetWriter(root, fps=FPS, robot_type="gripper", state_names=["finger"], action_names=["finger"],
                              cameras={}) as writer:
        writer.start_episode("close")
        for frame in range(4):
            writer.add_frame(np.array([0.1 * frame]), np.array([-0.1 * frame]), {})
        writer.save_episode()
    assert pq.read_schema(root / "data/chunk-000/file-000.parquet").field("observation.state").type == pa.float32()
    assert json.loads((root / "meta/info.json").read_text())["video_path"] is None
    validate_dataset(root, joint_names=["finger"])
    episode = read_dataset(root).episode(0)
    assert episode.state.shape == (4, 1)
    np.testing.assert_allclose(episode.action[:, 0], [0, -0.1, -0.2, -0.3], rtol=1e-6)


# --------------------------------------------------------------------------------------------------------------
# Images inside the parquet files (LeRobot's "image" features)


def test_image_features_round_trip_losslessly(tmp_path):
    root = write_dataset(tmp_path / "demo", video=False)
    info = json.loads((root / "meta/info.json").read_text())
    assert info["video_path"] is None
    assert info["features"]["observation.images.front"] == {
        "dtype": "image", "shape": [48, 64, 3], "names": ["height", "width", "channels"]}
    assert not (root / "videos").exists()
    schema = pq.read_schema(root / "data/chunk-000/file-000.parquet")
    assert schema.field("observation.images.wrist").type == pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    episode_columns = pq.read_schema(root / "meta/episodes/chunk-000/file-000.parquet").names
    assert not any(name.startswith("videos/") for name in episode_columns)
    validate_dataset(root, joint_names=JOINTS, camera_keys=list(CAMERAS))
    assert_episodes_read_back(root, exact_images=True)
    reader = read_dataset(root)
    np.testing.assert_array_equal(reader[13]["observation.images.front"], images_for(1, 1)["front"])


# --------------------------------------------------------------------------------------------------------------
# Validation


def rewrite_parquet(path: Path, edit) -> None:
    table = pq.read_table(path)
    pq.write_table(edit(table), path)


def set_episode_length_zero(root: Path) -> None:
    def edit(table):
        rows = table.to_pylist()
        rows[1]["length"] = 0
        rows[1]["dataset_to_index"] = rows[1]["dataset_from_index"]
        return pa.Table.from_pylist(rows, schema=table.schema)

    rewrite_parquet(root / "meta/episodes/chunk-000/file-000.parquet", edit)


def edit_info(root: Path, edit) -> None:
    path = root / "meta/info.json"
    info = json.loads(path.read_text())
    edit(info)
    path.write_text(json.dumps(info))


VALIDATION_CASES = {
    "no info.json": (lambda r: (r / "meta/info.json").unlink(), {}, "meta/info.json is missing"),
    "old format": (lambda r: edit_info(r, lambda i: i.update(codebase_version="v2.1")), {},
                   "codebase_version is 'v2.1', expected 'v3.0' (convert it with LeRobot's"),
    "info key missing": (lambda r: edit_info(r, lambda i: i.pop("fps")), {}, "meta/info.json lacks the keys fps"),
    "feature missing": (lambda r: edit_info(r, lambda i: i["features"].pop("action")), {},
                        "meta/info.json: features lack action"),
    "no tasks": (lambda r: (r / "meta/tasks.parquet").unlink(), {}, "meta/tasks.parquet is missing"),
    "no stats": (lambda r: (r / "meta/stats.json").unlink(), {}, "meta/stats.json is missing"),
    "no episodes": (lambda r: shutil.rmtree(r / "meta/episodes"), {},
                    "meta/episodes/chunk-*/file-*.parquet is missing (no episode metadata)"),
    "other joints": (lambda r: None, {"joint_names": ["shoulder", "elbow", "wrist_roll", "gripper"]},
                     "observation.state names do not match the robot's joints (robot joints missing from the "
                     "dataset: ['wrist_roll', 'gripper']; dataset names the robot does not have: ['wrist'])"),
    "joint order": (lambda r: None, {"joint_names": ["elbow", "shoulder", "wrist"]},
                    "action names the robot's joints in another order: dataset ['shoulder', 'elbow', 'wrist'], "
                    "robot ['elbow', 'shoulder', 'wrist']"),
    "camera missing": (lambda r: None, {"camera_keys": ["front", "top"]},
                       "camera observation.images.top is not in the dataset; it has observation.images.front, "
                       "observation.images.wrist"),
    "empty episode": (set_episode_length_zero, {}, "episode 1 is empty (length 0)"),
    "data file missing": (lambda r: (r / "data/chunk-000/file-001.parquet").unlink(), {},
                          "data file data/chunk-000/file-001.parquet (episode 1) is missing"),
    "data rows missing": (lambda r: rewrite_parquet(r / "data/chunk-000/file-001.parquet", lambda t: t.slice(0, 6)),
                          {}, "frame count mismatch: episode 1 has 6 rows in data/chunk-000/file-001.parquet, "
                              "meta/episodes says 7"),
    "video missing": (lambda r: (r / "videos/observation.images.wrist/chunk-000/file-002.mp4").unlink(), {},
                      "video file videos/observation.images.wrist/chunk-000/file-002.mp4 (episode 2, "
                      "observation.images.wrist) is missing"),
    "video too short": (lambda r: shutil.copy(r / "videos/observation.images.front/chunk-000/file-001.mp4",
                                              r / "videos/observation.images.front/chunk-000/file-000.mp4"), {},
                        "frame count mismatch: videos/observation.images.front/chunk-000/file-000.mp4 has 7 frames, "
                        "episode 0 (observation.images.front) needs frames 0..11"),
    "total frames": (lambda r: edit_info(r, lambda i: i.update(total_frames=30)), {},
                     "meta/info.json: total_frames is 30, the episodes have 28 frames"),
}


def test_a_recorded_dataset_validates(dataset):
    validate_dataset(dataset, joint_names=JOINTS, camera_keys=["front", "observation.images.wrist"])


@pytest.mark.parametrize("case", list(VALIDATION_CASES))
def test_validation_names_each_problem(dataset_copy, case):
    damage, arguments, message = VALIDATION_CASES[case]
    damage(dataset_copy)
    with pytest.raises(DatasetError) as error:
        validate_dataset(dataset_copy, **arguments)
    assert isinstance(error.value, VlaRosError)
    assert any(message in problem for problem in error.value.problems), error.value.problems
    assert message in str(error.value)


# --------------------------------------------------------------------------------------------------------------
# LeRobot itself (not a dependency of vla_ros: skipped unless it is installed with a working video decoder)


def test_lerobot_loads_the_dataset(dataset):
    lerobot_dataset = pytest.importorskip("lerobot.datasets.lerobot_dataset", reason="LeRobot is not installed")
    from lerobot.datasets.video_utils import get_safe_default_codec

    backend = get_safe_default_codec()
    try:  # LeRobot decodes video with torchcodec, or torchvision's PyAV backend
        __import__("torchcodec.decoders" if backend == "torchcodec" else "torchvision.io")
    except (ImportError, OSError) as exc:
        pytest.skip(f"LeRobot cannot decode video here ({backend}: {exc})")
    loaded = lerobot_dataset.LeRobotDataset(repo_id="local/test", root=dataset)
    item = loaded[13]
    assert (loaded.num_episodes, len(loaded)) == (3, 28)
    assert item["task"] == "place the cube"
    np.testing.assert_array_equal(item["observation.state"].numpy(), state_for(1, 1))
    front = (item["observation.images.front"].numpy().transpose(1, 2, 0) * 255).astype(float)
    assert np.abs(front - images_for(1, 1)["front"]).mean() < MAX_CODEC_ERROR
