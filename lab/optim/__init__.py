"""Optimizers: orthogonalizers, SimpleMuon, routing. See lab/optim/*.py, one concern per module."""
from lab.optim.muon import SimpleMuon
from lab.optim.orthogonalize import (
    ORTHOGONALIZERS,
    exact_polar,
    gram_newton_schulz,
    newton_schulz,
    polar_express,
    polar_express_coefficients,
)
from lab.optim.setup import build_optimizers

__all__ = ["ORTHOGONALIZERS", "SimpleMuon", "build_optimizers", "exact_polar", "gram_newton_schulz", "newton_schulz",
           "polar_express", "polar_express_coefficients"]
