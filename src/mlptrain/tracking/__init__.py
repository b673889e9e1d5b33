"""A run seen by TensorBoard and MLflow (tensorboard.py, mlflow.py): observers of the
training loop that also record the end of the run (test metrics, pictures, hyperparameters).

Tracking never costs a run: a tracker that cannot write (a server that is down or
refuses) says once what was not logged and the training goes on. Only a mistake the user
can fix before training (a missing package, an experiment that was deleted) stops it.
"""
