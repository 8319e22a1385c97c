"""Linear assignment: the matching of rows to columns of a cost matrix with the least total cost."""

from gradxform.assignment._hungarian import base_hungarian_algorithm as base_hungarian_algorithm
from gradxform.assignment._hungarian import hungarian_algorithm as hungarian_algorithm
