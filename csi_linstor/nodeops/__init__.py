"""Node-side operations: convergent helpers that act only on this volume's devices and mounts
(staging, publishing, usage), and the tools they use (mount table, devices, filesystems,
long-running commands, the subprocess runner).
"""
