"""Contributed optimizers from recent papers, mirroring `optax.contrib`.

Each module holds one method (its transformation, state and optimizer alias) and lists its names in
`__all__`.
"""

from gradxform.contrib._acprop import *  # noqa: F401,F403
from gradxform.contrib._ademamix import *  # noqa: F401,F403
from gradxform.contrib._adopt import *  # noqa: F401,F403
from gradxform.contrib._cocob import *  # noqa: F401,F403
from gradxform.contrib._complex_valued import *  # noqa: F401,F403
from gradxform.contrib._dadapt import *  # noqa: F401,F403
from gradxform.contrib._dog import *  # noqa: F401,F403
from gradxform.contrib._galore import *  # noqa: F401,F403
from gradxform.contrib._madgrad import *  # noqa: F401,F403
from gradxform.contrib._mechanic import *  # noqa: F401,F403
from gradxform.contrib._momo import *  # noqa: F401,F403
from gradxform.contrib._muon import *  # noqa: F401,F403
from gradxform.contrib._privacy import *  # noqa: F401,F403
from gradxform.contrib._reduce_on_plateau import *  # noqa: F401,F403
from gradxform.contrib._sam import *  # noqa: F401,F403
from gradxform.contrib._schedule_free import *  # noqa: F401,F403
from gradxform.contrib._sophia import *  # noqa: F401,F403
