"""The CSI → LINSTOR mapping: what a CSI volume or snapshot is in LINSTOR terms.

Parameters and ids (params, ids, topology) sit next to the jobs that use them: volume
provisioning, sources, attachment, resizing and snapshots. Nothing here speaks gRPC.
"""
