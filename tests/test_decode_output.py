"""Issue 15: the decoder leaves its images on the device and converts them in the writer thread,
and sizes torch's CPU thread pool from the CPU quota — with the same images as before."""

from __future__ import annotations

import os
import re
import threading

import numpy as np
import pytest
from PIL import Image

from generate.decode import Decoded, Decoder, DeviceImage, Request, working_size
from generate.registry import load_registry
from generate.run import cgroup_cpu_quota, cpu_share, torch_threads
from tests.test_generate import DEMO, bench, tiny  # noqa: F401  (tiny: the weights fixture)

REFERENCE = (80, 60)
"""Not the working size (64 × 48 at long side 64): the result is resized back, as in a study."""


def plain_call(decoder: Decoder, mode: str, requests: list[Request]) -> list[np.ndarray]:
    """The oracle: the diffusers pipeline called with PIL start images and PIL output, then
    resized back with PIL — the decoder's way until issue 15, and the reference script's."""
    import torch

    first = requests[0]
    width, height = working_size(*first.size, decoder.long_side)
    steps, _ = decoder.schedule(mode, first.strength)
    kwargs = {
        "prompt": [r.prompt for r in requests],
        "guidance_scale": decoder.spec.guidance_scale,
        "generator": [torch.Generator("cpu").manual_seed(r.seed) for r in requests],
        "num_inference_steps": steps,
    }
    animate = decoder.spec.family == "animatediff"
    if mode == "Text":
        pipe = decoder._text2image
        kwargs.update(height=height, width=width, **({"num_frames": 1} if animate else {}))
    else:
        pipe = decoder._image2image
        starts = [Image.fromarray(r.start).resize((width, height), Image.Resampling.BICUBIC)
                  for r in requests]  # fmt: skip
        if decoder.spec.family == "instruct-pix2pix":
            kwargs.update(image=starts, image_guidance_scale=2.0)
        else:
            kwargs.update({"video" if animate else "image": starts, "strength": first.strength})
    result = pipe(**kwargs)
    images = [result.frames[0][0]] if animate else result.images
    return [
        np.asarray(image.convert("RGB").resize(r.size, Image.Resampling.BICUBIC))
        for r, image in zip(requests, images, strict=True)
    ]


def requests_for(count: int) -> list[Request]:
    start = np.asarray(Image.open(DEMO / "rocket.png").convert("RGB").resize(REFERENCE))
    return [Request("a rocket", start, 0.5, 5 + k, REFERENCE) for k in range(count)]


@pytest.mark.parametrize(
    "name, mode",
    [("SD15", "Full"), ("SD15", "Text"), ("RealVis", "Full"), ("RealVis", "Text"),
     ("InstructPix", "Full"), ("Animate", "Full"), ("Animate", "Text")],
)  # fmt: skip
def test_images_are_the_ones_the_plain_pil_call_gives(tiny, name, mode):  # noqa: F811
    decoder = Decoder(load_registry(tiny)[name], "cpu", long_side=64, steps=4)
    requests = requests_for(1 if decoder.one_per_call else 2)
    decoded = decoder.batch(mode, requests)
    expected = plain_call(decoder, mode, requests)
    for result, image in zip(decoded, expected, strict=True):
        assert result.image.shape == (REFERENCE[1], REFERENCE[0], 3)
        assert result.image.dtype == np.uint8
        np.testing.assert_array_equal(result.image, image)


def test_the_host_copy_and_resize_wait_for_whoever_reads_the_image(tiny):  # noqa: F811
    """Decoder.batch returns before any image is on the host at its size; the first reader (the
    writer thread in ``generate run``) converts it, once."""
    decoder = Decoder(load_registry(tiny)["SD15"], "cpu", long_side=64, steps=4)
    decoded = decoder.batch("Full", requests_for(2))
    assert all(isinstance(d.pixels, DeviceImage) for d in decoded)
    seen = {}
    reader = threading.Thread(target=lambda: seen.update(image=decoded[0].image))
    reader.start()
    reader.join()
    assert seen["image"].shape == (REFERENCE[1], REFERENCE[0], 3)
    assert isinstance(decoded[0].pixels, np.ndarray)  # the device memory is released
    assert decoded[0].pixels.shape == (48, 64, 3)  # the working size; resized on reading
    assert decoded[0].image is seen["image"]  # converted once
    assert isinstance(decoded[1].pixels, DeviceImage)  # its neighbour, not yet read


