"""Device detection and environment capture against captured-format fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.runners import devices as devices
from harness.errors import UserError

FIX = Path(__file__).parent / "fixtures" / "ascend"


def read(name: str) -> str:
    return (FIX / name).read_text()


def fake_tools(npu: str | None = None, board: str | None = None, nvidia: str | None = None):
    """(run, which) for detect_with: the named tools print the fixtures."""
    present = {"npu-smi": npu is not None, "nvidia-smi": nvidia is not None}

    def which(tool):
        return f"/usr/bin/{tool}" if present.get(tool) else None

    def run(cmd):
        if cmd[:2] == ["npu-smi", "info"] and len(cmd) == 2:
            return (0, read(npu)) if npu != "npu_smi_info_broken.txt" else (8, read(npu))
        if cmd[:2] == ["npu-smi", "info"]:
            return (0, read(board)) if board else (1, "")
        if cmd[0] == "nvidia-smi":
            return (0, read(nvidia)) if "--format=csv,noheader" in cmd else (0, read("nvidia_smi_L.txt"))
        raise AssertionError(cmd)

    return run, which


@pytest.mark.parametrize("name, chips, family", [
    ("npu_smi_info_310.txt", ["310"], "ascend310"),
    ("npu_smi_info_310p3.txt", ["310P3", "310P3"], "ascend310p"),
    ("npu_smi_info_910b.txt", ["910B3"], "ascend910"),
])
def test_npu_smi_table(name, chips, family):
    info = devices.parse_npu_smi_info(read(name))
    assert info.chips == chips and info.count == len(chips)
    assert {devices.family_of_chip(c) for c in chips} == {family}
    assert info.driver_version and info.npu_smi_version


@pytest.mark.parametrize("name, versions", [
    # verbatim from published READMEs (tests/fixtures/ascend/README.md): the README's
    # indentation kept; the second one with its CRLF line ends and an NPU id of 2144
    ("published_npu_smi_info_310p3_sfa3d.txt", ("22.0.0", "22.0.2")),
    ("published_npu_smi_info_310p3_dbnet_crlf.txt", ("22.0.2", "22.0.4")),
])
def test_npu_smi_table_published_samples(name, versions):
    info = devices.parse_npu_smi_info((FIX / name).read_bytes().decode("utf-8"))
    assert info.chips == ["310P3"] and devices.family_of_chip("310P3") == "ascend310p"
    assert (info.npu_smi_version, info.driver_version) == versions
    rep = devices.detect_with(*fake_tools(npu=name))
    assert rep.present["ascend310p"] and not rep.present["ascend310"]


def test_npu_smi_board_driver_and_firmware():
    assert devices.parse_npu_smi_board(read("npu_smi_board.txt")) == {
        "driver_version": "23.0.rc2", "firmware_version": "7.0.0.5.242"}


def test_not_npu_smi_output_is_a_clear_error():
    with pytest.raises(UserError, match="(?s)no NPU table.*dcmi model initialized failed"):
        devices.parse_npu_smi_info(read("npu_smi_info_broken.txt"))


def test_unknown_chip_is_named():
    with pytest.raises(UserError, match="310B1.*does not know"):
        devices.require_family("310B1")
    rep = devices.detect_with(*fake_tools(npu="npu_smi_info_310b1.txt"))
    assert not any(rep.present[f] for f in devices.ASCEND)
    assert rep.why_absent["ascend310p"] == ("no Ascend 310P: npu-smi info reports 310B1 "
                                            "(310B1 unknown to this harness)")


def test_detect_310p_host_with_gpu():
    rep = devices.detect_with(*fake_tools(npu="npu_smi_info_310p3.txt", board="npu_smi_board.txt",
                                          nvidia="nvidia_smi_query.csv"))
    assert rep.present == {"cpu": True, "gpu": True, "ascend910": False, "ascend310": False, "ascend310p": True}
    assert rep.details["ascend310p"] == "310P3, 310P3"
    assert rep.chips("ascend310p") == ["310P3", "310P3"]
    assert rep.npu.driver_version == "23.0.rc2" and rep.npu.firmware_version == "7.0.0.5.242"
    assert [(g.name, g.driver_version) for g in rep.gpus] == [("Tesla T4", "535.104.05")] * 2
    assert "T4" in rep.details["gpu"]
    assert devices.device_model("ascend310p", rep) == "310P3"
    assert devices.device_model("gpu", rep) == "Tesla T4"
    env = rep.as_env()
    assert env["npu"]["chips"] == ["310P3", "310P3"] and env["gpus"][0]["driver_version"] == "535.104.05"
    assert "CPUExecutionProvider" in env["onnxruntime_providers"]


def test_detect_without_tools_names_what_is_missing():
    rep = devices.detect_with(*fake_tools())
    assert rep.why_absent["gpu"] == "no GPU: nvidia-smi not found"
    assert rep.why_absent["ascend310p"] == "no Ascend 310P: npu-smi not found"
    rep = devices.detect_with(*fake_tools(npu="npu_smi_info_broken.txt"))
    assert rep.why_absent["ascend310"].startswith("no Ascend 310: npu-smi info exited 8")


def test_nvidia_smi_list_fallback():
    gpus = devices.parse_nvidia_smi_list(read("nvidia_smi_L.txt"))
    assert [(g.index, g.name) for g in gpus] == [(0, "Tesla T4")]


def test_cann_version_and_missing_cann(tmp_path):
    home = tmp_path / "latest"
    (home / "x86_64-linux").mkdir(parents=True)
    (home / "x86_64-linux" / "ascend_toolkit_install.info").write_text(read("ascend_toolkit_install.info"))
    assert devices.cann_version(home) == "7.0.RC1"
    assert devices.require_cann({"ASCEND_TOOLKIT_HOME": str(home)}) == home
    if not Path(devices.CANN_DEFAULT).is_dir():
        with pytest.raises(UserError, match="(?s)no CANN environment.*set_env.sh"):
            devices.require_cann({})


def test_env_records_device_environment():
    from harness.results import provenance as env

    captured = env.capture()
    assert set(captured["device_env"]) >= {"npu", "gpus", "cann_version", "onnxruntime_providers",
                                           "mindspore_targets"}
