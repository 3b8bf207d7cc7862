"""The Snapdragon SoCs QNN compiles for: the ``soc_model`` number QNN's HTP backend takes and the HTP generation
(``htp_arch``) of each, so that a spec that names one with the other's number is refused before any work.

Numbers are QNN's ``Qnn_SocModel_t`` as onnxruntime-qnn parses them (its ``soc_utils.cc``); the HTP generation of
each SoC is the one ExecuTorch's Qualcomm backend (``backends/qualcomm/serialization/qc_schema.py``) and Qualcomm AI
Hub's device attributes give.
"""

from __future__ import annotations

from dataclasses import dataclass

from targets.errors import TargetError


@dataclass(frozen=True)
class Soc:
    soc_model: int
    part: str  # Qualcomm's part number, e.g. SM8650
    name: str
    htp_arch: int  # the Hexagon tensor processor generation (v68, v69, v73, v75, v79, v81)


SOCS = {s.soc_model: s for s in (
    Soc(30, "SM8350", "Snapdragon 888", 68),
    Soc(36, "SM8450", "Snapdragon 8 Gen 1", 69),
    Soc(42, "SM8475", "Snapdragon 8+ Gen 1", 69),
    Soc(43, "SM8550", "Snapdragon 8 Gen 2", 73),
    Soc(57, "SM8650", "Snapdragon 8 Gen 3", 75),
    Soc(60, "SC8380XP", "Snapdragon X Elite", 73),
    Soc(68, "SM8635", "Snapdragon 8s Gen 3", 73),
    Soc(69, "SM8750", "Snapdragon 8 Elite", 79),
    Soc(85, "SM8735", "Snapdragon 8s Gen 4", 79),
    Soc(87, "SM8850", "Snapdragon 8 Elite Gen 5", 81),
)}
HTP_ARCHS = tuple(sorted({s.htp_arch for s in SOCS.values()}))


def known() -> str:
    return ", ".join(f"{s.soc_model} ({s.part}, {s.name}, v{s.htp_arch})" for s in SOCS.values())


def soc_for(soc_model: int, htp_arch: int, where: str) -> Soc:
    """The SoC a spec names, checked against its HTP generation; a TargetError naming the known ones otherwise."""
    soc = SOCS.get(soc_model)
    if soc is None:
        # QNN itself takes an unknown number silently and then places every node on the CPU.
        raise TargetError(f"{where}: backend_options.qnn.soc_model = {soc_model} is not a SoC chipfit knows; "
                          f"known: {known()}")
    if soc.htp_arch != htp_arch:
        raise TargetError(f"{where}: backend_options.qnn.htp_arch = {htp_arch}, but soc_model {soc_model} "
                          f"({soc.part}, {soc.name}) has an HTP v{soc.htp_arch}: set htp_arch = {soc.htp_arch}")
    return soc
