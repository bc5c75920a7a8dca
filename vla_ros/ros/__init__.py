"""The ROS 2 side: message conversion (`convert`, importable without rclpy) and the rclpy nodes (`sim_node`, ...)."""
