"""Differentiable Monte-Carlo smoothing of functions by random perturbation of their inputs."""

from gradxform.perturbations._perturbed import Gumbel as Gumbel
from gradxform.perturbations._perturbed import Normal as Normal
from gradxform.perturbations._perturbed import make_perturbed_fun as make_perturbed_fun
