from tests.contract.schema import linstor_schema  # noqa: F401
from tests.sim.helpers import api, sim, sim_factory  # noqa: F401
