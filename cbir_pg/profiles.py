"""Profiles: one name for a set of methodological choices, recorded with every import and stored run.

``default`` is this project's choice where we think it is better science (dedupe, patient-hash splits,
U-Zeros for CheXpert, validation-loss early stopping, HNSW search). ``paper`` applies every choice of the
paper's published code (MIC-DKFZ/foundation-models-for-cbmir), so that a run is comparable with its
tables on purpose:

==========================  ==================================  =====================================
choice                      default                             paper
==========================  ==================================  =====================================
splits                      patient-hash (``--seed``)           the published CSVs (``dkfz-splits``)
duplicates                  exact + perceptual flagged          none flagged (the published CSVs
                                                                already leave out RadImageNet's
                                                                ignore list)
CheXpert uncertain (-1)     counts as absent (U-Zeros)          image excluded
retrieval queries → index   test → train                        test → train
search                      HNSW (``ann``)                      exact (``faiss.IndexFlatIP``)
linear probe                stop on val loss, torch init        stop on val accuracy, N(0, 0.01) init
==========================  ==================================  =====================================

The profile's name goes into ``cbir.dataset.params`` and ``cbir.eval_run.params`` (key ``profile``), and
``cbir_report.eval_runs`` / ``cbir_report.leaderboard`` show it as a column, so every row says whether
it was made to be compared with the paper.
"""

from __future__ import annotations

from dataclasses import dataclass

from cbir_pg.errors import ConfigError

#: duplicate flagging at import: exact + perceptual (``near``), pixel-identical only (``exact``), none
DEDUPE = ("near", "exact", "none")


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    dedupe: str
    #: adapter options applied when not given: (adapter kind, option, value)
    adapter_defaults: tuple[tuple[str, str, str], ...]
    index_splits: tuple[str, ...]
    query_splits: tuple[str, ...]
    search_mode: str
    probe_rule: str
    #: the adapter whose splits the profile expects (``None``: any)
    dataset_kind: str | None = None


PROFILES: dict[str, Profile] = {
    "default": Profile(
        name="default",
        description="this project's choices (dedupe, patient-hash splits, U-Zeros, val-loss probe, HNSW)",
        dedupe="near",
        adapter_defaults=(),
        index_splits=("train",),
        query_splits=("test",),
        search_mode="ann",
        probe_rule="loss",
    ),
    "paper": Profile(
        name="paper",
        description="every choice of the paper's published code, to compare with its Tables 2 and 4",
        dedupe="none",
        adapter_defaults=(("chexpert", "uncertain", "exclude"),),
        index_splits=("train",),
        query_splits=("test",),
        search_mode="exact",
        probe_rule="paper",
        dataset_kind="dkfz-splits",
    ),
}


def get_profile(name: str | None) -> Profile:
    key = (name or "default").strip().lower()
    if key not in PROFILES:
        raise ConfigError(f"unknown profile {name!r}: use {' or '.join(PROFILES)}")
    return PROFILES[key]


def adapter_options(profile: Profile, kind: str, options: dict[str, object]) -> dict[str, object]:
    """``options`` with the profile's defaults for adapter ``kind`` filled in where not given."""
    out = dict(options)
    for k, opt, value in profile.adapter_defaults:
        if k == kind and out.get(opt) in (None, ""):
            out[opt] = value
    return out


def check_dedupe(value: str) -> str:
    v = value.strip().lower()
    if v not in DEDUPE:
        raise ConfigError(f"--dedupe {value!r}: use one of {', '.join(DEDUPE)}")
    return v
