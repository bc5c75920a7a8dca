"""`ros2 run vla_ros recorder_node`: demonstrations from a robot's topics into a LeRobot v3 dataset, on rclpy.

The topic logic is `RecorderCore` (shared with `vla-ros record` on pip-only DDS); this node adds parameters and
the services that start, stop and discard episodes, for a teleoperation GUI, a foot pedal or a script:

    ~/start    (std_srvs/Trigger)  start an episode of the current `instruction`
    ~/stop     (std_srvs/Trigger)  save it (the dataset on disk then holds it, whatever happens next)
    ~/discard  (std_srvs/Trigger)  drop it
Parameters: robot, out (dataset folder), instruction (settable at run time), leader_topic, image_height/width
(0: each camera's size in the robot config). Progress on ~/status (std_msgs/String, JSON) once a second.
"""

from __future__ import annotations

from rclpy.node import Node
from std_srvs.srv import Trigger

from vla_ros.core.embodiment import load_embodiment
from vla_ros.core.errors import VlaRosError
from vla_ros.core.recording import EpisodeRecorder
from vla_ros.datasets.lerobot import LeRobotDatasetWriter
from vla_ros.ros.backend import rclpy_backend
from vla_ros.ros.recorder_core import NODE_NAME, RecorderCore
from vla_ros.ros.spin import run_node


class RecorderNode(Node):
    def __init__(self, **kwargs):
        super().__init__(NODE_NAME, **kwargs)
        robot = self.declare_parameter("robot", "so101").value
        out = self.declare_parameter("out", "").value
        self.declare_parameter("instruction", "")
        leader_topic = self.declare_parameter("leader_topic", "").value
        height = self.declare_parameter("image_height", 0).value
        width = self.declare_parameter("image_width", 0).value
        if not out:
            raise VlaRosError("parameter 'out' (the dataset folder) is required")
        self.embodiment = embodiment = load_embodiment(robot)
        sizes = {c.name: (height or c.height, width or c.width) for c in embodiment.cameras}
        self.writer = LeRobotDatasetWriter(
            out, fps=round(1.0 / embodiment.control_period_s), robot_type=embodiment.robot,
            state_names=list(embodiment.joint_names), action_names=list(embodiment.joint_names), cameras=sizes)
        self.recorder = EpisodeRecorder(embodiment, self.writer, image_sizes=sizes)
        self.core = RecorderCore(self, rclpy_backend(), embodiment, self.recorder, leader_topic=leader_topic)
        self.create_service(Trigger, "~/start", self._on_start)
        self.create_service(Trigger, "~/stop", self._on_stop)
        self.create_service(Trigger, "~/discard", self._on_discard)
        self.get_logger().info(f"recording {embodiment.robot} into {out}; action from {self.core.action_source}; "
                               "call ~/start, ~/stop, ~/discard")

    def _answer(self, response, action) -> Trigger.Response:
        try:
            response.message = action()
            response.success = True
        except VlaRosError as exc:
            response.success, response.message = False, str(exc)
        return response

    def _on_start(self, request, response):
        def start() -> str:
            instruction = self.get_parameter("instruction").value
            self.recorder.start(instruction)
            return f"recording '{instruction}'"
        return self._answer(response, start)

    def _on_stop(self, request, response):
        def stop() -> str:
            frames = self.recorder.status().frames
            index = self.recorder.stop()
            return f"episode {index} saved ({frames} frames)" if index is not None else "no frame recorded: not saved"
        return self._answer(response, stop)

    def _on_discard(self, request, response):
        return self._answer(response, lambda: self.recorder.discard() or "episode discarded")

    def destroy_node(self) -> None:
        if self.recorder.status().recording:
            self.recorder.discard()  # an episode cut short is not a demonstration
        self.writer.close()
        super().destroy_node()


def main(args: list[str] | None = None) -> None:
    run_node(RecorderNode, NODE_NAME, args=args)


if __name__ == "__main__":
    main()
