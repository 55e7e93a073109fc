"""What a trained model does and why, computed from a run folder or a model in memory.

- `evaluation`: test accuracy and loss, TTA, per-class scores, the cached test-set predictions.
- `calibration`: temperature scaling and the reliability of the model's confidence.
- `evolution`: the confusion matrix of a sample of test images at each epoch's end.
- `explain`: Grad-CAM, the why behind one prediction.
- `predict`: the model's answer for any image (uploads bounded and checked in `data.images`).

May import: config, files, paths, quiet, trainer_lock, data, recipes, models, runs.
"""
