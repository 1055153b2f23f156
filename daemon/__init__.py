"""The process edge of dsfs: the `dsfs` command line and the FUSE mount daemon (pyfuse3, trio)
that serves the versions and @head over the pure `vfs` library."""
