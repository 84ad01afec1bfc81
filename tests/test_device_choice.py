"""What device="auto", "gpu" and "cpu" choose, decided from the adapters' info (never by timing anything)."""

from __future__ import annotations

import logging

import pytest

import mdst
from conftest import need
from mdst.gpu import device


class FakeAdapter:
    """Stands in for a wgpu adapter where only its info is read."""

    def __init__(self, name: str, adapter_type: str, backend: str = "Vulkan"):
        self.info = {"device": name, "adapter_type": adapter_type, "backend_type": backend, "description": ""}


LAVAPIPE = FakeAdapter("llvmpipe (LLVM 15.0.6, 256 bits)", "CPU")
LAVAPIPE_GL = FakeAdapter("llvmpipe (LLVM 15.0.6, 256 bits)", "CPU", "OpenGL")
SWIFTSHADER = FakeAdapter("SwiftShader Device (Subzero)", "CPU")
IGPU = FakeAdapter("Intel(R) UHD Graphics 770", "IntegratedGPU")
DGPU = FakeAdapter("NVIDIA H200", "DiscreteGPU")
DGPU_GL = FakeAdapter("NVIDIA H200/PCIe/SSE2", "DiscreteGPU", "OpenGL")


@pytest.fixture
def enumerated(monkeypatch):
    """enumerated(*fakes): make wgpu enumerate exactly these adapters."""
    import wgpu
    import wgpu.backends.wgpu_native  # noqa: F401 (replaces wgpu.gpu, so it goes first)

    def use(*fakes: FakeAdapter) -> None:
        monkeypatch.setattr(wgpu.gpu, "enumerate_adapters_sync", lambda: list(fakes))
    return use


def test_auto_takes_numpy_over_software_adapters_and_says_why(enumerated):
    enumerated(LAVAPIPE_GL, LAVAPIPE, SWIFTSHADER)
    adapter, why = device.choose_adapter("auto")
    assert adapter is None
    assert why == ("only software adapters (llvmpipe (LLVM 15.0.6, 256 bits), SwiftShader Device (Subzero)), "
                   "and numpy is faster than a software adapter")


def test_gpu_forces_a_software_adapter(enumerated):
    enumerated(LAVAPIPE_GL, SWIFTSHADER, LAVAPIPE)
    adapter, why = device.choose_adapter("gpu")
    assert adapter is SWIFTSHADER  # Vulkan before OpenGL, then wgpu's order
    assert why == "software adapter SwiftShader Device (Subzero) (Vulkan), as device='gpu' asks"


@pytest.mark.parametrize("kind", ["auto", "gpu"])
def test_hardware_adapters_come_first(enumerated, kind):
    enumerated(LAVAPIPE, DGPU_GL, IGPU, DGPU)
    assert [a.info["device"] for a in device.adapters()] == [DGPU.info["device"], IGPU.info["device"],
                                                              DGPU_GL.info["device"], LAVAPIPE.info["device"]]
    adapter, why = device.choose_adapter(kind)
    assert adapter is DGPU and why == "hardware adapter NVIDIA H200 (Vulkan)"


def test_resolve_logs_the_numpy_choice(enumerated, caplog):
    enumerated(LAVAPIPE)
    with caplog.at_level(logging.INFO, logger="mdst"):
        assert device.resolve("auto") is None
    assert ("mdst: using the numpy CPU fallback: only software adapters (llvmpipe (LLVM 15.0.6, 256 bits)), and "
            "numpy is faster than a software adapter; device='gpu' forces it") in caplog.messages


def test_no_adapter_at_all(enumerated):
    enumerated()
    assert device.resolve("auto") is None
    with pytest.raises(mdst.DeviceError, match="no WebGPU adapter found"):
        device.resolve("gpu")


def _software_only(monkeypatch) -> list:
    """Keep only the machine's real software adapters (lavapipe in CI) in wgpu's enumeration."""
    import wgpu
    import wgpu.backends.wgpu_native  # noqa: F401 (replaces wgpu.gpu, so it goes first)

    real = wgpu.gpu.enumerate_adapters_sync
    software = [a for a in real() if a.info.get("adapter_type") == "CPU"]
    need(bool(software), "no software WebGPU adapter (install mesa-vulkan-drivers)")
    monkeypatch.setattr(wgpu.gpu, "enumerate_adapters_sync",
                        lambda: [a for a in real() if a.info.get("adapter_type") == "CPU"])
    return software


def test_load_with_only_a_software_adapter(monkeypatch, smollm2_path):
    """The choice as Model.__init__ makes it: "auto" runs numpy, "gpu" runs on the software adapter."""
    software = _software_only(monkeypatch)
    with mdst.load(smollm2_path, context_length=64) as m:
        assert m.backend == "cpu (numpy)" and m.device_profile is None
    with mdst.load(smollm2_path, device="gpu", context_length=64) as m:
        assert m.device_profile.software and m.device_profile.name == software[0].info["device"]
