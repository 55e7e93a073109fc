"""What every module agrees on about CIFAR-10 images: the ten classes and the input shape."""
CLASS_NAMES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)
NUM_CLASSES = len(CLASS_NAMES)
INPUT_SHAPE = (32, 32, 3)
