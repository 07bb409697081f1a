"""launch_testing: `ros2 launch lapo_ros record.launch.py` starts the recorder, which offers its
services and exits cleanly on shutdown. Runs where launch_testing (and the installed package) is.
"""
import os
import tempfile
import unittest

import pytest

launch_testing = pytest.importorskip("launch_testing", reason="launch_testing is not installed here")

import launch  # noqa: E402
import launch_testing.actions  # noqa: E402
import launch_testing.asserts  # noqa: E402
import rclpy  # noqa: E402
from ament_index_python.packages import get_package_share_directory  # noqa: E402
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

os.environ["ROS_DOMAIN_ID"] = "42"
OUTPUT_DIR = tempfile.mkdtemp(prefix="lapo_record_launch_")


@pytest.mark.launch_test
def generate_test_description():
    record = launch.actions.IncludeLaunchDescription(
        PythonLaunchDescriptionSource(os.path.join(get_package_share_directory("lapo_ros"), "launch",
                                                   "record.launch.py")),
        launch_arguments={"output_dir": OUTPUT_DIR}.items())
    return launch.LaunchDescription([record, launch_testing.actions.ReadyToTest()])


class TestRecorderServices(unittest.TestCase):
    def test_services_are_offered(self):
        rclpy.init()
        try:
            node = rclpy.create_node("record_launch_probe")
            client = node.create_client(Trigger, "/recorder/start")
            self.assertTrue(client.wait_for_service(timeout_sec=30.0))
            future = client.call_async(Trigger.Request())
            rclpy.spin_until_future_complete(node, future, timeout_sec=10.0)
            self.assertTrue(future.result().success, future.result().message)
            node.destroy_node()
        finally:
            rclpy.shutdown()


@launch_testing.post_shutdown_test()
class TestRecorderShutdown(unittest.TestCase):
    def test_exit_code(self, proc_info):
        launch_testing.asserts.assertExitCodes(proc_info)  # SIGINT -> clean exit (0)
