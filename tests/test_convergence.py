"""Every classic optimizer actually trains: softmax regression on scikit-learn's bundled digits data.

Each must cut the loss to under 0.3 of its start and reach a held-out accuracy of 0.9 (chance is 0.1);
the harness is `convergence.py`.
"""

import pytest

import gradxform
from convergence import STEPS, assert_trains


OPTIMIZERS = {
    "sgd": lambda: gradxform.sgd(1.0),
    "sgd_momentum": lambda: gradxform.sgd(0.2, momentum=0.9),
    "sgd_nesterov": lambda: gradxform.sgd(0.2, momentum=0.9, nesterov=True),
    "adagrad": lambda: gradxform.adagrad(0.5),
    "rmsprop": lambda: gradxform.rmsprop(0.01),
    "rmsprop_centered_momentum": lambda: gradxform.rmsprop(0.005, centered=True, momentum=0.5),
    "adadelta": lambda: gradxform.adadelta(10.0),
    "adam": lambda: gradxform.adam(0.05),
    "adamw": lambda: gradxform.adamw(gradxform.warmup_cosine_decay_schedule(0.0, 0.05, 10, STEPS), weight_decay=1e-3),
    "nadam": lambda: gradxform.nadam(0.05),
    "nadamw": lambda: gradxform.nadamw(0.05),
    "adamax": lambda: gradxform.adamax(0.05),
    "adamaxw": lambda: gradxform.adamaxw(0.05),
    "amsgrad": lambda: gradxform.amsgrad(0.05),
    "radam": lambda: gradxform.radam(0.05),
    "clip_then_adamw": lambda: gradxform.chain(gradxform.clip_by_global_norm(1.0), gradxform.adamw(0.05)),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_optimizer_trains_on_digits(name):
  assert_trains(OPTIMIZERS[name]())
