"""`convert from-aloha`: ACT/ALOHA HDF5 episodes (the real layout, made here) -> lapo episode files."""
import io
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from lapo_learning import dataset_format as fmt
from lapo_learning.convert.__main__ import main
from lapo_learning.convert.aloha import ALOHA_JOINT_NAMES
from lapo_learning.create_dataset import validate
from lapo_learning.dataset import load_dataset
from lapo_learning.schema import CAMERAS

from learning_fixtures import run_train

SIZE = (24, 32)
ALOHA_CAMS = ["cam_high", "cam_low", "cam_left_wrist", "cam_right_wrist"]


def image(t: int, cam: int) -> np.ndarray:
    """Smooth (JPEG-friendly) and different in each channel, so a channel swap shows."""
    y, x = np.mgrid[0:SIZE[0], 0:SIZE[1]]
    return np.stack([(4 * t + 2 * x) % 256, (60 * cam + y) % 256, np.full_like(x, 200 - 3 * t)], -1).astype(np.uint8)


def qpos(t: int) -> np.ndarray:
    return (0.01 * t + np.arange(14) / 100).astype(np.float32)


def cv2_imencode(rgb: np.ndarray) -> bytes:
    """What ALOHA's recorder stores: cv2.imencode('.jpg', image) takes its array for BGR."""
    out = io.BytesIO()
    Image.fromarray(rgb[..., ::-1]).save(out, format="JPEG", quality=95)
    return out.getvalue()


def write_aloha(path: Path, steps: int, compressed: bool, cams=ALOHA_CAMS, sim: bool = False) -> None:
    """The layout of ACT's record_sim_episodes.py (raw images) and of ALOHA's real-robot recorder
    (JPEG bytes zero-padded to the longest frame, attrs compress=True, effort)."""
    with h5py.File(path, "w") as f:
        f.attrs["sim"] = sim
        f.attrs["compress"] = compressed
        obs = f.create_group("observations")
        obs["qpos"] = np.stack([qpos(t) for t in range(steps)])
        obs["qvel"] = np.zeros((steps, 14))
        obs["effort"] = np.zeros((steps, 14))
        images = obs.create_group("images")
        for c, cam in enumerate(cams):
            frames = [image(t, c) for t in range(steps)]
            if compressed:
                encoded = [np.frombuffer(cv2_imencode(fr), np.uint8) for fr in frames]
                padded = np.zeros((steps, max(len(e) for e in encoded) + 100), np.uint8)
                for t, e in enumerate(encoded):
                    padded[t, :len(e)] = e
                images.create_dataset(cam, data=padded, chunks=(1, padded.shape[1]))
            else:
                images.create_dataset(cam, data=np.stack(frames), chunks=(1, *SIZE, 3))
        f["action"] = np.stack([qpos(t + 1) for t in range(steps)])


def convert(src: Path, out: Path, *flags: str) -> int:
    return main(["from-aloha", str(src), "--output", str(out), *flags])


