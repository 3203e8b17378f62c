"""What passes between solvers and colliders in a substep, one coupling per module:

* :mod:`engine.coupling.colliders` - kinematic colliders and the MPM grid: grid boundary
  conditions, particle projection, the collider control arrays;
* :mod:`engine.coupling.kinematic` - contact between kinematic colliders (and the domain walls):
  commanded motions stopped at contact;
* :mod:`engine.coupling.sensors` - penalty contact of FEM sensors with colliders, MPM material
  and each other.

Free rigid bodies exchange momentum with the MPM grid in their own solver
(engine/solvers/rigid.py). Each coupling is a part of the simulator (engine/solvers/base.py): it
contributes stages to the phases of a substep and runs their adjoints in reverse.
"""

from engine.coupling.colliders import ColliderControl, ColliderCoupling
from engine.coupling.sensors import SensorContact, penalty_force

__all__ = ["ColliderControl", "ColliderCoupling", "SensorContact", "penalty_force"]
