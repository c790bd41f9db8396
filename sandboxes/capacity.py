"""A sandbox host's capacity, as the Temporal worker sees it: the slots it offers for provisioning.

A provision slot is reserved before the worker polls the shared `sandboxes` queue (for
`provision_sandbox`, or `provision_and_execute`, whose first call counts as a provision only
until its container is up). While the
host holds its limit of session containers (SANDBOX_MAX_CONTAINERS; those being provisioned
count too), no slot is given: the worker stops asking for provisioning work, and the other hosts
take it. A provision is never refused or queued behind a full host; a host below its limit polls
again as soon as a container goes.
"""

from __future__ import annotations

import asyncio

from temporalio.worker import (
    CustomSlotSupplier,
    FixedSizeSlotSupplier,
    SlotMarkUsedContext,
    SlotPermit,
    SlotReleaseContext,
    SlotReserveContext,
    WorkerTuner,
)

from durable_agents.sandboxes.docker_sandbox import DockerSandboxes

RECHECK_S = 0.1


class HostCapacity(CustomSlotSupplier):
    def __init__(self, sandboxes: DockerSandboxes, max_containers: int, max_provisions: int) -> None:
        self.sandboxes = sandboxes
        self.max_containers = max_containers  # 0: no limit
        self.max_provisions = max_provisions
        self.reserved = 0  # slots given out: polls waiting for a task, and provisions running

    def room(self) -> bool:
        # A first call running on its provision slot (provision_and_execute) is a call by now: its
        # container is among the owners already.
        provisions = self.reserved - len(self.sandboxes.first_calls)
        if provisions >= self.max_provisions:
            return False
        return not self.max_containers or len(self.sandboxes.owners) + provisions < self.max_containers

    async def reserve_slot(self, ctx: SlotReserveContext) -> SlotPermit:
        while not self.room():  # noqa: ASYNC110 - containers go in other threads (Docker calls): polled
            await asyncio.sleep(RECHECK_S)
        self.reserved += 1
        return SlotPermit()

    def try_reserve_slot(self, ctx: SlotReserveContext) -> SlotPermit | None:
        if not self.room():
            return None
        self.reserved += 1
        return SlotPermit()

    def mark_slot_used(self, ctx: SlotMarkUsedContext) -> None:
        return None

    def release_slot(self, ctx: SlotReleaseContext) -> None:
        self.reserved -= 1


def provision_tuner(capacity: HostCapacity) -> WorkerTuner:
    """The provisioning worker's tuner: activity slots from the host's capacity (it runs no workflows)."""
    return WorkerTuner.create_composite(
        workflow_supplier=FixedSizeSlotSupplier(1),
        activity_supplier=capacity,
        local_activity_supplier=FixedSizeSlotSupplier(1),
        nexus_supplier=FixedSizeSlotSupplier(1),
    )
