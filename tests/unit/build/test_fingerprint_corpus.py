"""Mutation test over the template corpus: every file a build reads moves the fingerprint, others do not."""

from __future__ import annotations

import shutil

import pytest
from ansible_collections.kiln.immutable.plugins.module_utils.build import fingerprint as fpm
from ansible_collections.kiln.immutable.plugins.module_utils.build import template as tm
from template_corpus import CASES, CORPUS

KEY = b"corpus-key".ljust(32, b"\0")


def fingerprint(root, case) -> fpm.Fingerprint:
    template = tm.load(str(root / case.target))
    var_files = [str(root / f) for f in case.var_files]
    values = tm.resolve_variables(template, case.variables, var_files, provided_by_kiln=("version",))
    return fpm.compute(
        template,
        values,
        packer_version="1.6.6",
        key=KEY,
        image_id=lambda ref: "sha256:" + "a" * 64,
        var_files=var_files,
    )


@pytest.fixture
def corpus(tmp_path, monkeypatch):
    monkeypatch.setenv("KILN_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("ANSIBLE_CONFIG", raising=False)
    root = tmp_path / "corpus"
    shutil.copytree(CORPUS, root, symlinks=True)
    return root


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_every_file_the_build_reads_changes_the_fingerprint(corpus, case):
    reference = fingerprint(corpus, case).value
    missed = []
    for path in case.read_files(corpus):
        original = path.read_bytes()
        path.write_bytes(original + b"\n")
        if fingerprint(corpus, case).value == reference:
            missed.append(str(path.relative_to(corpus)))
        path.write_bytes(original)
    assert not missed, f"edits the fingerprint missed: {missed}"
    assert fingerprint(corpus, case).value == reference


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_files_the_build_does_not_read_leave_the_fingerprint(corpus, case):
    reference = fingerprint(corpus, case).value
    for path in case.unread_files(corpus):
        path.write_bytes(path.read_bytes() + b"\n# edited\n")
    assert fingerprint(corpus, case).value == reference


def test_a_new_file_where_a_build_reads_a_folder_counts(corpus):
    checked = []
    for case in CASES:
        before = fingerprint(corpus, case)
        for folder in before.folders:
            added = corpus / case.folder.relative_to(CORPUS) / folder / "added-by-the-test.txt"
            added.write_text("new\n")
            assert fingerprint(corpus, case).value != before.value, (case.name, folder)
            added.unlink()
            checked.append(f"{case.name}:{folder}")
    assert len(checked) >= 8, checked  # most layouts read some folder whole
