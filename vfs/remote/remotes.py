"""The remotes a store knows: `STORE/remotes.json`.

Owns: reading and writing that file (atomically). Never imports: daemon, trio, pyfuse3.
It holds names, URLs, an endpoint and a profile name: never a credential (those come from the
standard AWS chain: environment, ~/.aws/config and credentials, instance roles).

    {"remotes": {"origin": {"url": "s3://bucket/prefix", "endpoint_url": null,
                            "profile": null, "lazy": true}},
     "default": "origin"}

`lazy` marks the remote a clone reads missing packs from (the mount fetches on demand).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from vfs.errors import CorruptData, UserError
from vfs.fsutil import atomic_write
from vfs.remote.backend import Backend, open_backend

FILE_NAME = "remotes.json"
NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True, slots=True)
class RemoteSpec:
    name: str
    url: str
    endpoint_url: str | None = None
    profile: str | None = None
    lazy: bool = False

    def open(self) -> Backend:
        return open_backend(self.url, endpoint_url=self.endpoint_url, profile=self.profile)

    def to_dict(self) -> dict[str, object]:
        return {k: v for k, v in asdict(self).items() if k != "name"}


class Remotes:
    def __init__(self, root: Path) -> None:
        self.path = root / FILE_NAME
        self.specs: dict[str, RemoteSpec] = {}
        self.default: str | None = None
        try:
            data = json.loads(self.path.read_bytes())
            for name, d in data["remotes"].items():
                self.specs[name] = RemoteSpec(name, str(d["url"]), d.get("endpoint_url"),
                                              d.get("profile"), bool(d.get("lazy", False)))
            self.default = data.get("default")
        except FileNotFoundError:
            pass
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CorruptData(f"{self.path} is damaged ({exc}): fix or remove it, then "
                              "`dsfs remote add` again") from None

    def save(self) -> None:
        data = {"remotes": {n: s.to_dict() for n, s in sorted(self.specs.items())},
                "default": self.default}
        atomic_write(self.path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())

    def add(self, spec: RemoteSpec) -> None:
        if not NAME_RE.match(spec.name):
            raise UserError(f"invalid remote name {spec.name!r}: use letters, digits, '.', '_' "
                            "and '-', starting with a letter")
        if spec.name in self.specs:
            raise UserError(f"remote {spec.name!r} already exists: `dsfs remote remove "
                            f"{spec.name}` first")
        open_backend(spec.url, spec.endpoint_url, spec.profile).close()  # validates the URL
        self.specs[spec.name] = spec
        if self.default is None:
            self.default = spec.name
        self.save()

    def remove(self, name: str) -> RemoteSpec:
        spec = self.get(name)
        if spec.lazy:
            raise UserError(f"remote {name!r} holds the data this clone reads on demand: "
                            f"`dsfs pull --data` first, or keep it")
        del self.specs[name]
        if self.default == name:
            self.default = next(iter(sorted(self.specs)), None)
        self.save()
        return spec

    def get(self, name: str | None) -> RemoteSpec:
        if name is None:
            if self.default is None:
                raise UserError("this store has no remote: `dsfs remote add NAME URL` first")
            name = self.default
        spec = self.specs.get(name)
        if spec is None:
            known = ", ".join(sorted(self.specs)) or "none"
            raise UserError(f"no remote named {name!r} (known: {known}): see `dsfs remote list`")
        return spec

    def lazy(self) -> RemoteSpec | None:
        return next((s for s in self.specs.values() if s.lazy), None)
