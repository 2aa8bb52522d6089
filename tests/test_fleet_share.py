"""The fleet's share (fleet/share.py): capped rendezvous hashing, as hypothesis properties."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from notifier.fleet.share import cap, plan, weight

pytestmark = pytest.mark.timeout(10)

names = st.text(alphabet="abcdefghij0123456789:/-_", min_size=1, max_size=8)
leases = st.lists(names, unique=True, max_size=40)
replicas = st.lists(names, unique=True, min_size=1, max_size=8)


def moved(before: dict[str, str], after: dict[str, str]) -> int:
    """Leases whose owner differs between two plans of the same leases."""
    return sum(before[name] != after[name] for name in before)


def test_the_cap_is_the_ceiling_of_leases_over_replicas() -> None:
    """ceil(L / N), 0 for no leases; no replica at all is a programming error."""
    assert [cap(0, 1), cap(4, 2), cap(5, 2), cap(1, 3), cap(7, 7)] == [0, 2, 3, 1, 1]
    with pytest.raises(ValueError, match="at least one replica"):
        cap(3, 0)


def test_no_replica_means_no_plan_and_a_lone_replica_gets_everything() -> None:
    """{} without replicas; one replica is given every lease (the product before a fleet)."""
    assert plan(["a", "b"], []) == {}
    assert plan(["a", "b", "c"], ["only"]) == {"a": "only", "b": "only", "c": "only"}


def test_the_weight_is_a_stable_hash_of_both_names() -> None:
    """The same in every process and release (BLAKE2b, not Python's salted hash())."""
    assert weight("replica-a", "sim") == weight("replica-a", "sim")
    assert weight("replica-a", "sim") == 0xBF6B3ACB890718F2
    assert weight("ab", "c") != weight("a", "bc")  # (the separator keeps the names apart)


@given(leases, replicas)
def test_every_lease_goes_to_one_live_replica_under_the_cap(
    names: list[str], owners: list[str]
) -> None:
    """Every lease is assigned, to a replica of the set, none holding more than the cap."""
    share = plan(names, owners)
    assert set(share) == set(names)
    assert set(share.values()) <= set(owners)
    most = cap(len(names), len(owners))
    assert all(list(share.values()).count(owner) <= most for owner in owners)


@given(leases, replicas, st.randoms(use_true_random=False))
def test_the_plan_does_not_depend_on_the_order_of_its_inputs(
    names: list[str], owners: list[str], rnd: random.Random
) -> None:
    """Every replica computes the same plan from the same sets, however it lists them."""
    shuffled_names, shuffled_owners = names[:], owners[:]
    rnd.shuffle(shuffled_names)
    rnd.shuffle(shuffled_owners)
    assert plan(shuffled_names, shuffled_owners) == plan(names, owners)


@settings(max_examples=300)
@given(leases, replicas, names)
def test_a_joining_replica_moves_few_leases(names: list[str], owners: list[str], new: str) -> None:
    """A join moves at most a few times the joiner's fair share plus the cap (capping makes a
    few leases cascade), and the joiner itself is given no more than the new cap."""
    if new in owners:
        return
    before, after = plan(names, owners), plan(names, [*owners, new])
    count, n = len(names), len(owners)
    assert moved(before, after) <= 4 * (count / (n + 1) + cap(count, n))
    assert list(after.values()).count(new) <= cap(count, n + 1)


@given(leases, replicas)
def test_a_leaving_replica_moves_its_leases_and_few_others(
    names: list[str], owners: list[str]
) -> None:
    """The leases of a replica that leaves move (to the others); few others do."""
    gone, rest = owners[0], owners[1:]
    if not rest:
        return
    before, after = plan(names, owners), plan(names, rest)
    assert gone not in after.values()
    own = [name for name in names if before[name] == gone]
    count, n = len(names), len(rest)
    assert moved(before, after) - len(own) <= 4 * (count / (n + 1) + cap(count, n))


def test_on_average_a_join_moves_about_the_joiners_share() -> None:
    """Over 400 random fleets, a join moves at most 1.5 times L / (N + 1) leases on average
    (the ideal: the joiner's share, taken from the others)."""
    rnd = random.Random(13)
    total, ideal = 0, 0.0
    for _ in range(400):
        names = [f"lease-{rnd.randrange(10**6)}" for _ in range(rnd.randint(1, 40))]
        owners = [f"replica-{rnd.randrange(10**6)}" for _ in range(rnd.randint(1, 8))]
        names, owners = sorted(set(names)), sorted(set(owners))
        total += moved(plan(names, owners), plan(names, [*owners, "joiner"]))
        ideal += len(names) / (len(owners) + 1)
    assert total <= 1.5 * ideal


def test_two_replicas_share_four_leases_two_each() -> None:
    """The case the balancer tests build on: 4 leases, 2 replicas -> 2 each; 3 -> at most 2."""
    four = ["c1", "c2", "c3", "c4"]
    assert sorted(list(plan(four, ["a", "b"]).values()).count(r) for r in "ab") == [2, 2]
    three = plan(four, ["a", "b", "c"])
    assert max(list(three.values()).count(r) for r in "abc") == 2
