"""Export and engine-build defaults, torch-free: the command line's ``ddpg export`` and ``ddpg build-engine``
options default to them without importing the exporter."""

OPSETS = (18, 19, 20)  # the ONNX opsets ddpg exports
DEFAULT_OPSET = 20
DEFAULT_BATCH = "1:1:8"  # MIN:OPT:MAX of an exported model's batch dimension
DEFAULT_OPT_LEVEL = 3  # TensorRT's builder optimisation level
DEFAULT_WORKSPACE_GIB = 8.0  # TensorRT's workspace limit
