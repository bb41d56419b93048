"""The template corpus (tests/fixtures/templates/corpus): each case with what a build of it reads.

Shared by the fingerprint mutation test (tests/unit/build) and the comparison with Packer's own
reading (tests/integration). Folders are modelled on how published template collections are laid out.
Every file of a case's folder is read by its build unless it is listed in ``unread``; ``extra`` are files
outside the folder the build reads too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

CORPUS = Path(__file__).resolve().parent / "fixtures" / "templates" / "corpus"


@dataclass(frozen=True)
class Case:
    name: str
    target: str  # relative to CORPUS: a folder, or one file
    variables: dict = field(default_factory=dict)
    var_files: tuple[str, ...] = ()  # relative to CORPUS
    unread: tuple[str, ...] = ("README.md",)  # relative to the case's folder
    extra: tuple[str, ...] = ()  # relative to CORPUS
    packer_1_6: str = ""  # what Packer 1.6.6 cannot read in it, if anything

    @property
    def folder(self) -> Path:
        path = CORPUS / self.target
        return path.parent if path.is_file() else path

    def read_files(self, root: Path = CORPUS) -> list[Path]:
        folder = root / self.folder.relative_to(CORPUS)
        files = [p for p in sorted(folder.rglob("*")) if p.is_file()]
        files = [p for p in files if str(p.relative_to(folder)) not in self.unread]
        return files + [root / e for e in self.extra]

    def unread_files(self, root: Path = CORPUS) -> list[Path]:
        folder = root / self.folder.relative_to(CORPUS)
        return [folder / u for u in self.unread] + [
            root / "_shared" / "roles" / "unused" / "tasks" / "main.yml"
        ]


CASES = [
    Case(
        "vsphere-ubuntu",
        "vsphere-ubuntu",
        variables={"vsphere_password": "s3cret-vcenter"},
        unread=("README.md", "docs/README.md"),
        extra=("_shared/roles/hardening/tasks/main.yml", "_shared/roles/hardening/defaults/main.yml"),
    ),
    Case("vagrant-boxes", "vagrant-boxes", unread=("README.md", "scripts/unused-hyperv.sh")),
    Case(
        "tutorial-ubuntu",
        "tutorial-singles/docker-ubuntu.pkr.hcl",
        unread=(
            "README.md",
            "docker-alpine.pkr.hcl",
            "welcome.txt",
            "alpine.pkrvars.hcl",
            "shared.auto.pkrvars.hcl",  # a single file takes no auto var file, as with Packer
        ),
    ),
    Case(
        "tutorial-alpine",
        "tutorial-singles/docker-alpine.pkr.hcl",
        var_files=("tutorial-singles/alpine.pkrvars.hcl",),
        unread=("README.md", "docker-ubuntu.pkr.hcl", "shared.auto.pkrvars.hcl"),
    ),
    Case("dynamic-blocks", "dynamic-blocks"),
    Case("json-varfiles", "json-varfiles", var_files=("json-varfiles/prod.pkrvars.json",)),
    Case("windows-server", "windows-server"),
    Case(
        "proxmox-cloudinit",
        "proxmox-cloudinit",
        variables={"proxmox_token": "pve-token"},
        packer_1_6="proxmox-iso came with the plugin split of Packer 1.7: 1.6.6 lists it, never runs it",
    ),
    Case("aws-ebs-shell", "aws-ebs-shell"),
    Case("docker-ansible-galaxy", "docker-ansible-galaxy"),
    Case("large-multi-build", "large-multi-build"),
    Case("bom-sensitive", "bom-sensitive", var_files=("bom-sensitive/secrets.pkrvars.hcl",)),
]
