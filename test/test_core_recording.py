"""EpisodeRecorder across threads: a frame that a timer thread began before stop() never lands in a saved episode
half-way (the DDS recorder test once saved 20 states beside 21 frame indices on a loaded machine)."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import numpy as np

from vla_ros.core.embodiment import load_embodiment
from vla_ros.core.recording import EpisodeRecorder


class SlowWriter:
    """Counts frames per episode; saving takes a while, as encoding the videos does; flags a frame during a save."""

    def __init__(self):
        self.frames, self.saved, self.saving, self.frames_during_save = 0, [], False, 0

    def start_episode(self, task: str) -> None:
        self.frames = 0

    def add_frame(self, state, action, images) -> None:
        self.frames_during_save += self.saving
        self.frames += 1

    def save_episode(self) -> int:
        self.saving = True
        length = self.frames
        time.sleep(0.1)
        self.saved.append((length, self.frames))  # (frames when the save began, when it ended)
        self.saving = False
        return len(self.saved) - 1

    def discard_episode(self) -> None:
        self.frames = 0


def test_a_tick_that_began_before_stop_finishes_before_the_episode_is_saved():
    so101 = load_embodiment("so101")
    sizes = {camera.name: (8, 8) for camera in so101.cameras}
    writer = SlowWriter()
    recorder = EpisodeRecorder(so101, writer, image_sizes=sizes)
    observation = SimpleNamespace(joint_positions=np.zeros(len(so101.joint_names)),
                                  images={name: np.zeros((*size, 3), np.uint8) for name, size in sizes.items()})
    in_tick = threading.Event()

    def slow_inputs(now):  # the tick has passed its "recording?" check and is assembling the frame
        in_tick.set()
        time.sleep(0.1)
        return observation, ""

    recorder._frame_inputs = slow_inputs
    recorder.start("touch the red cube")
    assert recorder.tick(0.0)  # one frame before the race
    in_tick.clear()
    ticker = threading.Thread(target=recorder.tick, args=(0.1,))
    ticker.start()
    assert in_tick.wait(2.0)
    assert recorder.stop() == 0  # while the tick is still assembling its frame
    ticker.join()
    assert writer.frames_during_save == 0
    assert writer.saved == [(2, 2)]  # the tick's frame went in before the save began, and nothing during it
    assert not recorder.tick(0.2)  # stopped: later ticks write nothing
    assert writer.frames == 2
