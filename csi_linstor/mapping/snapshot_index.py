"""Which resource definitions hold a snapshot of a given name, without reading every snapshot.

CSI snapshot names are unique across source volumes (CreateSnapshot answers ALREADY_EXISTS for a
name taken by another source), but LINSTOR snapshot names are per resource definition and its
snapshot view filters by resource and node only (linstor-facts C8): finding a name in the other
RDs meant reading every snapshot in the cluster (17 MB at 10,000 snapshots, issue 19). So the
driver keeps an index in LINSTOR's key-value store:

- one KVS instance per LINSTOR snapshot name, ``CsiSnap-<32 hex of sha256(NAME)>`` (KVS names
  are at most 48 characters), with one key per holder: ``source/<RD>`` = the snapshot name (the
  value tells a hash collision apart). Reading it is one ``GET /v1/key-value-store/<instance>``
  of the size of its holders, however large the cluster.
- A claim is written **before** the snapshot is taken and released **after** it is deleted, so a
  crash leaves at most a claim without a snapshot, never a snapshot without its claim. Claims are
  therefore verified: a holder whose snapshot is gone is stale and is released.
- Releasing deletes the key; LINSTOR removes a KVS instance whose last key goes
  (CtrlKvsApiCallHandler.modifyKvs), so nothing is left behind and nothing races a concurrent
  claim of the same name.
- Snapshots taken before the index existed (an older driver, LINBIT's) are indexed once: the
  first lookup that finds no ``CsiSnapIndex`` marker starts a background pass that reads the
  snapshot view once, claims every snapshot, then writes the marker. Until the marker exists,
  lookups answer ``None`` and the caller reads every snapshot as before.
- A clone's temporary snapshot (``Aux/csi-clone-for``, mapping/clone.py) is no CSI snapshot
  (ListSnapshots hides it) and holds no name: it is never claimed.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Iterable

from csi_linstor.deadline import Deadline
from csi_linstor.errors import CsiError
from csi_linstor.linstor import queries
from csi_linstor.linstor.client import LinstorClient
from csi_linstor.linstor.errors import LinstorError
from csi_linstor.mapping.volume_model import PROP_CLONE_FOR

log = logging.getLogger(__name__)

MARKER = "CsiSnapIndex"  # KVS instance whose ``complete`` key says every snapshot is indexed
MARKER_KEY = "complete"
PREFIX = "CsiSnap-"
HOLDER = "source/"
BACKFILL_SECONDS = 600.0  # bound of each REST call of the one-time pass
BACKFILL_RETRY_SECONDS = 60.0


def instance(snap: str) -> str:
    return PREFIX + hashlib.sha256(snap.upper().encode()).hexdigest()[:32]


class SnapshotIndex:
    def __init__(self, client: LinstorClient) -> None:
        self.client = client
        self._complete = False  # the marker was seen: it is never removed
        self._lock = threading.Lock()
        self._backfill: threading.Thread | None = None
        self._retry_at = 0.0  # monotonic time before which a failed pass is not restarted

    # -- lookups ------------------------------------------------------------------------------

    def holders(self, snap: str, deadline: Deadline) -> list[str] | None:
        """The RDs claiming a snapshot named ``snap``; None while snapshots taken before the
        index are not indexed yet (then only a read of every snapshot can tell)."""
        if not self._is_complete(deadline):
            return None
        props = self._props(instance(snap), deadline)
        return sorted(k[len(HOLDER):] for k, v in props.items()
                      if k.startswith(HOLDER) and v.upper() == snap.upper())

    def _props(self, name: str, deadline: Deadline) -> dict[str, str]:
        try:
            data = self.client.get(f"/v1/key-value-store/{name}", deadline=deadline)
        except LinstorError as err:
            if err.is_not_found() or err.status == 404:
                return {}
            raise
        entries = data if isinstance(data, list) else [data]  # a one-element list (C3)
        out: dict[str, str] = {}
        for entry in entries:
            if isinstance(entry, dict) and isinstance(entry.get("props"), dict):
                out.update({str(k): str(v) for k, v in entry["props"].items()})
        return out

    def _is_complete(self, deadline: Deadline) -> bool:
        if self._complete:
            return True
        if self._props(MARKER, deadline).get(MARKER_KEY):
            self._complete = True
            return True
        self._start_backfill()
        return False

    # -- claims -------------------------------------------------------------------------------

    def claim(self, snap: str, rds: Iterable[str], deadline: Deadline) -> None:
        """Record that ``rds`` hold (or are about to hold) snapshot ``snap``: before taking it."""
        over = {HOLDER + rd.upper(): snap for rd in rds}
        if over:
            self.client.put(f"/v1/key-value-store/{instance(snap)}", deadline=deadline,
                            body={"override_props": over})

    def release(self, snap: str, rd: str, deadline: Deadline) -> None:
        """Drop ``rd``'s claim on ``snap``: after its snapshot is gone. A failure leaves a stale
        claim, which lookups verify and release, so it is logged, not raised."""
        try:
            self.client.put(f"/v1/key-value-store/{instance(snap)}", deadline=deadline,
                            body={"delete_props": [HOLDER + rd.upper()]})
        except CsiError as err:
            log.warning("could not release the index entry of snapshot %s/%s (%s); the next "
                        "CreateSnapshot of that name verifies and releases it", rd, snap, err)

    # -- the one-time pass ----------------------------------------------------------------------

    def _start_backfill(self) -> None:
        with self._lock:
            if self._backfill is not None and self._backfill.is_alive():
                return
            if time.monotonic() < self._retry_at:
                return
            self._backfill = threading.Thread(target=self._run_backfill, daemon=True,
                                              name="snapshot-index")
            self._backfill.start()

    def _run_backfill(self) -> None:
        try:
            self.backfill()
        except CsiError as err:
            with self._lock:
                self._retry_at = time.monotonic() + BACKFILL_RETRY_SECONDS
            log.warning("indexing the existing snapshots failed (%s); CreateSnapshot reads every "
                        "snapshot until a later attempt (in %.0f s) succeeds", err,
                        BACKFILL_RETRY_SECONDS)

    def backfill(self) -> None:
        """Claim every existing snapshot (one read of the snapshot view, one write per name),
        then write the marker."""
        by_name: dict[str, set[str]] = {}
        for s in queries.view_snapshots(self.client, Deadline(BACKFILL_SECONDS)):
            # a clone's temporary snapshot is no CSI snapshot and is dropped without a release
            if not s.deleting and PROP_CLONE_FOR not in s.definition_props:
                by_name.setdefault(s.name, set()).add(s.resource_name)
        for snap, rds in sorted(by_name.items()):
            self.claim(snap, sorted(rds), Deadline(BACKFILL_SECONDS))
        self.client.put(f"/v1/key-value-store/{MARKER}", deadline=Deadline(BACKFILL_SECONDS),
                        body={"override_props": {MARKER_KEY: "1"}})
        self._complete = True
        log.info("indexed %d existing snapshot names: CreateSnapshot no longer reads every "
                 "snapshot", len(by_name))
