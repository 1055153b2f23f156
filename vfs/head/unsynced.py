"""After an unclean stop: telling writes that a power cut lost from damage in @head's overlays.

Owns: the rule that classifies a block of an overlay file that matches neither of its two sums
(vfs.head.overlay) after a crash, and the repair an open applies. Never imports: daemon, trio,
pyfuse3.

A power cut keeps, of each file, what the kernel had written back, in no order between files:
an overlay's bytes may be on disk while the sums written before them are not, or the other way
round. A block can then match neither its sum now nor its sum at the last completed sync. That
is an unsynced write that was lost, not damage, if the overlay changed since the last completed
sync; in an overlay that did not, every block was made durable with its sums by that sync, and a
mismatch is damage (EIO, reported by verify), as after a clean stop.

Which overlays changed: every completed sync records in head.db, in the transaction that makes
it durable (HeadDB.sync), the wall-clock time at which it started, before its first fsync
(meta `synced_from_ns`). An overlay whose data file or .sum file has an mtime at or after that
time less MARGIN_NS (or any overlay, if nothing is recorded) changed since. Why the mtime is
sound on ext4 (the filesystem the store is tested on; data=ordered):
  - an allocating write's bytes become visible on disk only with the journal commit that maps
    them, which carries the inode's new mtime too;
  - every write of overlay bytes writes the node's .sum file first, so the .sum file's mtime is
    updated no later than the data's;
  - a sync fsyncs the .sum files before the data files: fsync of a changed .sum file commits the
    journal, and with it every mtime changed until then, before any overwritten data block is
    sent by the data fsyncs; syncfs (a commit) is preceded by a fsync of the overlay directory
    after touching it, which commits the journal the same way;
  - background writeback sends overwritten blocks after dirty_expire (30 s), long after the
    journal's periodic commit (5 s) has made the mtime durable.
So an overlay bytes of which reached the disk after the last completed sync started has a
durable mtime at or after that instant; the margin covers the coarse clock of file timestamps.
A clock set back by more than the margin between two syncs would make a changed overlay look
unchanged: a lost write then reads as EIO (never as wrong bytes).

The repair (at open after an unclean stop, `zero_lost_writes`): in changed overlays, a block
that matches neither sum, or is a hole whose sums say written, becomes a block of zeros whose
sums match. Not a hole: a hole reads as the base version's bytes, which may be older than the
last durable content; zeros are what the contract allows where unsynced writes were lost.
"""

from __future__ import annotations

import os

from vfs.head.overlay import Overlays

SYNCED_FROM = "synced_from_ns"
"""head.db meta key: when the last completed sync started (ns since the epoch)."""
MARGIN_NS = 2_000_000_000


def changed_since(overlays: Overlays, ino: int, synced_from: int | None) -> bool:
    """Whether a node's overlay may hold writes made after the last completed sync began."""
    if synced_from is None:
        return True
    limit = int(synced_from) - MARGIN_NS
    for path in (overlays.path(ino), overlays.sum_path(ino)):
        try:
            if os.stat(path).st_mtime_ns >= limit:
                return True
        except FileNotFoundError:
            continue
    return False


def lost_writes(overlays: Overlays, synced_from: int | None) -> dict[int, list[int]]:
    """Per node, offsets of blocks that are unsynced writes a crash lost (read-only)."""
    out: dict[int, list[int]] = {}
    for ino in overlays.stored_inos():
        if changed_since(overlays, ino, synced_from):
            blocks = overlays.unsynced_blocks(ino)
            if blocks:
                out[ino] = blocks
    return out


def zero_lost_writes(overlays: Overlays, synced_from: int | None) -> dict[int, int]:
    """Replace every lost unsynced write by zeros that match their sums; how many blocks, per
    node. The caller syncs the overlays afterwards."""
    counts: dict[int, int] = {}
    for ino, blocks in lost_writes(overlays, synced_from).items():
        overlays.zero_blocks(ino, blocks)
        overlays.close_file(ino)
        counts[ino] = len(blocks)
    return counts