def test_real_robot_layout_with_jpeg_images(tmp_path):
    src = tmp_path / "aloha"
    src.mkdir()
    for i, steps in ((2, 7), (10, 5)):  # natural order: episode_2 before episode_10
        write_aloha(src / f"episode_{i}.hdf5", steps, compressed=True)
    out = tmp_path / "lapo"
    assert convert(src, out) == 0
    files = sorted(out.glob("*.hdf5"))
    assert [p.name for p in files] == ["episode_0001.hdf5", "episode_0002.hdf5"]
    assert validate(out) == 0
    for path, steps in zip(files, (7, 5)):
        with h5py.File(path, "r") as f:
            assert f.attrs["complete"] and f.attrs["source"].endswith("episode_2.hdf5" if steps == 7 else "episode_10.hdf5")
            schema = fmt.read_schema(f)
            assert schema.joint_names == ALOHA_JOINT_NAMES and schema.rate_hz == 50.0
            np.testing.assert_array_equal(f[fmt.JOINT_PATH][()], [qpos(t) for t in range(steps)])
            np.testing.assert_array_equal(f[fmt.ACTIONS_KEY][()], [qpos(t + 1) for t in range(steps)])
            np.testing.assert_allclose(f[fmt.TIMESTAMPS_KEY][()], np.arange(steps) / 50.0)
            # sparse success: the last step is terminal with reward 1
            np.testing.assert_array_equal(f[fmt.REWARDS_KEY][()], [0] * (steps - 1) + [1])
            np.testing.assert_array_equal(f[fmt.TERMINALS_KEY][()], [False] * (steps - 1) + [True])
            for cam, aloha_cam in (("left_image", 2), ("right_image", 3), ("global_image", 0)):
                got = f[fmt.image_key(cam)][()].astype(int)
                expected = np.stack([image(t, aloha_cam) for t in range(steps)]).astype(int)
                assert np.abs(got - expected).mean() < 2.0, f"{cam}: not the JPEG's pixels in ALOHA's channel order"
    results = run_train(out, tmp_path / "results", "aloha", 2, "--eval_freq", "2", "--algo", "bc",
                        "--no_tensorboard")
    assert (results / "model_final_bc.pth").exists()

    # A second conversion into the same directory continues the numbering.
    assert convert(src / "episode_10.hdf5", out, "--outcome", "failure") == 0
    with h5py.File(out / "episode_0003.hdf5", "r") as f:
        assert f.attrs["outcome"] == "failure" and not f[fmt.TERMINALS_KEY][()].any()


def test_act_sim_layout_with_one_camera_and_raw_images(tmp_path):
    src = tmp_path / "sim_episode_0.hdf5"
    write_aloha(src, 6, compressed=False, cams=["top"], sim=True)
    out = tmp_path / "lapo"
    assert convert(src, out, "--cameras", "top:left_image,top:right_image,top:global_image",
                   "--image_size", "12", "16") == 0
    ds = load_dataset(out)
    assert ds.schema.image_size == (12, 16)
    for cam in CAMERAS:
        assert ds.images[cam].shape == (6, 12, 16, 3)
    with h5py.File(out / "episode_0001.hdf5", "r") as f:
        assert f.attrs["aloha_sim"]
        # the recorder's bilinear resize of the raw frame
        expected = np.asarray(Image.fromarray(image(3, 0)).resize((16, 12), Image.BILINEAR))
        np.testing.assert_array_equal(f[fmt.image_key("global_image")][3], expected)


@pytest.mark.parametrize("break_it, flags, message", [
    (lambda f: f.__delitem__("observations/images"), [], "no camera images"),
    (lambda f: f.__delitem__("observations/images/cam_low"), ["--cameras", "cam_low:left_image,cam_high:right_image,"
                                                              "cam_high:global_image"],
     "no camera 'cam_low' (for left_image)"),
    (lambda f: None, ["--joint_names", "a,b,c"], "has 14 columns but --joint_names names 3"),
    (lambda f: f.__delitem__("action"), [], "no /action dataset"),
])
def test_bad_files_are_refused_naming_file_and_key(tmp_path, caplog, break_it, flags, message):
    src = tmp_path / "aloha"
    src.mkdir()
    write_aloha(src / "episode_0.hdf5", 3, compressed=False)
    write_aloha(src / "episode_1.hdf5", 3, compressed=False)
    with h5py.File(src / "episode_1.hdf5", "a") as f:
        break_it(f)
    out = tmp_path / "lapo"
    assert convert(src, out, *flags) == 1
    assert message in caplog.text
    if "--joint_names" not in flags:
        assert "episode_1.hdf5" in caplog.text
    assert not list(out.glob("*.hdf5")), "a bad file must stop the conversion before anything is written"


def test_cli_help_explains_every_flag(capsys):
    with pytest.raises(SystemExit):
        main(["from-aloha", "--help"])
    text = capsys.readouterr().out
    for flag in ("--output", "--cameras", "--joint_names", "--action_names", "--rate_hz", "--outcome",
                 "--image_size", "--compression"):
        assert flag in text
