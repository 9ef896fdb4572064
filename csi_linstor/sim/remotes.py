"""Remotes and backups: /v1/remotes[/{kind}|/{remote}/backups].
"""

from __future__ import annotations

from typing import Any

from . import consts as C
from .model import ApiError, Reply, Request, make_rc, prune
from .state import ControllerState


class RemoteRoutes(ControllerState):
    """Remote and backup routes."""

    def h_remotes(self, req: Request) -> tuple[int, Any]:
        # rest/v1/Remotes.java getRemotes: always 200 with one RemoteList object; Jackson's
        # NON_EMPTY drops empty lists: "{}" when there is no remote (linstor-facts §9 C1).
        return 200, prune({"s3_remotes": [],
                           "linstor_remotes": list(self.linstor_remotes.values()),
                           "ebs_remotes": []})

    def h_remotes_kind(self, req: Request) -> tuple[int, Any]:
        # rest/v1/Remotes.java getS3Remotes/getLinstorRemotes/getEbsRemotes: a plain list.
        if req.path.rstrip("/").endswith("/linstor"):
            return 200, list(self.linstor_remotes.values())
        return 200, []

    def h_backups(self, req: Request) -> tuple[int, Any]:
        # rest/v1/Backups.listBackups -> BackupHelper.getS3Remote: backups are listed from S3
        # remotes only, and the simulator has none (issue 18 brings them): a missing remote is
        # FAIL_NOT_FOUND_REMOTE, another kind FAIL_INVLD_REMOTE_NAME, both | MASK_BACKUP.
        name = req.params["remote"]
        if name not in self.linstor_remotes:
            raise ApiError([make_rc(C.FAIL_NOT_FOUND_REMOTE | C.MASK_BACKUP,
                                    f"The remote {name} does not exist. Please provide a valid "
                                    "remote or create a new one.")])
        raise ApiError([make_rc(C.FAIL_INVLD_REMOTE_NAME | C.MASK_BACKUP,
                                f"The remote {name} is not an s3 remote.")])

    def h_remote_delete(self, req: Request) -> tuple[int, Any]:
        # rest/v1/Remotes.java deleteRemote: DELETE /v1/remotes?remote_name=NAME
        name = (req.query.get("remote_name") or [""])[0]
        r = Reply(C.MASK_DEL, 0)
        if self.linstor_remotes.pop(name, None) is None:
            raise r.error(C.FAIL_NOT_FOUND_REMOTE, f"Remote '{name}' not found.", status=404)
        r.add(C.DELETED, f"Remote '{name}' deleted.")
        return 200, r.entries
