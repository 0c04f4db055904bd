"""COVIDx CXR (Wang et al., COVID-Net), used for the X-MIR comparison: normal, pneumonia, COVID-19.

ROOT holds the split files (``train.txt``, ``val.txt``, ``test.txt``, or the versioned names such as
``train_COVIDx8A.txt``/``test_COVIDx8A.txt``) and the image folders ``train/``, ``val/``, ``test/``.
Each line is ``patient_id filename label data_source``. Labels: ``normal`` → ``XR/chest/normal``,
``pneumonia`` → ``XR/chest/pneumonia``, ``COVID-19`` (also ``positive``) → ``XR/chest/covid-19``;
``negative`` → ``XR/chest/normal``. Without a val file, train is split patient-wise 90:10.
"""

from __future__ import annotations

from collections.abc import Iterator

from cbir_pg.datasets.base import Adapter, Record, RowError, UnknownLabel, register_adapter
from cbir_pg.errors import ConfigError

LABELS = {
    "normal": "XR/chest/normal",
    "negative": "XR/chest/normal",
    "pneumonia": "XR/chest/pneumonia",
    "covid-19": "XR/chest/covid-19",
    "covid19": "XR/chest/covid-19",
    "positive": "XR/chest/covid-19",
}


@register_adapter("covidx")
class COVIDxAdapter(Adapter):
    title = "COVIDx CXR"
    source_url = "https://github.com/lindawangg/COVID-Net"
    licence = "mixed (see the COVIDx data sources)"
    citation = "Wang et al., COVID-Net, Scientific Reports 10, 19549 (2020)"

    def __init__(self, root, key, options):
        super().__init__(root, key, options)
        self.files: dict[str, object] = {}
        for split in ("train", "val", "test"):
            cands = sorted(p for p in self.root.glob("*.txt") if p.name.lower().startswith(split))
            if cands:
                self.files[split] = cands[-1]
        if "train" not in self.files and "test" not in self.files:
            raise ConfigError(f"covidx: no train*.txt / test*.txt split files in {self.root}")

    def default_label(self, source_label: str) -> str | None:
        key = LABELS.get(source_label.strip().lower())
        if key is None:
            raise UnknownLabel(f"{source_label!r} is not a COVIDx label (normal, pneumonia, COVID-19)")
        return key

    def records(self) -> Iterator[Record | RowError]:
        has_val = "val" in self.files
        for split, path in self.files.items():
            with open(path, encoding="utf-8") as fh:
                for n, line in enumerate(fh, start=1):
                    if not line.strip():
                        continue
                    fields = line.split()
                    if len(fields) < 3:
                        yield RowError(
                            f"{path.name}:{n}",
                            "malformed_row",
                            f"expected 'patient_id filename label source', got {line.strip()!r}",
                        )
                        continue
                    patient, fname, label = fields[0], fields[1], fields[2]
                    yield Record(
                        uri=f"{split}/{fname}",
                        labels=[label],
                        split=split if (split != "train" or has_val) else "trainval",
                        patient=patient,
                        modality="XR",
                        region="chest",
                        extra={"source": fields[3]} if len(fields) > 3 else {},
                    )
