"""toolkit: train, export, verify and benchmark an MNIST CNN for edge deployment."""

__version__ = "0.1.0"
