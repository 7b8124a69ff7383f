"""medgrid: the OCTMNIST homework as an experiment pipeline (Ray Tune + MLflow)."""

__version__ = "0.1.0"
