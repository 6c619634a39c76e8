"""Differential runs compare only against the pinned reference build."""
from __future__ import annotations

import pytest

from oxsd.diff.daemons import (PINNED_REFERENCE, DaemonError, check_reference_version,
                               reference_version, start_reference)


def _versions(tmp_path, xen_version: str) -> None:
    deps = tmp_path / "_deps"
    deps.mkdir()
    (deps / "versions.txt").write_text(
        "Package: libxenstore4 Version: 4.17.5+72-g01140da4e8-1 \n"
        f"Package: xen-utils-4.17 Version: {xen_version} \n")


def test_the_pinned_build_is_accepted(tmp_path, monkeypatch):
    monkeypatch.setenv("OCAML_REF_WORK", str(tmp_path))
    _versions(tmp_path, PINNED_REFERENCE)
    assert reference_version() == PINNED_REFERENCE
    assert check_reference_version() == PINNED_REFERENCE


def test_another_build_is_refused_with_both_versions_named(tmp_path, monkeypatch):
    monkeypatch.setenv("OCAML_REF_WORK", str(tmp_path))
    _versions(tmp_path, "4.17.5+72-g01140da4e8-1")
    with pytest.raises(DaemonError, match=r"is 4\.17\.5\+72-g01140da4e8-1, not the pinned "
                                          + PINNED_REFERENCE.replace("+", r"\+")):
        check_reference_version()
    kit = tmp_path / "kit"  # a kit to be found, so that the version is what refuses
    kit.mkdir()
    (kit / "run-oxenstored.sh").write_text("#!/bin/sh\nexit 1\n")
    monkeypatch.setenv("OCAML_REF", str(kit))
    with pytest.raises(DaemonError, match="not the pinned"):
        start_reference(tmp_path / "scratch")
    assert not (tmp_path / "scratch").exists()  # refused before anything started


def test_a_cache_without_versions_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("OCAML_REF_WORK", str(tmp_path))
    assert reference_version() is None
    with pytest.raises(DaemonError, match="of unknown version"):
        check_reference_version()
