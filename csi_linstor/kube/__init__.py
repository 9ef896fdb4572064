"""The driver's Kubernetes API access (RWX block validation, consistency groups)."""
