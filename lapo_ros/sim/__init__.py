"""The simulated robot and its tools, apart from the robot-facing nodes: the MuJoCo world, the sim
robot node, the scripted demonstrator, the in-process evaluator and the main-job loop."""
