"""The contracts both the worker and the trainer stand on: topic records, topic names, the model's tensors
and input, photo decoding, and the ``--help`` format every command shares. This package imports nothing else
of Darkroom."""
