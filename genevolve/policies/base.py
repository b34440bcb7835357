"""The policy interface: ``Policy.stream(messages, images) -> Iterator[str]``.

``messages`` are chat messages ``{"role", "content"}``; a message may also carry
``"images": [img_id, ...]`` naming the images shown with it, and ``images`` maps those ids to
files, so a vision-language policy can attach real pixels while a text policy ignores them.
"""

from __future__ import annotations

from typing import Iterator, Protocol, Sequence, runtime_checkable

from genevolve.trajectory import ImageRef


class PolicyError(RuntimeError):
    """The policy cannot produce a turn (endpoint down, model missing). Ends the trajectory."""


@runtime_checkable
class Policy(Protocol):
    name: str

    def stream(self, messages: list[dict], images: Sequence[ImageRef] = ()) -> Iterator[str]:
        """Yield the next assistant turn as text deltas."""
        ...


def complete(policy: Policy, messages: list[dict], images: Sequence[ImageRef] = ()) -> str:
    """The whole next turn as one string."""
    return "".join(policy.stream(messages, images))
