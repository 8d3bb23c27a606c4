"""The contracts both the worker and the trainer stand on: topic records, topic names, the model's tensors
and input, and photo decoding. This package imports nothing else of Darkroom."""
