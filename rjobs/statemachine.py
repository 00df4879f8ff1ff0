"""State machines as data: a table ``state -> allowed next states`` plus the roles that tell the
engine what each state means. The table is validated here and stored per queue in Redis, where
every Lua script reads it before it writes."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping

import msgspec

from rjobs.errors import MachineError

__all__ = ["FINAL_ROLES", "StateMachine"]

#: Roles whose states end a job; each must be a terminal state (no outgoing edge).
FINAL_ROLES = ("success", "partial", "failure", "cancelled")
_SINGLE_ROLES = ("initial", "ready", "delayed", "waiting", "review", *FINAL_ROLES)
_REQUIRED = ("initial", "ready", "success", "failure", "cancelled")


class StateMachine(msgspec.Struct, frozen=True, kw_only=True):
    """A validated job state machine.

    ``edges`` maps every state to the states it may move to. ``leased`` lists the states a job holds
    while a worker has it, in the order a claim walks them (e.g. ``("assigned", "in_progress")``).
    The other roles name one state each; ``delayed``, ``waiting``, ``review`` and ``partial`` are
    optional. Construct with :meth:`define` to validate.
    """

    name: str
    edges: dict[str, tuple[str, ...]]
    initial: str
    ready: str
    leased: tuple[str, ...]
    success: str
    failure: str
    cancelled: str
    delayed: str | None = None
    waiting: str | None = None
    review: str | None = None
    partial: str | None = None

    @classmethod
    def define(
        cls,
        name: str,
        edges: Mapping[str, Iterable[str]],
        *,
        initial: str,
        ready: str,
        leased: Iterable[str],
        success: str,
        failure: str,
        cancelled: str,
        delayed: str | None = None,
        waiting: str | None = None,
        review: str | None = None,
        partial: str | None = None,
    ) -> StateMachine:
        """Build and validate a machine; raises :class:`MachineError` naming the first problem."""
        machine = cls(
            name=name,
            edges={s: tuple(t) for s, t in edges.items()},
            initial=initial,
            ready=ready,
            leased=tuple(leased),
            success=success,
            failure=failure,
            cancelled=cancelled,
            delayed=delayed,
            waiting=waiting,
            review=review,
            partial=partial,
        )
        machine.validate()
        return machine

    # -- queries ----------------------------------------------------------------------------------
    @property
    def states(self) -> tuple[str, ...]:
        """All states, in declaration order."""
        return tuple(self.edges)

    def role(self, role: str) -> str | None:
        """The state playing ``role`` (single-state roles only)."""
        value: str | None = getattr(self, role)
        return value

    def final_states(self) -> tuple[str, ...]:
        """States that end a job."""
        return tuple(s for r in FINAL_ROLES if (s := self.role(r)) is not None)

    def final_role(self, state: str) -> str | None:
        """The final role ``state`` plays (success, partial, failure, cancelled), else None."""
        for role in FINAL_ROLES:
            if self.role(role) == state:
                return role
        return None

    def is_final(self, state: str) -> bool:
        """True when ``state`` has no outgoing edge."""
        return not self.edges.get(state, ())

    def allows(self, current: str, target: str) -> bool:
        """True when the table has the edge ``current -> target``."""
        return target in self.edges.get(current, ())

    # -- validation -------------------------------------------------------------------------------
    def validate(self) -> None:
        """Raise :class:`MachineError` unless the machine is usable by the engine."""
        if not self.name or len(self.name) > 64:
            raise MachineError("machine name must be 1-64 characters")
        states = set(self.edges)
        for state, targets in self.edges.items():
            _check_state_name(state)
            for target in targets:
                if target not in states:
                    raise MachineError(f"edge {state!r} -> {target!r}: {target!r} is not a declared state")
        for role in _REQUIRED:
            if self.role(role) is None:
                raise MachineError(f"role {role!r} is required")
        for role in _SINGLE_ROLES:
            named = self.role(role)
            if named is not None and named not in states:
                raise MachineError(f"role {role!r} names unknown state {named!r}")
        if not self.leased:
            raise MachineError("at least one leased state is required")
        for state in self.leased:
            if state not in states:
                raise MachineError(f"leased state {state!r} is not a declared state")
        self._validate_finals()
        self._validate_flow()
        self._validate_reachability()

    def _validate_finals(self) -> None:
        finals = self.final_states()
        if len(set(finals)) != len(finals):
            raise MachineError("final roles must name distinct states")
        for state in finals:
            if self.edges[state]:
                raise MachineError(f"final state {state!r} must be terminal (no outgoing edge)")
        for state, targets in self.edges.items():
            if not targets and state not in finals:
                raise MachineError(f"terminal state {state!r} has no final role (success/partial/failure/cancelled)")
        busy = {self.initial, self.ready, *self.leased}
        busy |= {s for s in (self.delayed, self.waiting, self.review) if s is not None}
        for state in busy & set(finals):
            raise MachineError(f"state {state!r} cannot be both final and {self._role_of(state)}")

    def _validate_flow(self) -> None:
        if not self.allows(self.ready, self.leased[0]):
            raise MachineError(f"claims need the edge {self.ready!r} -> {self.leased[0]!r}")
        for a, b in zip(self.leased, self.leased[1:]):
            if not self.allows(a, b):
                raise MachineError(f"leased chain needs the edge {a!r} -> {b!r}")
        if not self.allows(self.leased[-1], self.success):
            raise MachineError(f"workers need the edge {self.leased[-1]!r} -> {self.success!r}")
        for state in self.leased:
            if not (self.allows(state, self.failure) or self.allows(state, self.cancelled)):
                raise MachineError(f"an expired lease in {state!r} needs an edge to the failure or cancelled state")
        for role in ("delayed", "waiting"):
            named = self.role(role)
            if named is not None and not self.allows(named, self.ready):
                raise MachineError(f"{role} state {named!r} needs an edge to the ready state {self.ready!r}")

    def _validate_reachability(self) -> None:
        finals = set(self.final_states())
        reverse: dict[str, set[str]] = {s: set() for s in self.edges}
        for state, targets in self.edges.items():
            for target in targets:
                reverse[target].add(state)
        seen = set(finals)
        todo = deque(finals)
        while todo:
            for prev in reverse[todo.popleft()] - seen:
                seen.add(prev)
                todo.append(prev)
        stuck = [s for s in self.edges if s not in seen]
        if stuck:
            raise MachineError(f"states {stuck} can never reach a final state")

    def _role_of(self, state: str) -> str:
        return next(r for r in _SINGLE_ROLES if self.role(r) == state)

    # -- storage ----------------------------------------------------------------------------------
    def fingerprint(self) -> str:
        """Canonical text of the machine; two declarations conflict when these differ."""
        return msgspec.json.encode(self).decode()

    def to_redis(self) -> dict[str, str]:
        """Flat hash fields as stored at ``rjobs:{Q}:machine`` (readable with HGETALL)."""
        fields = {"name": self.name, "fingerprint": self.fingerprint(), "states": ",".join(self.states)}
        for state, targets in self.edges.items():
            fields[f"next:{state}"] = ",".join(targets)
        for role in _SINGLE_ROLES:
            fields[f"role:{role}"] = self.role(role) or ""
        fields["role:leased"] = ",".join(self.leased)
        return fields

    @classmethod
    def from_fingerprint(cls, text: str | bytes) -> StateMachine:
        """Rebuild a machine from :meth:`fingerprint` (what Redis stores)."""
        return msgspec.json.decode(text, type=cls)


def _check_state_name(state: str) -> None:
    if not state or len(state) > 32 or not all(c.isalnum() or c == "_" for c in state) or not state.isascii():
        raise MachineError(f"state name {state!r} must be 1-32 ASCII letters, digits or '_'")
