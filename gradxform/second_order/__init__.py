"""Second-order quantities of a loss: Hessian-vector products and the diagonals of the Hessian and the Fisher.

Kept for code written against `optax.second_order`, which deprecated these in 0.2.7 (removal in 0.2.9):
they flatten all parameters into one vector, so they only suit small models. Each call warns, as optax's do.
"""

from gradxform.second_order._diagonals import fisher_diag as fisher_diag
from gradxform.second_order._diagonals import hessian_diag as hessian_diag
from gradxform.second_order._diagonals import hvp as hvp
