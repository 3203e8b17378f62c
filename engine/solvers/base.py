"""The contract between the simulator's driver and the physics it orders.

A substep is a fixed sequence of *stages* (:class:`Stage`), each contributed by a solver (one
physics, ``engine/solvers/<physics>.py``) or by a coupling (``engine/coupling/``) to one of
the :data:`PHASES`. The driver (``engine/simulator.py``) runs the stages in phase order for the
forward substep and in the reverse order for its adjoint (Genesis' ``substep`` and its gradient
mirror); it knows nothing of what a stage computes.

A solver with state keeps it in *slotted* buffers (leading slot axis, then the batch axis B, see
engine/arrays.py) that it allocates on request (:meth:`Solver.allocate`); :class:`SlotState`
bundles one buffer per solver, so the driver's ring buffer, replay tape and checkpoints hold
every solver's state, and a checkpoint is saved or loaded by one slot copy of each part
(Warp's ``example_fluid_checkpoint`` copies whole states the same way).

Forward and adjoint kernels never overwrite what they read: a stage reads slot ``s_in`` of the
state and writes slot ``s_out``; its adjoint writes the adjoints of slot ``s_in``'s inputs from
those of slot ``s_out`` (see each solver for whether it writes or accumulates).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

#: The phases of one substep, in forward order. A solver or coupling adds at most one stage to
#: each phase; within a phase, stages run in the order of the simulator's parts.
PHASES = (
    "to_grid",  # particle -> grid transfers and grid forces (MPM: stress, p2g, gravity, walls)
    "grid_coupling",  # grid boundary conditions of colliders; sensor contact forces
    "to_particles",  # grid -> particle transfers (MPM: g2p); the FEM step
    "particle_coupling",  # particle projections out of colliders
    "finish",  # constraints that write the output slot (shape matching), or a plain copy
)


class Slotted(Protocol):
    """One solver's state with a slot axis (any number of arrays)."""

    slots: int

    def copy_slot_to(self, s: int, other: Slotted, t: int) -> None:
        """Slot s of every array -> slot t of ``other``'s."""

    def zero_grad_slot(self, s: int) -> None:
        """The gradients of slot s = 0."""

    def copy_grad_slot(self, s: int, t: int) -> None:
        """The gradients of slot s -> those of slot t."""


class SlotState:
    """Every solver's slotted state, by solver name (a ring buffer, a tape or checkpoints)."""

    def __init__(self, parts: dict[str, Slotted]):
        self.parts = parts
        self.slots = min(p.slots for p in parts.values())

    def __getitem__(self, name: str) -> Any:
        return self.parts[name]

    def copy_slot_to(self, s: int, other: SlotState, t: int) -> None:
        """Save or load: slot s of every part -> slot t of ``other``'s."""
        for name, part in self.parts.items():
            part.copy_slot_to(s, other.parts[name], t)

    def zero_grad_slot(self, s: int) -> None:
        for part in self.parts.values():
            part.zero_grad_slot(s)

    def copy_grad_slot(self, s: int, t: int) -> None:
        for part in self.parts.values():
            part.copy_grad_slot(s, t)


@dataclass
class Substep:
    """The arguments every stage of one substep shares.

    Attributes:
        state: the slotted state the substep reads (slot ``s_in``) and writes (slot ``s_out``).
        s_in, s_out: the input and output slots.
        g: global substep index of the rollout (the row of the collider control arrays).
        control: the collider control arrays (:class:`engine.coupling.ColliderControl`).
        kept: the intermediates of this substep kept for its adjoint, by solver name (the
            replay's tape), or None for the solvers' working sets.
        keep: the intermediates must survive the substep (its adjoint follows).
        need_params: (adjoint) gradients with respect to the material parameters are wanted.
    """

    state: SlotState
    s_in: int
    s_out: int
    g: int
    control: Any
    kept: dict[str, Any] | None = None
    keep: bool = False
    need_params: bool = True


def _nothing(sub: Substep) -> None:
    """A stage step with nothing to do."""


@dataclass(frozen=True)
class Stage:
    """One step of a substep, forward and adjoint.

    Attributes:
        phase: one of :data:`PHASES`.
        forward: runs the stage on a :class:`Substep`.
        adjoint: its adjoint (reads the forward values the stage read, which the driver
            restores first).
        prepare_adjoint: zeroes what ``adjoint`` accumulates into; the driver calls every
            stage's before a substep's adjoint.
        kept: the stage's results are among the intermediates kept by the replay tape, so a
            kept substep does not rerun it before its adjoint.
        replay: the adjoint reads forward values that are not kept; with this set on any stage,
            a kept substep reruns every stage that is not ``kept`` before its adjoint.
    """

    phase: str
    forward: Callable[[Substep], None]
    adjoint: Callable[[Substep], None]
    prepare_adjoint: Callable[[Substep], None] = field(default=_nothing)
    kept: bool = False
    replay: bool = False

    def __post_init__(self):
        if self.phase not in PHASES:
            raise ValueError(f"Stage.phase must be one of {PHASES}, got {self.phase!r}")


class NoState:
    """Defaults for a part without state or kept intermediates of its own (a coupling, a
    constraint solver): nothing to allocate, nothing for the tape to keep."""

    def allocate(self, slots: int, needs_grad: bool) -> None:
        return None

    def allocate_kept(self) -> None:
        return None

    def kept_bytes(self) -> int:
        return 0


class Solver(Protocol):
    """What the driver needs of a solver (or of the coupling)."""

    name: str

    def stages(self) -> list[Stage]:
        """The solver's stages of one substep (at most one per phase)."""

    def allocate(self, slots: int, needs_grad: bool) -> Slotted | None:
        """Slotted state buffers (None for a solver without state of its own)."""

    def allocate_kept(self) -> Any:
        """One substep's intermediates for the replay tape (None if it keeps none)."""

    def kept_bytes(self) -> int:
        """Bytes of :meth:`allocate_kept`'s result."""
