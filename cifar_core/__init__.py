"""CIFAR-10 Lab core: data, the assignment's CNN, background training, runs, evaluation and
prediction. Never imports Streamlit; imports TensorFlow only when a model is needed."""
import os

# TensorFlow's C++ start-up chatter (no CUDA here, CPU feature notes) is noise for our users.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
