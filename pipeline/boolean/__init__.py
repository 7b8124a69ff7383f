"""Question 3: hand-built MLPs for f(x) = +1 iff A <= sum(x) <= B, in pure numpy.

`nets` builds them, `perceptron` shows a single unit cannot, `mlp` checks and writes it all,
`plots` draws the figures. Nothing here knows Ray, MLflow or the OCTMNIST pipeline.
"""
