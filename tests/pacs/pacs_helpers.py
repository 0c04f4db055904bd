"""A real Orthanc (Debian's ``orthanc`` + ``orthanc-dicomweb``) started by the tests as their own process,
and real DICOM to put in it: pydicom's bundled files and MedMNIST images wrapped as Secondary Capture
with synthetic patient names, ids and birth dates.

Where Orthanc is not installed the tests skip with the reason, unless ``CBIR_PG_REQUIRE_ORTHANC=1``
(set by ``.ci/run``), which makes them fail instead.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

USER, PASSWORD = "cbirpacs", "pw-Zq81-never-stored"
PLUGINS = (
    "/usr/share/orthanc/plugins/libOrthancDicomWeb.so",
    "/usr/lib/orthanc/libOrthancDicomWeb.so",
    "/usr/local/share/orthanc/plugins/libOrthancDicomWeb.so",
)
#: Orthanc forwards (C-STORE, Lua) every stored instance whose PatientID starts with this to the listener
ROUTE_PREFIX = "ROUTE"

LUA = f"""
function OnStoredInstance(instanceId, tags, metadata, origin)
  local pid = tags['PatientID'] or ''
  if string.sub(pid, 1, {len(ROUTE_PREFIX)}) == '{ROUTE_PREFIX}' then
    SendToModality(instanceId, 'cbir')
  end
end
"""


def orthanc_or_skip() -> tuple[str, str]:
    binary = shutil.which("Orthanc")
    plugin = next((p for p in PLUGINS if Path(p).is_file()), None)
    if binary and plugin:
        return binary, plugin
    msg = (
        "Orthanc with its DICOMweb plugin is not installed (Debian: apt-get install orthanc orthanc-dicomweb); "
        "the PACS tests need a real PACS"
    )
    if os.environ.get("CBIR_PG_REQUIRE_ORTHANC") == "1":
        pytest.fail(msg)
    pytest.skip(msg)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on port {port} after {timeout:.0f} s")


class Orthanc:
    """One Orthanc on loopback ports with its own config and storage folder (never the system service)."""

    def __init__(self, root: Path, listener_port: int):
        self.binary, plugin = orthanc_or_skip()
        self.root = root
        self.http, self.dicom, self.listener_port = free_port(), free_port(), listener_port
        (root / "route.lua").write_text(LUA)
        config = {
            "Name": "cbir-pg-test",
            "StorageDirectory": str(root / "storage"),
            "IndexDirectory": str(root / "storage"),
            "HttpPort": self.http,
            "DicomPort": self.dicom,
            "DicomAet": "ORTHANC",
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": True,
            "RegisteredUsers": {USER: PASSWORD},
            "Plugins": [plugin],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
            "DicomModalities": {"cbir": ["CBIRPG", "127.0.0.1", listener_port]},
            "LuaScripts": [str(root / "route.lua")],
            "StableAge": 1,
        }
        self.config = root / "orthanc.json"
        self.config.write_text(json.dumps(config))
        self.proc: subprocess.Popen | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.http}"

    @property
    def url(self) -> str:
        return f"{self.base}/dicom-web"

    def start(self) -> None:
        import requests

        with open(self.root / "orthanc.log", "ab") as log:  # the child keeps its own copy of the handle
            self.proc = subprocess.Popen(
                [self.binary, str(self.config)], stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{self.base}/system", auth=(USER, PASSWORD), timeout=2).ok:
                    return
            except requests.RequestException:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError(f"Orthanc exited: {(self.root / 'orthanc.log').read_text()[-2000:]}")
            time.sleep(0.2)
        raise TimeoutError("Orthanc did not answer within 60 s")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()

    def upload(self, data: bytes) -> dict:
        import requests

        r = requests.post(f"{self.base}/instances", data=data, auth=(USER, PASSWORD), timeout=30)
        r.raise_for_status()
        return r.json()

    def delete_instance(self, orthanc_id: str) -> None:
        import requests

        requests.delete(f"{self.base}/instances/{orthanc_id}", auth=(USER, PASSWORD), timeout=30)


def to_bytes(ds) -> bytes:
    import pydicom

    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


def secondary_capture(pixels, *, name: str, patient_id: str, birth: str, study_uid: str, study_date: str):
    """A DICOM Secondary Capture (greyscale 8 bit) of ``pixels`` with the given synthetic patient."""
    import numpy as np
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = sop = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = SecondaryCaptureImageStorage, sop
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = name, patient_id, birth, "F"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, generate_uid()
    ds.StudyDate, ds.Modality, ds.ConversionType = study_date, "OT", "WSD"
    ds.StudyID, ds.SeriesNumber, ds.InstanceNumber = "1", 1, 1
    arr = np.ascontiguousarray(pixels, dtype=np.uint8)
    ds.Rows, ds.Columns = arr.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = arr.tobytes()
    return ds


def medmnist_studies(npz: Path, *, prefix: str, n: int, study_date: str, first_birth_year: int) -> list:
    """``n`` MedMNIST test images of ``npz`` as Secondary Capture, one synthetic patient and study each:
    names ``<PREFIX>^SYNTH<i>``, ids ``<PREFIX>ID<i>``, birth dates in ``first_birth_year`` + i."""
    import numpy as np
    from pydicom.uid import generate_uid

    images = np.load(npz)["test_images"][:n]
    return [
        secondary_capture(
            img,
            name=f"{prefix}^SYNTH{i:02d}",
            patient_id=f"{prefix}ID{i:04d}",
            birth=f"{first_birth_year + i}0{1 + i % 9}2{i % 8}",
            study_uid=generate_uid(),
            study_date=study_date,
        )
        for i, img in enumerate(images)
    ]


#: parts of names too generic to prove anything when found (they occur in any SQL schema dump)
GENERIC = {"test", "name", "first", "last", "firstname", "lastname", "anonymized", "anonymous", "operator"}


def _telling(x: str) -> bool:
    return len(x) >= 4 and any(c.isalpha() for c in x) and x.lower() not in GENERIC


def patient_needles(ds) -> list[str]:
    """Every person name in a header (whole, and its parts of 4+ characters that are not generic words),
    and the patient's ids and birth date; purely numeric values shorter than 8 digits are left out (they
    occur by chance in timestamps and sizes)."""
    out: list[str] = []
    for elem in ds:
        if elem.VR != "PN" or not elem.value:
            continue
        for name in elem.value if elem.VM > 1 else [elem.value]:
            name = str(name)
            parts = name.replace("^", " ").replace("=", " ").split()
            out += [x for x in [name, *parts] if _telling(x)]
    for tag in ("PatientID", "PatientBirthDate", "OtherPatientIDs", "IssuerOfPatientID"):
        v = ds.get(tag)
        if v:
            values = [str(x) for x in (v if isinstance(v, list | tuple) else [v])]
            out += [x for x in values if len(x) >= 4 and not (x.isdigit() and len(x) < 8)]
    return sorted(set(out))
