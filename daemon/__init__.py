"""The process edge of dsfs: the command line, and (later) the FUSE daemon."""
