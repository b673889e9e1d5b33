"""mlptrain: train fully-connected classifiers on MNIST and Fashion-MNIST from one YAML file."""

__version__ = "0.1.0"
