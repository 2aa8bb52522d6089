"""Who should hold which lease: a pure function of the lease names and the live replicas.

- **Cap.** With ``L`` leases of a kind and ``N`` live replicas, no replica is given more than
  ``ceil(L / N)`` of them (``cap``).
- **Rendezvous.** Each (replica, lease) pair has a weight, a stable hash of both names
  (BLAKE2b, the same in every process and release; never Python's ``hash()``). The leases are
  taken in name order, and each goes to its heaviest replica that is still under the cap.
- **Deterministic.** The plan depends on the two sets only, not on their order, so every
  replica that sees the same live set computes the same plan without talking to the others.
- **Little movement.** A replica that joins or leaves changes the weights of no other pair:
  the leases that move are mostly those it wins or held, plus the few the new cap pushes on.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["cap", "plan", "weight"]


def cap(leases: int, replicas: int) -> int:
    """The most leases one replica may hold: ``ceil(leases / replicas)`` (``replicas >= 1``)."""
    if replicas < 1:
        raise ValueError("a share needs at least one replica")
    return -(-leases // replicas)


def weight(replica: str, lease: str) -> int:
    """The rendezvous weight of a (replica, lease) pair: 64 bits of BLAKE2b of both names."""
    digest = hashlib.blake2b(f"{replica}\0{lease}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def plan(leases: Sequence[str], replicas: Sequence[str]) -> dict[str, str]:
    """Lease name -> the replica that should hold it (module doc); ``{}`` without replicas."""
    owners = sorted(set(replicas))
    if not owners:
        return {}
    names = sorted(set(leases))
    most = cap(len(names), len(owners))
    given = dict.fromkeys(owners, 0)
    out: dict[str, str] = {}
    for lease in names:
        ranked = sorted(owners, key=lambda replica: (-weight(replica, lease), replica))
        owner = next(replica for replica in ranked if given[replica] < most)
        given[owner] += 1
        out[lease] = owner
    return out
