"""Workflow versions: the patches (`workflow.patched`) that let running sessions survive an upgrade,
and one marker for all of them in the runs that start with them.

Each patch a run meets costs it two history events (the marker, and the SDK's upsert of the
`TemporalChangeVersion` search attribute: a visibility write), and a sandboxed session met three.
A run that reaches its first patch with this code records `BASELINE` instead, once, and takes
every patch in `IN_BASELINE` as on. A run recorded before `BASELINE` existed has no such marker,
so replaying it `BASELINE` is off (memoized for the run: the SDK remembers a patch's answer) and
each patch is asked on its own, as when the run was recorded. `BASELINE` is always asked before
the patch in hand, so it is first decided at the run's first patch: live, where that patch would
have said on; in replay, off unless the run recorded it.

A new patch goes in with `patched` as usual (its own marker), not into `IN_BASELINE`: a running
session recorded with `BASELINE` before that patch existed must not take it as on. A later
baseline may take in the patches added since.
"""

from __future__ import annotations

from temporalio import workflow

# The patches (each named where its branch is).
SNAPSHOTS = "workspace-snapshots"
SAVED = "no-snapshot-when-saved"  # no snapshot activity where the sandbox says nothing is unsaved
RELEASE = "sandbox-release"  # the last snapshot and the removal by the host, after the session
FIRST_CALL = "first-call-provisions"  # the first call and its provisioning in one activity
COMPACTION_BACKOFF = "compaction-backoff"  # after a failed summary: back off, leave the oldest out
RUN_LOG_BOUND = "run-log-bytes"  # continue-as-new once the run's events outgrow the context

BASELINE = "baseline-1"  # all of IN_BASELINE, in one marker
IN_BASELINE = frozenset({SNAPSHOTS, SAVED, RELEASE, FIRST_CALL, COMPACTION_BACKOFF})


def patched(patch_id: str) -> bool:
    """`workflow.patched(patch_id)`, answered by `BASELINE` where the run has it."""
    if patch_id in IN_BASELINE and workflow.patched(BASELINE):
        return True
    return workflow.patched(patch_id)
