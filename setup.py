"""pip install path of vla_ros (colcon builds the same package through CMakeLists.txt)."""

from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).parent


def data_files(folder: str) -> list[tuple[str, list[str]]]:
    """Install a top-level folder under share/vla_ros/ the way ROS expects to find it."""
    entries = []
    for directory in sorted({p.parent for p in (ROOT / folder).rglob("*") if p.is_file()}):
        files = [str(p.relative_to(ROOT)) for p in sorted(directory.iterdir()) if p.is_file()]
        entries.append((f"share/vla_ros/{directory.relative_to(ROOT)}", files))
    return entries


setup(
    name="vla_ros",
    version="0.1.0",
    description="Drive ROS 2 robot arms with Vision-Language-Action policies",
    long_description=(ROOT / "README.md").read_text(encoding="utf-8") if (ROOT / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10,<3.13",
    packages=find_packages(include=["vla_ros", "vla_ros.*"]),
    package_data={
        "vla_ros.sim": ["assets/*.xml"],
        "vla_ros.policies.builtin": ["checkpoint/*", "checkpoint/*/*", "generalist/*", "generalist/*/*"],  # shipped weights
    },
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/vla_ros"]),
        ("share/vla_ros", ["package.xml"]),
        *data_files("config"),
        *data_files("launch"),
        *data_files("msg"),  # the pip-only DDS backend builds vla_ros/msg types from them
    ],
    install_requires=[
        "numpy>=1.24",
        "PyYAML>=6.0",
        "opencv-python-headless>=4.8",
    ],
    extras_require={
        # The simulator, demo video and plots.
        "sim": ["mujoco>=3.2", "imageio>=2.31", "imageio-ffmpeg>=0.4.9", "matplotlib>=3.7", "tqdm>=4.66"],
        # Learned policies (built-in VLA, SmolVLA, pi0). Install torch==2.13.0 (or your CUDA build) BEFORE this
        # extra: left to itself, pip would resolve `torch` to the newest multi-GB CUDA build.
        "policies": ["torch>=2.4", "transformers>=5.4,<6", "safetensors>=0.4", "tokenizers>=0.20"],
        # The pip-only ROS 2 backend (vla-ros run/sim without a ROS install): Cyclone DDS and message definitions.
        "dds": ["cyclonedds>=0.10.5", "rosbags>=0.10"],
        # LeRobot v3 datasets (recording demonstrations, fine-tuning): parquet, AV1/H.264 video, PNG frames.
        "datasets": ["pyarrow>=16", "imageio-ffmpeg>=0.4.9", "pillow>=9.1"],
        # Remote policies: `vla-ros serve` and ws://, gr00t:// and openvla+http:// specs (openpi's websocket protocol,
        # Isaac-GR00T's ZMQ protocol; OpenVLA's HTTP needs nothing more).
        "remote": ["websockets>=15.0", "msgpack>=1.0", "pyzmq>=25"],
        # test/test_remote_policy.py also uses `openpi-client`; install it with `pip install --no-deps
        # openpi-client`: it pins numpy<2, which would downgrade numpy; its client and codec need only websockets,
        # msgpack, numpy and typing_extensions (dm-tree and pillow serve its other helpers).
        "test": ["pytest>=7.4", "hypothesis>=6.90", "websockets>=15.0", "msgpack>=1.0", "pyzmq>=25"],
        "dev": ["ruff>=0.5"],
    },
    entry_points={"console_scripts": ["vla-ros = vla_ros.cli.main:main"]},
)
