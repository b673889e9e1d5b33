"""group.json: the members of a group of models trained together and how each ended.

The group folder holds group.json and, for `mlp-train --seeds`, the members' run folders.
Each member's folder is an ordinary run folder; its train.log and config.yaml note that
it was trained in a group. A member ends on its own (early stopping, a non-finite loss);
the others go on. `--resume` on the group folder or on a member still training resumes
the members still training; a member that has ended resumes alone, as any run.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from mlptrain.errors import UsageError
from mlptrain.util.files import atomic_write_text

GROUP_FILE = "group.json"
TRAINING, FINISHED, FAILED = "training", "finished", "failed"


class GroupFile:
    """group.json: each member's run folder (relative to the group folder when inside it)
    and its status; rewritten atomically whenever a member ends."""

    def __init__(
        self, path: Path, members: list[dict[str, str]], ensemble: bool = False,
        together: bool = True,
    ) -> None:  # fmt: skip
        # ensemble: the members are one model (the config's ensemble key), tested as one
        # when the last of them has finished, with the group folder's config.yaml.
        # together: stacked in one training; False: trained one after another.
        self.path, self.members = path, members
        self.ensemble, self.together = ensemble, together

    @classmethod
    def create(
        cls, folder: Path, run_dirs: Sequence[Path], ensemble: bool = False, together: bool = True
    ) -> GroupFile:
        members = [{"run_dir": _relative(path, folder), "status": TRAINING} for path in run_dirs]
        group = cls(folder / GROUP_FILE, members, ensemble, together)
        group.write()
        return group

    @classmethod
    def find(cls, path: Path) -> GroupFile | None:
        """The group of `path`: a group folder, or a member folder inside one."""
        for folder in (path, path.parent):
            candidate = folder / GROUP_FILE
            if candidate.is_file():
                try:
                    document = json.loads(candidate.read_text())
                    members = document["members"]
                except (OSError, ValueError, KeyError, TypeError) as exc:
                    raise UsageError(f"{candidate} cannot be read: {exc}") from None
                ensemble, together = document.get("ensemble"), document.get("together", True)
                return cls(candidate, members, bool(ensemble), bool(together))
        return None

    @classmethod
    def training(cls, path: Path) -> bool:
        """Whether `--resume path` means the group: `path` is a group folder, or the run
        folder of a member still training (an ended member resumes alone, to be
        extended, say)."""
        group = cls.find(path)
        if group is None:
            return False
        if (path / GROUP_FILE).is_file():
            return True
        return any(
            group.folder_of(member).resolve() == path.resolve() and member["status"] == TRAINING
            for member in group.members
        )

    def folder_of(self, member: dict[str, str]) -> Path:
        return self.path.parent / member["run_dir"]

    def set_status(self, run_dir: Path, status: str) -> None:
        for member in self.members:
            if self.folder_of(member).resolve() == run_dir.resolve():
                member["status"] = status
        self.write()

    @property
    def finished(self) -> bool:
        return all(member["status"] == FINISHED for member in self.members)

    def write(self) -> None:
        document: dict = {"members": self.members, "together": self.together}
        if self.ensemble:
            document["ensemble"] = True
        atomic_write_text(self.path, json.dumps(document, indent=1) + "\n")


def _relative(path: Path, folder: Path) -> str:
    try:
        return str(path.resolve().relative_to(folder.resolve()))
    except ValueError:
        return str(path.resolve())
