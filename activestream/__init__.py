"""activestream: streaming online active learning for image classifiers."""

__version__ = "0.1.0"