def test_a_host_image_passes_through_unchanged():
    image = np.arange(48 * 64 * 3, dtype=np.uint8).reshape(48, 64, 3)
    assert Decoded(image, 4, 2, False).image is image
    assert Decoded(image, 4, 2, False, (64, 48)).image is image
    assert Decoded(image, 4, 2, False, (32, 24)).image.shape == (24, 32, 3)


def test_device_quantization_matches_diffusers_pil_output():
    """× 255, round half to even, uint8: value for value what diffusers' numpy_to_pil does,
    including the halves (0.5 / 255 rounds to 0, 1.5 / 255 to 2)."""
    import torch
    from diffusers.image_processor import VaeImageProcessor

    values = torch.rand(2, 3, 16, 24, generator=torch.Generator().manual_seed(0))
    values[0, 0, 0, :4] = torch.tensor([0.5, 1.5, 2.5, 254.5]) / 255
    ours = np.stack([image.numpy() for image in DeviceImage.of(values)])
    theirs = VaeImageProcessor.numpy_to_pil(VaeImageProcessor.pt_to_numpy(values))
    np.testing.assert_array_equal(ours, np.stack([np.asarray(image) for image in theirs]))


def cgroup_tree(tmp_path, proc: str, files: dict[str, str]):
    (tmp_path / "proc").write_text(proc)
    for name, text in files.items():
        path = tmp_path / "cg" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path / "proc", tmp_path / "cg"


def test_cgroup_v2_quota_is_the_tightest_on_the_way_to_the_root(tmp_path):
    proc, root = cgroup_tree(tmp_path, "0::/lab/job\n", {
        "cpu.max": "max 100000\n", "lab/cpu.max": "400000 100000\n",
        "lab/job/cpu.max": "250000 100000\n",
    })  # fmt: skip
    assert cgroup_cpu_quota(proc, root) == 2  # 2.5 CPUs: two threads are never throttled
    (root / "lab" / "job" / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_quota(proc, root) == 4  # the parent's limit still applies
    (root / "lab" / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_quota(proc, root) is None
    (root / "lab" / "job" / "cpu.max").write_text("50000 100000\n")
    assert cgroup_cpu_quota(proc, root) == 1  # half a CPU: still one thread


def test_cgroup_v1_quota_and_namespaced_paths(tmp_path):
    # a container whose /proc/self/cgroup names the host's path, not mounted inside
    proc, root = cgroup_tree(tmp_path, "4:memory:/x\n3:cpu,cpuacct:/docker/abc\n", {
        "cpu,cpuacct/cpu.cfs_quota_us": "800000\n", "cpu,cpuacct/cpu.cfs_period_us": "100000\n",
    })  # fmt: skip
    assert cgroup_cpu_quota(proc, root) == 8
    (root / "cpu,cpuacct" / "cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_cpu_quota(proc, root) is None
    assert cgroup_cpu_quota(tmp_path / "missing", root) is None  # not Linux: no limit known


def test_the_thread_pool_is_this_ranks_share_of_the_quota(tmp_path, monkeypatch):
    import torch

    proc, root = cgroup_tree(tmp_path, "0::/\n", {"cpu.max": "300000 100000\n"})
    monkeypatch.setattr("generate.run.cgroup_cpu_quota", lambda: cgroup_cpu_quota(proc, root))
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)), raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert cpu_share() == 3  # 64 cores visible, 3 CPUs of quota
    before = torch.get_num_threads()
    try:
        assert torch_threads() == 3 == torch.get_num_threads()
        monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # torchrun, two ranks on this machine
        assert torch_threads() == 1 == torch.get_num_threads()
        monkeypatch.setenv("OMP_NUM_THREADS", "2")  # the user's (or launcher's) choice stands
        assert torch_threads() == 2 == torch.get_num_threads()
        monkeypatch.setenv("OMP_NUM_THREADS", "lots")
        with pytest.raises(ValueError, match="OMP_NUM_THREADS must be a positive integer"):
            torch_threads()
    finally:
        torch.set_num_threads(before)


def test_the_decoder_host_cost_benchmark_runs():
    printed = bench("decode_host.py", "--reference", "80x60", "--long-side", "64", "--batch", "1",
                    "--calls", "1")  # fmt: skip
    assert "references 80×60, long side 64, 1 calls × 1 images" in printed
    assert re.search(r"host work on the decoding thread: \d+ ms/image", printed)
    assert re.search(r"left to the writer thread \(Decoded.image\): \d+ ms/image", printed)
