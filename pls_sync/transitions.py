"""Tier transitions between runs: what an account's state becomes after a new score.

Standard library only. The state store keeps one ``AccountState`` per account; each run folds the
new ``AccountScore`` into it with :func:`advance`, which also says whether the tier changed.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from pls_sync.ports import AccountState, TierTransition
from pls_sync.scoring import AccountScore

__all__ = ["advance", "score_change"]


def _utc(moment: datetime) -> datetime:
    """Aware UTC; a naive datetime is taken to be UTC already."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def score_change(previous: AccountState | None, score: AccountScore) -> int | None:
    """The score move to report: None for a first-seen account, else new minus old.

    When the score did not move, the previous run's move is kept, so a rerun over unchanged
    data does not flip the reported change to 0 (see ``AccountState.score_change``).
    """
    if previous is None:
        return None
    if score.score == previous.score:
        return previous.score_change
    return score.score - previous.score


def advance(
    previous: AccountState | None,
    score: AccountScore,
    at: datetime,
    qualified_tiers: Sequence[str],
) -> tuple[AccountState, TierTransition | None]:
    """Fold a new score into an account's state; return the state and the transition, if any.

    ``tier_since`` keeps its date while the tier holds and becomes ``at`` when it changes.
    ``qualified_since`` keeps its date while the account stays in any qualified tier (moving
    between qualified tiers keeps it), becomes ``at`` when the account enters one, and is None
    outside them. A transition is returned when the tier changed, with ``from_tier`` None for
    an account seen for the first time.
    """
    at = _utc(at)
    tier = score.tier
    qualified = tier in qualified_tiers
    was_qualified = previous is not None and previous.tier in qualified_tiers
    changed = previous is None or previous.tier != tier

    tier_since = at if changed or previous is None else previous.tier_since or at
    if not qualified:
        qualified_since = None
    elif was_qualified and previous is not None and previous.qualified_since is not None:
        qualified_since = previous.qualified_since
    else:
        qualified_since = at

    state = AccountState(
        key=score.key,
        score=score.score,
        tier=tier,
        tier_since=tier_since,
        qualified_since=qualified_since,
        scored_at=at,
        score_change=score_change(previous, score),
    )
    transition = None
    if changed:
        transition = TierTransition(
            key=score.key,
            from_tier=None if previous is None else previous.tier,
            to_tier=tier,
            score=score.score,
            at=at,
        )
    return state, transition
