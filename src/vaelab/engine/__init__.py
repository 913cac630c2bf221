"""The one training engine: the epoch loop, the step (eager or CUDA graph), checkpoints, run folders, signals."""
