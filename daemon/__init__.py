"""The process edge of dsfs: the `dsfs` command line and the FUSE mount daemon (daemon.fuse, trio)
that serves the versions and @head over the pure `vfs` library."""
