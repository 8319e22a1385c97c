"""Schedules: functions from a step count to a value (a learning rate, a decay rate, …).

Each schedule is hashable and compares by value, so it can be a static argument of `jax.jit`.
"""

from gradxform._base import Schedule as Schedule
from gradxform.schedules._join import join_schedules as join_schedules
from gradxform.schedules._schedule import constant_schedule as constant_schedule
from gradxform.schedules._schedule import cosine_decay_schedule as cosine_decay_schedule
from gradxform.schedules._schedule import cosine_onecycle_schedule as cosine_onecycle_schedule
from gradxform.schedules._schedule import exponential_decay as exponential_decay
from gradxform.schedules._schedule import linear_onecycle_schedule as linear_onecycle_schedule
from gradxform.schedules._schedule import linear_schedule as linear_schedule
from gradxform.schedules._schedule import piecewise_constant_schedule as piecewise_constant_schedule
from gradxform.schedules._schedule import piecewise_interpolate_schedule as piecewise_interpolate_schedule
from gradxform.schedules._schedule import polynomial_schedule as polynomial_schedule
from gradxform.schedules._schedule import sgdr_schedule as sgdr_schedule
from gradxform.schedules._schedule import warmup_constant_schedule as warmup_constant_schedule
from gradxform.schedules._schedule import warmup_cosine_decay_schedule as warmup_cosine_decay_schedule
from gradxform.schedules._schedule import warmup_exponential_decay_schedule as warmup_exponential_decay_schedule
from gradxform.schedules._inject import *  # noqa: F401,F403
