"""Operator commands (``csi-linstor status | report | doctor``): read-only views of LINSTOR and
Kubernetes for the troubleshooting handbook. Nothing here writes to either system."""
