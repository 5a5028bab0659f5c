"""Build only what changed: ask the registry whether each content tag exists.

A service whose ``src-<key>`` tag is already in the registry was built from the
same inputs, so it is reused: its new tags are added to that manifest and
nothing is rebuilt. Without credentials, or when the registry cannot be asked,
the answer says so and the service is built, so a plan always works.
"""

from __future__ import annotations

import anyio

from pipeline.errors import ManifestNotFoundError, PipelineError
from pipeline.plan import Plan
from pipeline.registry import RegistryClient

_LOOKUP_CONCURRENCY = 8


async def lookup(plan: Plan, registry: RegistryClient) -> dict[str, str]:
    """For each service with a content key: ``reuse <digest>``, ``build`` or why it could not look."""
    actions: dict[str, str] = {}
    limiter = anyio.CapacityLimiter(_LOOKUP_CONCURRENCY)

    async def one(name: str, repository: str, tag: str) -> None:
        async with limiter:
            try:
                found = await registry.resolve(repository, tag)
            except ManifestNotFoundError:
                actions[name] = "build"
            except PipelineError as error:
                actions[name] = f"build (could not look: {error})"
            else:
                actions[name] = f"reuse {found.digest}"

    async with anyio.create_task_group() as tg:
        for service in plan.services:
            if service.content_tag:
                tg.start_soon(one, service.name, service.repository, service.content_tag)
    return actions


def unchecked(plan: Plan, reason: str) -> dict[str, str]:
    """The same answer for every service, when the registry is not asked."""
    return {s.name: f"build ({reason})" for s in plan.services if s.content_tag}
