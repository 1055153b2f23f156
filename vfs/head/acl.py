"""POSIX access ACLs as @head sees them: the permission bits an ACL implies.

Owns: parsing the Linux xattr form of `system.posix_acl_access`. Never imports: daemon, trio,
pyfuse3. Pure; any thread.
"""

from __future__ import annotations

import struct

from vfs.errors import Invalid

ACL_ACCESS = b"system.posix_acl_access"
_ACL_HEADER = struct.Struct("<I")
_ACL_ENTRY = struct.Struct("<HHI")
_USER_OBJ, _GROUP_OBJ, _MASK, _OTHER = 0x01, 0x04, 0x10, 0x20


def acl_mode(value: bytes) -> tuple[int, bool]:
    """Permission bits an access ACL (Linux xattr form) implies, and whether the ACL is
    minimal (says no more than those bits)."""
    if len(value) < _ACL_HEADER.size or (len(value) - _ACL_HEADER.size) % _ACL_ENTRY.size or \
            _ACL_HEADER.unpack_from(value)[0] != 2:
        raise Invalid("malformed POSIX ACL")
    perms: dict[int, int] = {}
    count = 0
    for off in range(_ACL_HEADER.size, len(value), _ACL_ENTRY.size):
        tag, perm, _ = _ACL_ENTRY.unpack_from(value, off)
        perms[tag] = perm & 7
        count += 1
    group = perms.get(_MASK, perms.get(_GROUP_OBJ, 0))
    bits = perms.get(_USER_OBJ, 0) << 6 | group << 3 | perms.get(_OTHER, 0)
    return bits, count <= 3
